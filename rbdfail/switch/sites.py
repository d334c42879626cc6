"""The two sites of a switch: connect to them, and read what they say before planning.

Connecting probes the source while it connects to the target: one connect timeout in all.
Reading lists both sites at once, remembers a full listing of the site the volumes leave (the
inventory a later failover may need, see state.py) and takes a source that stops answering
meanwhile as lost. The planners then work on what was read, never on the connections.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from rbdfail.cluster import Cluster, ImageUser, MirrorInfo
from rbdfail.config import Config, Connect, SiteConfig
from rbdfail.errors import (
    CephError,
    OperationTimedOut,
    RbdfailError,
    SiteUnreachable,
    TargetUnreachable,
)
from rbdfail.state import State
from rbdfail.volumes import Volume, list_volumes, remember_listing
from rbdfail.workers import read_each

UNREACHABLE = (SiteUnreachable, OperationTimedOut)


@dataclass
class Sites:
    """The two connections of a failover; `source` is None when it could not be reached."""

    source_id: str
    target: Cluster
    source: Cluster | None
    source_error: CephError | None

    def lose_source(self, error: CephError) -> None:
        """The source answered the connect, then went away: go on as if it never had."""
        self.source_error, self.source = error, None

    def close(self) -> None:
        for cluster in (self.target, self.source):
            if cluster is not None:
                cluster.close()


def connect_sites(
    config: Config, state: State, target_id: str, connect: Connect, timeout: float
) -> Sites:
    """Connect to the target and probe the source at once: one connect timeout in all.

    An unreachable target is fatal (demoting with nowhere to promote would leave no primary);
    an unreachable source is what a forced failover is for.
    """
    target_site = config.site(target_id)
    source_site = config.backend
    if target_id == source_site.backend_id:
        raise RbdfailError(
            f"{target_id!r} is the backend itself, not a replication device",
            hint="to go back to the original site, use `rbdfail failback`",
        )
    if state.active_backend not in (source_site.backend_id, target_id):
        raise RbdfailError(
            f"the active backend is {state.active_backend!r}, not {source_site.backend_id!r}",
            hint="fail back first (`rbdfail failback`), then fail over to another device",
        )
    return connect_pair(source_site, target_site, connect, timeout, "fail over")


def connect_failback_sites(config: Config, state: State, connect: Connect, timeout: float) -> Sites:
    """The active site as the source, `default` as the target (which must answer)."""
    default = config.backend.backend_id
    source_id = state.active_backend
    if source_id == default:  # a re-run of a finished failback: everything is home already
        if not config.replication_devices:
            raise RbdfailError("no replication_device is configured: nothing to fail back from")
        source_id = config.replication_devices[0].backend_id
    return connect_pair(config.site(source_id), config.backend, connect, timeout, "fail back")


def connect_pair(
    source_site: SiteConfig, target_site: SiteConfig, connect: Connect, timeout: float, what: str
) -> Sites:
    """Connect to the target and probe the source at once: one connect timeout in all."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        target_future = pool.submit(connect, target_site, timeout)
        source_future = pool.submit(connect, source_site, timeout)
        source_error = source_future.exception()
        target_error = target_future.exception()
    if target_error is not None:
        if source_error is None:
            source_future.result().close()
        raise TargetUnreachable(
            f"cannot {what}: {target_error}",
            hint="nothing was changed on any site; the target must answer before any volume "
            "is demoted. Check it with `rbdfail status`",
        ) from target_error
    if source_error is not None and not isinstance(source_error, CephError):
        target_future.result().close()
        raise source_error
    return Sites(
        source_site.backend_id,
        target_future.result(),
        None if source_error else source_future.result(),
        source_error if isinstance(source_error, CephError) else None,
    )


