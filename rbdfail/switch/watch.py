"""The source's liveness during a run: a slow demote is no verdict, a silent monitor is.

Two kinds of time (docs/design/timeouts.md): liveness, found within the connect timeout, and
work, bounded by each volume's budget. A demote to a dead site would only fail after the OSD op
timeout; the watch asks the source's monitors meanwhile, so that a lost source is found as
fast as at connect time and the run turns to force-promoting.
"""

from __future__ import annotations

import threading
import time

from rbdfail.errors import CephError, OperationTimedOut
from rbdfail.switch.run import Run
from rbdfail.switch.sites import UNREACHABLE

# A demote takes about one monitor round (0.4-2 s on the lab; 3.5 s on average with 1000 in
# flight): once any demote has been in flight this long, the source's monitors are asked. The
# verdict is still theirs alone (silent for the connect timeout), so probing early costs a
# `mon dump` a tick and buys the connect timeout: a source lost 1 s into a failover is found
# about a connect timeout later, not two (docs/design/taking-locks.md).
PROBE_AFTER_S = 1.0
TICK_S = 0.5


def watch_source(run: Run) -> threading.Event:
    """While a demote is in flight longer than PROBE_AFTER_S, ask the source's monitors, one
    bounded call at a time: no answer within the connect timeout is the source lost, found as
    at connect time rather than after the OSD op timeout a demote to a dead site takes. The
    event returned stops it."""
    done, period = threading.Event(), run.options.connect_timeout
    source = run.raw_source
    assert source is not None

    def slow_demote() -> bool:
        now = time.monotonic()
        return any(now - since > PROBE_AFTER_S for since in list(run.demoting.values()))

    def probe(answered: threading.Event, failed: list[CephError]) -> None:
        try:
            source.monitors()
        except CephError as exc:
            failed.append(exc)
        finally:
            answered.set()

    def watch() -> None:
        while not done.wait(min(TICK_S, period)) and not run.lost.is_set():
            if not slow_demote():
                continue
            answered, failed = threading.Event(), list[CephError]()
            threading.Thread(
                target=probe, args=(answered, failed), name="probe source", daemon=True
            ).start()
            # The call's own timeout is the connect timeout; a second more for the thread.
            if not answered.wait(period + 1):
                error: CephError = OperationTimedOut(
                    f"its monitors did not answer within {period:g}s", site=source.site
                )
            elif failed and isinstance(failed[0], UNREACHABLE):
                error = failed[0]
            else:
                continue
            if not done.is_set():
                run.journal.write("source-probe-failed", site=source.site, error=error.reason)
                run.declare_source_lost(error)
            return

    threading.Thread(target=watch, name="watch source", daemon=True).start()
    return done
