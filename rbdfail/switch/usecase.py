"""One switch, failover or failback, from the operator's request to its report.

The one use case the CLI calls and the tests run: connect to both sites, open the journal,
take the lock, read the sites, plan, ask for confirmation, execute, release, close. Whatever
happens in between, the lock is released and the connections are closed.

A state dir that cannot be read does not stop a switch, which plans from what the sites say:
an unusable state.json is taken as "no failover ran" (the backend `default` active, no status
kept: volumes marked `error` get `available` to restore) and set aside for a post-mortem
before the run replaces it; an unusable inventory.json or journal line is done without. The
plan says each of these.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from rbdfail.config import Config, Connect
from rbdfail.errors import StateCorrupt
from rbdfail.state import Journal, State, journal_damage, read_inventory, read_state, set_aside
from rbdfail.switch.engine import execute
from rbdfail.switch.history import forced_on, unfinished_run
from rbdfail.switch.lock import SwitchLock
from rbdfail.switch.model import (
    Observer,
    Operation,
    Silent,
    SwitchPlan,
    SwitchReport,
    SwitchRequest,
    SwitchResult,
)
from rbdfail.switch.plan_failback import plan_failback
from rbdfail.switch.plan_failover import plan_failover
from rbdfail.switch.plan_upkeep import with_upkeep
from rbdfail.switch.sites import (
    Sites,
    connect_failback_sites,
    connect_sites,
    read_for_failback,
    read_for_failover,
)
from rbdfail.workers import CallSlots


def run_switch(
    config: Config,
    request: SwitchRequest,
    *,
    connect: Connect,
    confirm: Callable[[SwitchPlan], bool] = lambda plan: True,
    observer: Observer | None = None,
) -> SwitchResult:
    """Plan the switch, and unless it is a dry run or `confirm(plan)` says no, carry it out.

    Raises TargetUnreachable before anything changed, and LockedByAnotherRun when another
    failover or failback holds a site's lock.
    """
    observer = observer or Silent()
    prepared = prepare_switch(config, request, connect, observer)
    try:
        if request.dry_run or not confirm(prepared.plan):
            return SwitchResult(prepared.plan, None)
        observer.started(prepared.plan)
        try:
            prepared.execute(observer)
        finally:
            observer.ended()
    finally:
        prepared.close()
    return SwitchResult(prepared.plan, prepared.report)


@dataclass
class PreparedSwitch:
    """One backend's switch, connected, locked (unless a dry run) and planned: nothing has
    changed yet. `close` releases the lock and the connections, whatever happened."""

    config: Config
    request: SwitchRequest
    sites: Sites
    state: State
    plan: SwitchPlan
    journal: Journal | None  # None: a dry run
    lock: SwitchLock | None
    corrupt_state: bool
    report: SwitchReport | None = None

    def execute(
        self,
        observer: Observer,
        shared_slots: CallSlots | None = None,
        stop: threading.Event | None = None,
    ) -> SwitchReport:
        assert self.journal is not None and self.lock is not None, "a dry run is not executed"
        if self.corrupt_state and (kept := set_aside(self.config.state_dir, self.journal.run_id)):
            observer.note(f"the unusable state.json is kept as {kept}")
        report = execute(
            self.plan,
            self.sites,
            self.state,
            self.request.options,
            self.journal,
            self.config,
            observer,
            lock_held=self.lock.check,
            shared_slots=shared_slots,
            stop=stop,
        )
        self.report = replace(report, journal_error=self.journal.problem())
        return self.report

    def close(self) -> None:
        report = self.report
        source_lost = report is not None and report.primary_lost is not None
        try:
            if self.lock is not None:
                self.lock.release(source_lost=source_lost)
        finally:
            # A call given up on is still inside librbd: shutting its connection down under
            # it could crash the process. The process exit ends it instead.
            if report is None or report.calls_left_running == 0:
                self.sites.close()


def prepare_switch(
    config: Config, request: SwitchRequest, connect: Connect, observer: Observer
) -> PreparedSwitch:
    """Connect to both sites, take the lock (unless a dry run), read the sites and plan."""
    warnings: list[str] = []
    corrupt_state = False
    try:
        state = read_state(config.state_dir, config.state_scope)
    except StateCorrupt as exc:
        state, corrupt_state = State(), True
        warnings.append(
            f"{exc}: planned from the sites alone, as if no failover had run "
            f"({state.active_backend} active, no status kept: a volume marked error gets "
            "`available` to restore)"
        )
    for warning in warnings:
        observer.note(warning)
    sites = _connect(config, state, request, connect, observer)
    lock = journal = None
    try:
        if not request.dry_run:
            run_id = new_run_id()
            # An unusable state dir fails here, before anything changed.
            journal = Journal(config.state_dir, run_id, config.state_scope)
            lock = SwitchLock(sites, run_id, f"{request.operation} to {sites.target.site}")
            lock.acquire(observer.note)
        plan = _plan(config, request, sites, warnings)
    except BaseException:
        try:
            if lock is not None:
                lock.release(source_lost=False)
        finally:
            sites.close()
        raise
    plan = replace(
        plan,
        breaks_locks_after=request.options.break_locks_after,
        takes_daemon_out_s=None
        if request.options.break_locks_after is None
        else request.options.daemon_out_s,
        warnings=(*warnings, *plan.warnings),
    )
    return PreparedSwitch(config, request, sites, state, plan, journal, lock, corrupt_state)


def _connect(
    config: Config, state: State, request: SwitchRequest, connect: Connect, observer: Observer
) -> Sites:
    timeout = request.options.connect_timeout
    if request.operation == Operation.FAILBACK:
        observer.note(
            f"connecting to {config.backend.backend_id} and probing {state.active_backend} "
            f"(up to {timeout:g}s)"
        )
        sites = connect_failback_sites(config, state, connect, timeout)
    else:
        assert request.target is not None, "a failover names its target"
        observer.note(
            f"connecting to {request.target} and probing {config.backend.backend_id} "
            f"(up to {timeout:g}s)"
        )
        sites = connect_sites(config, state, request.target, connect, timeout)
    if sites.source_error is not None:
        observer.note(f"{sites.source_id} is unreachable: {sites.source_error.reason}")
    return sites


def _plan(config: Config, request: SwitchRequest, sites: Sites, warnings: list[str]) -> SwitchPlan:
    """Read what both sites say now, then plan from that alone; what the state dir could not
    tell goes to `warnings`."""
    if damage := journal_damage(config.state_dir):
        warnings.append(damage)
    resumes = unfinished_run(config.state_dir, sites.target.site, config.state_scope)
    if request.operation == Operation.FAILBACK:
        said = read_for_failback(config, sites, request.read_users or request.require_idle)
        forced = forced_on(
            config.state_dir, said.source, config.backend.backend_id, config.state_scope
        )
        plan = plan_failback(said, forced, request.resync, resumes)
        return with_upkeep(plan, said, request.require_idle)
    said = read_for_failover(config, sites, request.read_users or request.require_idle)
    try:
        inventory = read_inventory(config.state_dir, config.state_scope)
    except StateCorrupt as exc:
        inventory = None
        if not said.source_reachable:  # only then is it needed
            warnings.append(f"{exc}: volumes only on {said.source} cannot be marked error")
    return with_upkeep(plan_failover(config, said, inventory, resumes), said, request.require_idle)


def new_run_id() -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
