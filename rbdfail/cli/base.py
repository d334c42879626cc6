"""The command line's common parts: the group `main`, the context, the shared options.

The command line: parse, load the config, call one use case, render, exit with a code. Each
command lives in the module of its kind (switch.py: failover and failback; status.py: status
and check; ...) and registers itself on `main`.

Exit codes (for runbooks): 0 done; 1 nothing could be done; 2 usage or configuration error;
3 partial (some volumes need attention, each named in the report); 4 failover/failback refused:
another run holds the lock; 5 failover/failback refused: the target site is unreachable
(nothing changed); 130 interrupted.

Imports of rich, the Ceph bindings and the core happen inside the commands, so that
`rbdfail --help` answers without loading them.

Each command's docstring is its `--help`, with examples and exit codes: most lines of these
modules are that text and the option declarations.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from rbdfail.errors import ExitCode
from rbdfail.limits import MAX_CONCURRENCY, MAX_SECONDS, seconds_problem

if TYPE_CHECKING:
    from rbdfail.cluster import Cluster
    from rbdfail.config import Config, Connect, Deployment, SiteConfig


T = TypeVar("T")


@dataclass
class AppContext:
    config_path: str | None
    debug: bool
    # How commands reach a site; the one place tests point at their fake (CliRunner's obj=).
    connect_with: Connect | None = None
    backend_name: str | None = None  # --backend: one of the file's backends
    _deployment: Deployment | None = None

    def connect(self, site: SiteConfig, timeout: float) -> Cluster:
        """The `connect` a use case is handed: the test's fake, else Ceph itself."""
        if self.connect_with is None:
            from rbdfail.app.connect import connect_to_ceph

            self.connect_with = connect_to_ceph
        return self.connect_with(site, timeout)

    def deployment(self) -> Deployment:
        """The backends a command acts on: every one of the file's, or the one --backend names
        (a deployment of one)."""
        from dataclasses import replace

        from rbdfail.config import find_config_path, load_deployment

        if self._deployment is None:
            loaded = load_deployment(find_config_path(self.config_path))
            self._deployment = replace(loaded, backends=loaded.select(self.backend_name))
        return self._deployment


class RbdfailGroup(click.Group):
    """Turns rbdfail's errors into one clear message and its exit code, no traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        from rbdfail.errors import RbdfailError

        try:
            return super().invoke(ctx)
        except RbdfailError as exc:
            if isinstance(ctx.obj, AppContext) and ctx.obj.debug:
                raise
            _fail(str(exc), exc.exit_code, exc.hint)
        except KeyboardInterrupt:
            _fail("interrupted", ExitCode.INTERRUPTED)


class CallsLeftRunning(SystemExit):
    """The command's exit, with Ceph calls given up on still running in their threads."""


def leave(code: ExitCode, calls_left_running: int = 0) -> NoReturn:
    """The one way a command that reports calls left running exits: with its code, telling the
    program (`run`) when some are, so that it leaves without tearing their connections down."""
    if calls_left_running:
        raise CallsLeftRunning(code)
    sys.exit(code)


def run() -> None:
    """The program `rbdfail` (its script and `python -m rbdfail`): the group `main`, and the
    exit policy for calls left running, which only the process may apply.

    librados must not be torn down under a call still running: a process left to the
    interpreter's exit with such connections was seen to abort (boost::bad_get, exit 134),
    which would hide the exit code from the runbook; the report is out by then, so the
    process ends at once. A caller of `main` itself (CliRunner, with a fake's threads) gets
    the exit code as a SystemExit and lives on.
    """
    try:
        main(prog_name="rbdfail")
    except CallsLeftRunning as exc:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exc.code if isinstance(exc.code, int) else ExitCode.FAILED)


def _fail(message: str, code: int, hint: str | None = None) -> NoReturn:
    click.secho(f"rbdfail: error: {message}", fg="red", err=True)
    if hint:
        click.secho(f"  hint: {hint}", fg="red", err=True)
    sys.exit(code)


class Seconds(click.ParamType[float]):
    """A number of seconds within rbdfail's bounds (limits.py): click's FloatRange lets inf and
    nan through, and nothing above."""

    name = "seconds"

    def __init__(self, least: float, most: float = MAX_SECONDS, zero_ok: bool = False) -> None:
        self.least, self.most, self.zero_ok = least, most, zero_ok

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, float):
            number = value
        else:
            try:
                number = float(value)
            except ValueError:
                self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if problem := seconds_problem(number, self.least, self.most, self.zero_ok):
            self.fail(f"{value!r}: {problem}", param, ctx)
        return number


COUNT = click.IntRange(min=1, max=MAX_CONCURRENCY)

