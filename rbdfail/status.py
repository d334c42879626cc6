"""Where every volume is primary and how its replication is doing, on every site.

Each site is read concurrently, in one pass per pool (mirror infos and statuses), within the
connect timeout: an unreachable site is shown as unreachable and the other sites' view is still
complete. Nothing here prints.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from rbdfail.cluster import (
    Cluster,
    ImageStatus,
    ImageUser,
    MirrorInfo,
    MirrorMode,
    Peer,
    PoolMirrorMode,
    ReplayState,
)
from rbdfail.config import Config, Connect, SiteConfig
from rbdfail.errors import CephError
from rbdfail.rpo import UNKNOWN as RPO_UNKNOWN
from rbdfail.rpo import Rpo, copy_rpo, description_tail, schedule_verdict, whole_snapshot_time
from rbdfail.state import State, daemons_taken_out
from rbdfail.volumes import Volume, list_volumes
from rbdfail.workers import read_each


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
    schedules: dict[str, list[str]] | None = None  # None: the manager did not answer
    # Snapshot-mode copies whose status does not say how fresh they are: their newest whole
    # mirror snapshot (None: the first sync has not finished).
    synced: dict[str, datetime | None] = field(default_factory=dict)
    users: dict[str, list[ImageUser]] = field(default_factory=dict)  # of its primaries
    # Journal-mode copies: whether each has replayed the peer since this site demoted it.
    replayed: dict[str, bool | None] = field(default_factory=dict)

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
    # A journal-mode copy: False while it was demoted here and has replayed nothing of the
    # peer since; None when not read (not a journal copy) or unreadable.
    replayed_since_demotion: bool | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "reachable": self.reachable,
            "primary": self.primary,
            "state": self.state,
            "description": self.description,
            "last_update": self.last_update.isoformat() if self.last_update else None,
            "daemon_up": self.up,
            "replayed_since_demotion": self.replayed_since_demotion,
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
    rpo: Rpo = RPO_UNKNOWN
    snapshot_interval: str | None = None  # the schedule its type asks for
    schedule_ok: bool | None = None  # None: no schedule asked for, or it cannot be told
    schedule_note: str = ""
    users: tuple[ImageUser, ...] | None = None  # on its primary; None: not read there

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
                if "split-brain" in image.description and self.primary_site in self.sites:
                    found.append(_resync_hint(site, self.primary_site))
            # A copy called split-brain never replays: the resync hint above says what to do.
            waits = (
                image.replayed_since_demotion is False and "split-brain" not in image.description
            )
            if waits and self.primary_site in self.sites:
                found.append(_unreplayed_hint(site, self.primary_site))
            if mirrored and image.reachable and image.primary is None:
                found.append(f"{site}: no mirrored copy yet ({image.state})")
        if self.schedule_ok is False:
            found.append(self.schedule_note)
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
            "rpo": self.rpo.to_json(),
            "schedule": {
                "interval": self.snapshot_interval,
                "ok": self.schedule_ok,
                "note": self.schedule_note,
            },
            "users": [
                {"client": u.client, "address": u.address, "holds_lock": u.holds_lock}
                for u in self.users
            ]
            if self.users is not None
            else None,
            "problems": self.problems,
        }


@dataclass(frozen=True)
class StatusReport:
    active_backend: str
    sites: dict[str, SiteView]
    volumes: tuple[VolumeStatus, ...]
    # Per site whose rbd-mirror a forced failover took out and whose blocklist entry has
    # lapsed since: when and for how long (the journal's `daemon-out`).
    taken_out: dict[str, tuple[datetime, int]] = field(default_factory=dict)

    def daemon_down_why(self, site: str) -> str:
        """Why the site's rbd-mirror is down and what to do, as far as rbdfail knows."""
        if site not in self.taken_out:
            return "the image statuses say its daemon is not running; start it on that site"
        when, seconds = self.taken_out[site]
        lapsed = (when + timedelta(seconds=seconds)).strftime("%Y-%m-%d %H:%M:%S UTC")
        return (
            f"a forced failover blocklisted it at {when:%Y-%m-%d %H:%M:%S UTC} for {seconds}s; "
            f"the entry lapsed at {lapsed} and it has not come back by itself: restart the "
            f"rbd-mirror daemon on {site} (`ceph osd blocklist ls` there shows any entry left)"
        )

    def mirror_daemon(self, site: str) -> tuple[str, int]:
        """The site's rbd-mirror: "up", "down" or "unknown", and how many image statuses say
        so. Read from the `up` flag it stamps on every image status, since the rbd profile
        may not read the service map (EACCES)."""
        stamps = [v.sites[site].up for v in self.volumes if v.sites[site].up is not None]
        if not stamps:
            return "unknown", 0
        return ("up", stamps.count(True)) if any(stamps) else ("down", len(stamps))

    def worst_rpo(self, site: str) -> VolumeStatus | None:
        """The replicated volume whose copy on `site` would lose the most (an unknown RPO is
        the worst), None when the site holds no copy."""
        copies = [v for v in self.volumes if v.replicated and v.sites[site].primary is False]
        return max(
            copies,
            key=lambda v: float("inf") if v.rpo.seconds is None else v.rpo.seconds,
            default=None,
        )

    @property
    def where_primary(self) -> str | None:
        """The one site where every replicated, mirrored volume is primary, if there is one."""
        found = {v.primary_site for v in self.volumes if v.replicated}
        return found.pop() if len(found) == 1 else None

    @property
    def problems(self) -> list[str]:
        found = [f"site {s}: {p}" for s, view in self.sites.items() for p in view.problems]
        found += [
            f"site {s}: rbd-mirror is down: {self.daemon_down_why(s)}"
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

    def _worst(self, site: str) -> dict[str, Any] | None:
        worst = self.worst_rpo(site)
        return {"volume": worst.name, **worst.rpo.to_json()} if worst else None

    def to_json(self) -> dict[str, Any]:
        return {
            "active_backend": self.active_backend,
            "healthy": not self.problems,
            "problems": self.problems,
            "volumes": [v.to_json() for v in self.volumes],
            "sites": {
                site: view.to_json()
                | {"rbd_mirror": self.mirror_daemon(site)[0], "worst_rpo": self._worst(site)}
                for site, view in self.sites.items()
            },
        }


def gather(
    config: Config,
    state: State,
    connect: Connect,
    names: Sequence[str] = (),
    now: float | None = None,
    with_users: bool = False,
) -> StatusReport:
    """Read every site at once; one connect timeout is the most an unreachable site costs.
    `with_users` also lists who has each primary open: one call per mirrored primary, more
    than the rest of status costs (docs/performance.md)."""
    sites = config.sites
    with ThreadPoolExecutor(max_workers=len(sites)) as pool:
        views = list(
            pool.map(lambda site: _read_site(config, site, connect, names, with_users), sites)
        )
    now = time.time() if now is None else now
    by_id = {view.backend_id: view for view in views}
    typed = {volume.name: volume for view in views for volume in view.volumes}
    everywhere = sorted({name for view in views for name in view.names})
    if names:
        everywhere = [n for n in everywhere if n in names]
    volumes = tuple(
        _volume(config, state, name, typed.get(name), by_id, now) for name in everywhere
    )
    taken_out = {
        site: (when, seconds)
        for site, (when, seconds) in daemons_taken_out(config.state_dir, config.state_scope).items()
        if when.timestamp() + seconds <= now
    }
    return StatusReport(state.active_backend, by_id, volumes, taken_out)


def _read_site(
    config: Config,
    site: SiteConfig,
    connect: Connect,
    names: Sequence[str],
    with_users: bool,
) -> SiteView:
    try:
        cluster = connect(site, config.replication_connect_timeout)
    except CephError as exc:
        return SiteView(site.backend_id, reachable=False, error=exc.reason)
    try:
        infos = cluster.mirror_infos()
        backend = site is config.backend
        volumes = tuple(list_volumes(cluster, config, infos)) if backend else ()
        statuses = cluster.mirror_statuses()
        wanted = {n: i for n, i in infos.items() if not names or n in names}
        unsaid = [
            n
            for n, info in wanted.items()
            if not info.primary
            and info.mode == MirrorMode.SNAPSHOT
            and "local_snapshot_timestamp" not in getattr(statuses.get(n), "description", "")
        ]
        primaries = [n for n, info in wanted.items() if info.primary] if with_users else []
        journal_copies = [
            n for n, info in wanted.items() if not info.primary and info.mode == MirrorMode.JOURNAL
        ]
        return SiteView(
            site.backend_id,
            reachable=True,
            pool_mode=cluster.pool_mirror_mode(),
            peers=tuple(cluster.peers()),
            infos=infos,
            statuses=statuses,
            names=frozenset(v.name for v in volumes) or frozenset(cluster.list_images()),
            volumes=volumes,
            schedules=_schedules(cluster),
            synced=read_each(
                lambda name: whole_snapshot_time(cluster.mirror_snapshots(name)),
                unsaid,
                (CephError,),
            ),
            users=read_each(cluster.image_users, primaries, (CephError,)),
            replayed=read_each(cluster.replayed_since_own_demotion, journal_copies, (CephError,)),
        )
    except CephError as exc:
        return SiteView(site.backend_id, reachable=False, error=exc.reason)
    finally:
        cluster.close()


def _schedules(cluster: Cluster) -> dict[str, list[str]] | None:
    try:
        return cluster.pool_snapshot_schedules()
    except CephError:  # a manager down or a user without mgr caps: schedules unknown
        return None


def _volume(
    config: Config,
    state: State,
    name: str,
    volume: Volume | None,
    sites: dict[str, SiteView],
    now: float,
) -> VolumeStatus:
    if volume is None:  # not on the backend, or the backend is unreachable: rules only
        vt = config.volume_type_for(name)
        volume = Volume(
            name,
            vt.name,
            vt.replicated,
            vt.mirror_mode if vt.replicated else None,
            None,
            snapshot_interval=vt.snapshot_interval,
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
    rpo = _rpo(name, mode or volume.mirror_mode, sites, primaries, now)
    wanted = volume.snapshot_interval if volume.replicated else None
    home = sites.get(primaries[0]) if len(primaries) == 1 else None
    schedule_ok, schedule_note = schedule_verdict(
        wanted,
        home.schedules.get(name, []) if home and home.schedules is not None else None,
        rpo,
        now,
    )
    users = home.users.get(name) if home else None
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
        rpo=rpo,
        snapshot_interval=wanted,
        schedule_ok=schedule_ok,
        schedule_note=schedule_note,
        users=tuple(users) if users is not None else None,
    )


def _rpo(
    name: str, mode: MirrorMode | None, sites: dict[str, SiteView], primaries: list[str], now: float
) -> Rpo:
    """The RPO of the copy on the site that would take over: with one primary, the freshest
    of its copies (two sites: the one copy)."""
    if len(primaries) != 1:
        why = "primary on two sites" if primaries else "primary nowhere (or on a site not read)"
        return replace(RPO_UNKNOWN, how=why)
    found = []
    for site, view in sites.items():
        info = (view.infos or {}).get(name)
        if site == primaries[0] or not view.reachable or info is None or info.primary:
            continue
        status = (view.statuses or {}).get(name)
        found.append(copy_rpo(mode, status, now, view.synced.get(name), listed=name in view.synced))
    known = [r for r in found if r.seconds is not None]
    if known:
        return min(known, key=lambda r: r.seconds or 0.0)
    return found[0] if found else replace(RPO_UNKNOWN, how="no copy on a reachable site")


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
        view.replayed.get(name),
    )


