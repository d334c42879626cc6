"""The switch engine: carry a plan out, demote-then-force-promote, concurrently, journaled.

Failover and failback both run on it (plan_failover.py and plan_failback.py plan, `execute`
carries out): moving volumes from a source site to a target site is the same work both ways.

The model is the Cinder RBD driver's: each replicated volume is demoted on the source and
promoted on the target; as soon as one demotion fails because the source does not answer, the
source is taken as lost, no more demotions are started and every volume not demoted yet is
force-promoted. Beyond Cinder:

- volumes are worked on concurrently, each within its own wall-clock budget, and a call that
  hangs past it is given up on (see workers.py), so the command always finishes;
- no volume is left primary nowhere: one demoted but not promotable on the target in time is
  promoted back on the source (or, with `force`, force-promoted on the target);
- every step is journaled before and after it happens (state.py), so that re-running the same
  failover after a crash finishes what is left: the plan is made from what both sites say now,
  so a finished volume is `already-primary` and a demoted one is only promoted;
- a RADOS lock on both sites' pools refuses a second failover, from any host (lock.py).

Nothing here prints: progress goes to an observer, the outcome is a `FailoverReport`.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, cast

from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    stop_when_event_set,
    wait_exponential,
    wait_fixed,
)

from rbdfail.cluster import Cluster, MirrorSnapshotState, ReplayState
from rbdfail.config import Config
from rbdfail.errors import CephError, ImageBusy, ImageNotFound, InvalidState, OperationTimedOut
from rbdfail.state import Journal, State, VolumeRecord, save_state
from rbdfail.switch.model import (
    Action,
    FailoverPlan,
    FailoverReport,
    Observer,
    Operation,
    Options,
    Plan,
    PlannedVolume,
    Silent,
    VolumeOutcome,
)
from rbdfail.switch.sites import UNREACHABLE, Sites
from rbdfail.workers import CallSlots, Throttled, run_all


def throttled(sites: Sites, slots: CallSlots) -> Sites:
    """The same sites, each call through one of the run's call slots."""

    def wrap(cluster: Cluster) -> Cluster:
        return cast(Cluster, Throttled(cluster, slots))

    return Sites(
        sites.source_id,
        wrap(sites.target),
        None if sites.source is None else wrap(sites.source),
        sites.source_error,
    )


@dataclass
class _Run:
    """What the workers of one run share."""

    sites: Sites
    options: Options
    journal: Journal
    observer: Observer
    slots: CallSlots
    raw_target: Cluster  # the target without call slots, for _LockTaker
    lost: threading.Event = field(default_factory=threading.Event)
    lost_reason: str | None = None
    steps: dict[str, str] = field(default_factory=dict)  # volume -> its step now
    threads: dict[str, int] = field(default_factory=dict)  # volume -> the thread working on it
    # Volumes given up on at their hard limit: what their calls do after is journaled as
    # late (the run may have ended), and not shown as progress.
    given_up: set[str] = field(default_factory=set)
    lock_held: Callable[[], None] = lambda: None  # raises once the run's lock is not held
    # A forced promote's hand-off stalled and a lock had to be taken: take the next at once.
    taking_locks: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def step(self, name: str, step: str, **fields: Any) -> None:
        if name in self.given_up:
            self.journal.write("late-step", volume=name, step=step, **fields)
            return
        self.steps[name] = step
        self.journal.write("step", volume=name, step=step, **fields)
        self.observer.step(name, step)

    def lose_source(self, error: CephError) -> None:
        with self._lock:
            if self.lost.is_set():
                return
            self.lost_reason = f"{self.sites.source_id} stopped answering: {error.reason}"
            self.lost.set()
        self.journal.write("primary-lost", error=error.reason)
        self.observer.primary_lost(self.lost_reason)


