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

Nothing here prints: progress goes to an observer, the outcome is a `SwitchReport`.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    stop_when_event_set,
    wait_exponential,
    wait_fixed,
)

from rbdfail.cluster import ReplayState
from rbdfail.config import Config
from rbdfail.errors import (
    CephError,
    ImageBusy,
    ImageNotFound,
    InvalidState,
    LockLost,
    OperationTimedOut,
)
from rbdfail.state import Journal, State, VolumeRecord, save_state
from rbdfail.switch.forced import force_promote, free_from_daemon
from rbdfail.switch.model import (
    Action,
    Observer,
    Operation,
    Options,
    Plan,
    PlannedVolume,
    Silent,
    SwitchPlan,
    SwitchReport,
    VolumeOutcome,
)
from rbdfail.switch.run import Run, throttled
from rbdfail.switch.sites import UNREACHABLE, Sites
from rbdfail.switch.watch import watch_source
from rbdfail.workers import CallSlots, CallTrace, run_all

# How long a resync request that times out is made again (see _resync_stale_copy): longer
# than the OSD's watch timeout (30 s), after which a dead client's watch on the copy lapses.
RESYNC_REQUEST_WITHIN_S = 60.0


def execute(
    plan: SwitchPlan,
    sites: Sites,
    state: State,
    options: Options,
    journal: Journal,
    config: Config,
    observer: Observer | None = None,
    lock_held: Callable[[], None] = lambda: None,
    shared_slots: CallSlots | None = None,
    stop: threading.Event | None = None,
) -> SwitchReport:
    """Carry the plan out and record it; the caller holds the lock, and `lock_held` raises
    when it is not provably held any more: no Ceph call starts after that. `shared_slots`:
    the call slots of a switch of several backends, which runs one plan each at once."""
    started = time.monotonic()
    trace: list[CallTrace] | None = [] if options.call_trace and not shared_slots else None
    slots = (shared_slots or CallSlots(options.concurrency, trace=trace)).checked_by(lock_held)
    run = Run(
        throttled(sites, slots),
        options,
        journal,
        observer or Silent(),
        slots,
        sites.target,
        sites.source,
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
    todo = [v for v in plan.volumes if _is_work(v, run.lost.is_set())]
    todo_names = {v.name for v in todo}
    run.copies = tuple(v.name for v in todo)
    run.forced_gate = threading.Semaphore(options.forced_in_flight)
    in_progress = options.concurrency * options.volumes_per_slot

    def in_flight() -> int:
        # Once the source is lost every volume left goes the forced way, whose promotes
        # bypass the call slots: as many at once as the forced phase allows.
        return max(in_progress, options.forced_in_flight) if run.lost.is_set() else in_progress

    watching = watch_source(run) if sites.source is not None else None
    try:
        finished = run_all(
            todo,
            lambda v: _switch_one(run, v),
            in_flight,
            run.observer.finished,
            # Waiting behind other volumes for call slots is not this volume's time.
            time_limit=lambda v: options.limit_for(v) + slots.queued(run.threads.get(v.name)),
            on_overrun=lambda v, seconds: _overrun(run, plan, v, seconds),
            stop=stop,
        )
    finally:
        if watching is not None:
            watching.set()
    outcomes = {o.name: o for o in finished.results if o is not None}
    report_volumes = []
    for volume in plan.volumes:
        if volume.name in todo_names:
            outcome = outcomes.get(volume.name) or VolumeOutcome(
                volume.name, Action.NOT_STARTED, "", "interrupted before its turn", 0.0
            )
        else:
            outcome = _known_outcome(volume)
        report_volumes.append(outcome)
    report_volumes, new_state = _record(state, plan, report_volumes)
    state_error = None
    if new_state is not state:
        # A state dir that failed under the run is reported, not raised: the volumes have moved.
        state_error = _lock_lost(lock_held) or save_state(
            config.state_dir, new_state, config.state_scope
        )
    report = SwitchReport(
        journal.run_id,
        plan,
        tuple(report_volumes),
        time.monotonic() - started,
        run.lost_reason,
        finished.interrupted,
        new_state.active_backend,
        finished.overran + len(run.abandoned),
        state_error=state_error,
        daemon_out=run.daemon_out,
    )
    if options.call_trace and trace is not None:
        write_trace(options.call_trace, trace, started)
    journal.write(
        "end",
        operation=plan.operation,
        result=report.result,
        counts=report.counts(),
        interrupted=finished.interrupted,
    )
    return report


def write_trace(path: Path, trace: list[CallTrace], origin: float) -> None:
    """One JSON line per Ceph call, seconds from the run's start; a diagnostic: a failure to
    write it does not fail the run."""
    with suppress(OSError), open(path, "w") as out:
        for call in sorted(trace, key=lambda c: c.asked):
            out.write(json.dumps(call.to_json(origin)) + "\n")


def _lock_lost(lock_held: Callable[[], None]) -> str | None:
    """Why state.json must not be written: a run that lost its lock may have been overtaken by
    another one, whose record it would replace with its own, older view
    (docs/design/journal-and-lock.md)."""
    try:
        lock_held()
    except LockLost as exc:
        return f"state.json not written: {exc.reason}"
    return None


_WORK = (Plan.DEMOTE_PROMOTE, Plan.PROMOTE, Plan.FORCE_PROMOTE, Plan.RESYNC)


def _is_work(volume: PlannedVolume, source_lost: bool) -> bool:
    """A volume primary on the target already is work too when its schedule is missing there,
    or when the source is lost: a run before may have forced it and ended (killed, or with
    --no-break-locks) before the target's rbd-mirror let go of it (forced.py)."""
    if volume.plan != Plan.NOTHING:
        return volume.plan in _WORK
    return volume.schedule is not None or source_lost


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
    state: State, plan: SwitchPlan, outcomes: Sequence[VolumeOutcome]
) -> tuple[list[VolumeOutcome], State]:
    """Each volume's status afterwards, and the new state (the old one when nothing moved).

    Only a replicated volume primary on the target counts as moved: a restored unreplicated
    volume does not, or a failback that refused every replicated volume would call the target
    active and restore statuses while every replicated volume is still on the source."""
    moved = any(o.action.succeeded for o in outcomes)
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


