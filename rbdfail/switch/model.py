"""What a switch (failover or failback) is made of: its request, plans, outcomes and report.

Plain values, shared by the planners, the engine, the use case and the renderer: nothing here
talks to a site or writes a file.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from rbdfail.config import Config
from rbdfail.limits import OSD_OP_FLOOR_S
from rbdfail.rpo import Rpo
from rbdfail.workers import RunResult


class Operation(StrEnum):
    """Which way a switch goes: away from the backend, or back home to it."""

    FAILOVER = "failover"
    FAILBACK = "failback"


class Plan(StrEnum):
    """What failover will do to one volume, decided before anything is touched."""

    DEMOTE_PROMOTE = "demote+promote"
    PROMOTE = "promote"  # demoted already (an earlier run was cut off): promote only
    FORCE_PROMOTE = "force-promote"  # the source is unreachable
    NOTHING = "nothing"  # primary on the target already
    MARK_ERROR = "mark-error"  # not replicated: becomes `error`, its previous status kept
    RESTORE = "restore"  # failback of a volume that did not move: its status comes back
    RESYNC = "resync+switch"  # split brain after a forced failover: resync the stale copy first
    CANNOT = "cannot"  # replicated by type, but cannot be failed over (the reason says why)


class Action(StrEnum):
    """What was done to one volume (the `action` of the JSON report)."""

    DEMOTED_PROMOTED = "demoted+promoted"
    RESYNCED_PROMOTED = "resynced+promoted"
    FORCE_PROMOTED = "force-promoted"
    ALREADY_PRIMARY = "already-primary"
    NOT_REPLICATED = "not-replicated"
    RESTORED = "restored"  # failback: not replicated, its status restored
    FAILED = "failed"
    NOT_STARTED = "not-started"  # Ctrl-C before its turn: untouched

    @property
    def succeeded(self) -> bool:
        return self in (
            Action.DEMOTED_PROMOTED,
            Action.RESYNCED_PROMOTED,
            Action.FORCE_PROMOTED,
            Action.ALREADY_PRIMARY,
        )

    @property
    def moves(self) -> bool:
        """False for the volumes that are not replicated: they only change status."""
        return self not in (Action.NOT_REPLICATED, Action.RESTORED)


@dataclass(frozen=True)
class PlannedVolume:
    name: str
    volume_type: str
    plan: Plan
    reason: str
    # The mirror-snapshot schedule to add on the target once it is primary there (its type
    # asks for one and the target has none); None: nothing to add.
    schedule: str | None = None
    users: tuple[str, ...] = ()  # clients with it open on the source, rbd-mirror aside

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "volume_type": self.volume_type,
            "plan": self.plan,
            "reason": self.reason,
            "add_schedule": self.schedule,
            "users": list(self.users),
        }


@dataclass(frozen=True)
class VolumeOutcome:
    name: str
    action: Action
    status: str  # the volume's status afterwards, as state.json records it
    error: str | None
    duration_s: float
    detail: str = ""  # what happened, for an operator (e.g. "rolled back to default")
    hint: str | None = None  # with an error: what to do next, when the error says
    # Force-promoted: the point in time the copy serves, read on the target before the promote.
    rpo: Rpo | None = None

    def to_json(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "name": self.name,
            "action": self.action,
            "status": self.status,
            "error": self.error,
            "hint": self.hint,
            "detail": self.detail,
            "duration_s": round(self.duration_s, 3),
        }
        if self.rpo is not None:
            found["rpo"] = self.rpo.to_json()
        return found


@dataclass(frozen=True)
class DaemonOut:
    """The target's rbd-mirror taken out of the way once, the source being lost: its
    connections that held the copies' locks, each address blocklisted for `expires_s`."""

    site: str
    clients: dict[str, str]  # client id -> address, as the copies' lock holders named them
    expires_s: int
    duration_s: float
    error: str | None = None  # why it was not done: the forced promotes then wait on hand-offs

    @property
    def addresses(self) -> list[str]:
        return sorted(set(self.clients.values()))

    def to_json(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "clients": sorted(self.clients),
            "addresses": self.addresses,
            "expires_s": self.expires_s,
            "duration_s": round(self.duration_s, 3),
            "error": self.error,
        }


