"""The command line: parse, load the config, call one use case, render, exit with a code.

Exit codes (for runbooks): 0 done; 1 nothing could be done; 2 usage or configuration error;
3 partial (some volumes need attention, each named in the report); 4 failover/failback refused:
another run holds the lock; 5 failover/failback refused: the target site is unreachable
(nothing changed); 130 interrupted.

Imports of rich, the Ceph bindings and the core happen inside the commands, so that
`rbdfail --help` answers without loading them.

Longer than the other modules for one reason: each command's docstring is its `--help`, with
examples and exit codes, and most of these lines are that text and the option declarations.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from rbdfail.disasters import Disaster
from rbdfail.limits import MAX_CONCURRENCY, MAX_LAG_SECONDS, MAX_SECONDS, seconds_problem

if TYPE_CHECKING:
    from rbdfail.cluster import Cluster
    from rbdfail.config import Config, Connect, Deployment, SiteConfig
    from rbdfail.lab import Lab
    from rbdfail.mirroring import Report, Step, VolumeResult
    from rbdfail.state import State
    from rbdfail.status import StatusReport
    from rbdfail.switch.model import FailoverPlan, Options, SwitchRequest
    from rbdfail.volumes import Volume
    from rbdfail.workers import RunResult

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PARTIAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
# 4 and 5 are the exit_code of errors.LockedByAnotherRun and errors.TargetUnreachable.


@dataclass
class AppContext:
    config_path: str | None
    debug: bool
    # How commands reach a site; the one place tests point at their fake (CliRunner's obj=).
    connect_with: Connect | None = None
    backend_name: str | None = None  # --backend: one of the file's backends
    _deployment: Deployment | None = None

    def connect(self, site: SiteConfig, timeout: float) -> Cluster:
        if self.connect_with is None:
            self.connect_with = _connect_to_ceph
        return self.connect_with(site, timeout)

    def deployment(self) -> Deployment:
        from rbdfail.config import find_config_path, load_deployment

        if self._deployment is None:
            self._deployment = load_deployment(find_config_path(self.config_path))
        return self._deployment

    def backends(self) -> tuple[Config, ...]:
        """The backends a command acts on: every one of the file's, or the one --backend names."""
        return self.deployment().select(self.backend_name)

    def config(self, command: str | None = None) -> Config:
        """The one backend of a command that acts on one: the only one, or --backend's."""
        context = click.get_current_context(silent=True)
        name = command or (context.info_name if context else None) or "this"
        return self.deployment().only(self.backend_name, name)


def _connect_to_ceph(site: SiteConfig, timeout: float) -> Cluster:
    """ceph.connect, after making sure the site's conf can be read (a local mistake, exit 2,
    never a site taken as lost)."""
    from rbdfail import ceph
    from rbdfail.config import check_conf_readable

    check_conf_readable(site)
    return ceph.connect(site, timeout)


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
            _fail("interrupted", EXIT_INTERRUPTED)


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
    hidden=True,  # a diagnostic for the benchmark's timeline (README, Performance)
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


def _emit_json(document: object) -> None:
    click.echo(json.dumps(document, indent=2, default=str))


def _acting_site(config: Config, site_id: str | None) -> SiteConfig:
    """The site named, else the active one: after a failover, volumes are created and
    mirrored there, not on the backend (which may be the site that was lost)."""
    from rbdfail.state import read_state

    return config.site(site_id or read_state(config.state_dir, config.state_scope).active_backend)


def _remember_listing(config: Config, site_id: str, volumes: Sequence[Volume]) -> None:
    """Keep the active site's full listing, for a failover that finds it lost (see state.py);
    another site's listing would replace the one that matters."""
    from rbdfail.errors import StateCorrupt
    from rbdfail.state import read_state
    from rbdfail.volumes import remember_listing

    try:
        active = read_state(config.state_dir, config.state_scope).active_backend
    except StateCorrupt:
        return  # which site is active is unknown: keep the listing that was
    if site_id == active:
        remember_listing(config, site_id, volumes)


def _stderr_progress(message: str) -> None:
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