def _overrun(run: Run, plan: SwitchPlan, volume: PlannedVolume, seconds: float) -> VolumeOutcome:
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


def _switch_one(run: Run, volume: PlannedVolume) -> VolumeOutcome:
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
        if volume.plan == Plan.NOTHING:  # here for its schedule, or its lock (_is_work)
            done = _known_outcome(volume)
            if run.lost.is_set():
                done = replace(
                    done, detail=done.detail + (free_from_daemon(run, volume.name) or "")
                )
        else:
            done = _steps(run, volume, deadline, outcome)
    except CephError as exc:
        return replace(outcome(Action.FAILED, str(exc)), hint=exc.hint)
    if volume.schedule and done.action.succeeded:
        return _follow_schedule(run, volume.name, volume.schedule, done)
    return done


def _follow_schedule(run: Run, name: str, interval: str, done: VolumeOutcome) -> VolumeOutcome:
    """Add the volume's mirror-snapshot schedule on the target, now primary there (see
    plan_upkeep.py): after the promote, so a failure here costs the schedule, not the switch."""
    target = run.sites.target
    run.step(name, "add-schedule", site=target.site, interval=interval)
    try:
        target.add_snapshot_schedule(name, interval)
    except CephError as exc:
        run.journal.write("schedule-failed", volume=name, error=exc.reason)
        return replace(
            done,
            detail=f"{done.detail}; its {interval} snapshot schedule could not be added on "
            f"{target.site} ({exc.reason}): nothing replicates back until it is "
            "(`rbdfail enable-mirroring` adds it)",
        )
    return replace(done, detail=f"{done.detail}; snapshot schedule {interval} added")