def execute(
    plan: FailoverPlan,
    sites: Sites,
    state: State,
    options: Options,
    journal: Journal,
    config: Config,
    observer: Observer | None = None,
    lock_held: Callable[[], None] = lambda: None,
) -> FailoverReport:
    """Carry the plan out and record it; the caller holds the lock, and `lock_held` raises
    when it is not provably held any more: no Ceph call starts after that."""
    started = time.monotonic()
    slots = CallSlots(options.concurrency, before_call=lock_held)
    run = _Run(
        throttled(sites, slots),
        options,
        journal,
        observer or Silent(),
        slots,
        sites.target,
        lock_held=lock_held,
    )
    if sites.source is None and sites.source_error is not None:
        run.lost.set()
        run.lost_reason = f"{sites.source_id} unreachable: {sites.source_error.reason}"
    journal.write(
        "start",
        operation=plan.operation,
        target=plan.target,
        source=plan.source,
        resumes=plan.resumes,
        source_reachable=plan.source_reachable,
        plan={v.name: v.plan for v in plan.volumes},
        host=socket.gethostname(),
        pid=os.getpid(),
    )
    todo = [v for v in plan.volumes if v.plan in _WORK]
    # Forced promotes wait on nothing but their own call: more volumes in progress than
    # slots only pays while demotions have to propagate.
    per_slot = options.volumes_per_slot if sites.source is not None else 1
    finished = run_all(
        todo,
        lambda v: _fail_over_one(run, v),
        options.concurrency * per_slot,
        run.observer.finished,
        # Waiting behind other volumes for call slots is not this volume's time.
        time_limit=lambda v: options.limit_for(v) + slots.queued(run.threads.get(v.name)),
        on_overrun=lambda v, seconds: _overrun(run, plan, v, seconds),
    )
    outcomes = {o.name: o for o in finished.results if o is not None}
    report_volumes = []
    for volume in plan.volumes:
        if volume.plan in _WORK:
            outcome = outcomes.get(volume.name) or VolumeOutcome(
                volume.name, Action.NOT_STARTED, "", "interrupted before its turn", 0.0
            )
        else:
            outcome = _known_outcome(volume)
        report_volumes.append(outcome)
    report_volumes, new_state = _record(state, plan, report_volumes)
    # A state dir that failed under the run is reported, not raised: the volumes have moved.
    state_error = save_state(config.state_dir, new_state) if new_state is not state else None
    report = FailoverReport(
        journal.run_id,
        plan,
        tuple(report_volumes),
        time.monotonic() - started,
        run.lost_reason,
        finished.interrupted,
        new_state.active_backend,
        finished.overran,
        state_error=state_error,
    )
    journal.write(
        "end",
        operation=plan.operation,
        result=report.result,
        counts=report.counts(),
        interrupted=finished.interrupted,
    )
    return report


_WORK = (Plan.DEMOTE_PROMOTE, Plan.PROMOTE, Plan.FORCE_PROMOTE, Plan.RESYNC)


def _known_outcome(volume: PlannedVolume) -> VolumeOutcome:
    action = {
        Plan.NOTHING: Action.ALREADY_PRIMARY,
        Plan.MARK_ERROR: Action.NOT_REPLICATED,
        Plan.RESTORE: Action.RESTORED,
        Plan.CANNOT: Action.FAILED,
    }[volume.plan]
    error = volume.reason if action == Action.FAILED else None
    return VolumeOutcome(volume.name, action, "", error, 0.0, volume.reason)


def _record(
    state: State, plan: FailoverPlan, outcomes: Sequence[VolumeOutcome]
) -> tuple[list[VolumeOutcome], State]:
    """Each volume's status afterwards, and the new state (the old one when nothing moved)."""
    moved = any(o.action.succeeded or o.action == Action.RESTORED for o in outcomes)
    records = dict(state.volumes)
    final = []
    for outcome in outcomes:
        before = state.volume(outcome.name)
        if not moved or outcome.action == Action.NOT_STARTED:
            after = before
        elif outcome.action.succeeded or outcome.action == Action.RESTORED:
            after = before.restored()
        else:
            after = before.as_error()
        if after != VolumeRecord() or outcome.name in records:
            records[outcome.name] = after
        final.append(replace(outcome, status=after.status))
    if not moved:
        return final, state
    return final, State(plan.target, records)


def _overrun(run: _Run, plan: FailoverPlan, volume: PlannedVolume, seconds: float) -> VolumeOutcome:
    run.slots.write_off(run.threads.get(volume.name))
    run.given_up.add(volume.name)
    step = run.steps.get(volume.name, "starting")
    run.journal.write("given-up", volume=volume.name, last_step=step, after_s=round(seconds, 1))
    again = (
        "rbdfail failback"
        if plan.operation == Operation.FAILBACK
        else f"rbdfail failover --to {plan.target}"
    )
    stuck = (
        f" (a forced promote waits for {plan.target}'s rbd-mirror to hand the copy's lock "
        "over: --break-locks takes it)"
        if step == "force-promote" and run.options.break_locks_after is None
        else ""
    )
    return VolumeOutcome(
        volume.name,
        Action.FAILED,
        "",
        f"given up after {seconds:.0f}s, a call still running at step {step!r}{stuck}",
        seconds,
        hint=f"`rbdfail status {volume.name}` shows where it stands now; run `{again}` again "
        "to finish it: it plans from what the sites say then",
    )


