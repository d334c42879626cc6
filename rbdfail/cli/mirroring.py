"""Per-image mirroring: enable-mirroring, disable-mirroring."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from rbdfail.cli.base import (
    AppContext,
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
    from rbdfail.app.mirroring import MirroringRequest


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
    from rbdfail.app.mirroring import ENABLE, MirroringRequest

    _per_image_mirroring(
        app, MirroringRequest(ENABLE, images, site_id, dry_run, concurrency), as_json
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
    from rbdfail.app.mirroring import DISABLE, MirroringRequest

    _per_image_mirroring(
        app, MirroringRequest(DISABLE, images, site_id, dry_run, concurrency), as_json
    )


def _per_image_mirroring(app: AppContext, request: MirroringRequest, as_json: bool) -> None:
    """Either way: call the use case, show the plan or the reports, exit with a code."""
    from rbdfail import render
    from rbdfail.app.mirroring import per_image_mirroring

    done = per_image_mirroring(app.deployment(), request, app.connect, render.VolumeProgress)
    if as_json:
        emit_json(by_backend_json(done.parts, done.several, lambda report: report.to_json()))
    else:
        show_by_backend(done.parts, done.several, render.mirroring_report)
    if done.interrupted:
        sys.exit(ExitCode.INTERRUPTED)
    if not done.complete and not request.dry_run:
        sys.exit(ExitCode.PARTIAL)
