"""The sites of a switch: connect to them, and read what they say before planning.

Connecting probes the source while it connects to the target: one connect timeout in all.
Reading lists both sites at once, remembers a full listing of the site the volumes leave (the
inventory a later failover may need, see state.py) and takes a source that stops answering
meanwhile as lost. The planners then work on what was read, never on the connections.

With several replication devices, every device is connected at once (still one connect
timeout). A failback takes as its source the device the volumes are primary on
(`choose_source`): a failback cut short leaves them on the device it came from, not on the
first one configured. The devices neither source nor target stay connected, only read: the
planners are told where each volume really is, so that no switch promotes a volume while it is
primary on another device (issue 13 item 6).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import NoReturn

from rbdfail.cluster import Cluster, ImageStatus, ImageUser, MirrorInfo, ReplayState
from rbdfail.config import Config, Connect, SiteConfig
from rbdfail.errors import (
    CephError,
    OperationTimedOut,
    RbdfailError,
    SiteUnreachable,
    TargetUnreachable,
)
from rbdfail.state import State
from rbdfail.switch.history import last_made_primary
from rbdfail.volumes import Volume, list_volumes, remember_listing
from rbdfail.workers import read_each

UNREACHABLE = (SiteUnreachable, OperationTimedOut)


@dataclass
class Sites:
    """The two connections of a switch; `source` is None when it could not be reached.

    With several replication devices, it also holds the devices neither source nor target:
    `others`, connected, only ever read (where each volume is primary), and `unread`, those
    that did not answer or could not be read, each with why. The engine never sees them.
    """

    source_id: str
    target: Cluster
    source: Cluster | None
    source_error: CephError | None
    others: dict[str, Cluster] = field(default_factory=dict)
    unread: dict[str, CephError] = field(default_factory=dict)

    def forget_source(self, error: CephError) -> None:
        """The source answered the connect, then went away: go on as if it never had."""
        self.source_error, self.source = error, None

    def close(self) -> None:
        for cluster in (self.target, self.source, *self.others.values()):
            if cluster is not None:
                cluster.close()


def connect_sites(
    config: Config, state: State, target_id: str, connect: Connect, timeout: float
) -> Sites:
    """Connect to the target and probe the source at once: one connect timeout in all.

    An unreachable target is fatal (demoting with nowhere to promote would leave no primary);
    an unreachable source is what a forced failover is for. With several replication devices
    the other devices are probed too, at once, to be read: a volume a failback left primary on
    one of them must not be made primary on the target as well.
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
    if len(config.replication_devices) == 1:
        return connect_pair(source_site, target_site, connect, timeout, "fail over")
    others = [d for d in config.replication_devices if d.backend_id != target_id]
    target, answering, unread = _connect_all(
        target_site, [source_site, *others], connect, timeout, "fail over"
    )
    default = source_site.backend_id
    return Sites(
        default,
        target,
        answering.pop(default, None),
        unread.pop(default, None),
        others=answering,
        unread=unread,
    )


def connect_failback_sites(config: Config, state: State, connect: Connect, timeout: float) -> Sites:
    """`default` as the target (which must answer), and as the source the device the volumes
    are on: with one replication device, that device; with several, every device connected
    at once (one connect timeout in all) and read, and the one `choose_source` names.

    A failback cut short leaves `default` active while some volumes are still primary on the
    device it came from: taking the first device configured then promoted volumes of another
    device at home and 'rolled back' onto the wrong device, primary on two (issue 13 item 6).
    """
    default = config.backend.backend_id
    source_id = state.active_backend
    if not config.replication_devices:
        raise RbdfailError("no replication_device is configured: nothing to fail back from")
    if source_id != default:
        config.site(source_id)  # a device the config no longer has is refused, naming it
    if len(config.replication_devices) == 1:
        if source_id == default:  # a re-run of a finished failback: everything is home already
            source_id = config.replication_devices[0].backend_id
        return connect_pair(config.site(source_id), config.backend, connect, timeout, "fail back")
    devices = config.replication_devices
    home, answering, unread = _connect_all(config.backend, devices, connect, timeout, "fail back")
    held = _primaries_by_device(dict(answering), unread, answering)
    source_id = choose_source(state.active_backend, [d.backend_id for d in devices], held, unread)
    return Sites(
        source_id,
        home,
        answering.pop(source_id, None),
        unread.pop(source_id, None),
        others=answering,
        unread=unread,
    )