def _fail_over_one(run: _Run, volume: PlannedVolume) -> VolumeOutcome:
    run.threads[volume.name] = threading.get_ident()
    run.slots.begin(threading.get_ident())
    begun = time.monotonic()
    deadline = begun + run.options.volume_timeout

    def outcome(action: Action, error: str | None = None, detail: str = "") -> VolumeOutcome:
        if error is not None:
            late = volume.name in run.given_up
            run.journal.write("late-failed" if late else "failed", volume=volume.name, error=error)
        return VolumeOutcome(volume.name, action, "", error, time.monotonic() - begun, detail)

    try:
        return _steps(run, volume, deadline, outcome)
    except CephError as exc:
        return replace(outcome(Action.FAILED, str(exc)), hint=exc.hint)


def _steps(
    run: _Run,
    volume: PlannedVolume,
    deadline: float,
    outcome: Callable[..., VolumeOutcome],
) -> VolumeOutcome:
    name, source, target = volume.name, run.sites.source, run.sites.target
    demoted = volume.plan == Plan.PROMOTE
    resynced = False
    if volume.plan == Plan.RESYNC:
        if run.lost.is_set():
            # Forcing the stale copy would throw away the source's writes since it was forced.
            return outcome(
                Action.FAILED,
                f"{run.sites.source_id} was lost before the copy on {target.site} was "
                f"resynced: not forced, its newest writes are on {run.sites.source_id}",
            )
        stale = _resync_stale_copy(run, name)
        if stale is not None:
            return outcome(Action.FAILED, stale)
        resynced = True
        deadline = time.monotonic() + run.options.volume_timeout  # the switch's own budget
    if volume.plan in (Plan.DEMOTE_PROMOTE, Plan.RESYNC) and not run.lost.is_set():
        assert source is not None
        run.step(name, "demote", site=source.site)
        try:
            source.demote(name)
            demoted = True
            run.step(name, "demoted", site=source.site)
        except UNREACHABLE as exc:
            run.lose_source(exc)
        except InvalidState as exc:
            # Either someone demoted it meanwhile, or the demote was refused (EROFS: a client
            # holding the image's lock would not hand it over). Only Ceph can tell which.
            if source.mirror_info(name).primary:
                return outcome(
                    Action.FAILED,
                    f"the demote on {source.site} was refused ({exc.reason}): still primary "
                    f"there, left as it is. A client may hold its lock and refuse to release "
                    "it: stop that client (`rbdfail status` lists the watchers), then run "
                    "again",
                )
            demoted = True
            run.step(name, "demoted", site=source.site, note="was not primary any more")
        except ImageNotFound:
            return outcome(
                Action.FAILED,
                f"vanished from {source.site} during the failover; its copy on "
                f"{target.site} was left as it is",
            )
    if not demoted:
        return _force_promote(run, name, outcome)
    try:
        _promote_when_propagated(run, name, deadline)
    except ImageBusy as exc:
        if run.lost.is_set():
            # Demoted, but the source died before its demotion reached the target: it never
            # will now. The source's copy is not primary, so forcing splits no brain.
            forced = _force_promote(run, name, outcome)
            return replace(
                forced,
                detail=f"demoted, then {run.sites.source_id} was lost "
                "before the demotion reached the target: forced",
            )
        waited = f"not promotable on {target.site} within its {run.options.volume_timeout:g}s"
        if run.options.force:
            forced = _force_promote(run, name, outcome)
            return replace(forced, detail=f"{waited} ({exc.reason}): forced")
        return _roll_back(run, name, f"{waited} ({exc.reason})", outcome)
    except CephError as exc:
        return _roll_back(run, name, f"promote on {target.site} failed: {exc.reason}", outcome)
    if resynced:
        return outcome(Action.RESYNCED_PROMOTED, detail=f"resynced, primary on {target.site}")
    return outcome(Action.DEMOTED_PROMOTED, detail=f"primary on {target.site}")


