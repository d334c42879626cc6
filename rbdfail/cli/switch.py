"""failover and failback: one use case each way, the plan, the report, the exit code."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from rbdfail.cli.base import (
    AppContext,
    Seconds,
    break_locks_option,
    call_trace_option,
    concurrency_option,
    connect_timeout_option,
    dry_run_option,
    emit_json,
    json_option,
    leave,
    main,
    require_idle_option,
    stderr_progress,
    yes_option,
)
from rbdfail.errors import ExitCode

if TYPE_CHECKING:
    from rich.console import Console

    from rbdfail.app.switch import SwitchOrder
    from rbdfail.switch.deployment import SwitchOfBackends


# ---- failover ---------------------------------------------------------------------------------
@main.command()
@click.option(
    "--to",
    "target",
    metavar="BACKEND_ID",
    required=True,
    help="The replication device to fail over to (its `backend_id`); `default` means "
    "`rbdfail failback`.",
)
@dry_run_option
@yes_option
@click.option(
    "--force",
    is_flag=True,
    help="A volume demoted but not promotable on the target within its timeout is "
    "force-promoted there, instead of being promoted back on the source.",
)
@click.option(
    "--timeout",
    "volume_timeout",
    type=Seconds(1),
    default=None,
    metavar="SECONDS",
    help="Wall-clock budget of one volume (default: `volume_timeout` in the config).",
)
@require_idle_option
@call_trace_option
@break_locks_option
@connect_timeout_option
@concurrency_option
@json_option
@click.pass_obj
def failover(
    app: AppContext,
    target: str,
    dry_run: bool,
    yes: bool,
    force: bool,
    volume_timeout: float | None,
    require_idle: bool,
    call_trace: Path | None,
    break_locks_after: float,
    no_break_locks: bool,
    connect_timeout: float | None,
    concurrency: int | None,
    as_json: bool,
) -> None:
    """Make every replicated volume primary on the site BACKEND_ID.

    Each replicated volume is demoted on the backend's site and promoted on the target,
    many at once. If the backend's site does not answer (from the start, or as soon as a
    demotion times out), the rest are force-promoted without demoting them. A volume
    demoted but not promotable in time is promoted back where it was: none is left primary
    nowhere. Volumes that are not replicated become `error`, their status kept for
    failback. Every step is journaled in `state_dir`; running the same command again
    after a crash finishes what is left. A RADOS lock on the target refuses a second
    failover from any host.

    \b
    Examples:
      rbdfail failover --to secondary --dry-run
      rbdfail failover --to secondary
      rbdfail failover --to secondary --yes --json > failover.json   # runbook

    \b
    Exit codes:
      0 every replicated volume is primary on the target
      1 no volume could be moved
      2 usage or configuration error, or no --yes without a terminal
      3 some volumes failed, each named
      4 refused: another failover or failback holds the lock (someone else is running)
      5 refused: the target is unreachable (nothing was changed anywhere)
      130 interrupted (re-run to finish)
    """
    from rbdfail.app.switch import SwitchOrder
    from rbdfail.switch.model import Operation

    order = SwitchOrder(
        Operation.FAILBACK if target == "default" else Operation.FAILOVER,
        target,
        dry_run,
        require_idle=require_idle,
        read_users=dry_run or not yes,
        force=force,
        break_locks_after=None if no_break_locks else break_locks_after,
        volume_timeout=volume_timeout,
        connect_timeout=connect_timeout,
        concurrency=concurrency,
        call_trace=call_trace,
    )
    _switch(app, order, yes, as_json)


@main.command()
@dry_run_option
@yes_option
@click.option(
    "--force",
    is_flag=True,
    help="A volume demoted but not promotable on `default` within its timeout is "
    "force-promoted there, instead of being promoted back where it was.",
)
@click.option(
    "--resync",
    "resync",
    multiple=True,
    metavar="IMAGE",
    help="Also resync IMAGE if it is primary on both sites (default: only those the journal "
    "records as force-promoted). Its writes on `default` since the failover are thrown away.",
)
@click.option(
    "--timeout",
    "volume_timeout",
    type=Seconds(1),
    default=None,
    metavar="SECONDS",
    help="Wall-clock budget of one volume's switch (default: `volume_timeout`).",
)
@click.option(
    "--resync-timeout",
    type=Seconds(1),
    default=None,
    metavar="SECONDS",
    help="How long a resync may take before its volume is given up on (default: 900).",
)
@require_idle_option
@call_trace_option
@break_locks_option
@connect_timeout_option
@concurrency_option
@json_option
@click.pass_obj
def failback(
    app: AppContext,
    dry_run: bool,
    yes: bool,
    force: bool,
    resync: tuple[str, ...],
    volume_timeout: float | None,
    resync_timeout: float | None,
    require_idle: bool,
    call_trace: Path | None,
    break_locks_after: float,
    no_break_locks: bool,
    connect_timeout: float | None,
    concurrency: int | None,
    as_json: bool,
) -> None:
    """Bring every replicated volume back to the original backend (`default`).

    After a clean failover each volume is demoted on the active site and promoted on
    `default`. After a forced one, `default` still holds its image as primary (split
    brain): that copy is demoted, resynced from the active site (rbd-mirror copies it
    anew: its writes since the failover are lost), and switched once it replays. Only
    what the journal records as force-promoted is resynced, or what --resync names.
    Volumes that failover set to `error` get their previous status back. Same plan,
    confirmation, journal, lock and exit codes as failover; `failover --to default` is
    the same command.

    \b
    Examples:
      rbdfail failback --dry-run
      rbdfail failback --yes --json > failback.json

    \b
    Exit codes:
      0 every replicated volume is primary on `default`
      1 no volume could be moved
      2 usage or configuration error, or no --yes without a terminal
      3 some volumes failed, each named
      4 refused: another failover or failback holds the lock (someone else is running)
      5 refused: `default` is unreachable (nothing was changed anywhere)
      130 interrupted (re-run to finish)
    """
    from rbdfail.app.switch import SwitchOrder
    from rbdfail.switch.model import Operation

    order = SwitchOrder(
        Operation.FAILBACK,
        None,
        dry_run,
        resync,
        require_idle=require_idle,
        read_users=dry_run or not yes,
        force=force,
        break_locks_after=None if no_break_locks else break_locks_after,
        volume_timeout=volume_timeout,
        connect_timeout=connect_timeout,
        resync_timeout=resync_timeout,
        concurrency=concurrency,
        call_trace=call_trace,
    )
    _switch(app, order, yes, as_json)


def _switch(app: AppContext, order: SwitchOrder, yes: bool, as_json: bool) -> NoReturn:
    """Failover or failback: ask the use case, show the plan or the report, exit with a code."""
    from rbdfail import render
    from rbdfail.app.switch import switch
    from rbdfail.workers import RunResult

    deployment = app.deployment()  # a backend --backend does not name is said first
    if not order.dry_run and not yes and not sys.stdin.isatty():
        raise click.UsageError(
            f"refusing to {order.operation} without confirmation: no terminal to ask on; "
            "pass --yes (runbooks) or --dry-run"
        )

    def confirm(plans: SwitchOfBackends) -> bool:
        if yes:
            return True
        _show_plans(plans, render.stderr)
        return click.confirm(f"{order.operation.capitalize()} to {plans.target}?", err=True)

    outcome = switch(
        deployment, order, app.connect, confirm, render.SwitchProgress(stderr_progress)
    )
    done, steps = outcome.switch, outcome.cinder_steps
    if not done.carried_out and not order.dry_run:
        raise click.Abort()
    if order.dry_run and not done.several:
        if as_json:
            emit_json(done.to_json())
        else:
            _show_plans(done)
        sys.exit(ExitCode.OK)
    if as_json:
        emit_json(
            {**done.to_json(), **({} if order.dry_run else {"cinder_steps": steps.to_json()})}
        )
    else:
        if done.several:
            render.switch_of_backends(done)
        else:
            render.switch_report(done.reports[0])
        render.cinder_steps(steps)
    if order.dry_run:
        sys.exit(ExitCode.OK)
    for unrecorded in done.unrecorded:  # on stderr too: a runbook's log keeps it
        click.secho(f"rbdfail: not recorded: {unrecorded}", fg="red", err=True)
    if done.interrupted:
        leave(ExitCode.INTERRUPTED, done.calls_left_running)
    exits = {RunResult.COMPLETE: ExitCode.OK, RunResult.PARTIAL: ExitCode.PARTIAL}
    code = exits.get(done.result, ExitCode.FAILED)
    # Volumes moved but the state dir does not say so: not a clean run (3), as for a volume.
    leave(
        ExitCode.PARTIAL if code == ExitCode.OK and done.unrecorded else code,
        done.calls_left_running,
    )


def _show_plans(plans: SwitchOfBackends, console: Console | None = None) -> None:
    """The plans before they run: each backend's in a file of several."""
    from rbdfail import render

    if plans.several:
        render.switch_of_backends(plans, console or render.stdout)
    else:
        render.switch_plan(plans.parts[0].plan, console or render.stdout)
