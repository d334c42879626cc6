"""The use cases that read every site and judge: status and check."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from rbdfail.app.pools import remember_site_listing
from rbdfail.check import CheckItem, ready, run_checks
from rbdfail.config import Config, Connect, Deployment
from rbdfail.fanout import over_backends
from rbdfail.state import read_drill, read_state
from rbdfail.status import StatusReport, gather


# ---- status -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class StatusRequest:
    images: tuple[str, ...] = ()  # none: every volume
    with_users: bool = False  # always done for the images named


@dataclass(frozen=True)
class StatusOfBackends:
    """Every backend's status, read at one time."""

    several: bool  # the file's backends selected: the shape of the output
    parts: list[tuple[Config, StatusReport]]
    taken_at: float
    drills: dict[str, dict[str, Any]]  # each volume's last successful drill (issue 16)

    @property
    def healthy(self) -> bool:
        return not any(report.problems for _, report in self.parts)


def read_status(
    deployment: Deployment, request: StatusRequest, connect: Connect
) -> StatusOfBackends:
    """Every backend's sites at once; the active site's full listing is kept for a failover that
    finds it lost."""

    def read(config: Config) -> StatusReport:
        report = gather(
            config,
            read_state(config.state_dir, config.state_scope),
            connect,
            request.images,
            with_users=request.with_users or bool(request.images),
        )
        backend = report.sites[config.backend.backend_id]
        if backend.reachable and not request.images:
            remember_site_listing(config, backend.backend_id, backend.volumes)
        return report

    taken_at = time.time()
    parts = over_backends(deployment.backends, read, at_once=True).results()
    drills = read_drill(deployment.backends[0].state_dir)
    return StatusOfBackends(deployment.several, parts, taken_at, drills)


# ---- check ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CheckRequest:
    target: str | None = None  # none: a replication device when `default` is active, else it
    max_rpo: float | None = None
    require_idle: bool = False


@dataclass(frozen=True)
class CheckPart:
    target: str
    items: list[CheckItem]

    @property
    def ready(self) -> bool:
        return ready(self.items)


@dataclass(frozen=True)
class CheckOfBackends:
    several: bool  # the file's backends selected, not those checked: the shape of the output
    parts: list[tuple[Config, CheckPart]]

    @property
    def ready(self) -> bool:
        return all(part.ready for _, part in self.parts)


def check_deployment(
    deployment: Deployment, request: CheckRequest, connect: Connect
) -> CheckOfBackends:
    """Pre-flight of a failover to the target, for each backend it would move."""
    backends = deployment.backends
    target = request.target
    if target is not None and deployment.several:
        # As a failover to it does: the backends that replicate to the target (none: named).
        having = [b for b in backends if target in (s.backend_id for s in b.sites)]
        backends = tuple(having) or backends[:1]
    states = {
        config.backend_name: read_state(config.state_dir, config.state_scope) for config in backends
    }
    targets = {}
    for config in backends:
        chosen = target
        if chosen is None:
            default = config.backend.backend_id
            active = states[config.backend_name].active_backend
            chosen = config.replication_devices[0].backend_id if active == default else default
        config.site(chosen)  # an unknown id is a usage error, named, before any connection
        targets[config.backend_name] = chosen

    def check_one(config: Config) -> CheckPart:
        report = gather(config, states[config.backend_name], connect, with_users=True)
        backend = report.sites[config.backend.backend_id]
        if backend.reachable:
            remember_site_listing(config, backend.backend_id, backend.volumes)
        to = targets[config.backend_name]
        return CheckPart(to, run_checks(report, to, request.max_rpo, request.require_idle))

    parts = over_backends(backends, check_one, at_once=True).results()
    return CheckOfBackends(deployment.several, parts)
