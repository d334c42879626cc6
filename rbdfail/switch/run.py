"""One run of the switch engine: what its workers share, and its sites behind call slots."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from rbdfail.cluster import Cluster, ImageStatus
from rbdfail.errors import CephError
from rbdfail.state import Journal
from rbdfail.switch.model import DaemonOut, Observer, Options
from rbdfail.switch.sites import Sites
from rbdfail.workers import CallSlots, Throttled

# The calls on a switch's critical path: every promote waits for its demotion, then for that
# to reach the target. Given the next free slot first, the demotes end about as soon as if
# they ran alone, and the promotes fill the slots around them (docs/performance.md).
URGENT_CALLS = frozenset({"demote"})


def throttled(sites: Sites, slots: CallSlots) -> Sites:
    """The same sites, each call through one of the run's call slots, demotes first."""

    def wrap(cluster: Cluster) -> Cluster:
        return cast(Cluster, Throttled(cluster, slots, URGENT_CALLS))

    return Sites(
        sites.source_id,
        wrap(sites.target),
        None if sites.source is None else wrap(sites.source),
        sites.source_error,
    )


@dataclass
class Run:
    """What the workers of one run share: the sites (through the call slots), the options, the
    journal, the observer, and what the run has learnt (source lost, volumes given up on)."""

    sites: Sites
    options: Options
    journal: Journal
    observer: Observer
    slots: CallSlots
    raw_target: Cluster  # the target without call slots, for LockTaker
    raw_source: Cluster | None = None  # the source without call slots, for a demote's own thread
    lost: threading.Event = field(default_factory=threading.Event)
    lost_reason: str | None = None
    steps: dict[str, str] = field(default_factory=dict)  # volume -> its step now
    threads: dict[str, int] = field(default_factory=dict)  # volume -> the thread working on it
    # Volumes given up on at their hard limit: what their calls do after is journaled as
    # late (the run may have ended), and not shown as progress.
    given_up: set[str] = field(default_factory=set)
    # Demotes left running when the source was found lost under them (still inside librbd).
    abandoned: set[str] = field(default_factory=set)
    lock_held: Callable[[], None] = lambda: None  # raises once the run's lock is not held
    # A forced promote's hand-off stalled and a lock had to be taken: take the next at once.
    taking_locks: threading.Event = field(default_factory=threading.Event)
    # The images this run works on: whose lock holders name the target's rbd-mirror.
    copies: tuple[str, ...] = ()
    # The target's rbd-mirror taken out (once per run, under daemon_out_lock); None: not yet.
    daemon_out: DaemonOut | None = None
    daemon_out_lock: threading.Lock = field(default_factory=threading.Lock)
    # Bounds forced promotes, which bypass the call slots (Options.forced_in_flight).
    forced_gate: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(500))
    # The target's rbd-mirror status of every copy, read once before the first forced
    # promote (forced.read_point); None: not yet. Beside it, why it could not be read.
    copy_statuses: dict[str, ImageStatus] | None = None
    copy_statuses_error: str | None = None
    copy_statuses_lock: threading.Lock = field(default_factory=threading.Lock)
    # Demotes in flight: volume -> when it started (monotonic), for the source's watcher.
    demoting: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def step(self, name: str, step: str, **fields: Any) -> None:
        if name in self.given_up:
            self.journal.write("late-step", volume=name, step=step, **fields)
            return
        self.steps[name] = step
        self.journal.write("step", volume=name, step=step, **fields)
        self.observer.step(name, step)

    def declare_source_lost(self, error: CephError) -> None:
        with self._lock:
            if self.lost.is_set():
                return
            self.lost_reason = f"{self.sites.source_id} stopped answering: {error.reason}"
            self.lost.set()
        self.journal.write("primary-lost", error=error.reason)
        self.observer.primary_lost(self.lost_reason)
