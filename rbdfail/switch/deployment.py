"""A switch of the deployment's backends: one plan, one confirmation, one report by backend.

Each backend (a pool, or a namespace of one, with its replication devices) is switched as
usecase.py switches one: its own connections, its own lock (on its pool), its own plan and
its part of state.json. What is shared is what the operator sees and the machine spends: the
plans are made at once and confirmed together, nothing moves until every backend is locked
and planned, the runs go at once and share one budget of Ceph calls (`concurrency`), and the
report groups the volumes by backend. A backend whose lock or target cannot be had stops the
whole switch before anything changed (exit 4 or 5, naming it). A deployment of one is that
backend's switch as usecase.py runs it, reported as a part of one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from typing import Any

from rbdfail.config import Config, Connect
from rbdfail.errors import RbdfailError
from rbdfail.fanout import over_backends
from rbdfail.switch.engine import write_trace
from rbdfail.switch.model import (
    Observer,
    Operation,
    PlannedVolume,
    Silent,
    SwitchPlan,
    SwitchReport,
    SwitchRequest,
    VolumeOutcome,
)
from rbdfail.switch.usecase import PreparedSwitch, prepare_switch, run_switch
from rbdfail.workers import CallSlots, CallTrace, RunResult


@dataclass(frozen=True)
class BackendPart:
    """One backend's plan, and its report once carried out."""

    backend: str
    where: str  # its pool, and namespace: "volumes-ssd", "volumes/tenants"
    plan: SwitchPlan
    report: SwitchReport | None = None

    def to_json(self) -> dict[str, Any]:
        done = self.report.to_json() if self.report else {"dry_run": True, **self.plan.to_json()}
        return {"backend": self.backend, "pool": self.where, **done}


@dataclass(frozen=True)
class SwitchOfBackends:
    """The plans (a dry run, or not confirmed), or the reports, of every backend switched."""

    operation: Operation
    target: str
    parts: tuple[BackendPart, ...]
    left_out: tuple[str, ...] = ()  # backends not switched, each with why
    # False: a deployment of one, whose switch reads as it always has (no backend named).
    several: bool = True

    @property
    def carried_out(self) -> bool:
        return all(part.report is not None for part in self.parts)

    @property
    def reports(self) -> list[SwitchReport]:
        return [part.report for part in self.parts if part.report is not None]

    @property
    def result(self) -> RunResult:
        """complete when every backend is; failed when none moved a volume."""
        results = {report.result for report in self.reports}
        if results == {RunResult.COMPLETE}:
            return RunResult.COMPLETE
        return RunResult.FAILED if results == {RunResult.FAILED} else RunResult.PARTIAL

    @property
    def interrupted(self) -> bool:
        return any(report.interrupted for report in self.reports)

    @property
    def unrecorded(self) -> list[str]:
        return [
            f"backend {part.backend}: {said}" if self.several else said
            for part in self.parts
            for said in (part.report.unrecorded if part.report else ())
        ]

    @property
    def calls_left_running(self) -> int:
        return sum(report.calls_left_running for report in self.reports)

    def to_json(self) -> dict[str, Any]:
        if not self.several:
            plan, report = self.parts[0].plan, self.parts[0].report
            return report.to_json() if report else {"dry_run": True, **plan.to_json()}
        document: dict[str, Any] = {"operation": self.operation, "target": self.target}
        if self.carried_out:
            document["result"] = self.result
            document["interrupted"] = self.interrupted
        else:
            document["dry_run"] = True
        document["left_out"] = list(self.left_out)
        document["backends"] = [part.to_json() for part in self.parts]
        return document


def switch_backends(
    configs: Sequence[Config],
    request: SwitchRequest,
    *,
    connect: Connect,
    confirm: Callable[[SwitchOfBackends], bool] = lambda plans: True,
    observer: Observer | None = None,
) -> SwitchOfBackends:
    """Plan every backend's switch at once, and unless it is a dry run or `confirm` says no,
    carry them all out at once. Raises (naming the backend) before anything changed when one
    backend's target is unreachable or its lock is held.

    A deployment of one is switched as usecase.py switches a backend: in this thread (Ctrl-C
    stops its run as it stops a single run), its notes, volumes and errors as they are."""
    if len(configs) == 1:
        return _switch_one(configs[0], request, connect, confirm, observer)
    observer = observer or Silent()
    chosen, left_out = _backends_for(configs, request)
    if not chosen:
        raise RbdfailError(
            f"no backend has a replication device {request.target!r}: " + "; ".join(left_out),
            hint="name a device the backends have (`rbdfail status` lists them)",
        )
    for why in left_out:
        observer.note(f"left out: {why}")

    def prepare(config: Config) -> PreparedSwitch:
        try:
            return prepare_switch(config, request, connect, _Scoped(observer, config))
        except RbdfailError as exc:
            exc.message = f"backend {config.backend_name!r}: {exc.message}"
            raise

    # Connected, locked and planned at once (one connect timeout in all); if one backend
    # cannot be, the others are released and nothing has changed.
    fanned = over_backends(chosen, prepare, at_once=True, undo=PreparedSwitch.close)
    prepared = [part for _, part in fanned.results(undo=PreparedSwitch.close)]
    try:
        switch = SwitchOfBackends(
            request.operation,
            prepared[0].plan.target,
            tuple(_part(p) for p in prepared),
            tuple(left_out),
        )
        if request.dry_run or not confirm(switch):
            return switch
        observer.started(_one_plan(prepared))
        try:
            reports = _execute_all(prepared, request, observer)
        finally:
            observer.ended()
    finally:
        for part in prepared:
            part.close()
    parts = zip(switch.parts, reports, strict=True)
    return replace(switch, parts=tuple(replace(part, report=report) for part, report in parts))


