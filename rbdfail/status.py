"""Where every volume is primary and how its replication is doing, on every site.

Each site is read concurrently, in one pass per pool (mirror infos and statuses), within the
connect timeout: an unreachable site is shown as unreachable and the other sites' view is still
complete. Nothing here prints.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from rbdfail.cluster import (
    ImageStatus,
    MirrorInfo,
    MirrorMode,
    Peer,
    PoolMirrorMode,
    ReplayState,
)
from rbdfail.config import Config, Connect, SiteConfig
from rbdfail.errors import CephError
from rbdfail.state import State
from rbdfail.volumes import Volume, list_volumes


@dataclass(frozen=True)
class SiteView:
    """One site as read just now; reachable False when it did not answer in time."""

    backend_id: str
    reachable: bool
    error: str | None = None
    pool_mode: PoolMirrorMode | None = None
    peers: tuple[Peer, ...] = ()
    infos: dict[str, MirrorInfo] | None = None
    statuses: dict[str, ImageStatus] | None = None
    names: frozenset[str] = frozenset()
    # Volume types with their metadata overrides, read on the backend only; when it is
    # unreachable, the types come from the config's rules alone.
    volumes: tuple[Volume, ...] = ()

    @property
    def problems(self) -> list[str]:
        if not self.reachable:
            return [f"unreachable: {self.error}"]
        found = []
        if self.pool_mode != PoolMirrorMode.IMAGE:
            found.append(f"pool mirroring mode is {self.pool_mode}, not image")
        if not self.peers:
            found.append("the pool has no mirroring peer")
        return found

    def to_json(self) -> dict[str, Any]:
        return {
            "reachable": self.reachable,
            "error": self.error,
            "pool_mirror_mode": self.pool_mode,
            "peers": [{"site_name": p.site_name, "direction": p.direction} for p in self.peers],
            "problems": self.problems,
        }


@dataclass(frozen=True)
class SiteImage:
    """One volume on one site."""

    reachable: bool
    present: bool
    primary: bool | None
    state: str  # the replay state, "not mirrored", "absent", "creating" or "unreachable"
    description: str
    last_update: datetime | None
    up: bool | None = None  # whether the site's rbd-mirror that reported it is running

    def to_json(self) -> dict[str, Any]:
        return {
            "reachable": self.reachable,
            "primary": self.primary,
            "state": self.state,
            "description": self.description,
            "last_update": self.last_update.isoformat() if self.last_update else None,
            "daemon_up": self.up,
        }


@dataclass(frozen=True)
class VolumeStatus:
    name: str
    volume_type: str
    replicated: bool
    mirror_mode: MirrorMode | None  # as mirrored now, else as its type asks
    status: str
    previous_status: str | None
    primary_site: str  # a backend id, "none", "split-brain" or "unknown"
    sites: dict[str, SiteImage]
    lag_seconds: float | None  # snapshot mode: newest primary snapshot - last synced
    entries_behind: int | None  # journal mode: entries the copy has not replayed
    type_error: str | None = None

    @property
    def problems(self) -> list[str]:
        found = [self.type_error] if self.type_error else []
        mirrored = any(s.primary is not None for s in self.sites.values())
        if self.replicated and not mirrored and self.primary_site != "unknown":
            found.append("replicated by type but not mirrored")
        if self.primary_site in ("none", "split-brain", "unknown"):
            found.append(f"primary: {self.primary_site}")
        for site, image in self.sites.items():
            if image.state in (ReplayState.ERROR, ReplayState.UNKNOWN) and image.primary is False:
                found.append(f"{site}: {image.state}: {image.description}")
            if mirrored and image.reachable and image.primary is None:
                found.append(f"{site}: no mirrored copy yet ({image.state})")
        return found

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "volume_type": self.volume_type,
            "replicated": self.replicated,
            "mirror_mode": self.mirror_mode,
            "status": self.status,
            "previous_status": self.previous_status,
            "primary_site": self.primary_site,
            "sites": {site: image.to_json() for site, image in self.sites.items()},
            "lag_seconds": self.lag_seconds,
            "entries_behind": self.entries_behind,
            "problems": self.problems,
        }


@dataclass(frozen=True)
class StatusReport:
    active_backend: str
    sites: dict[str, SiteView]
    volumes: tuple[VolumeStatus, ...]

    def mirror_daemon(self, site: str) -> tuple[str, int]:
        """The site's rbd-mirror: "up", "down" or "unknown", and how many image statuses say
        so. Read from the `up` flag it stamps on every image status, since the rbd profile
        may not read the service map (EACCES)."""
        stamps = [v.sites[site].up for v in self.volumes if v.sites[site].up is not None]
        if not stamps:
            return "unknown", 0
        return ("up", stamps.count(True)) if any(stamps) else ("down", len(stamps))

    @property
    def where_primary(self) -> str | None:
        """The one site where every replicated, mirrored volume is primary, if there is one."""
        found = {v.primary_site for v in self.volumes if v.replicated}
        return found.pop() if len(found) == 1 else None

    @property
    def problems(self) -> list[str]:
        found = [f"site {s}: {p}" for s, view in self.sites.items() for p in view.problems]
        found += [
            f"site {s}: rbd-mirror is down"
            for s in self.sites
            if self.mirror_daemon(s)[0] == "down"
        ]
        actual = self.where_primary
        if actual and actual in self.sites and actual != self.active_backend:
            found.append(
                f"the state dir says {self.active_backend!r} is active, but the "
                f"replicated volumes are primary on {actual!r}"
            )
        found += [f"volume {v.name}: {p}" for v in self.volumes for p in v.problems]
        return found

    def to_json(self) -> dict[str, Any]:
        return {
            "active_backend": self.active_backend,
            "healthy": not self.problems,
            "problems": self.problems,
            "volumes": [v.to_json() for v in self.volumes],
            "sites": {
                site: view.to_json() | {"rbd_mirror": self.mirror_daemon(site)[0]}
                for site, view in self.sites.items()
            },
        }


def gather(
    config: Config, state: State, connect: Connect, names: Sequence[str] = ()
) -> StatusReport:
    """Read every site at once; one connect timeout is the most an unreachable site costs."""
    sites = config.sites
    with ThreadPoolExecutor(max_workers=len(sites)) as pool:
        views = list(pool.map(lambda site: _read_site(config, site, connect), sites))
    by_id = {view.backend_id: view for view in views}
    typed = {volume.name: volume for view in views for volume in view.volumes}
    everywhere = sorted({name for view in views for name in view.names})
    if names:
        everywhere = [n for n in everywhere if n in names]
    volumes = tuple(_volume(config, state, name, typed.get(name), by_id) for name in everywhere)
    return StatusReport(state.active_backend, by_id, volumes)


def _read_site(config: Config, site: SiteConfig, connect: Connect) -> SiteView:
    try:
        cluster = connect(site, config.replication_connect_timeout)
    except CephError as exc:
        return SiteView(site.backend_id, reachable=False, error=exc.reason)
    try:
        infos = cluster.mirror_infos()
        backend = site is config.backend
        volumes = tuple(list_volumes(cluster, config, infos)) if backend else ()
        return SiteView(
            site.backend_id,
            reachable=True,
            pool_mode=cluster.pool_mirror_mode(),
            peers=tuple(cluster.peers()),
            infos=infos,
            statuses=cluster.mirror_statuses(),
            names=frozenset(v.name for v in volumes) or frozenset(cluster.list_images()),
            volumes=volumes,
        )
    except CephError as exc:
        return SiteView(site.backend_id, reachable=False, error=exc.reason)
    finally:
        cluster.close()


def _volume(
    config: Config, state: State, name: str, volume: Volume | None, sites: dict[str, SiteView]
) -> VolumeStatus:
    if volume is None:  # not on the backend, or the backend is unreachable: rules only
        vt = config.volume_type_for(name)
        volume = Volume(
            name, vt.name, vt.replicated, vt.mirror_mode if vt.replicated else None, None
        )
    images = {site: _site_image(name, view) for site, view in sites.items()}
    primaries = [site for site, image in images.items() if image.primary]
    mirrored = any(image.primary is not None for image in images.values())
    if mirrored:  # a copy listed by the pool before its mirroring info is: rbd-mirror creating it
        images = {
            site: replace(image, state="creating") if image.state == "not mirrored" else image
            for site, image in images.items()
        }
    present = [site for site, image in images.items() if image.present]
    if len(primaries) > 1:
        primary_site = "split-brain"
    elif primaries:
        primary_site = primaries[0]
    elif not mirrored and present and not volume.replicated:
        primary_site = present[0]  # a plain image is writable where it lives
    elif not all(image.reachable for image in images.values()):
        primary_site = "unknown"  # the unreachable site may hold the primary
    else:
        primary_site = "none"
    mode = next((i.mode for v in sites.values() if (i := (v.infos or {}).get(name))), None)
    lag, behind = _lag(name, sites, primaries)
    record = state.volume(name)
    return VolumeStatus(
        name=name,
        volume_type=volume.volume_type,
        replicated=volume.replicated,
        mirror_mode=mode or volume.mirror_mode,
        status=record.status,
        previous_status=record.previous_status,
        primary_site=primary_site,
        sites=images,
        lag_seconds=lag,
        entries_behind=behind,
        type_error=volume.type_error,
    )


def _site_image(name: str, view: SiteView) -> SiteImage:
    if not view.reachable:
        return SiteImage(False, False, None, "unreachable", view.error or "", None)
    info = (view.infos or {}).get(name)
    if info is None:
        present = name in view.names
        return SiteImage(True, present, None, "not mirrored" if present else "absent", "", None)
    status = (view.statuses or {}).get(name)
    return SiteImage(
        True,
        True,
        info.primary,
        status.state if status else ReplayState.UNKNOWN,
        status.description if status else "no status reported yet",
        status.last_update if status else None,
        # Not yet reported by any daemon ("status not found", up False) says nothing about it.
        status.up if status and status.last_update else None,
    )


def _lag(
    name: str, sites: dict[str, SiteView], primaries: list[str]
) -> tuple[float | None, int | None]:
    """From the description of the copy (the non-primary side), as Ceph writes it:
    `replaying, {"local_snapshot_timestamp": .., "remote_snapshot_timestamp": ..}` in snapshot
    mode, `replaying, {"entries_behind_primary": ..}` in journal mode."""
    for site, view in sites.items():
        status = (view.statuses or {}).get(name)
        if site in primaries or status is None or ", {" not in status.description:
            continue
        try:
            tail = json.loads(status.description.split(", ", 1)[1])
        except ValueError:
            continue
        if "remote_snapshot_timestamp" in tail:
            if not tail.get("local_snapshot_timestamp"):
                return None, None  # never synced yet: the lag is unknown, not decades
            behind = tail["remote_snapshot_timestamp"] - tail["local_snapshot_timestamp"]
            return float(max(0, behind)), None
        if "entries_behind_primary" in tail:
            return None, int(tail["entries_behind_primary"])
    return None, None
