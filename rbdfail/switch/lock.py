"""The switch lock: one RADOS lock per site, so that two runs never move volumes at once.

A second failover or failback, from any host, is refused with `LockedByAnotherRun` (its own
exit code, so a runbook can tell "someone else is running" from "the target is down").
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC, datetime

from rbdfail.cluster import Cluster
from rbdfail.errors import CephError, LockedByAnotherRun, LockHeld, LockLost
from rbdfail.switch.sites import Sites

LOCK_NAME = "rbdfail.failover"
LOCK_DURATION = 30  # seconds; renewed every third of it while the run lives
# A run's Ceph calls go on only while the target's lock was taken or renewed this recently:
# it lapses LOCK_DURATION after that, and a call started just before must not outlive it by
# much. A host paused past it (Ctrl-Z, a VM stall) stops before its next call.
PROVABLY_HELD_S = LOCK_DURATION - 10


class SwitchLock:
    """rbdfail's RADOS lock on each site's pool, held while a run moves volumes between them.

    On both sites, so that two runs in opposite directions (a failover and a failback started
    at once) cannot both go on: whichever comes second is refused. Taken in a fixed order
    (by site name), so two such runs never hold one each. The target's is required; the
    source's is taken when the source answers, which a forced failover does without.

    Each lock is renewed in the background while held. A run killed without releasing leaves
    locks that lapse after LOCK_DURATION; when their holder was on this host and its process
    is gone, `acquire` waits for that. `check` says whether the run may go on issuing calls:
    not once another run took a lock over, nor once the target's was not renewed for
    PROVABLY_HELD_S (it may have lapsed and been taken meanwhile).
    """

    def __init__(self, sites: Sites, run_id: str, what: str) -> None:
        self.sites = sites
        self.run_id = run_id
        self.holder = json.dumps(
            {
                "user": _user(),
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "since": datetime.now(UTC).isoformat(timespec="seconds"),
                "run": run_id,
                "what": what,
            }
        )
        self._held: list[Cluster] = []
        self._renewers: dict[str, threading.Thread] = {}  # site -> its renewing thread
        self._stop = threading.Event()
        self._renewed_at: dict[str, float] = {}  # site -> when its lock was last taken/renewed
        self._taken_over: str | None = None  # why the run lost a lock to another run
        self._lapsed = False  # the target's lock went unrenewed too long: never renewed again

    def acquire(self, on_wait: Callable[[str], None] = lambda message: None) -> None:
        reachable = [c for c in (self.sites.target, self.sites.source) if c is not None]
        try:
            for cluster in sorted(reachable, key=lambda c: c.site):
                try:
                    self._acquire_on(cluster, on_wait)
                except CephError as exc:  # a lock held by another run is LockedByAnotherRun
                    if cluster is self.sites.target:
                        raise
                    on_wait(
                        f"{cluster.site}: its lock could not be taken ({exc.reason}); "
                        "going on with the target's only"
                    )
        except BaseException:
            self.release()
            raise
        for cluster in self._held:
            renewer = threading.Thread(target=self._renew, args=(cluster,), daemon=True)
            renewer.start()
            self._renewers[cluster.site] = renewer

    def _acquire_on(self, cluster: Cluster, on_wait: Callable[[str], None]) -> None:
        deadline = time.monotonic() + LOCK_DURATION + 10
        while True:
            try:
                cluster.lock(LOCK_NAME, self.run_id, self.holder, LOCK_DURATION)
                self._renewed_at[cluster.site] = time.monotonic()
                self._held.append(cluster)
                return
            except LockHeld as exc:
                who = _describe_holder(exc.holder)
                if not _dead_here(exc.holder) or time.monotonic() > deadline:
                    raise LockedByAnotherRun(
                        f"another failover is running: {who}",
                        hint=f"wait for it to end (`rbdfail status` shows its progress). A run "
                        f"that was killed leaves a lock on {cluster.site!r} that lapses "
                        f"within {LOCK_DURATION}s; then run the same command again to finish it",
                    ) from exc
                on_wait(f"waiting up to {LOCK_DURATION}s for the lock of a dead run ({who})")
                time.sleep(1)

    def _renew(self, cluster: Cluster) -> None:
        # One thread per site: a source that stops answering must not hold up the target's.
        while not self._stop.wait(LOCK_DURATION / 3) and self.renew(cluster):
            pass

    def renew(self, cluster: Cluster) -> bool:
        """Renew the lock on one site; False once it must not be renewed any more."""
        if cluster is self.sites.target and self._stale():
            # Not renewed for longer than it is provably held (the host paused): it may have
            # lapsed, been taken by another run and released meanwhile, so taking it again
            # now would let this run go on from a plan made before that run
            # (docs/design/journal-and-lock.md). The run stops instead, for good.
            self._lapsed = True
            return False
        try:
            cluster.lock(LOCK_NAME, self.run_id, self.holder, LOCK_DURATION)
            self._renewed_at[cluster.site] = time.monotonic()
        except LockHeld as exc:  # it lapsed and another run took it
            self._taken_over = f"{cluster.site}: {_describe_holder(exc.holder)}"
            return False
        except CephError:
            pass  # a slow site: try again; `check` says when that is too long
        return True

    def _stale(self) -> bool:
        renewed = self._renewed_at.get(self.sites.target.site)
        return renewed is not None and time.monotonic() - renewed > PROVABLY_HELD_S

    def check(self) -> None:
        """Raise LockLost unless the run provably holds its locks now."""
        target = self.sites.target.site
        if self._taken_over is not None:
            raise LockLost(
                f"another run took this run's lock over ({self._taken_over})",
                site=target,
                hint="this run stopped issuing Ceph calls; see `rbdfail status`, and run the "
                "command again once the other run has ended",
            )
        if self._lapsed or self._stale():
            raise LockLost(
                f"this run's lock on {target} was not renewed for over {PROVABLY_HELD_S}s "
                "(the host paused, or the site is slow): another run may hold it now",
                site=target,
                hint="this run stopped issuing Ceph calls; see `rbdfail status`, then run the "
                "same command again: it plans from what the sites say",
            )

    def release(self, source_lost: bool = False) -> None:
        """Unlock every site held; a source the run took as lost is left to its lapse (an
        unlock there would only wait out its timeout)."""
        self._stop.set()
        for cluster in self._held:
            if source_lost and cluster is self.sites.source:
                continue
            if renewer := self._renewers.get(cluster.site):
                renewer.join()  # a renewal landing after the unlock would take the lock again
            with suppress(CephError):  # it lapses by itself
                cluster.unlock(LOCK_NAME, self.run_id)
        self._held.clear()


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def _describe_holder(holder: str) -> str:
    try:
        who = json.loads(holder)
        return (
            f"{who['what']} by {who['user']}@{who['host']} (pid {who['pid']}, "
            f"since {who['since']}, run {who['run']})"
        )
    except (ValueError, KeyError, TypeError):
        return holder or "holder unknown"


def _dead_here(holder: str) -> bool:
    """True when the holder ran on this host and its process is gone."""
    try:
        who = json.loads(holder)
        if who["host"] != socket.gethostname():
            return False
        os.kill(int(who["pid"]), 0)
    except ProcessLookupError:
        return True
    except (ValueError, KeyError, TypeError, PermissionError):
        return False
    return False
