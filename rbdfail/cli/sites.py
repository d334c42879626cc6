"""Commands on the sites and their volumes: list them, make the pools ready, connect a client."""

from __future__ import annotations

import sys

import click

from rbdfail.cli.base import (
    AppContext,
    acting_site,
    by_backend_json,
    emit_json,
    json_option,
    main,
    remember_site_listing,
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
    from rbdfail.volumes import list_volumes

    backends = app.backends()
    listings = []
    for config in backends:
        site = acting_site(config, site_id)
        cluster = app.connect(site, config.replication_connect_timeout)
        try:
            found = list_volumes(cluster, config)
        finally:
            cluster.close()
        remember_site_listing(config, site.backend_id, found)
        listings.append((config, site.backend_id, found))
    several = len(backends) > 1
    parts = [(config, (site_name, found)) for config, site_name, found in listings]
    if as_json and not several:
        emit_json([v.to_json() for v in listings[0][2]])  # a list, as it always was
    elif as_json:
        emit_json(
            by_backend_json(
                parts, several, lambda part: {"volumes": [v.to_json() for v in part[1]]}
            )
        )
    else:
        show_by_backend(parts, several, lambda part: render.volumes_table(part[1], site=part[0]))


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
        emit_json(
            by_backend_json(done, several, lambda items: {"items": [i.to_json() for i in items]})
        )
    else:
        show_by_backend(done, several, render.setup_items)
    if any(item.action == pools.SetupAction.FAILED for _, items in done for item in items):
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
    from rbdfail.connection import connection_info as describe

    info = describe(app.config(), app.connect, volume)
    if as_json:
        emit_json(info)
        return
    data = info["data"]
    click.echo(f"volume {volume} is primary on site {info['site']!r}")
    for key in ("name", "cluster_name", "auth_username"):
        click.echo(f"  {key}: {data[key]}")
    click.echo(f"  monitors: {', '.join(a for m in data['monitors'] for a in m['addresses'])}")