@main.command()
@site_option
@json_option
@click.pass_obj
def volumes(app: AppContext, site_id: str | None, as_json: bool) -> None:
    """List the active site's volumes: type, replicated or not, mirroring.

    Each RBD image in the site's pool is a volume; its type comes from the image's
    `rbdfail.volume_type` metadata, else from the first `volumes` rule whose glob matches.

    \b
    Examples:
      rbdfail volumes --json | jq '.[] | select(.replicated)'
      rbdfail volumes --site secondary
    """
    from rbdfail import render
    from rbdfail.volumes import list_volumes

    backends = app.backends()
    listings = []
    for config in backends:
        site = _acting_site(config, site_id)
        cluster = app.connect(site, config.replication_connect_timeout)
        try:
            found = list_volumes(cluster, config)
        finally:
            cluster.close()
        _remember_listing(config, site.backend_id, found)
        listings.append((config, site.backend_id, found))
    if as_json and len(backends) == 1:
        _emit_json([volume.to_json() for volume in listings[0][2]])
    elif as_json:
        _emit_json(
            {
                "backends": [
                    _backend_json(config, {"volumes": [v.to_json() for v in found]}, True)
                    for config, _, found in listings
                ]
            }
        )
    else:
        for config, site_name, found in listings:
            if len(backends) > 1:
                render.backend_heading(config.backend_name, config.backend.where)
            render.volumes_table(found, site=site_name)


@main.command()
@click.option(
    "--user",
    metavar="NAME",
    help="cephx user for this command on every site, instead of the configured ones. "
    "Peering creates a cephx user for the peer, which needs more than the rbd profile "
    "(e.g. admin).",
)
@json_option
@click.pass_obj
def setup(app: AppContext, user: str | None, as_json: bool) -> None:
    """Make the sites ready for mirroring: pool mode `image` and pools peered both ways.

    Idempotent: what is already in place is left as it is and said so. A pool that mirrors in
    `pool` mode is reported, not changed.

    \b
    Examples:
      rbdfail setup --user admin
      rbdfail setup --json

    Exit 0 when everything is in place, 3 when an item failed, 1 when a site is unreachable.
    """
    import dataclasses

    from rbdfail import ceph, pools, render
    from rbdfail.config import check_conf_readable

    backends = app.backends()
    done = []
    for config in backends:  # each backend's pool on every site
        sites = [
            dataclasses.replace(site, user=user, keyring=None) if user else site
            for site in config.sites
        ]
        for site in sites:
            check_conf_readable(site)
        backend, *devices = ceph.connect_all(sites, config.replication_connect_timeout)
        try:
            done.append((config, pools.prepare(backend, devices)))
        finally:
            for cluster in (backend, *devices):
                cluster.close()
    several = len(backends) > 1
    if as_json:
        documents = [
            _backend_json(config, {"items": [item.to_json() for item in items]}, several)
            for config, items in done
        ]
        _emit_json({"backends": documents} if several else documents[0])
    else:
        for config, items in done:
            if several:
                render.backend_heading(config.backend_name, config.backend.where)
            render.setup_items(items)
    if any(item.action == pools.SetupAction.FAILED for _, items in done for item in items):
        sys.exit(EXIT_PARTIAL)


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
    from rbdfail.state import read_drill, read_state
    from rbdfail.status import gather
    from rbdfail.workers import all_at_once

    backends = app.backends()
    several = len(backends) > 1

    def read(config: Config) -> StatusReport:
        report = gather(
            config,
            read_state(config.state_dir, config.state_scope),
            app.connect,
            images,
            with_users=with_users or bool(images),
        )
        backend = report.sites[config.backend.backend_id]
        if backend.reachable and not images:
            _remember_listing(config, backend.backend_id, backend.volumes)
        return report

    def show() -> list[StatusReport]:
        taken_at = time.time()
        reports = all_at_once(read, backends)  # every backend's sites at once
        read_now = list(zip(backends, reports, strict=True))
        drills = read_drill(backends[0].state_dir)
        if prometheus is not None:
            _write_metrics(read_now, prometheus, taken_at, drills)
        if as_json:
            documents = [_backend_json(c, r.to_json(), several) for c, r in read_now]
            document: dict[str, Any] = {"backends": documents} if several else documents[0]
            document["drills"] = drills  # issue 16: last successes
            click.echo(json.dumps(document, default=str, indent=None if watch else 2))
        else:
            if watch:
                render.stdout.clear()
                render.stdout.print(f"every {watch:g}s, {time.strftime('%H:%M:%S')} (Ctrl-C ends)")
            for config, report in zip(backends, reports, strict=True):
                if several:
                    render.backend_heading(config.backend_name, config.backend.where)
                render.status_table(report)
        return reports

    reports = show()
    try:
        while watch:
            time.sleep(watch)
            reports = show()
    except KeyboardInterrupt:  # the way to end --watch: not an error
        pass
    if any(report.problems for report in reports):
        sys.exit(EXIT_PARTIAL)