def _resync_stale_copy(run: _Run, name: str) -> str | None:
    """Split brain: demote the target's stale primary, have it re-copied from the source, wait
    until it replays. None when done; else why not (the source stays primary: not nowhere)."""
    target = run.sites.target
    if target.mirror_info(name).primary:
        run.step(name, "demote-stale", site=target.site)
        target.demote(name)
    run.step(name, "resync", site=target.site)
    requested = datetime.now(UTC)
    target.resync(name)
    deadline = time.monotonic() + run.options.resync_timeout
    state, restarted = "not reported yet", False
    while time.monotonic() < deadline:
        try:
            status = target.mirror_status(name)
            state = status.state
            # Only a `replaying` reported since the request counts: the status read first
            # may still be the one from before it.
            since = status.last_update is not None and status.last_update > requested
            if status.state == ReplayState.REPLAYING and (restarted or since):
                run.step(name, "resynced", site=target.site)
                return None
            restarted = restarted or status.state != ReplayState.REPLAYING
        except ImageNotFound:
            state, restarted = "being re-copied", True  # deleted, then copied anew
        time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
    return (
        f"the resync on {target.site} did not finish within {run.options.resync_timeout:g}s "
        f"(last: {state}); it is still primary on {run.sites.source_id}: run failback again "
        "later, or raise --resync-timeout"
    )


def _promote_when_propagated(run: _Run, name: str, deadline: float) -> None:
    """Non-forced promote, retried while the target says the demotion has not reached it."""
    target = run.sites.target
    run.step(name, "promote", site=target.site)
    # Propagation takes seconds (the target's rbd-mirror replays the demotion); retries are a
    # cheap open+promote each, so a short cap keeps the overshoot after it arrives small.
    backoff = wait_exponential(multiplier=0.1, max=0.5)
    for attempt in Retrying(
        retry=retry_if_exception_type(ImageBusy),
        # Stop early once the source is lost: its demotion will not arrive any more.
        stop=stop_after_delay(max(0.0, deadline - time.monotonic()))
        | stop_when_event_set(run.lost),
        # Never sleep past the deadline.
        wait=lambda state: min(backoff(state), max(0.0, deadline - time.monotonic())),
        reraise=True,
    ):
        with attempt:
            _refuse_unreplayed(target, name)
            target.promote(name)
    run.step(name, "promoted", site=target.site)


def _refuse_unreplayed(target: Cluster, name: str) -> None:
    """ImageBusy while the copy was demoted by this site itself and has not replayed the
    peer's promotion since (its newest mirror snapshot is its own demotion).

    Ceph promotes such a copy without force at once, and it lacks every write the peer made
    as primary: measured on the lab (issue 13), a failover 5 s after a failback promoted the
    journal-mode copies in 0.01 s without the write made in between. Snapshot mode shows it in
    the snapshot's state; journal mode shows nothing python-rbd can read (not covered here).
    """
    last = target.last_mirror_snapshot(name)
    if last is not None and last[0] == MirrorSnapshotState.PRIMARY_DEMOTED:
        raise ImageBusy(
            "demoted here itself, and the peer's promotion not replayed here since",
            site=target.site,
            image=name,
        )


def _force_promote(run: _Run, name: str, outcome: Callable[..., VolumeOutcome]) -> VolumeOutcome:
    target = run.sites.target
    grace = run.options.break_locks_after if run.lost.is_set() else None
    taker = _LockTaker(run, name, grace) if grace is not None else None
    run.step(name, "force-promote", site=target.site)
    try:
        if taker is not None:
            taker.start()
        try:
            target.promote(name, force=True)
        except ImageBusy:
            # The lock holder refused to let go (EROFS, seen on the lab right after another
            # run had taken locks from the same daemon): take it now, then force once more.
            if taker is None:
                raise
            taker.take_now()
            # Seen on the lab right after the take: one more EROFS, or librbd's own ETIMEDOUT
            # in 2 s (its request to the old, blocklisted holder); the next try went through.
            for attempt in Retrying(
                retry=retry_if_exception_type((ImageBusy, OperationTimedOut)),
                stop=stop_after_attempt(3),
                wait=wait_fixed(1),
                reraise=True,
            ):
                with attempt:
                    target.promote(name, force=True)
    except InvalidState:
        if not target.mirror_info(name).primary:
            raise
    finally:
        if taker is not None:
            taker.cancel()
    run.step(name, "force-promoted", site=target.site)
    holders = taker.holders if taker is not None else []
    taken = f" (its lock taken from {', '.join(holders)})" if holders else ""
    return outcome(
        Action.FORCE_PROMOTED,
        detail=f"primary on {target.site}{taken}; {run.sites.source_id} may still hold it "
        "as primary",
    )


