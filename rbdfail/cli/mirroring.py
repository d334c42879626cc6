"""Per-image mirroring: enable-mirroring, disable-mirroring."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from rbdfail.cli.base import (
    AppContext,
    acting_site,
    by_backend_json,
    concurrency_option,
    dry_run_option,
    emit_json,
    json_option,
    main,
    show_by_backend,
    site_option,
)
from rbdfail.errors import ExitCode

if TYPE_CHECKING:
    from rbdfail.cluster import Cluster
    from rbdfail.mirroring import Report, Step, VolumeResult
    from rbdfail.volumes import Volume


# ---- per-image mirroring ----------------------------------------------------------------------
@main.command("enable-mirroring")
@click.argument("images", nargs=-1)
@site_option
@dry_run_option
@concurrency_option
@json_option
@click.pass_obj
def enable_mirroring(
    app: AppContext,
    images: tuple[str, ...],
    site_id: str | None,
    dry_run: bool,
    concurrency: int | None,
    as_json: bool,
) -> None:
    """Enable per-image mirroring for every replicated volume, or the IMAGES named, on the
    active site (the backend, or where the last failover went; --site picks another).

    Each volume is mirrored in its type's mode. Journal mode needs the exclusive-lock and
    journaling features: the missing ones are added and recorded on the image, so that
    disable-mirroring restores it as it was. A snapshot-mode type with `snapshot_interval`
    gets a mirror-snapshot schedule. Volumes already mirrored as their type says are left
    alone; mirrored otherwise (other mode, or a type that is not replicated) is reported as a
    mismatch and not changed. Volumes are enabled concurrently.

    \b
    Examples:
      rbdfail enable-mirroring --dry-run
      rbdfail enable-mirroring
      rbdfail enable-mirroring db-orders db-users --json

    Exit 0 when every volume is mirrored as its type says, 3 when some failed or mismatch.
    """
    from rbdfail import mirroring

    _per_image_mirroring(
        app,
        "enable-mirroring",
        lambda volumes: mirroring.plan_enable(volumes, images),
        mirroring.enable,
        site_id,
        dry_run,
        concurrency,
        as_json,
    )


@main.command("disable-mirroring")
@click.argument("images", nargs=-1, required=True)
@site_option
@dry_run_option
@concurrency_option
@json_option
@click.pass_obj
def disable_mirroring(
    app: AppContext,
    images: tuple[str, ...],
    site_id: str | None,
    dry_run: bool,
    concurrency: int | None,
    as_json: bool,
) -> None:
    """Disable mirroring of the IMAGES named, removing only the features rbdfail added.

    Runs on the active site (--site picks another), where the images must be primary; the
    peer site deletes its copies. Snapshot schedules of the images are removed too.

    \b
    Example:
      rbdfail disable-mirroring db-scratch --dry-run
      rbdfail disable-mirroring db-scratch
    """
    from rbdfail import mirroring

    _per_image_mirroring(
        app,
        "disable-mirroring",
        lambda volumes: mirroring.plan_disable(volumes, images),
        mirroring.disable,
        site_id,
        dry_run,
        concurrency,
        as_json,
    )


def _per_image_mirroring(
    app: AppContext,
    operation: str,
    plan: Callable[[list[Volume]], list[Step]],
    apply: Callable[[Cluster, list[Step], int, Callable[[VolumeResult], None]], Report],
    site_id: str | None,
    dry_run: bool,
    concurrency: int | None,
    as_json: bool,
) -> None:
    """Connect to the acting site, take its inventory, plan, then show the plan or apply it."""
    from rbdfail import mirroring, render
    from rbdfail.volumes import list_volumes

    # Disabling names images: in a file of several backends, which pool's must be said.
    backends = app.backends() if operation == "enable-mirroring" else (app.config(operation),)
    reports = []
    for config in backends:
        cluster = app.connect(acting_site(config, site_id), config.replication_connect_timeout)
        try:
            steps = plan(list_volumes(cluster, config))
            if dry_run:
                report = mirroring.dry_run_report(operation, cluster.site, steps)
            else:
                with render.VolumeProgress(operation, sum(s.todo for s in steps)) as progress:
                    report = apply(cluster, steps, concurrency or config.concurrency, progress)
        finally:
            cluster.close()
        reports.append((config, report))
        if report.interrupted:
            break  # Ctrl-C: not the next backend either
    several = len(backends) > 1
    if as_json:
        emit_json(by_backend_json(reports, several, lambda report: report.to_json()))
    else:
        show_by_backend(reports, several, render.mirroring_report)
    if any(report.interrupted for _, report in reports):
        sys.exit(ExitCode.INTERRUPTED)
    if any(report.result != "complete" for _, report in reports) and not dry_run:
        sys.exit(ExitCode.PARTIAL)
