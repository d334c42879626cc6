"""import-cinder: rbdfail.yaml from an existing cinder.conf."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from rbdfail.cli.base import (
    AppContext,
    emit_json,
    json_option,
    main,
)
from rbdfail.errors import ExitCode


# ---- after a switch ---------------------------------------------------------------------------
@main.command("cinder-steps")
@click.option(
    "--run",
    "run_id",
    metavar="RUN_ID",
    default=None,
    help="The switch (its run id, or the start of it) as the report and the journal name it. "
    "Default: each backend's last one.",
)
@json_option
@click.pass_obj
def cinder_steps(app: AppContext, run_id: str | None, as_json: bool) -> None:
    """Print what Cinder and Nova need after a past failover or failback (from the journal).

    The `cinder-manage db reset_active_backend` line per backend (its host from the config's
    cinder_host), then, when `import-cinder --volume-list --state-dir` seeded the state dir,
    the `nova-manage volume_attachment` lines for the attached volumes the run moved. rbdfail
    runs none of them, and reaches no site for this.

    \b
    Exit codes:
      0 the steps printed (none when the run moved nothing)
      1 the journal holds no such run
      2 configuration error
    """
    from rbdfail import render
    from rbdfail.app.cinder import past_runs

    found = past_runs(app.deployment(), run_id)
    runs: list[dict[str, object]] = [
        {
            "backend": config.state_scope,
            "run_id": run.run_id,
            "operation": run.operation,
            "target": run.target,
            "ended": run.ended,
        }
        for config, run in found.runs
    ]
    if not runs:
        click.secho(
            "rbdfail: the journal holds no "
            + (f"run {run_id!r}" if run_id else "failover or failback")
            + " for this file's backends",
            fg="red",
            err=True,
        )
        sys.exit(ExitCode.FAILED)
    steps = found.steps
    if as_json:
        emit_json({"runs": runs, "cinder_steps": steps.to_json()})
        return
    for shown in runs:
        where = f"backend {shown['backend']}: " if shown["backend"] else ""
        ended = "" if shown["ended"] else " (never ended: cut off)"
        click.echo(
            f"{where}{shown['operation']} to {shown['target']}, run {shown['run_id']}{ended}"
        )
    if steps.empty:
        click.echo("No volume moved: Cinder and Nova need nothing.")
    render.cinder_steps(steps)


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
    "--volume-list",
    metavar="FILE",
    type=click.Path(path_type=Path),
    default=None,
    help="The output of `openstack volume list --all-projects --long -f json`: one exact rule "
    "per volume, its type as Cinder has it (needs --volume-types).",
)
@click.option(
    "--unlisted",
    metavar="TYPE",
    default=None,
    help="With --volume-list: the type of the pool's images the list does not name (else "
    "the type Cinder gives a volume created without one, default_volume_type or __DEFAULT__, "
    "when the types hold it; else a FILL IN).",
)
@click.option(
    "--state-dir",
    metavar="DIR",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="With --volume-list: seed DIR (the config's state_dir) with Cinder's status of each "
    "volume and the attachments the nova-manage steps need.",
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
    volume_list: Path | None,
    unlisted: str | None,
    state_dir: Path | None,
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
    which type: Cinder keeps that in its database) comes from --volume-list, one exact rule per
    volume (a volume of a type or backend not written is left out, named); the pool's other
    images get --unlisted TYPE, else the type Cinder gives a volume created without one; what
    is still unknown is written as a FILL IN placeholder, which rbdfail refuses until replaced.
    Cinder's statuses and the attachments go to the state dir (--state-dir), never the YAML.
    Key material (rbd_secret_uuid, secret_uuid) is never copied.

    \b
    Examples:
      openstack volume type list --long -f json > types.json
      rbdfail import-cinder /etc/cinder/cinder.conf --volume-types types.json -o rbdfail.yaml
      rbdfail import-cinder /etc/cinder/cinder.conf --backend ceph-fast -o fast.yaml
      openstack volume list --all-projects --long -f json > volumes.json
      rbdfail import-cinder /etc/cinder/cinder.conf --volume-types types.json \\
        --volume-list volumes.json --unlisted __DEFAULT__ --state-dir /var/lib/rbdfail \\
        -o rbdfail.yaml

    \b
    Exit codes:
      0 written, ready to use
      2 cinder.conf, the types file or FILE refused (named, with the section and key;
        also two backends on one pool); nothing written
      3 written, with FILL IN placeholders to complete (listed on stderr)
    """
    from rbdfail.cinder.importer import import_cinder as read_cinder
    from rbdfail.cinder.seed import seed_state
    from rbdfail.cinder.writer import write_new_file
    from rbdfail.errors import ConfigError

    if state_dir is not None and volume_list is None:
        raise ConfigError(
            "--state-dir seeds the statuses of a volume list: it needs --volume-list",
            hint="add --volume-list FILE, FILE from "
            "`openstack volume list --all-projects --long -f json`",
        )
    result = read_cinder(cinder_conf, backend, volume_types, volume_list, unlisted)
    if output is None:
        click.echo(result.text, nl=False)
    else:
        inputs = (cinder_conf, *(given for given in (volume_types, volume_list) if given))
        write_new_file(output, result.text, force, inputs)
        sections = ", ".join(f"[{section}]" for section in result.backends)
        click.echo(f"rbdfail: wrote {output} from {sections} of {cinder_conf}", err=True)
    for note in result.notes:
        click.echo(f"  note: {note}", err=True)
    if state_dir is not None:
        for done in seed_state(result, state_dir):
            click.echo(f"rbdfail: seeded {done}", err=True)
    elif volume_list is not None:
        click.echo(
            "  note: Cinder's statuses and the attachments not kept: give --state-dir DIR "
            "(the config's state_dir) to seed them",
            err=True,
        )
    if result.todo:
        click.secho(
            f"rbdfail: {len(result.todo)} thing(s) to fill in first:", fg="yellow", err=True
        )
        for item in result.todo:
            click.secho(f"  FILL IN {item}", fg="yellow", err=True)
        sys.exit(ExitCode.PARTIAL)