class _LockTaker:
    """Takes a copy's exclusive lock from the target's rbd-mirror if a forced promote has not
    got it within the grace (Options.break_locks_after).

    librbd's forced promote of a snapshot-mode copy has the lock holder (this site's
    rbd-mirror) create an orphan snapshot, then polls the image's watchers every 5 s until the
    daemon has closed the image, with no time limit (`mirror::snapshot::PromoteRequest`,
    `list_watchers` and `wait_update_notify`). With the source lost, the daemon can be wedged
    on the dead peer (a replayer inside a call to it, which Pacific's rbd-mirror never times
    out; upstream ceph PRs 51540 and 52632) and never close it. Measured on the lab, source
    storage dead: 12 of 12 forced promotes given up at 81 s in 3 runs of 3, with or without
    an OSD op timeout; with the lock taken, all finished in 4-5 s. Ceph blocklists the holder
    (ceph.BLOCKLIST_S), which removes its watch, and the promote already waiting goes on.

    Taken only when the hand-off stalls, because the blocklist pauses the daemon for every
    image and restarts its pool replayer, which on the lab did not always come back. Once one
    was needed in a run, later promotes of that run take it at once: the daemon is stuck.
    The call bypasses the call slots (stalled promotes may hold them all), not the lock check.
    """

    def __init__(self, run: _Run, name: str, grace: float) -> None:
        self.holders: list[str] = []
        self._run, self._name = run, name
        delay = 0.0 if run.taking_locks.is_set() else grace
        self._timer = threading.Timer(delay, self._take)
        self._timer.daemon = True

    def start(self) -> None:
        self._timer.start()

    def cancel(self) -> None:
        self._timer.cancel()
        if self._timer.is_alive() or self._timer.finished.is_set():
            with suppress(RuntimeError):  # never started
                self._timer.join()

    def take_now(self) -> None:
        """Take it in this thread, unless the timer already has."""
        self.cancel()
        if not self.holders:
            self._take()

    def _take(self) -> None:
        run, name, target = self._run, self._name, self._run.raw_target
        try:
            run.lock_held()
            if target.mirror_info(name).primary:
                return  # promoted meanwhile: nothing to take
            run.step(name, "take-lock", site=target.site)
            self.holders = target.break_image_lock(name)
        except CephError as exc:  # Ceph's own hand-off is left to work, within the limits
            run.journal.write("lock-not-taken", volume=name, site=target.site, error=exc.reason)
            return
        run.step(name, "lock-taken", site=target.site, holders=self.holders)
        if self.holders:
            run.taking_locks.set()


def _roll_back(
    run: _Run, name: str, why: str, outcome: Callable[..., VolumeOutcome]
) -> VolumeOutcome:
    """Promote back on the source: the volume was demoted there and is primary nowhere.

    Unless the target says it is primary after all (a promote that timed out may have taken
    effect): rolling back then would make it primary on both sites. If the target cannot
    say, nothing is rolled back: the volume is named, primary on the target or nowhere.
    """
    source, target = run.sites.source, run.sites.target
    assert source is not None
    try:
        if target.mirror_info(name).primary:
            run.step(name, "promoted", site=target.site, note=f"after: {why}")
            return outcome(
                Action.DEMOTED_PROMOTED, detail=f"primary on {target.site} (after: {why})"
            )
    except CephError as exc:
        return outcome(
            Action.FAILED,
            f"{why}; and {target.site} cannot say whether the promote took effect "
            f"({exc.reason}): not rolled back, so as not to make it primary on both sites. It "
            f"is primary on {target.site} or nowhere: check with `rbdfail status {name}`, "
            "then run the same command again",
        )
    run.step(name, "roll-back", site=source.site)
    try:
        try:
            source.promote(name)
        except ImageBusy:
            # The target never became primary, so forcing here cannot split the brain.
            source.promote(name, force=True)
    except UNREACHABLE as exc:
        # The source went away after the demotion: the target is the only place left to
        # make it primary, and it is safe there (the source's copy is demoted).
        run.lose_source(exc)
        forced = _force_promote(run, name, outcome)
        return replace(forced, detail=f"{why}; {source.site} lost before the roll-back: forced")
    except CephError as exc:
        return outcome(
            Action.FAILED,
            f"{why}; promoting it back on {source.site} failed too ({exc.reason}): it is "
            f"primary nowhere. Promote it by hand: `rbd mirror image promote --force` on "
            f"{target.site} or {source.site}",
        )
    run.step(name, "rolled-back", site=source.site)
    return outcome(
        Action.FAILED,
        f"{why}; rolled back: primary on {source.site} again",
        detail=f"rolled back to {source.site}",
    )