def _backend_json(config: Config, document: dict[str, Any], several: bool) -> dict[str, Any]:
    """One backend's part of a command's JSON: itself in a file of one backend, else named."""
    if not several:
        return document
    return {"backend": config.backend_name, "pool": config.backend.where, **document}


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
    from rbdfail.check import CheckItem, ready, run_checks
    from rbdfail.state import read_state
    from rbdfail.status import gather
    from rbdfail.workers import all_at_once

    backends = app.backends()
    states = [read_state(config.state_dir, config.state_scope) for config in backends]
    targets = []
    for config, state in zip(backends, states, strict=True):
        chosen = target
        if chosen is None:
            default = config.backend.backend_id
            active = state.active_backend
            chosen = config.replication_devices[0].backend_id if active == default else default
        config.site(chosen)  # an unknown id is a usage error, named, before any connection
        targets.append(chosen)

    def check_one(config: Config, state: State, to: str) -> list[CheckItem]:
        report = gather(config, state, app.connect, with_users=True)
        backend = report.sites[config.backend.backend_id]
        if backend.reachable:
            _remember_listing(config, backend.backend_id, backend.volumes)
        return run_checks(report, to, max_rpo, require_idle)

    several = len(backends) > 1
    found = all_at_once(
        lambda i: check_one(backends[i], states[i], targets[i]), range(len(backends))
    )
    documents = [
        _backend_json(
            config,
            {"target": to, "ready": ready(items), "items": [item.to_json() for item in items]},
            several,
        )
        for config, to, items in zip(backends, targets, found, strict=True)
    ]
    all_ready = all(ready(items) for items in found)
    if as_json:
        _emit_json({"ready": all_ready, "backends": documents} if several else documents[0])
    else:
        for config, to, items in zip(backends, targets, found, strict=True):
            if several:
                render.backend_heading(config.backend_name, config.backend.where)
            render.check_items(to, items)
    if not all_ready:
        sys.exit(EXIT_FAILED)