def _steps(
    run: Run,
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
            if _demote_unless_source_lost(run, name):
                demoted = True
                run.step(name, "demoted", site=source.site)
            else:
                forced = force_promote(run, name, outcome)
                return replace(
                    forced,
                    detail=f"its demote on {source.site} had not returned when "
                    f"{run.sites.source_id} was found lost (left running there): forced",
                )
        except UNREACHABLE as exc:
            run.declare_source_lost(exc)
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
        return force_promote(run, name, outcome)
    try:
        _promote_when_propagated(run, name, deadline)
    except ImageBusy as exc:
        if run.lost.is_set():
            # Demoted, but the source died before its demotion reached the target: it never
            # will now. The source's copy is not primary, so forcing splits no brain.
            forced = force_promote(run, name, outcome)
            return replace(
                forced,
                detail=f"demoted, then {run.sites.source_id} was lost "
                "before the demotion reached the target: forced",
            )
        waited = f"not promotable on {target.site} within its {run.options.volume_timeout:g}s"
        if run.options.force:
            forced = force_promote(run, name, outcome)
            return replace(forced, detail=f"{waited} ({exc.reason}): forced")
        return _roll_back(run, name, f"{waited} ({exc.reason})", outcome)
    except CephError as exc:
        return _roll_back(run, name, f"promote on {target.site} failed: {exc.reason}", outcome)
    if resynced:
        return outcome(Action.RESYNCED_PROMOTED, detail=f"resynced, primary on {target.site}")
    return outcome(Action.DEMOTED_PROMOTED, detail=f"primary on {target.site}")


def _demote_unless_source_lost(run: Run, name: str) -> bool:
    """Demote on the source, in a call slot; False when the source is found lost while the
    call is in flight. A demote in flight to a source whose daemons died may never return
    (librbd asks the lost lock owner again and again), and its volume must be forced with the
    others rather than given up on at its hard limit (docs/design/timeouts.md). The call is
    left running in its own thread (never closed under: counted as a call left running); if
    it ever ends, the source's copy is not primary, which splits no brain."""
    source = run.raw_source
    assert source is not None
    answered = threading.Event()
    answer: list[BaseException | None] = []

    def demote() -> None:
        try:
            source.demote(name)
            answer.append(None)
        except BaseException as exc:  # handed to the waiting thread, raised there
            answer.append(exc)
        finally:
            answered.set()

    def demote_in_its_slot(image: str) -> bool:
        run.demoting[image] = time.monotonic()
        threading.Thread(target=demote, name=f"demote {image}", daemon=True).start()
        try:
            while not answered.wait(0.25):
                if run.lost.is_set():
                    run.abandoned.add(image)
                    run.journal.write("demote-left-running", volume=image, site=source.site)
                    return False
        finally:
            run.demoting.pop(image, None)
        if answer[0] is not None:
            raise answer[0]
        return True

    demote_in_its_slot.__name__ = "demote"  # as the call trace names it
    return bool(run.slots.call(demote_in_its_slot, name, urgent=True))


def _resync_stale_copy(run: Run, name: str) -> str | None:
    """Split brain: demote the target's stale primary, have it re-copied from the source, wait
    until it replays. None when done; else why not (the source stays primary: not nowhere)."""
    target = run.sites.target
    if target.mirror_info(name).primary:
        run.step(name, "demote-stale", site=target.site)
        try:
            target.demote(name)
        except InvalidState:
            # Never demote what is not primary: a demote an earlier run left running on this
            # site (then lost) may complete late, between the read above and this call (Ceph
            # answers EINVAL). Not primary now is what this step wanted.
            if target.mirror_info(name).primary:
                raise
            run.step(name, "demoted-stale", site=target.site, note="was not primary any more")
    run.step(name, "resync", site=target.site)
    requested = datetime.now(UTC)
    # A resync request times out while the copy's lock changes hands, or while a client that
    # died holding it (a demote left running on a lost source) still watches it, as right after
    # a lost source comes back (docs/design/taking-locks.md); asked again it goes through. A
    # request is a flag, so asking again is safe; a target that is gone fails every try alike.
    for attempt in Retrying(
        retry=retry_if_exception_type(OperationTimedOut),
        stop=stop_after_delay(RESYNC_REQUEST_WITHIN_S),
        wait=wait_fixed(2),
        before_sleep=lambda state: run.journal.write(
            "resync-asked-again",
            volume=name,
            site=target.site,
            error=str(state.outcome.exception() if state.outcome else ""),
        ),
        reraise=True,
    ):
        with attempt:
            run.lock_held()
            try:
                target.resync(name)
            except ImageNotFound:
                # The copy was there when this step began (read above): a request, this one or
                # one that timed out, went through and rbd-mirror removed the copy to re-copy
                # it. The wait below sees it back, or says it is not.
                run.journal.write("resync-under-way", volume=name, site=target.site)
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
            # Deleted to be copied anew, as a resync does; a copy removed by hand reads the
            # same, so the timeout's message names both.
            state, restarted = "not found: being re-copied, or removed", True
        time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
    return (
        f"the resync on {target.site} did not finish within {run.options.resync_timeout:g}s "
        f"(last: {state}); it is still primary on {run.sites.source_id}: run failback again "
        "later, or raise --resync-timeout"
    )


def _promote_when_propagated(run: Run, name: str, deadline: float) -> None:
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
            # Not before the copy has replayed the peer since it demoted itself (both modes):
            # Ceph would promote it at once without the peer's newest writes.
            target.promote(name, only_if_replayed=True)
    run.step(name, "promoted", site=target.site)


def _roll_back(
    run: Run, name: str, why: str, outcome: Callable[..., VolumeOutcome]
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
        run.declare_source_lost(exc)
        forced = force_promote(run, name, outcome)
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