json_option = click.option(
    "--json", "as_json", is_flag=True, help="One JSON document on stdout; logs go to stderr."
)
dry_run_option = click.option("--dry-run", is_flag=True, help="Show the plan; change nothing.")
yes_option = click.option(
    "-y", "--yes", is_flag=True, help="Do not ask for confirmation (runbooks)."
)
concurrency_option = click.option(
    "--concurrency",
    type=COUNT,
    default=None,
    help="Ceph calls in flight at once (default: `concurrency` in the config).",
)
site_option = click.option(
    "--site",
    "site_id",
    metavar="BACKEND_ID",
    default=None,
    help="The site to act on (default: the active one: the backend, or where the last "
    "failover went).",
)
connect_timeout_option = click.option(
    "--connect-timeout",
    type=Seconds(1),
    default=None,
    metavar="SECONDS",
    help="How long a site may take to answer before it is taken as down: connect and "
    "monitor calls (default: `replication_connect_timeout`). Work on a live site is not cut "
    "by it: each volume has its own --timeout.",
)


require_idle_option = click.option(
    "--require-idle",
    is_flag=True,
    help="Leave a volume where it is (failed, named) when a client still has it open on the "
    "source: a demote makes that client's writes fail. Default: a warning in the plan.",
)


call_trace_option = click.option(
    "--call-trace",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    hidden=True,  # a diagnostic for the benchmark's timeline (docs/performance.md)
    help="Write every Ceph call's times (JSON lines, seconds from the run's start) to FILE.",
)


def break_locks_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """--break-locks-after SECONDS and --no-break-locks, defined once for both switches."""
    command = click.option(
        "--no-break-locks",
        "no_break_locks",
        is_flag=True,
        help="Never take a copy's lock from the target's rbd-mirror: a forced promote then "
        "waits for the daemon to hand it over, which it may never do while stuck on the "
        "lost site.",
    )(command)
    return click.option(
        "--break-locks-after",
        type=click.FloatRange(min=0, max=600),
        default=15.0,
        show_default=True,
        metavar="SECONDS",
        help="Once the source is lost, a forced promote still waiting this long for the "
        "target's rbd-mirror to hand the copy's lock over takes it (Ceph blocklists the "
        "daemon for a minute); later ones in the run take it at once. 0: always at once.",
    )(command)


def emit_json(document: object) -> None:
    click.echo(json.dumps(document, indent=2, default=str))


def stderr_progress(message: str) -> None:
    click.echo(f"{time.strftime('%H:%M:%S')} {message}", err=True)


@click.group(cls=RbdfailGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-c",
    "--config",
    "config_path",
    metavar="FILE",
    help="Configuration file. Default: $RBDFAIL_CONFIG, else ./rbdfail.yaml, "
    "else /etc/rbdfail/rbdfail.yaml.",
)
@click.option(
    "--backend",
    "backend_name",
    metavar="NAME",
    default=None,
    help="Act on this backend of the file only (default: every backend it lists).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(package_name="rbdfail")
@click.pass_context
def main(
    ctx: click.Context, config_path: str | None, backend_name: str | None, debug: bool
) -> None:
    """Fail over Ceph RBD mirroring between two sites, and back.

    \b
    Examples:
      rbdfail status                        # where each volume is primary, per site
      rbdfail setup --user admin            # pools in image mode, peered both ways
      rbdfail enable-mirroring --dry-run    # what mirroring would be enabled
      rbdfail lab up                        # a real two-site Ceph on this machine
      rbdfail -c /etc/rbdfail/prod.yaml volumes --json

    \b
    Exit codes:
      0 done
      1 nothing could be done
      2 usage or configuration error
      3 partial (some volumes need attention, each named in the report)
      4 failover/failback refused: another run holds the lock (someone else is running)
      5 failover/failback refused: the target site is unreachable (nothing changed)
      130 interrupted (re-run to finish)
    """
    # A caller (a test) may hand the connect function in as click's obj.
    ctx.obj = AppContext(config_path, debug, connect_with=ctx.obj, backend_name=backend_name)


def backend_json(config: Config, document: dict[str, Any], several: bool) -> dict[str, Any]:
    """One backend's part of a command's JSON: itself in a file of one backend, else named."""
    if not several:
        return document
    return {"backend": config.backend_name, "pool": config.backend.where, **document}


def by_backend_json(
    parts: Sequence[tuple[Config, T]], several: bool, to_json: Callable[[T], dict[str, Any]]
) -> dict[str, Any]:
    """A command's JSON over its backends: the one backend's document, else `backends`, a list
    of each one's, named."""
    documents = [backend_json(config, to_json(part), several) for config, part in parts]
    return {"backends": documents} if several else documents[0]


def show_by_backend(
    parts: Sequence[tuple[Config, T]], several: bool, show: Callable[[T], None]
) -> None:
    """A command's text over its backends: each under its heading in a file of several."""
    from rbdfail import render

    for config, part in parts:
        if several:
            render.backend_heading(config.backend_name, config.backend.where)
        show(part)
