"""The lab: a real two-site Ceph on this machine, and the disasters it plays."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from rbdfail.cli.base import (
    emit_json,
    json_option,
    main,
    stderr_progress,
)
from rbdfail.errors import ExitCode
from rbdfail.lab.disasters import Disaster

if TYPE_CHECKING:
    from rbdfail.lab.twosite import Lab


# ---- the lab ------------------------------------------------------------------------------
lab_dir_option = click.option(
    "--dir",
    "lab_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The lab's folder. Default: $RBDFAIL_LAB_DIR, else ~/.local/state/rbdfail/lab.",
)


def _lab(lab_dir: Path | None, progress: Callable[[str], None] | None = None) -> Lab:
    from rbdfail.lab.twosite import Lab, default_lab_dir

    return Lab(lab_dir or default_lab_dir(), progress=progress)


@main.group()
def lab() -> None:
    """A real two-site Ceph on this machine, for trying rbdfail, drills and tests.

    Each site (primary, secondary) runs a monitor, a manager, one in-memory OSD and an
    rbd-mirror daemon from Debian's packages, on 127.0.0.1. Their pools `volumes` (and its
    namespace `tenants`) and `fast` mirror in image mode, peered both ways; rbdfail connects as
    client.cinder with rbd-profile caps. The lab writes rbdfail.yaml (one backend, pool
    volumes) and rbdfail-two-pools.yaml (backends `ceph` and `fast`, one per pool).

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
    the_lab = _lab(lab_dir, stderr_progress)
    config_file = the_lab.up()
    click.echo(
        f"The lab is up in {the_lab.root}.\n"
        f"Use it with:\n"
        f"  export RBDFAIL_CONFIG={config_file}\n"
        f"  rbdfail volumes\n"
        f"Two backends (pools volumes and fast): {the_lab.two_pools_config_file}\n"
        f"Admin access to a site: ceph -c {the_lab.root}/primary/ceph.conf -s\n"
        f"Stop it with: rbdfail lab down" + (f" --dir {the_lab.root}" if lab_dir else "")
    )


@lab.command("down")
@lab_dir_option
@click.option("--keep", is_flag=True, help="Keep the folder (logs, config) after stopping.")
def lab_down(lab_dir: Path | None, keep: bool) -> None:
    """Stop every daemon the lab started (by pid) and remove its folder."""
    the_lab = _lab(lab_dir, stderr_progress)
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
        emit_json({"dir": str(the_lab.root), "daemons": [d.__dict__ for d in daemons]})
    elif not daemons:
        click.echo(f"no lab in {the_lab.root} (start one with `rbdfail lab up`)")
    else:
        for d in daemons:
            state = "stopped" if not d.running else "frozen" if d.frozen else "running"
            click.echo(f"{d.site:<10} {d.daemon:<11} pid {d.pid:<8} {state}")
    if not daemons or not all(d.running for d in daemons):
        sys.exit(ExitCode.PARTIAL if daemons else ExitCode.FAILED)


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
    _lab(lab_dir, stderr_progress).recover(site)
    click.echo(f"{site} is answering again")


@lab.command("restart-mirror")
@lab_dir_option
@click.argument("site", type=click.Choice(["primary", "secondary", "default"]))
def lab_restart_mirror(lab_dir: Path | None, site: str) -> None:
    """Restart SITE's rbd-mirror daemon.

    What `rbdfail check` asks for when a site's daemon did not come back after a forced
    failover took it out of the way.

    \b
    Example:
      rbdfail check                       # "restart the rbd-mirror daemon on secondary"
      rbdfail lab restart-mirror secondary
    """
    _lab(lab_dir).restart_rbd_mirror(site)
    click.echo(f"{site}'s rbd-mirror restarted")