def _connect_all(
    target_site: SiteConfig,
    probed: Sequence[SiteConfig],
    connect: Connect,
    timeout: float,
    what: str,
) -> tuple[Cluster, dict[str, Cluster], dict[str, CephError]]:
    """Connect to the target and probe every other site at once: one connect timeout in all.
    The target's connection, the sites that answered, and those that did not with why."""
    with ThreadPoolExecutor(max_workers=len(probed) + 1) as pool:
        target_future = pool.submit(connect, target_site, timeout)
        futures = {site.backend_id: pool.submit(connect, site, timeout) for site in probed}
        target_error = target_future.exception()
        errors = {site: future.exception() for site, future in futures.items()}
    answering = {site: futures[site].result() for site, e in errors.items() if e is None}
    strange = [e for e in errors.values() if e is not None and not isinstance(e, CephError)]
    if target_error is not None or strange:
        for cluster in answering.values():
            cluster.close()
        if target_error is not None:
            _target_unreachable(target_error, what)
        target_future.result().close()
        raise strange[0]
    unread = {site: e for site, e in errors.items() if isinstance(e, CephError)}
    return target_future.result(), answering, unread


def _primaries_by_device(
    devices: dict[str, Cluster], unread: dict[str, CephError], answering: dict[str, Cluster]
) -> dict[str, int]:
    """How many mirrored images each of `devices` holds as primary (read at once). A device
    that cannot be read joins `unread` and leaves `answering` (not closed: a call that failed
    by timing out may still be inside librbd, see usecase.py)."""
    held: dict[str, int] = {}
    with ThreadPoolExecutor(max_workers=max(1, len(devices))) as pool:
        readings = {device: pool.submit(c.mirror_infos) for device, c in devices.items()}
        for device, reading in readings.items():
            try:
                held[device] = sum(info.primary for info in reading.result().values())
            except CephError as exc:
                unread[device] = exc
                answering.pop(device, None)
    return held


def choose_source(
    active: str, devices: Sequence[str], held: dict[str, int], unread: Collection[str]
) -> str:
    """The device a failback moves volumes from: the active one if it holds primaries, else
    the first (as configured) that does: each device's volumes are moved by the run whose
    source it is, and another device's are left to the next run, named. When no device that
    answered holds any: the active device (as with one device, answering or not), else the
    first that did not answer (its volumes may be the ones not home), else the first."""
    holders = [d for d in devices if held.get(d)]
    if active in holders or (active in devices and not holders):
        return active
    if holders:
        return holders[0]
    lost = [d for d in devices if d in unread]
    return lost[0] if lost else devices[0]


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
        _target_unreachable(target_error, what)
    if source_error is not None and not isinstance(source_error, CephError):
        target_future.result().close()
        raise source_error
    return Sites(
        source_site.backend_id,
        target_future.result(),
        None if source_error else source_future.result(),
        source_error if isinstance(source_error, CephError) else None,
    )


def _target_unreachable(error: BaseException, what: str) -> NoReturn:
    raise TargetUnreachable(
        f"cannot {what}: {error}",
        hint="nothing was changed on any site; the target must answer before any volume "
        "is demoted. Check it with `rbdfail status`",
    ) from error


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
    # Several replication devices: the devices neither source nor target where each image is
    # primary (volumes of `default` or not), those that could not be read (each with why), and
    # the volumes the journal says were last made primary on one of those (by its name).
    elsewhere: dict[str, tuple[str, ...]] = field(default_factory=dict)
    unread: dict[str, str] = field(default_factory=dict)
    last_on_unread: dict[str, str] = field(default_factory=dict)
    # Failback: volumes whose copy here (`default`) Ceph reports split-brain: demoted here,
    # then forced on the source before the demotion reached it (measured, issue 13 item 9).
    home_split: frozenset[str] = frozenset()

    @property
    def source_reachable(self) -> bool:
        return self.source_error is None


@dataclass(frozen=True)
class Elsewhere:
    """What the replication devices other than the source and the target say of one volume
    (several devices only), and, failing back, whether Ceph says its copy at home split."""

    primary_on: tuple[str, ...] = ()  # the other devices it is primary on
    last_on_unread: str | None = None  # the journal last made it primary there; no answer
    unread_why: str = ""
    split_here: bool = False  # failback: Ceph reports its copy at home split-brain

    @classmethod
    def of(cls, said: SitesSaid, name: str) -> Elsewhere:
        last = said.last_on_unread.get(name)
        return cls(
            said.elsewhere.get(name, ()),
            last,
            said.unread.get(last, "") if last else "",
            name in said.home_split,
        )

    def maybe_primary_unread(self, command: str) -> str | None:
        """Why it is left as it is when the journal last made it primary on a device that
        does not answer; None otherwise."""
        if self.last_on_unread is None:
            return None
        return (
            f"the journal says it was last made primary on {self.last_on_unread}, which does "
            f"not answer ({self.unread_why}): it may still be primary there, left as it is. "
            f"Run {command} again once {self.last_on_unread} answers"
        )


def split_between(devices: Sequence[str]) -> str:
    """Why a volume primary on two replication devices is left as it is."""
    return (
        f"split brain: primary on {' and '.join(sorted(devices))}, two replication devices, "
        "each taking writes; rbdfail cannot tell whose to keep and leaves it as it is. Demote "
        "it by hand on the device whose writes may be thrown away (`rbd mirror image demote`), "
        "have that copy resynced (`rbd mirror image resync` there), then run the command again"
    )