@dataclass(frozen=True)
class SitesSaid:
    """What the two sites said, for a planner: the volumes to consider, each with its mirroring
    where they are primary now, and the mirror state of each image on the other site."""

    source: str
    target: str
    source_error: str | None  # why the source is taken as lost; None while it answers
    volumes: tuple[Volume, ...]
    other_side: dict[str, MirrorInfo]  # failover: the target's images; failback: the source's
    # Failback: images of the source that `default` does not have (a copy being re-created,
    # or a volume created there during the outage): they cannot go home in this run.
    away_only: tuple[str, ...] = ()
    # The target's mirror-snapshot schedules by image (None: its manager did not answer), and
    # who has each of the source's primaries open.
    target_schedules: dict[str, list[str]] | None = None
    source_users: dict[str, list[ImageUser]] | None = None  # None: not read

    @property
    def source_reachable(self) -> bool:
        return self.source_error is None


def read_for_failover(config: Config, sites: Sites, with_users: bool = True) -> SitesSaid:
    """The source's volumes and the target's copies, read at once (three passes per site).

    With the source lost, only the copies on the target can be listed: they are the volumes,
    typed by the target's view, with no mirroring known on the source.
    """
    source_volumes: list[Volume] | None = None
    with ThreadPoolExecutor(1) as reader:  # the two sites are read at once
        target_reading = reader.submit(sites.target.mirror_infos)
        if sites.source is not None:
            try:
                source_volumes = list_volumes(sites.source, config)
            except UNREACHABLE as exc:  # answered the connect, then went away
                sites.lose_source(exc)
        target_infos = target_reading.result()
    if source_volumes is not None:
        remember_listing(config, sites.source_id, source_volumes)
        volumes = source_volumes
    else:
        copies = set(target_infos)
        listed = list_volumes(sites.target, config, target_infos)
        volumes = [replace(v, mirroring=None) for v in listed if v.name in copies]
    on_source = {v.name: v.mirroring for v in volumes if v.mirroring is not None}
    return _said(sites, volumes, target_infos, on_source if with_users else None)


def read_for_failback(config: Config, sites: Sites, with_users: bool = True) -> SitesSaid:
    """Every volume of the backend (the target, home) typed, and the source's images."""
    volumes = list_volumes(sites.target, config)  # the backend's pool: every volume, typed
    remember_listing(config, sites.target.site, volumes)
    away: dict[str, MirrorInfo] = {}
    away_names: list[str] = []
    if sites.source is not None:
        try:
            away = sites.source.mirror_infos()
            away_names = sites.source.list_images()
        except UNREACHABLE as exc:
            sites.lose_source(exc)
    home = {v.name for v in volumes}
    said = _said(sites, volumes, away, away if with_users else None)
    return replace(said, away_only=tuple(sorted(set(away_names) - home)))


def _said(
    sites: Sites,
    volumes: list[Volume],
    other_side: dict[str, MirrorInfo],
    on_source: dict[str, MirrorInfo] | None,
) -> SitesSaid:
    """`on_source`: the source's mirrored images, whose primaries are about to be demoted and
    whose users are read (one call each: for 200 volumes 0.8-1.9 s on the lab); None: users
    not read."""
    moving = [n for n, info in (on_source or {}).items() if info.primary]
    with ThreadPoolExecutor(2) as reader:
        schedules = reader.submit(_schedules, sites.target)
        users = _users(sites, moving) if on_source is not None else None
    return SitesSaid(
        sites.source_id,
        sites.target.site,
        None if sites.source_error is None else str(sites.source_error.reason),
        tuple(volumes),
        other_side,
        target_schedules=schedules.result(),
        source_users=users,
    )


def _schedules(target: Cluster) -> dict[str, list[str]] | None:
    try:
        return target.pool_snapshot_schedules()
    except CephError:  # the manager down or not ours to ask: each schedule is added blind
        return None


def _users(sites: Sites, names: list[str]) -> dict[str, list[ImageUser]]:
    """Who has each volume about to be demoted open on the source (a call per volume, 16 at
    once); a volume that cannot be read is left out: the demote will say."""
    if sites.source is None:
        return {}
    found = read_each(sites.source.image_users, names, (CephError,))
    return {name: users for name, users in found.items() if users}