@dataclass(frozen=True)
class SwitchPlan:
    source: str
    target: str
    source_reachable: bool
    source_error: str | None  # why the source is taken as lost from the start
    volumes: tuple[PlannedVolume, ...]
    resumes: str | None = None  # the id of the run this one finishes, if one was cut off
    inventory_taken_at: str | None = None  # when the lost source was last listed, if used
    operation: Operation = Operation.FAILOVER
    # Once the source is lost, a forced promote whose lock hand-off stalls this long takes
    # the copy's lock from the target's rbd-mirror (Options.break_locks_after); None: never.
    breaks_locks_after: float | None = None
    # Once the source is lost, the target's rbd-mirror is blocklisted this long, once, before
    # the forced promotes (forced.py take_daemon_out); None: never (--no-break-locks).
    takes_daemon_out_s: int | None = None
    # What the plan was made without: an unusable state.json, inventory.json or journal line.
    warnings: tuple[str, ...] = ()
    users_read: bool = False  # who has each source volume open was read (see plan_upkeep.py)

    @property
    def forced(self) -> bool:
        return any(v.plan == Plan.FORCE_PROMOTE for v in self.volumes)

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for volume in self.volumes:
            counts[volume.plan] = counts.get(volume.plan, 0) + 1
        return counts

    def to_json(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "source": self.source,
            "target": self.target,
            "source_reachable": self.source_reachable,
            "source_error": self.source_error,
            "resumes": self.resumes,
            "inventory_taken_at": self.inventory_taken_at,
            "breaks_locks_after": self.breaks_locks_after,
            "takes_daemon_out_s": self.takes_daemon_out_s,
            "warnings": list(self.warnings),
            "users_read": self.users_read,
            "counts": self.counts(),
            "volumes": [v.to_json() for v in self.volumes],
        }


@dataclass(frozen=True)
class SwitchReport:
    run_id: str
    plan: SwitchPlan
    volumes: tuple[VolumeOutcome, ...]
    duration_s: float
    primary_lost: str | None  # why the source was taken as lost, if it was
    interrupted: bool
    active_backend: str  # as state.json says now
    calls_left_running: int = 0  # given up on at their time limit, still inside librbd
    # The state dir failed under the run: what the journal and state.json could not record.
    journal_error: str | None = None
    state_error: str | None = None
    daemon_out: DaemonOut | None = None  # the target's rbd-mirror taken out, if it was

    @property
    def unrecorded(self) -> list[str]:
        """What could not be recorded, each with what it means; empty when all was."""
        said = [self.journal_error] if self.journal_error else []
        if self.state_error:
            said.append(
                f"{self.state_error}: it does not say that {self.active_backend} is the active "
                f"backend now (the volumes are where this report says). Once the state dir is "
                f"writable and no other run is running, run `rbdfail {self.plan.operation}"
                + ("" if self.plan.operation == Operation.FAILBACK else f" --to {self.plan.target}")
                + " --yes` again: it plans from the sites and writes it"
            )
        return said

    @property
    def forced(self) -> bool:
        return any(v.action == Action.FORCE_PROMOTED for v in self.volumes)

    @property
    def result(self) -> RunResult:
        """complete: every replicated volume is primary on the target; failed: none is."""
        replicated = [v for v in self.volumes if v.action.moves]
        good = sum(v.action.succeeded for v in replicated)
        if good == len(replicated) and not self.interrupted:
            return RunResult.COMPLETE
        return RunResult.FAILED if good == 0 else RunResult.PARTIAL

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for volume in self.volumes:
            counts[volume.action] = counts.get(volume.action, 0) + 1
        return counts

    @property
    def worst_rpo(self) -> VolumeOutcome | None:
        """The force-promoted volume whose copy serves the oldest point (an unknown one first:
        it may be the oldest of all); None when none was forced."""
        forced = [v for v in self.volumes if v.rpo is not None and v.action.succeeded]
        return max(
            forced,
            key=lambda v: float("inf") if v.rpo is None or v.rpo.seconds is None else v.rpo.seconds,
            default=None,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "operation": self.plan.operation,
            "target": self.plan.target,
            "source": self.plan.source,
            "result": self.result,
            "forced": self.forced,
            "duration_s": round(self.duration_s, 3),
            "run_id": self.run_id,
            "resumes": self.plan.resumes,
            "primary_lost": self.primary_lost,
            "interrupted": self.interrupted,
            "active_backend": self.active_backend,
            "warnings": list(self.plan.warnings),
            "journal_error": self.journal_error,
            "state_error": self.state_error,
            "daemon_out": self.daemon_out.to_json() if self.daemon_out else None,
            "counts": self.counts(),
            "volumes": [v.to_json() for v in self.volumes],
        }