def read_for_failover(config: Config, sites: Sites, with_users: bool = True) -> SitesSaid:
    """The source's volumes and the target's copies, read at once (three passes per site);
    with several devices, where the other devices hold primaries, at the same time.

    With the source lost, only the copies on the target can be listed: they are the volumes,
    typed by the target's view, with no mirroring known on the source.
    """
    source_volumes: list[Volume] | None = None
    # The sites are read at once.
    with ThreadPoolExecutor(max_workers=1 + len(sites.others)) as reader:
        target_reading = reader.submit(sites.target.mirror_infos)
        others = {device: reader.submit(c.mirror_infos) for device, c in sites.others.items()}
        if sites.source is not None:
            try:
                source_volumes = list_volumes(sites.source, config)
            except UNREACHABLE as exc:  # answered the connect, then went away
                sites.forget_source(exc)
        target_infos = target_reading.result()
        elsewhere = _primaries_elsewhere(sites, others)
    if source_volumes is not None:
        remember_listing(config, sites.source_id, source_volumes)
        volumes = source_volumes
    else:
        copies = set(target_infos)
        listed = list_volumes(sites.target, config, target_infos)
        volumes = [replace(v, mirroring=None) for v in listed if v.name in copies]
    on_source = {v.name: v.mirroring for v in volumes if v.mirroring is not None}
    said = _said(sites, volumes, target_infos, on_source if with_users else None)
    return _with_devices(said, config, sites, elsewhere)


def read_for_failback(config: Config, sites: Sites, with_users: bool = True) -> SitesSaid:
    """Every volume of the backend (the target, home) typed, and the source's images; what
    `default`'s rbd-mirror says of its copies; with several devices, where the other devices
    hold primaries (all read at once)."""
    with ThreadPoolExecutor(max_workers=1 + len(sites.others)) as reader:
        statuses = reader.submit(_statuses, sites.target)
        others = {device: reader.submit(c.mirror_infos) for device, c in sites.others.items()}
        volumes = list_volumes(sites.target, config)  # the backend's pool: every volume, typed
        remember_listing(config, sites.target.site, volumes)
        away: dict[str, MirrorInfo] = {}
        away_names: list[str] = []
        if sites.source is not None:
            try:
                away = sites.source.mirror_infos()
                away_names = sites.source.list_images()
            except UNREACHABLE as exc:
                sites.forget_source(exc)
        elsewhere = _primaries_elsewhere(sites, others)
        home_statuses = statuses.result()
    home = {v.name for v in volumes}
    said = _said(sites, volumes, away, away if with_users else None)
    said = replace(
        said,
        away_only=tuple(sorted(set(away_names) - home)),
        home_split=frozenset(
            name
            for name, status in home_statuses.items()
            if status.state == ReplayState.ERROR and "split-brain" in status.description
        ),
    )
    return _with_devices(said, config, sites, elsewhere)


def _with_devices(
    said: SitesSaid, config: Config, sites: Sites, elsewhere: dict[str, tuple[str, ...]]
) -> SitesSaid:
    """What the other devices said, and the journal's word on those that said nothing."""
    unread = {device: str(error.reason) for device, error in sites.unread.items()}
    last = last_made_primary(config.state_dir, config.state_scope) if unread else {}
    return replace(
        said,
        elsewhere=elsewhere,
        unread=unread,
        last_on_unread={name: site for name, site in last.items() if site in unread},
    )


def _statuses(cluster: Cluster) -> dict[str, ImageStatus]:
    """The site's rbd-mirror statuses; none when they cannot be read (the plan is then made
    from the journal alone, as before they were read)."""
    try:
        return cluster.mirror_statuses()
    except CephError:
        return {}


def _primaries_elsewhere(
    sites: Sites, readings: dict[str, Future[dict[str, MirrorInfo]]]
) -> dict[str, tuple[str, ...]]:
    """Image -> the devices other than the source it is primary on; a device whose reading
    failed joins `sites.unread`."""
    found: dict[str, list[str]] = {}
    for device, reading in readings.items():
        try:
            infos = reading.result()
        except CephError as exc:
            sites.unread[device] = exc
            sites.others.pop(device, None)  # not closed: see _primaries_by_device
            continue
        for name, info in infos.items():
            if info.primary:
                found.setdefault(name, []).append(device)
    return {name: tuple(devices) for name, devices in found.items()}


def _said(
    sites: Sites,
    volumes: list[Volume],
    other_side: dict[str, MirrorInfo],
    on_source: dict[str, MirrorInfo] | None,
) -> SitesSaid:
    """`on_source`: the source's mirrored images, whose primaries are about to be demoted and
    whose users are read (one call each, docs/performance.md); None: users not read."""
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