@main.command("connection-info")
@click.argument("volume")
@json_option
@click.pass_obj
def connection_info(app: AppContext, volume: str, as_json: bool) -> None:
    """What a client needs to attach VOLUME where it is primary now.

    After a failover that is the secondary: its monitors (from its monitor map), the cephx
    user, the pool, the image and the cluster name, shaped as the Cinder RBD driver hands out
    connection information. No key material: the client must hold the user's key already.
    Refused, with the reason, when the volume is primary on two sites or on none.

    \b
    Examples:
      rbdfail connection-info db-orders
      rbdfail connection-info db-orders --json | jq -r '.data.hosts[]'
    """
    from rbdfail.connection import connection_info as describe

    info = describe(app.config(), app.connect, volume)
    if as_json:
        _emit_json(info)
        return
    data = info["data"]
    click.echo(f"volume {volume} is primary on site {info['site']!r}")
    for key in ("name", "cluster_name", "auth_username"):
        click.echo(f"  {key}: {data[key]}")
    click.echo(f"  monitors: {', '.join(a for m in data['monitors'] for a in m['addresses'])}")


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
        observer=render.SwitchProgress(_stderr_progress),
    )
    report = result.report
    if report is None and dry_run:
        if as_json:
            _emit_json({"dry_run": True, **result.plan.to_json()})
        else:
            render.failover_plan(result.plan)
        sys.exit(EXIT_OK)
    if report is None:
        raise click.Abort()
    if as_json:
        _emit_json(report.to_json())
    else:
        render.failover_report(report)
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
        observer=render.SwitchProgress(_stderr_progress),
    )
    if not switch.carried_out and not request.dry_run:
        raise click.Abort()
    if as_json:
        _emit_json(switch.to_json())
    else:
        render.switch_of_backends(switch)
    if request.dry_run:
        sys.exit(EXIT_OK)
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
        sys.exit(EXIT_INTERRUPTED)
    exits = {RunResult.COMPLETE: EXIT_OK, RunResult.PARTIAL: EXIT_PARTIAL}
    code = exits.get(result, EXIT_FAILED)
    # Volumes moved but the state dir does not say so: not a clean run (3), as for a volume.
    final = EXIT_PARTIAL if code == EXIT_OK and unrecorded else code
    if calls_left and app.connect_with is _connect_to_ceph:
        # librados must not be torn down under a call still running: a process left to
        # the interpreter's exit with such connections was seen to abort (boost::bad_get,
        # exit 134), which would hide this exit code from the runbook. The report is out.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(final)
    sys.exit(final)


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
        cluster = app.connect(_acting_site(config, site_id), config.replication_connect_timeout)
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
        documents = [_backend_json(c, report.to_json(), several) for c, report in reports]
        _emit_json({"backends": documents} if several else documents[0])
    else:
        for config, report in reports:
            if several:
                render.backend_heading(config.backend_name, config.backend.where)
            render.mirroring_report(report)
    if any(report.interrupted for _, report in reports):
        sys.exit(EXIT_INTERRUPTED)
    if any(report.result != "complete" for _, report in reports) and not dry_run:
        sys.exit(EXIT_PARTIAL)


# ---- import from Cinder -----------------------------------------------------------------------
@main.command("import-cinder")
@click.argument("cinder_conf", metavar="CINDER_CONF", type=click.Path(path_type=Path))
@click.option(
    "--backend",
    metavar="NAME",
    default=None,
    help="The one backend section to import. Default: every RBD backend in enabled_backends "
    "with replication_device (several are written under `backends:`), else the one RBD backend.",
)
@click.option(
    "--volume-types",
    metavar="FILE",
    type=click.Path(path_type=Path),
    default=None,
    help="The output of `openstack volume type list --long -f json`, for the volume types.",
)
@click.option(
    "-o",
    "--output",
    metavar="FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the configuration to FILE (whole or not at all) instead of stdout.",
)
@click.option("--force", is_flag=True, help="Replace FILE if it exists.")
def import_cinder(
    cinder_conf: Path,
    backend: str | None,
    volume_types: Path | None,
    output: Path | None,
    force: bool,
) -> None:
    """Write an rbdfail configuration from a cinder.conf (its RBD backends' sections).

    Read as Cinder reads it: a backend's options from its section, else from
    [backend_defaults] (not [DEFAULT], which Cinder ignores for drivers); every
    replication_device line becomes a secondary site. Every replicated RBD backend in
    enabled_backends is written: one in the one-backend shape, several under `backends:`, each
    named by its section (the name `rbdfail --backend` takes), with one
    replication_connect_timeout (the largest) and the volume types shared. RBD backends without
    replication_device are left out, each named. --backend NAME writes that backend alone.
    Each value's comment says where it came from. What cinder.conf cannot say (which volume has
    which type: Cinder keeps that in its database) is written as a FILL IN placeholder, which
    rbdfail refuses until it is replaced. Key material (rbd_secret_uuid, secret_uuid) is never
    copied.

    \b
    Examples:
      openstack volume type list --long -f json > types.json
      rbdfail import-cinder /etc/cinder/cinder.conf --volume-types types.json -o rbdfail.yaml
      rbdfail import-cinder /etc/cinder/cinder.conf --backend ceph-fast -o fast.yaml

    \b
    Exit codes:
      0 written, ready to use
      2 cinder.conf, the types file or FILE refused (named, with the section and key;
        also two backends on one pool); nothing written
      3 written, with FILL IN placeholders to complete (listed on stderr)
    """
    from rbdfail.cinder_import import import_cinder as read_cinder
    from rbdfail.cinder_import import write_new_file

    result = read_cinder(cinder_conf, backend, volume_types)
    if output is None:
        click.echo(result.text, nl=False)
    else:
        inputs = (cinder_conf, *([volume_types] if volume_types else []))
        write_new_file(output, result.text, force, inputs)
        sections = ", ".join(f"[{section}]" for section in result.backends)
        click.echo(f"rbdfail: wrote {output} from {sections} of {cinder_conf}", err=True)
    for note in result.notes:
        click.echo(f"  note: {note}", err=True)
    if result.todo:
        click.secho(
            f"rbdfail: {len(result.todo)} thing(s) to fill in first:", fg="yellow", err=True
        )
        for item in result.todo:
            click.secho(f"  FILL IN {item}", fg="yellow", err=True)
        sys.exit(EXIT_PARTIAL)