@dataclass(frozen=True)
class Options:
    connect_timeout: float
    volume_timeout: float
    concurrency: int
    force: bool = False  # a demoted volume not promotable in time is forced, not rolled back
    # Once the source is lost, a forced promote that has not got the copy's lock from the
    # target's rbd-mirror after this many seconds takes it (forced.py LockTaker); None:
    # never. Longer than a healthy hand-off takes (docs/design/taking-locks.md).
    break_locks_after: float | None = 15.0
    # What a forced promote may take, the lock hand-off or a lock take included, on a loaded
    # site (docs/design/timeouts.md). Part of the allowance after a budget.
    forced_promote_s: float = 30.0
    resync_timeout: float = 900.0  # failback: a stale copy's re-copy, before its switch
    # Volumes in progress per call slot while the source answers: a clean switch spends most
    # of its time waiting for the demotion to reach the target, longer than a call takes, and
    # that wait holds no slot; with fewer per slot, late demotes queue behind earlier promotes
    # (docs/performance.md has the timings).
    volumes_per_slot: int = 8
    # Forced promotes in flight at once, outside the call slots: a forced promote is latency
    # (the lock hand-off), not work, so many at once cost about what one costs
    # (docs/design/taking-locks.md has the timings).
    forced_in_flight: int = 500
    # How long the target's rbd-mirror stays blocklisted once the source is lost: long
    # enough for every forced promote of a large run, short enough that the daemon comes back
    # for the failback by itself once its entry lapses (docs/design/taking-locks.md).
    daemon_out_s: int = 60
    call_trace: Path | None = None  # write every Ceph call's times there (a diagnostic)
    # How long a call to a site that died under the run takes to fail: its OSD op timeout.
    op_timeout_s: float = OSD_OP_FLOOR_S

    @property
    def hard_limit(self) -> float:
        """When a volume's work is given up on: its budget, then room for what follows a
        budget spent waiting (a roll-back's two calls, or a forced promote). Time spent
        queued for a call slot is added on top (`CallSlots.queued`). Only a call that hangs
        despite the timeouts reaches it.

        A roll-back's call to a source that died after every demote (so no demote failed to
        tell) fails only after the OSD op timeout, then the volume is forced: so the allowance
        is the larger of 2 connect timeouts and the OSD op timeout, or the volume is given up
        on just before it is forced (docs/design/timeouts.md).
        """
        after_budget = max(2 * self.connect_timeout, self.op_timeout_s)
        # A forced promote may wait out the lock's grace (before the promote, or after it, in
        # journal mode) on top of what the promote itself takes.
        forced = self.forced_promote_s + (self.break_locks_after or 0.0)
        return self.volume_timeout + after_budget + forced

    def limit_for(self, volume: PlannedVolume) -> float:
        return self.hard_limit + (self.resync_timeout if volume.plan == Plan.RESYNC else 0)


def options_for(
    config: Config,
    *,
    connect_timeout: float | None = None,
    volume_timeout: float | None = None,
    concurrency: int | None = None,
    force: bool = False,
    break_locks_after: float | None = Options.break_locks_after,
    resync_timeout: float | None = None,
) -> Options:
    """The run's options: what the operator gave on the command line, else the config's."""
    connect = connect_timeout or config.replication_connect_timeout
    return Options(
        connect_timeout=connect,
        volume_timeout=volume_timeout or config.volume_timeout,
        concurrency=concurrency or config.concurrency,
        force=force,
        break_locks_after=break_locks_after,
        resync_timeout=resync_timeout or Options.resync_timeout,
        op_timeout_s=max(OSD_OP_FLOOR_S, connect),  # as ceph.connect sets it
    )


class Observer(Protocol):
    """Progress of a switch; `step`, `finished` and `primary_lost` are called from worker
    threads."""

    def note(self, message: str) -> None:
        """What the switch is doing before volumes move (connecting, waiting for a lock)."""

    def started(self, plan: SwitchPlan) -> None:
        """The plan is confirmed: volumes start moving."""

    def step(self, name: str, step: str) -> None: ...

    def finished(self, outcome: VolumeOutcome) -> None: ...

    def primary_lost(self, reason: str) -> None: ...

    def ended(self) -> None:
        """No volume moves any more (also after Ctrl-C or an error)."""


class Silent:
    """An observer that ignores everything; subclass it to hear only some events."""

    def note(self, message: str) -> None:
        pass

    def started(self, plan: SwitchPlan) -> None:
        pass

    def step(self, name: str, step: str) -> None:
        pass

    def finished(self, outcome: VolumeOutcome) -> None:
        pass

    def primary_lost(self, reason: str) -> None:
        pass

    def ended(self) -> None:
        pass


@dataclass(frozen=True)
class SwitchRequest:
    """What the operator asked for: one switch, its direction, and how to run it."""

    operation: Operation
    options: Options
    target: str | None = None  # failover: the replication device; failback: always `default`
    dry_run: bool = False  # plan only: no lock, no journal, nothing changed
    resync: tuple[str, ...] = ()  # failback: also resync these if primary on both sites
    require_idle: bool = False  # a volume a client still has open on the source is not moved
    # Read who has each source volume open (a call per volume): for a plan someone reads first
    # (a dry run, a confirmation) and for --require-idle; a `--yes` run does without.
    read_users: bool = True


@dataclass(frozen=True)
class SwitchResult:
    """The plan, and the report when it was carried out (None: a dry run, or not confirmed)."""

    plan: SwitchPlan
    report: SwitchReport | None