def _lag(
    name: str, sites: dict[str, SiteView], primaries: list[str]
) -> tuple[float | None, int | None]:
    """From the description of the copy (the non-primary side), as Ceph writes it:
    `replaying, {"local_snapshot_timestamp": .., "remote_snapshot_timestamp": ..}` in snapshot
    mode, `replaying, {"entries_behind_primary": ..}` in journal mode."""
    for site, view in sites.items():
        status = (view.statuses or {}).get(name)
        tail = description_tail(status)
        if site in primaries or not tail:
            continue
        if "remote_snapshot_timestamp" in tail:
            if not tail.get("local_snapshot_timestamp"):
                return None, None  # never synced yet: the lag is unknown, not decades
            behind = tail["remote_snapshot_timestamp"] - tail["local_snapshot_timestamp"]
            return float(max(0, behind)), None
        if "entries_behind_primary" in tail:
            return None, int(tail["entries_behind_primary"])
    return None, None


def _unreplayed_hint(site: str, primary_site: str) -> str:
    """A journal copy that replayed nothing of the primary since its own demotion is one Ceph
    would promote without the primary's writes: a switch to it waits for it, then rolls back.
    Normal for a few seconds after a switch; for longer, its replay has not resumed."""
    return (
        f"{site}: replayed nothing of {primary_site} since {site} demoted it: a switch to "
        f"{site} now waits for it, then rolls back; if this lasts, see that {site}'s rbd-mirror "
        f"runs (`rbd mirror image status` there)"
    )


def _resync_hint(site: str, primary_site: str) -> str:
    """A demoted copy Ceph calls split-brain never replays again by itself; rbd-mirror can say
    so after a clean journal-mode switch too (likely having read the peer's tags
    mid-promotion: docs/design/replay-proofs.md). A resync re-copies it from the
    primary, which throws away whatever only this copy holds: safe once the primary is known
    to hold the newest writes."""
    return (
        f"{site}: its copy will not replay until resynced; once {primary_site} is known to hold "
        f"the newest writes (a clean switch by rbdfail proves it), resync it on {site} "
        "(`rbd mirror image resync`)"
    )