# ---- the lab ------------------------------------------------------------------------------
lab_dir_option = click.option(
    "--dir",
    "lab_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The lab's folder. Default: $RBDFAIL_LAB_DIR, else ~/.local/state/rbdfail/lab.",
)


def _lab(lab_dir: Path | None, progress: Callable[[str], None] | None = None) -> Lab:
    from rbdfail.lab import Lab, default_lab_dir

    return Lab(lab_dir or default_lab_dir(), progress=progress)


@main.group()
def lab() -> None:
    """A real two-site Ceph on this machine, for trying rbdfail, drills and tests.

    Each site (primary, secondary) runs a monitor, a manager, one in-memory OSD and an
    rbd-mirror daemon from Debian's packages, on 127.0.0.1. Their `volumes` pools mirror in
    image mode, peered both ways; rbdfail connects as client.cinder with rbd-profile caps.

    \b
    Example drill:
      rbdfail lab up && export RBDFAIL_CONFIG=~/.local/state/rbdfail/lab/rbdfail.yaml
      rbdfail lab freeze primary     # the primary site stops answering
      rbdfail lab thaw primary
      rbdfail lab down
    """


@lab.command("up")
@lab_dir_option
def lab_up(lab_dir: Path | None) -> None:
    """Start both sites, peer them and check that images mirror both ways (about 15 s)."""
    the_lab = _lab(lab_dir, _stderr_progress)
    config_file = the_lab.up()
    click.echo(
        f"The lab is up in {the_lab.root}.\n"
        f"Use it with:\n"
        f"  export RBDFAIL_CONFIG={config_file}\n"
        f"  rbdfail volumes\n"
        f"Admin access to a site: ceph -c {the_lab.root}/primary/ceph.conf -s\n"
        f"Stop it with: rbdfail lab down" + (f" --dir {the_lab.root}" if lab_dir else "")
    )


@lab.command("down")
@lab_dir_option
@click.option("--keep", is_flag=True, help="Keep the folder (logs, config) after stopping.")
def lab_down(lab_dir: Path | None, keep: bool) -> None:
    """Stop every daemon the lab started (by pid) and remove its folder."""
    the_lab = _lab(lab_dir, _stderr_progress)
    stopped = the_lab.down(keep=keep)
    click.echo(f"stopped {len(stopped)} daemon(s)" + (f"; kept {the_lab.root}" if keep else ""))


@lab.command("status")
@lab_dir_option
@json_option
def lab_status(lab_dir: Path | None, as_json: bool) -> None:
    """Show each lab daemon: running, frozen or gone. Exit 3 when one is not running."""
    the_lab = _lab(lab_dir)
    daemons = the_lab.status()
    if as_json:
        _emit_json({"dir": str(the_lab.root), "daemons": [d.__dict__ for d in daemons]})
    elif not daemons:
        click.echo(f"no lab in {the_lab.root} (start one with `rbdfail lab up`)")
    else:
        for d in daemons:
            state = "stopped" if not d.running else "frozen" if d.frozen else "running"
            click.echo(f"{d.site:<10} {d.daemon:<11} pid {d.pid:<8} {state}")
    if not daemons or not all(d.running for d in daemons):
        sys.exit(EXIT_PARTIAL if daemons else EXIT_FAILED)


