"""failover and failback: one use case each way, the plan, the report, the exit code."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import replace
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
    connect_to_ceph,
    dry_run_option,
    emit_json,
    json_option,
    main,
    require_idle_option,
    stderr_progress,
    yes_option,
)
from rbdfail.errors import ExitCode

if TYPE_CHECKING:
    from rbdfail.config import Config
    from rbdfail.switch.model import FailoverPlan, Options, SwitchRequest
    from rbdfail.workers import RunResult


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
    _switch(
        app,
        "failback" if target == "default" else "failover",
        target,
        dry_run,
        yes,
        _switch_options(
            app,
            force,
            break_locks_after,
            no_break_locks,
            volume_timeout,
            connect_timeout,
            None,
            concurrency,
            call_trace,
        ),
        (),
        require_idle,
        as_json,
    )


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
    _switch(
        app,
        "failback",
        None,
        dry_run,
        yes,
        _switch_options(
            app,
            force,
            break_locks_after,
            no_break_locks,
            volume_timeout,
            connect_timeout,
            resync_timeout,
            concurrency,
            call_trace,
        ),
        resync,
        require_idle,
        as_json,
    )


def _switch_options(
    app: AppContext,
    force: bool,
    break_locks_after: float,
    no_break_locks: bool,
    volume_timeout: float | None,
    connect_timeout: float | None,
    resync_timeout: float | None,
    concurrency: int | None,
    call_trace: Path | None,
) -> Options:
    from rbdfail.switch.model import options_for

    return replace(
        options_for(
            app.backends()[0],  # the settings these are read from are shared by every backend
            connect_timeout=connect_timeout,
            volume_timeout=volume_timeout,
            concurrency=concurrency,
            force=force,
            break_locks_after=None if no_break_locks else break_locks_after,
            resync_timeout=resync_timeout,
        ),
        call_trace=call_trace,
    )


def _switch(
    app: AppContext,
    operation: str,
    target: str | None,
    dry_run: bool,
    yes: bool,
    options: Options,
    resync: tuple[str, ...],
    require_idle: bool,
    as_json: bool,
) -> NoReturn:
    """Failover or failback: ask the use case, show the plan or the report, exit with a code."""
    from rbdfail import render
    from rbdfail.switch.model import Operation, SwitchRequest
    from rbdfail.switch.usecase import run_switch

    if not dry_run and not yes and not sys.stdin.isatty():
        raise click.UsageError(
            f"refusing to {operation} without confirmation: no terminal to ask on; "
            "pass --yes (runbooks) or --dry-run"
        )

    def confirm(plan: FailoverPlan) -> bool:
        if yes:
            return True
        render.failover_plan(plan, render.stderr)
        return click.confirm(f"{operation.capitalize()} to {plan.target}?", err=True)

    request = SwitchRequest(
        Operation(operation),
        options,
        target,
        dry_run,
        resync,
        require_idle=require_idle,
        read_users=dry_run or not yes,  # a plan someone reads before it runs
    )
    if len(backends := app.backends()) > 1:
        _switch_backends(app, backends, request, yes, as_json)
    result = run_switch(
        app.config(),
        request,
        connect=app.connect,
        confirm=confirm,
        observer=render.SwitchProgress(stderr_progress),
    )
    report = result.report
    if report is None and dry_run:
        if as_json:
            emit_json({"dry_run": True, **result.plan.to_json()})
        else:
            render.failover_plan(result.plan)
        sys.exit(ExitCode.OK)
    if report is None:
        raise click.Abort()
    from rbdfail.cinder.steps import steps_for

    steps = steps_for([(app.config(), report)])
    if as_json:
        emit_json({**report.to_json(), "cinder_steps": steps.to_json()})
    else:
        render.failover_report(report)
        render.cinder_steps(steps)
    for unrecorded in report.unrecorded:  # on stderr too: a runbook's log keeps it
        click.secho(f"rbdfail: not recorded: {unrecorded}", fg="red", err=True)
    _exit_after_switch(
        app, report.result, report.interrupted, bool(report.unrecorded), report.calls_left_running
    )


def _switch_backends(
    app: AppContext, backends: Sequence[Config], request: SwitchRequest, yes: bool, as_json: bool
) -> NoReturn:
    """_switch for a file of several backends: one plan to confirm, one report by backend."""
    from rbdfail import render
    from rbdfail.switch.deployment import SwitchOfBackends, switch_backends

    def confirm(switch: SwitchOfBackends) -> bool:
        if yes:
            return True
        render.switch_of_backends(switch, render.stderr)
        return click.confirm(f"{request.operation.capitalize()} to {switch.target}?", err=True)

    switch = switch_backends(
        backends,
        request,
        connect=app.connect,
        confirm=confirm,
        observer=render.SwitchProgress(stderr_progress),
    )
    if not switch.carried_out and not request.dry_run:
        raise click.Abort()
    from rbdfail.cinder.steps import steps_for

    by_name = {config.state_scope: config for config in backends}
    steps = steps_for(
        [
            (by_name[part.backend], part.report)
            for part in switch.parts
            if part.report is not None and part.backend in by_name
        ]
    )
    if as_json:
        emit_json(
            {**switch.to_json(), **({} if request.dry_run else {"cinder_steps": steps.to_json()})}
        )
    else:
        render.switch_of_backends(switch)
        render.cinder_steps(steps)
    if request.dry_run:
        sys.exit(ExitCode.OK)
    for unrecorded in switch.unrecorded:
        click.secho(f"rbdfail: not recorded: {unrecorded}", fg="red", err=True)
    _exit_after_switch(
        app, switch.result, switch.interrupted, bool(switch.unrecorded), switch.calls_left_running
    )


def _exit_after_switch(
    app: AppContext, result: RunResult, interrupted: bool, unrecorded: bool, calls_left: int
) -> NoReturn:
    from rbdfail.workers import RunResult

    if interrupted:
        sys.exit(ExitCode.INTERRUPTED)
    exits = {RunResult.COMPLETE: ExitCode.OK, RunResult.PARTIAL: ExitCode.PARTIAL}
    code = exits.get(result, ExitCode.FAILED)
    # Volumes moved but the state dir does not say so: not a clean run (3), as for a volume.
    final = ExitCode.PARTIAL if code == ExitCode.OK and unrecorded else code
    if calls_left and app.connect_with is connect_to_ceph:
        # librados must not be torn down under a call still running: a process left to
        # the interpreter's exit with such connections was seen to abort (boost::bad_get,
        # exit 134), which would hide this exit code from the runbook. The report is out.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(final)
    sys.exit(final)
