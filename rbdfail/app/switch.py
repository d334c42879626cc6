"""The switch use case, failover or failback, over the deployment's backends."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from rbdfail.cinder.steps import CinderSteps, steps_for
from rbdfail.config import Connect, Deployment
from rbdfail.switch.deployment import SwitchOfBackends, switch_backends
from rbdfail.switch.model import Observer, Operation, Options, SwitchRequest, options_for


@dataclass(frozen=True)
class SwitchOrder:
    """What the operator asked for; a None setting is the config's (shared by every backend)."""

    operation: Operation
    target: str | None = None  # failover: the replication device; failback: `default`
    dry_run: bool = False
    resync: tuple[str, ...] = ()
    require_idle: bool = False
    read_users: bool = True  # a plan someone reads before it runs
    force: bool = False
    break_locks_after: float | None = Options.break_locks_after  # None: never
    volume_timeout: float | None = None
    connect_timeout: float | None = None
    resync_timeout: float | None = None
    concurrency: int | None = None
    call_trace: Path | None = None


def switch_request(deployment: Deployment, order: SwitchOrder) -> SwitchRequest:
    options = options_for(
        deployment.backends[0],  # the settings these are read from are shared by every backend
        connect_timeout=order.connect_timeout,
        volume_timeout=order.volume_timeout,
        concurrency=order.concurrency,
        force=order.force,
        break_locks_after=order.break_locks_after,
        resync_timeout=order.resync_timeout,
    )
    return SwitchRequest(
        order.operation,
        replace(options, call_trace=order.call_trace),
        order.target,
        order.dry_run,
        order.resync,
        require_idle=order.require_idle,
        read_users=order.read_users,
    )


@dataclass(frozen=True)
class SwitchDone:
    """The switch's plans or reports (they say whether calls were left running: see
    cli.base.run), and what Cinder and Nova need now that volumes moved."""

    switch: SwitchOfBackends
    cinder_steps: CinderSteps  # none on a dry run, or when nothing was carried out


def switch(
    deployment: Deployment,
    order: SwitchOrder,
    connect: Connect,
    confirm: Callable[[SwitchOfBackends], bool],
    observer: Observer,
) -> SwitchDone:
    """Plan the switch of every backend, and unless it is a dry run or `confirm` says no, carry
    it out."""
    done = switch_backends(
        deployment.backends,
        switch_request(deployment, order),
        connect=connect,
        confirm=confirm,
        observer=observer,
    )
    by_name = {config.backend_name: config for config in deployment.backends}
    moved = [
        (by_name[part.backend], part.report)
        for part in done.parts
        if part.report is not None and part.backend in by_name
    ]
    return SwitchDone(done, steps_for(moved))
