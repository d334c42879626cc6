"""Commands on the pools and their volumes: list them, make the pools ready, connect a client."""

from __future__ import annotations

import sys

import click

from rbdfail.cli.base import (
    AppContext,
    by_backend_json,
    emit_json,
    json_option,
    main,
    show_by_backend,
    site_option,
)
from rbdfail.errors import ExitCode


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
    from rbdfail.app.pools import VolumesRequest, list_deployment_volumes

    report = list_deployment_volumes(app.deployment(), VolumesRequest(site_id), app.connect)
    parts = [(config, (listing.site, listing.volumes)) for config, listing in report.parts]
    if as_json and not report.several:
        emit_json([v.to_json() for v in report.parts[0][1].volumes])  # a list, as it always was
    elif as_json:
        emit_json(
            by_backend_json(
                parts, report.several, lambda part: {"volumes": [v.to_json() for v in part[1]]}
            )
        )
    else:
        show_by_backend(
            parts, report.several, lambda part: render.volumes_table(part[1], site=part[0])
        )


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
    from rbdfail import render
    from rbdfail.app.pools import SetupRequest, set_up

    report = set_up(app.deployment(), SetupRequest(user), app.connect)
    if as_json:
        emit_json(
            by_backend_json(
                report.parts, report.several, lambda items: {"items": [i.to_json() for i in items]}
            )
        )
    else:
        show_by_backend(report.parts, report.several, render.setup_items)
    if not report.complete:
        sys.exit(ExitCode.PARTIAL)


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
    from rbdfail.app.pools import ConnectionInfoRequest
    from rbdfail.app.pools import connection_info as describe

    info = describe(app.deployment(), ConnectionInfoRequest(volume), app.connect)
    if as_json:
        emit_json(info)
        return
    data = info["data"]
    click.echo(f"volume {volume} is primary on site {info['site']!r}")
    for key in ("name", "cluster_name", "auth_username"):
        click.echo(f"  {key}: {data[key]}")
    click.echo(f"  monitors: {', '.join(a for m in data['monitors'] for a in m['addresses'])}")
