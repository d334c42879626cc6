"""Where every volume is and how its replication does: status (and its metrics), check."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from rbdfail.cli.base import (
    AppContext,
    Seconds,
    by_backend_json,
    emit_json,
    json_option,
    main,
    show_by_backend,
)
from rbdfail.errors import ExitCode
from rbdfail.limits import MAX_LAG_SECONDS

if TYPE_CHECKING:
    from rbdfail.app.status import StatusOfBackends
    from rbdfail.config import Config
    from rbdfail.status import StatusReport


@main.command()
@click.argument("images", nargs=-1)
@click.option(
    "--watch",
    type=Seconds(1),
    default=None,
    metavar="SECONDS",
    help="Refresh every SECONDS until Ctrl-C (with --json: one document per line).",
)
@click.option(
    "--prometheus",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    callback=lambda ctx, param, path: _writable_place(path),
    metavar="FILE",
    help="Also write the figures to FILE in Prometheus' text format, replaced atomically "
    "(for node_exporter's textfile collector; with --watch, at every refresh).",
)
@click.option(
    "--users",
    "with_users",
    is_flag=True,
    help="Also list who has each primary open (a call per volume; always done for the "
    "IMAGEs named).",
)
@json_option
@click.pass_obj
def status(
    app: AppContext,
    images: tuple[str, ...],
    watch: float | None,
    prometheus: Path | None,
    with_users: bool,
    as_json: bool,
) -> None:
    """Where every volume is primary, and how its replication is doing on each site.

    Every site is read at once, in one pass per pool, within the connect timeout: an
    unreachable site is shown as such and the others are still shown in full. `primary` is
    a backend id, `none`, `split-brain` or `unknown`; RPO is how many seconds of writes a
    failover now would lose (≤ at most, ~ estimated, ≥ at least; unknown is never 0), from
    what the copy's rbd-mirror last reported (about every 30 s); schedule is the type's
    mirror-snapshot schedule on the primary (`stopped` when missing or silent for 3
    intervals); users, who has the primary open (rbd-mirror aside) with --users or IMAGEs.

    \b
    Examples:
      rbdfail status
      rbdfail status db-orders --json | jq '.volumes[0].primary_site'
      rbdfail status --watch 5
      rbdfail status --users --json | jq '.volumes[] | select(.users != [])'
      rbdfail status --watch 60 --prometheus /var/lib/node_exporter/rbdfail.prom

    Exit 0 when everything is healthy, 3 when something needs attention (listed); with
    --watch, as of the last refresh.
    """
    from rbdfail import render
    from rbdfail.app.status import StatusRequest, read_status

    request = StatusRequest(images, with_users)

    def show() -> StatusOfBackends:
        read_now = read_status(app.deployment(), request, app.connect)
        if prometheus is not None:
            _write_metrics(read_now.parts, prometheus, read_now.taken_at, read_now.drills)
        if as_json:
            document = by_backend_json(
                read_now.parts, read_now.several, lambda report: report.to_json()
            )
            document["drills"] = read_now.drills  # issue 16: last successes
            click.echo(json.dumps(document, default=str, indent=None if watch else 2))
        else:
            if watch:
                render.stdout.clear()
                render.stdout.print(f"every {watch:g}s, {time.strftime('%H:%M:%S')} (Ctrl-C ends)")
            show_by_backend(read_now.parts, read_now.several, render.status_table)
        return read_now

    last = show()
    try:
        while watch:
            time.sleep(watch)
            last = show()
    except KeyboardInterrupt:  # the way to end --watch: not an error
        pass
    if not last.healthy:
        sys.exit(ExitCode.PARTIAL)


def _writable_place(path: Path | None) -> Path | None:
    """Refuse a file that could not be written before any site is read."""
    if path is not None and not os.access(path.parent, os.W_OK | os.X_OK):
        raise click.BadParameter(
            f"{path.parent} is not a directory this user may write in", param_hint="--prometheus"
        )
    return path


def _write_metrics(
    reports: list[tuple[Config, StatusReport]],
    path: Path,
    taken_at: float,
    drills: dict[str, dict[str, Any]],
) -> None:
    from rbdfail.errors import RbdfailError
    from rbdfail.metrics import write_textfile

    try:
        write_textfile(reports, path, taken_at, drills)
    except OSError as exc:
        raise RbdfailError(
            f"cannot write the Prometheus file {path}: {exc.strerror or exc}",
            hint="give a file in an existing directory that this user may write "
            "(node_exporter's --collector.textfile.directory)",
        ) from exc


@main.command()
@click.option(
    "--to",
    "target",
    metavar="BACKEND_ID",
    default=None,
    help="The site to fail over to. Default: a replication device when `default` is "
    "active, else `default` (a failback).",
)
@click.option(
    "--max-rpo",
    "--max-lag",
    "max_rpo",
    type=Seconds(0, MAX_LAG_SECONDS, zero_ok=True),
    default=None,
    metavar="SECONDS",
    help="Fail unless every copy provably holds the writes up to this many seconds ago "
    "(an unknown RPO fails). --max-lag is the old name.",
)
@click.option(
    "--require-idle",
    is_flag=True,
    help="Fail, not warn, when a client still has a source volume open.",
)
@json_option
@click.pass_obj
def check(
    app: AppContext,
    target: str | None,
    max_rpo: float | None,
    require_idle: bool,
    as_json: bool,
) -> None:
    """Pre-flight: may a failover to a site start now, and would it be clean?

    Each item is pass, warn or fail with a one-line reason: sites reachable (if only the
    source is not, a forced failover is still possible: warn), pool mode and peers on each
    site, the target's rbd-mirror daemon, every replicated volume mirrored with a copy on the
    target, no split-brain, no image in error, copies replaying, copies past their first sync,
    the RPO under --max-rpo, each primary's snapshot schedule there and firing (silent for 3
    intervals fails), and no client left with a source volume open (warn; fail with
    --require-idle).

    \b
    Examples:
      rbdfail check --to secondary --max-rpo 3600
      rbdfail check --json | jq '.items[] | select(.verdict != "pass")'

    Exit 0 ready (warnings allowed), 1 not ready.
    """
    from rbdfail import render
    from rbdfail.app.status import CheckRequest, check_deployment

    checked = check_deployment(
        app.deployment(), CheckRequest(target, max_rpo, require_idle), app.connect
    )
    if as_json:
        document = by_backend_json(
            checked.parts,
            checked.several,
            lambda part: {
                "target": part.target,
                "ready": part.ready,
                "items": [item.to_json() for item in part.items],
            },
        )
        emit_json({"ready": checked.ready, **document} if checked.several else document)
    else:
        show_by_backend(
            checked.parts, checked.several, lambda part: render.check_items(part.target, part.items)
        )
    if not checked.ready:
        sys.exit(ExitCode.FAILED)