def _switch_one(
    config: Config,
    request: SwitchRequest,
    connect: Connect,
    confirm: Callable[[SwitchOfBackends], bool],
    observer: Observer | None,
) -> SwitchOfBackends:
    def alone(plan: SwitchPlan, report: SwitchReport | None = None) -> SwitchOfBackends:
        part = BackendPart(config.backend_name, config.backend.where, plan, report)
        return SwitchOfBackends(request.operation, plan.target, (part,), several=False)

    result = run_switch(
        config,
        request,
        connect=connect,
        confirm=lambda plan: confirm(alone(plan)),
        observer=observer,
    )
    return alone(result.plan, result.report)


def _part(prepared: PreparedSwitch) -> BackendPart:
    config = prepared.config
    return BackendPart(config.backend_name, config.backend.where, prepared.plan)


def _execute_all(
    prepared: Sequence[PreparedSwitch], request: SwitchRequest, observer: Observer
) -> list[SwitchReport]:
    """Every backend's run at once, a thread each, sharing the call slots; Ctrl-C (which only
    this thread gets) stops each run from starting more volumes, as it does a single run."""
    trace: list[CallTrace] | None = [] if request.options.call_trace else None
    slots = CallSlots(request.options.concurrency, trace=trace)
    stop = threading.Event()
    started = time.monotonic()
    with ThreadPoolExecutor(len(prepared)) as pool:
        futures = [
            pool.submit(p.execute, _Scoped(observer, p.config), slots, stop) for p in prepared
        ]
        while not all(future.done() for future in futures):
            try:
                wait(futures, timeout=0.5)
            except KeyboardInterrupt:
                if stop.is_set():
                    raise  # the second Ctrl-C: stop waiting, as a single run does
                stop.set()
    if request.options.call_trace and trace is not None:
        write_trace(request.options.call_trace, trace, started)  # every backend's calls
    return [future.result() for future in futures]


def _backends_for(
    configs: Sequence[Config], request: SwitchRequest
) -> tuple[list[Config], list[str]]:
    """The backends the switch moves, and those it leaves out with why: a failover moves the
    backends that replicate to its target."""
    if request.operation == Operation.FAILBACK or request.target is None:
        return list(configs), []
    chosen, left_out = [], []
    for config in configs:
        devices = [device.backend_id for device in config.replication_devices]
        if request.target in devices:
            chosen.append(config)
        else:
            left_out.append(
                f"backend {config.backend_name!r} replicates to {', '.join(devices)}, "
                f"not {request.target!r}"
            )
    return chosen, left_out


def _one_plan(prepared: Sequence[PreparedSwitch]) -> SwitchPlan:
    """The plans as one, volumes named pool/name, for the progress display."""
    volumes: list[PlannedVolume] = []
    for part in prepared:
        volumes += [replace(v, name=part.config.shown(v.name)) for v in part.plan.volumes]
    return replace(prepared[0].plan, volumes=tuple(volumes))


class _Scoped:
    """One backend's run seen through the observer of the whole switch: volumes named
    pool/name, notes prefixed with the backend; `started`/`ended` are the whole switch's."""

    def __init__(self, inner: Observer, config: Config) -> None:
        self.inner, self.config = inner, config

    def note(self, message: str) -> None:
        self.inner.note(f"{self.config.backend_name}: {message}")

    def started(self, plan: SwitchPlan) -> None:
        pass

    def step(self, name: str, step: str) -> None:
        self.inner.step(self.config.shown(name), step)

    def finished(self, outcome: VolumeOutcome) -> None:
        self.inner.finished(replace(outcome, name=self.config.shown(outcome.name)))

    def primary_lost(self, reason: str) -> None:
        self.inner.primary_lost(f"{self.config.backend_name}: {reason}")

    def ended(self) -> None:
        pass
