"""The drill use case: each backend's copies compared with their primaries, touching nothing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from rbdfail.config import Config, Connect, Deployment
from rbdfail.drill import (
    DEFAULT_SAMPLES,
    FULL_TIMEOUT,
    DrillObserver,
    DrillReport,
    DrillRequest,
    run_drill,
)
from rbdfail.fanout import RunsByBackend, over_backends


class ClosingDrillObserver(DrillObserver, Protocol):
    def close(self) -> None:
        """The backend's drill has ended, however it did."""


@dataclass(frozen=True)
class DrillOptions:
    """What the operator asked; None: the config's (shared by every backend)."""

    target: str | None = None
    images: tuple[str, ...] = ()
    full: bool = False
    samples: int | None = None
    exec_command: str | None = None
    exec_timeout: float = 600.0
    volume_timeout: float | None = None
    connect_timeout: float | None = None
    concurrency: int | None = None


@dataclass(frozen=True)
class DrillOfBackends(RunsByBackend[DrillReport]):
    @property
    def calls_left_running(self) -> int:
        return sum(report.calls_left_running for _, report in self.parts)


# A drill reads data on both sites, work rather than latency: at most this many volumes at once
# unless --concurrency says otherwise (the switch's `concurrency` is sized for metadata calls).
DRILL_CONCURRENCY = 32


def drill_request(deployment: Deployment, options: DrillOptions) -> DrillRequest:
    config = deployment.backends[0]  # the settings read here are shared by every backend
    full = options.full
    return DrillRequest(
        target=options.target,
        names=options.images,
        full=full,
        samples=options.samples or DEFAULT_SAMPLES,
        exec_command=options.exec_command,
        exec_timeout=options.exec_timeout,
        concurrency=options.concurrency or min(config.concurrency, DRILL_CONCURRENCY),
        connect_timeout=options.connect_timeout or config.replication_connect_timeout,
        volume_timeout=options.volume_timeout or (FULL_TIMEOUT if full else config.volume_timeout),
    )


def drill_deployment(
    deployment: Deployment,
    options: DrillOptions,
    connect: Connect,
    observer: Callable[[], ClosingDrillObserver],
) -> DrillOfBackends:
    """Drill each backend, one after the other (a drill is no race), each with an observer of
    its own; Ctrl-C stops before the next one."""
    request = drill_request(deployment, options)

    def one(config: Config) -> DrillReport:
        progress = observer()
        try:
            return run_drill(config, request, connect, progress)
        finally:
            progress.close()

    done = over_backends(deployment.backends, one, stop_after=lambda report: report.interrupted)
    return DrillOfBackends(deployment.several, done.results())
