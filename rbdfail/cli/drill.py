"""drill: compare each copy with its primary at one point in time, disturbing nothing."""

from __future__ import annotations

import click

from rbdfail.cli.base import (
    AppContext,
    Seconds,
    by_backend_json,
    concurrency_option,
    connect_timeout_option,
    emit_json,
    json_option,
    leave,
    main,
    show_by_backend,
    stderr_progress,
)
from rbdfail.errors import ExitCode


# ---- drill (issue 16) -------------------------------------------------------------------------
@main.command()
@click.argument("images", nargs=-1)
@click.option(
    "--to",
    "target",
    metavar="BACKEND_ID",
    default=None,
    help="The site whose copies to drill. Default: the replication device (after a failover: "
    "`default`).",
)
@click.option(
    "--sample",
    "samples",
    type=click.IntRange(min=1, max=100000),
    default=None,
    metavar="N",
    help="Compare N random 64 KiB blocks per volume, beside its first, middle and last ones "
    "and those of up to N extents holding data (default 32).",
)
@click.option("--full", is_flag=True, help="Compare every extent of every volume (reads it all).")
@click.option(
    "--exec",
    "exec_command",
    metavar="CMD",
    default=None,
    help="Run CMD (through sh) for each volume compared, with the copy's details in its "
    "environment (RBDFAIL_DRILL_*); its exit code is reported. CMD must open the copy "
    "read-only.",
)
@click.option(
    "--exec-timeout",
    type=Seconds(1),
    default=600.0,
    show_default=True,
    metavar="SECONDS",
    help="How long CMD may run for one volume before it is ended.",
)
@click.option(
    "--timeout",
    "volume_timeout",
    type=Seconds(1),
    default=None,
    metavar="SECONDS",
    help="Time for one volume's reads (default: `volume_timeout`; with --full, 3600).",
)
@connect_timeout_option
@concurrency_option
@json_option
@click.pass_obj
def drill(
    app: AppContext,
    images: tuple[str, ...],
    target: str | None,
    samples: int | None,
    full: bool,
    exec_command: str | None,
    exec_timeout: float,
    volume_timeout: float | None,
    connect_timeout: float | None,
    concurrency: int | None,
    as_json: bool,
) -> None:
    """Prove the copies on a site could take over, without touching production.

    For each replicated volume (or the IMAGES named), the copy on the target and the
    primary are read at one point in time, the copy's newest complete mirror snapshot, and
    compared: a sample of extents by default, every extent with --full. Nothing is demoted,
    promoted, resynced or cloned, and mirroring goes on. A journal-mode volume is read at
    a snapshot of the drill's own (rbdfail-drill-...), taken on the primary, replayed to the
    copy, and removed from both sites after. A failover or failback always wins: the drill
    never takes its lock, and stops as soon as one starts, saying so.

    \b
    Examples:
      rbdfail drill --to secondary
      rbdfail drill db-orders --full --json
      rbdfail drill --exec 'rbd -c "$RBDFAIL_DRILL_CONF" --id "$RBDFAIL_DRILL_USER" \\
          export "$RBDFAIL_DRILL_IMAGE_SPEC" - | sha256sum'

    \b
    Exit codes:
      0 every volume identical (and CMD exited 0 for each)
      1 nothing could be done (a site unreachable)
      2 usage or configuration error
      3 some volumes differ or could not be verified, each named (also: stopped by a switch)
      4 refused: a failover or failback is running
      130 interrupted
    """
    from rbdfail import render
    from rbdfail.app.drill import DrillOptions, drill_deployment

    if full and samples is not None:
        raise click.UsageError("--sample and --full exclude each other")
    options = DrillOptions(
        target=target,
        images=images,
        full=full,
        samples=samples,
        exec_command=exec_command,
        exec_timeout=exec_timeout,
        volume_timeout=volume_timeout,
        connect_timeout=connect_timeout,
        concurrency=concurrency,
    )
    done = drill_deployment(
        app.deployment(), options, app.connect, lambda: render.DrillProgress(stderr_progress)
    )
    if as_json:
        emit_json(by_backend_json(done.parts, done.several, lambda report: report.to_json()))
    else:
        show_by_backend(done.parts, done.several, render.drill_report)
    code = (
        ExitCode.INTERRUPTED
        if done.interrupted
        else ExitCode.OK
        if done.complete
        else ExitCode.PARTIAL
    )
    leave(code, done.calls_left_running)
