"""The use cases on the pools and their volumes: volumes, setup, connection-info."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rbdfail.config import Config, Connect, Deployment, SiteConfig, check_conf_readable
from rbdfail.connection import connection_info as describe
from rbdfail.errors import StateCorrupt
from rbdfail.fanout import over_backends
from rbdfail.pools import SetupAction, SetupItem, prepare
from rbdfail.state import read_state
from rbdfail.volumes import Volume, list_volumes, remember_listing
from rbdfail.workers import all_at_once


def acting_site(config: Config, site_id: str | None) -> SiteConfig:
    """The site named, else the active one: after a failover, volumes are created and
    mirrored there, not on the backend (which may be the site that was lost)."""
    return config.site(site_id or read_state(config.state_dir, config.state_scope).active_backend)


def remember_site_listing(config: Config, site_id: str, volumes: Sequence[Volume]) -> None:
    """Keep the active site's full listing, for a failover that finds it lost (see state.py);
    another site's listing would replace the one that matters."""
    try:
        active = read_state(config.state_dir, config.state_scope).active_backend
    except StateCorrupt:
        return  # which site is active is unknown: keep the listing that was
    if site_id == active:
        remember_listing(config, site_id, volumes)


# ---- volumes ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class VolumesRequest:
    site_id: str | None = None  # none: each backend's active site


@dataclass(frozen=True)
class Listing:
    """One backend's volumes on the site read."""

    site: str
    volumes: list[Volume]


@dataclass(frozen=True)
class VolumesReport:
    several: bool  # the file's backends selected: the shape of the output
    parts: list[tuple[Config, Listing]]


def list_deployment_volumes(
    deployment: Deployment, request: VolumesRequest, connect: Connect
) -> VolumesReport:
    """Every backend's volumes on the site named, else on its active site."""

    def listing(config: Config) -> Listing:
        site = acting_site(config, request.site_id)
        cluster = connect(site, config.replication_connect_timeout)
        try:
            found = list_volumes(cluster, config)
        finally:
            cluster.close()
        remember_site_listing(config, site.backend_id, found)
        return Listing(site.backend_id, found)

    parts = over_backends(deployment.backends, listing).results()
    return VolumesReport(deployment.several, parts)


# ---- setup ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SetupRequest:
    # Acts instead of the configured users on every site: peering creates a cephx user for
    # the peer, which needs more than the rbd profile.
    user: str | None = None


@dataclass(frozen=True)
class SetupReport:
    several: bool
    parts: list[tuple[Config, list[SetupItem]]]

    @property
    def complete(self) -> bool:
        return not any(i.action == SetupAction.FAILED for _, items in self.parts for i in items)


def set_up(deployment: Deployment, request: SetupRequest, connect: Connect) -> SetupReport:
    """Each backend's pool on every site: mirroring mode `image`, peered both ways."""
    user = request.user

    def one(config: Config) -> list[SetupItem]:
        sites = [
            dataclasses.replace(site, user=user, keyring=None) if user else site
            for site in config.sites
        ]
        for site in sites:  # a local mistake, named before any site is reached
            check_conf_readable(site)
        timeout = config.replication_connect_timeout
        backend, *devices = all_at_once(lambda s: connect(s, timeout), sites, lambda c: c.close())
        try:
            return prepare(backend, devices)
        finally:
            for cluster in (backend, *devices):
                cluster.close()

    return SetupReport(deployment.several, over_backends(deployment.backends, one).results())


# ---- connection-info --------------------------------------------------------------------------
@dataclass(frozen=True)
class ConnectionInfoRequest:
    volume: str


def connection_info(
    deployment: Deployment, request: ConnectionInfoRequest, connect: Connect
) -> dict[str, Any]:
    """What a client needs to attach the volume where it is primary now, on the one backend of
    the deployment (a name is only unique within a pool)."""
    return describe(deployment.only(None, "connection-info"), connect, request.volume)