@lab.command("freeze")
@lab_dir_option
@click.argument("site", type=click.Choice(["primary", "secondary", "default"]))
def lab_freeze(lab_dir: Path | None, site: str) -> None:
    """Make SITE stop answering, as in a network partition (SIGSTOP on its daemons).

    Calls to a frozen site hang until their timeout rather than being refused.
    `default` is the backend's id for the primary site.
    """
    _lab(lab_dir).freeze(site)
    click.echo(f"{site} is frozen; `rbdfail lab thaw {site}` brings it back")


@lab.command("thaw")
@lab_dir_option
@click.argument("site", type=click.Choice(["primary", "secondary", "default"]))
def lab_thaw(lab_dir: Path | None, site: str) -> None:
    """Bring a frozen SITE back (SIGCONT on its daemons)."""
    _lab(lab_dir).thaw(site)
    click.echo(f"{site} is answering again")


@lab.command("fail")
@lab_dir_option
@click.argument("site", type=click.Choice(["primary", "secondary", "default"]))
@click.option(
    "--how",
    type=click.Choice([d.value for d in Disaster]),
    default=Disaster.PARTITION.value,
    show_default=True,
    help="partition: every daemon stopped, calls hang; storage-dead: mon, mgr and OSD "
    "stopped, its rbd-mirror runs on; killed: every daemon killed, connections refused (no "
    "way back: start a new lab); slow: the OSD stopped 3 tenths of a second in every 4.",
)
def lab_fail(lab_dir: Path | None, site: str, how: str) -> None:
    """Fail SITE the way a real disaster would, for drills and tests.

    \b
    Examples:
      rbdfail lab fail primary --how storage-dead
      rbdfail lab fail secondary --how slow
      rbdfail lab recover primary
    """
    _lab(lab_dir).fail(site, Disaster(how))
    click.echo(f"{site} is {how}; `rbdfail lab recover {site}` brings it back")


@lab.command("recover")
@lab_dir_option
@click.argument("site", type=click.Choice(["primary", "secondary", "default"]))
def lab_recover(lab_dir: Path | None, site: str) -> None:
    """Bring a failed SITE back (any disaster but `killed`)."""
    _lab(lab_dir, _stderr_progress).recover(site)
    click.echo(f"{site} is answering again")


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
    compared: a sample of extents by default, every extent with --full. Read-only on both
    sites: nothing is demoted, promoted, resynced, snapshotted or cloned, and mirroring
    goes on. Journal-mode volumes are `unknown` (Ceph keeps no mirror snapshot of them). A
    failover or failback always wins: the drill never takes its lock, and stops as soon as
    one starts, saying so.

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
    from rbdfail.drill import DEFAULT_SAMPLES, FULL_TIMEOUT, DrillRequest, run_drill

    if full and samples is not None:
        raise click.UsageError("--sample and --full exclude each other")
    backends = app.backends()
    config = backends[0]  # the settings read here are shared by every backend
    request = DrillRequest(
        target=target,
        names=images,
        full=full,
        samples=samples or DEFAULT_SAMPLES,
        exec_command=exec_command,
        exec_timeout=exec_timeout,
        concurrency=concurrency or config.concurrency,
        connect_timeout=connect_timeout or config.replication_connect_timeout,
        volume_timeout=volume_timeout or (FULL_TIMEOUT if full else config.volume_timeout),
    )
    reports = []
    for config in backends:  # one after the other: a drill is no race
        progress = render.DrillProgress(_stderr_progress)
        try:
            reports.append((config, run_drill(config, request, app.connect, progress)))
        finally:
            progress.close()
        if reports[-1][1].interrupted:
            break
    several = len(backends) > 1
    if as_json:
        documents = [_backend_json(c, report.to_json(), several) for c, report in reports]
        _emit_json({"backends": documents} if several else documents[0])
    else:
        for config, report in reports:
            if several:
                render.backend_heading(config.backend_name, config.backend.where)
            render.drill_report(report)
    code = (
        EXIT_INTERRUPTED
        if any(report.interrupted for _, report in reports)
        else EXIT_OK
        if all(report.result == "complete" for _, report in reports)
        else EXIT_PARTIAL
    )
    left_running = any(report.calls_left_running for _, report in reports)
    if left_running and app.connect_with is _connect_to_ceph:
        sys.stdout.flush()  # as _switch: never tear librados down under a running call
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
