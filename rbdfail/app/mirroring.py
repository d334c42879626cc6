"""The per-image mirroring use case: enable-mirroring, disable-mirroring."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from rbdfail import mirroring
from rbdfail.app.pools import acting_site
from rbdfail.config import Config, Connect, Deployment
from rbdfail.fanout import RunsByBackend, over_backends
from rbdfail.mirroring import Report, Step, VolumeResult
from rbdfail.volumes import Volume, list_volumes

ENABLE, DISABLE = "enable-mirroring", "disable-mirroring"

# The progress of one backend's volumes: made with (operation, volumes to do), entered while
# they are worked on, called with each volume's result.
Progress = Callable[[str, int], AbstractContextManager[Callable[[VolumeResult], None]]]


@dataclass(frozen=True)
class MirroringRequest:
    operation: str  # ENABLE or DISABLE
    images: tuple[str, ...] = ()  # enable: none is every replicated volume
    site_id: str | None = None  # none: each backend's active site
    dry_run: bool = False
    concurrency: int | None = None  # none: the config's


MirroringOfBackends = RunsByBackend[Report]


def per_image_mirroring(
    deployment: Deployment, request: MirroringRequest, connect: Connect, progress: Progress
) -> MirroringOfBackends:
    """On each backend's acting site: take its inventory, plan, then apply the plan unless a
    dry run. Backends one after the other; Ctrl-C stops before the next one."""
    enabling = request.operation == ENABLE
    # Disabling names images, and a name is only unique within a pool: the backend must be said.
    backends = deployment.backends if enabling else (deployment.only(None, request.operation),)
    apply = mirroring.enable if enabling else mirroring.disable

    def plan(volumes: list[Volume]) -> list[Step]:
        if enabling:
            return mirroring.plan_enable(volumes, request.images)
        return mirroring.plan_disable(volumes, request.images)

    def one(config: Config) -> Report:
        cluster = connect(acting_site(config, request.site_id), config.replication_connect_timeout)
        try:
            steps = plan(list_volumes(cluster, config))
            if request.dry_run:
                return mirroring.dry_run_report(request.operation, cluster.site, steps)
            with progress(request.operation, sum(s.todo for s in steps)) as on_result:
                return apply(cluster, steps, request.concurrency or config.concurrency, on_result)
        finally:
            cluster.close()

    done = over_backends(backends, one, stop_after=lambda report: report.interrupted)
    return RunsByBackend(deployment.several, done.results())
