"""An in-memory two-site Ceph that obeys the rules rbdfail depends on.

`FakeCeph` holds the sites; `FakeCeph.connect` has the signature of `rbdfail.ceph.connect`, so
code under test is handed one or the other. The rules are the ones measured on the real lab and
held to it by tests/test_contract.py:

- mirroring is carried by a replication daemon with a delay: a mirrored image's non-primary
  copy appears on the peer, its writes arrive there, and its demotion reaches the peer, each
  `replication_delay` seconds after it happened, and only while neither site is frozen;
- a non-forced promote answers ImageBusy until this site has seen the peer's demotion (or this
  site demoted the image itself); a forced promote succeeds, possibly leaving both sites
  primary (split brain), except on a snapshot-mode copy whose first sync never finished;
- a forced promote of a copy that has not seen its peer's demotion splits the peer's copy too,
  demoted as it is: its rbd-mirror reports `split-brain` and it replays nothing of the new
  primary, neither writes nor promotion (measured, both modes: issue 13 item 9); a non-forced
  promote takes it all the same (journal mode: at once), without the new primary's writes;
- promote of a primary image, demote of a non-primary one, enabling in the other mode: InvalidState;
- a frozen site takes the connect timeout to answer each call, then times out;
- a site's rbd-mirror holds the lock of each of its non-primary copies; where its hand-off
  stalls (`FakeSite.handoff_stalls`, as when it is stuck on a lost peer), a forced promote of a
  snapshot-mode copy waits until that lock is broken (`break_image_lock`), then goes on; one of
  a journal-mode copy goes through at once (it needs no lock), and the daemon keeps the lock of
  the copy, now primary, refusing every write there until the lock is broken;
- `blocklist` of the address of a site's rbd-mirror (`daemon_address`) takes the daemon out for
  that long: no hand-off is waited for, a forced promote goes on at once, breaking the dead
  holder's lock, and each such break is one more blocklist entry (a monitor command) unless
  `blocklist_on_break_lock(False)`; its locks count as dead holders until broken. Any other
  address blocklisted is recorded as such (`FakeSite.blocklisted`), so tests can tell.
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from rbdfail.cluster import (
    DEFAULT_FEATURES,
    NOTHING_TO_PROMOTE,
    UNREPLAYED,
    Cluster,
    Feature,
    ImageStatus,
    ImageUser,
    MirrorInfo,
    MirrorMode,
    MirrorSnapshot,
    MirrorSnapshotState,
    MirrorState,
    Monitor,
    Peer,
    PoolMirrorMode,
    ReplayState,
    UserSnapshot,
)
from rbdfail.config import SiteConfig
from rbdfail.errors import (
    ImageBusy,
    ImageExists,
    ImageNotFound,
    InvalidState,
    LockHeld,
    OperationTimedOut,
    PermissionDenied,
    SiteUnreachable,
)

DAEMON = "client.rbd-mirror"  # a site's rbd-mirror, as a lock holder


def daemon_address(site: str) -> str:
    """The address of a site's rbd-mirror connection."""
    return f"127.0.0.1:0/rbd-mirror-{site}"


@dataclass
class FakeImage:
    name: str
    size: int
    features: set[Feature]
    metadata: dict[str, str] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)
    mirror_state: MirrorState = MirrorState.DISABLED
    mode: MirrorMode | None = None
    primary: bool = False
    global_id: str = ""
    # True when this site knows no other site is primary: it demoted the image itself, or the
    # peer's demotion has reached it. A non-forced promote needs it.
    orphan: bool = False
    # Writes so far and the wall time of the last one; a copy holds those of the last write
    # replicated to it (journal mode reports the difference in entries, snapshot mode in time).
    version: int = 0
    written_at: float = 0.0
    # Its history split from the primary's (it was primary while the peer was force-promoted):
    # it cannot replay, nor take the peer's demotion, until resynced.
    split_brain: bool = False
    resyncing: bool = False
    # A snapshot-mode copy holds a whole mirror snapshot once its first sync is done (the
    # fake's copies are synced as they appear; a test clears it to stand for one mid-sync).
    first_sync_done: bool = True
    lock_broken: bool = False  # its rbd-mirror's lock taken away (break_image_lock)
    # Forced to primary in journal mode while its rbd-mirror was stuck: the daemon kept the lock.
    daemon_kept_lock: bool = False
    # Demoted by this site itself, the peer's later promotion not replayed here since: Ceph
    # promotes it without force all the same, in both modes (snapshot mode: its newest mirror
    # snapshot is primary-demoted; journal mode: its journal's newest tag is its own orphan).
    demoted_here: bool = False
    users: list[ImageUser] = field(default_factory=list)  # clients with it open (tests set them)
    # Its mirror snapshots, oldest first (drills; see `FakeCluster._take_mirror_snapshot`).
    mirror_snaps: list[FakeSnap] = field(default_factory=list)
    # Its user snapshots, oldest first: (id, name, timestamp, data at it). Journal mode
    # carries them to the copy, in order with the writes.
    user_snaps: list[tuple[int, str, float, bytes]] = field(default_factory=list)


@dataclass
class FakeSite:
    backend_id: str
    pool: str = "volumes"
    site_name: str = ""
    images: dict[str, FakeImage] = field(default_factory=dict)
    pool_mode: PoolMirrorMode = PoolMirrorMode.IMAGE
    peers: list[Peer] = field(default_factory=list)
    frozen: bool = False
    mirror_daemon_up: bool = True  # False: the statuses say rbd-mirror is down, as Ceph's do
    # Its rbd-mirror replays nothing from its peers (paused, or its replay not resumed after a
    # switch): what is due to this site waits, as on the lab with the daemon SIGSTOPped.
    replay_paused: bool = False
    # Its rbd-mirror does not let go of a copy's lock when asked (stuck on a lost peer):
    # a forced promote waits for ever, or (refuses) is answered EROFS at once.
    handoff_stalls: bool = False
    handoff_refuses: bool = False
    # A stalled forced promote whose lock was taken answers ETIMEDOUT (seen on the lab: librbd's
    # own request to the old holder); the next one goes through.
    times_out_after_take: bool = False
    # Addresses blocklisted, in order: by `blocklist`, and by each lock break that blocklists
    # its holder (librbd's own, one monitor command each).
    blocklisted: list[str] = field(default_factory=list)
    blocklist_denied: bool = False  # `osd blocklist add` refused (EACCES)
    daemon_out_until: float = float("-inf")  # on the world's clock: its rbd-mirror blocklisted
    name_set: bool = False
    schedules: dict[str, list[str]] = field(default_factory=dict)  # image -> intervals
    calls: list[tuple[str, str]] = field(default_factory=list)  # (operation, image) in order
    locks: dict[str, FakeLock] = field(default_factory=dict)
    last_snap_id: int = 0  # snapshot ids are the site's own, as in Ceph


@dataclass(frozen=True)
class FakeSnap:
    """A mirror snapshot (drills): `data` is what reading the image at it gives."""

    id: int
    state: MirrorSnapshotState
    complete: bool
    primary_snap_id: int | None
    size: int
    timestamp: float  # wall clock, on the world's time
    data: bytes


@dataclass
class FakeLock:
    cookie: str
    holder: str
    expires_at: float  # on the world's clock


class FakeCeph:
    """Sites by backend id, and the replication between peered ones."""

    def __init__(
        self,
        sites: Iterable[str] = ("default", "secondary"),
        replication_delay: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sites = {name: FakeSite(name, site_name=name) for name in sites}
        self.replication_delay = replication_delay
        self._clock = clock
        self._ahead = 0.0  # seconds `advance` moved the world's time on
        self._epoch = time.time() - clock()  # wall-clock time follows `clock` too
        self.lock = threading.RLock()
        # Seconds each operation takes (by method name), spent outside the lock so calls overlap.
        self.latency: dict[str, float] = {}
        # Errors to raise instead of running an operation: (site, method, image) -> error.
        self.faults: dict[tuple[str, str, str], BaseException] = {}
        # Calls that never return, whatever the timeout (until `release_hangs`): (site, method,
        # image). Ceph's timeouts should prevent these; failover must survive them anyway.
        self.hangs: set[tuple[str, str, str]] = set()
        # Calls that take effect, then time out all the same (the answer is lost on the way):
        # (site, method, image).
        self.lost_answers: set[tuple[str, str, str]] = set()
        self._released = threading.Event()
        # How long a frozen site's calls hang before they time out; None: the connection's
        # timeout. Set, it stands for the OSD op timeout (30 s at least on a real site), which
        # is what a call to a site whose storage died takes, longer than the connect timeout.
        self.frozen_call_s: float | None = None
        # Every wait for a frozen site's timeout: (site, operation), in order.
        self.timeouts: list[tuple[str, str]] = []
        self.in_flight: dict[str, int] = {}
        self.max_in_flight: dict[str, int] = {}
        # (due time, source site, target site, action on the target's pool)
        self._pending: list[tuple[float, str, str, Callable[[FakeSite], None]]] = []

    # ---- the world -----------------------------------------------------------------------
    def clock(self) -> float:
        """The world's time: replication delays and lock lapses run on it."""
        return self._clock() + self._ahead

    def now(self) -> float:
        """Wall-clock seconds on the world's time: write and snapshot timestamps, statuses."""
        return self._epoch + self.clock()

    def advance(self, seconds: float) -> None:
        """Move the world's time on, instead of sleeping through it."""
        self._ahead += seconds

    def peer(self, a: str, b: str) -> None:
        for one, other in ((a, b), (b, a)):
            peers = self.sites[one].peers
            peers[:] = [p for p in peers if p.site_name != self.sites[other].site_name]
            peers.append(Peer(str(uuid.uuid4()), self.sites[other].site_name, "rx-tx"))

    def freeze(self, site: str) -> None:
        self.sites[site].frozen = True

    def thaw(self, site: str) -> None:
        self.sites[site].frozen = False

    def release_hangs(self) -> None:
        self._released.set()

    def connect(self, site: SiteConfig, timeout: float) -> FakeCluster:
        if self.sites[site.backend_id].frozen:
            with self.lock:
                self.timeouts.append((site.backend_id, "connect"))
            time.sleep(timeout)
            raise SiteUnreachable(
                f"no answer from the monitors within {timeout:g}s", site=site.backend_id
            )
        return FakeCluster(self, site.backend_id, timeout)

    def _peers_of(self, site: str) -> list[str]:
        names = {p.site_name for p in self.sites[site].peers}
        return [s.backend_id for s in self.sites.values() if s.site_name in names]

    def replicate_later(self, source: str, action: Callable[[FakeSite], None]) -> None:
        """Have the replication daemon apply action on every peer after the delay."""
        due = self.clock() + self.replication_delay
        for target in self._peers_of(source):
            self._pending.append((due, source, target, action))

    def run_replication(self) -> None:
        """Apply what is due, in order; what involves a frozen site waits."""
        now, waiting = self.clock(), []
        for item in self._pending:
            due, source, target, action = item
            blocked = self.sites[source].frozen or self.sites[target].frozen
            if due <= now and not blocked and not self.sites[target].replay_paused:
                action(self.sites[target])
            else:
                waiting.append(item)
        self._pending = waiting


class FakeCluster(Cluster):
    """One connection to one fake site."""

    def __init__(self, world: FakeCeph, site: str, timeout: float) -> None:
        self.world = world
        self.site = site
        self.pool = world.sites[site].pool
        self.timeout = timeout
        self.breaks_blocklist = True  # rbd_blocklist_on_break_lock

    def close(self) -> None:
        pass

    # ---- plumbing ------------------------------------------------------------------------
    def _enter(self, operation: str, image: str = "") -> FakeSite:
        """Under the lock, in every call: replication catches up, the call is recorded."""
        state = self.world.sites[self.site]
        self.world.run_replication()
        state.calls.append((operation, image))
        return state

    def _get(self, state: FakeSite, name: str) -> FakeImage:
        try:
            return state.images[name]
        except KeyError:
            raise ImageNotFound("image not found", site=self.site, image=name) from None

    def _primary(self, state: FakeSite, name: str, what: str) -> FakeImage:
        image = self._get(state, name)
        if image.mirror_state != MirrorState.DISABLED and not image.primary:
            raise InvalidState(
                f"image is not primary here (cannot {what})", site=self.site, image=name
            )
        return image

    # ---- images --------------------------------------------------------------------------
    def list_images(self) -> list[str]:
        with self.world.lock:
            return list(self._enter("list").images)

    def create_image(
        self, name: str, size: int, features: frozenset[Feature] | None = None
    ) -> None:
        with self.world.lock:
            state = self._enter("create", name)
            if name in state.images:
                raise ImageExists("image already exists", site=self.site, image=name)
            chosen = DEFAULT_FEATURES if features is None else features
            state.images[name] = FakeImage(name, size, set(chosen))

    def remove_image(self, name: str) -> None:
        with self.world.lock:
            state = self._enter("remove", name)
            image = self._get(state, name)
            if image.mirror_state != MirrorState.DISABLED and not image.primary:
                # Measured: EINVAL for a snapshot-mode copy, EBUSY for a journal-mode one.
                refusal = ImageBusy if image.mode == MirrorMode.JOURNAL else InvalidState
                raise refusal("image is non-primary", site=self.site, image=name)
            del state.images[name]
            if image.mirror_state != MirrorState.DISABLED:
                self.world.replicate_later(self.site, _delete_copy(image.global_id))

    def image_features(self, name: str) -> frozenset[Feature]:
        with self.world.lock:
            return frozenset(self._get(self._enter("features", name), name).features)

    def update_features(self, name: str, features: Iterable[Feature], enabled: bool) -> None:
        with self.world.lock:
            image = self._primary(self._enter("update_features", name), name, "update features")
            wanted = set(features)
            # librbd refuses to enable a present feature or disable an absent one (measured).
            if (enabled and wanted & image.features) or (not enabled and wanted - image.features):
                raise InvalidState("feature already in that state", site=self.site, image=name)
            if (
                enabled
                and Feature.JOURNALING in wanted
                and Feature.EXCLUSIVE_LOCK not in (image.features | wanted)
            ):
                raise InvalidState("journaling requires exclusive-lock", site=self.site, image=name)
            if enabled:
                image.features |= wanted
            else:
                image.features -= wanted

    def get_metadata(self, name: str, key: str) -> str | None:
        with self.world.lock:
            return self._get(self._enter("metadata_get", name), name).metadata.get(key)

    def set_metadata(self, name: str, key: str, value: str) -> None:
        with self.world.lock:
            self._get(self._enter("metadata_set", name), name).metadata[key] = value

    def remove_metadata(self, name: str, key: str) -> None:
        with self.world.lock:
            self._get(self._enter("metadata_remove", name), name).metadata.pop(key, None)

    def metadata_values(self, key: str) -> dict[str, str]:
        with self.world.lock:
            images = self._enter("metadata_values").images.values()
            return {i.name: i.metadata[key] for i in images if key in i.metadata}

    def write(self, name: str, offset: int, data: bytes) -> None:
        with self.world.lock:
            state = self._enter("write", name)
            image = self._primary(state, name, "write")
            if _daemon_holds_lock(state, image):
                raise InvalidState(
                    "read-only: its rbd-mirror holds the lock", site=self.site, image=name
                )
            _write(image.data, offset, data)
            image.version, image.written_at = image.version + 1, self.world.now()
            if image.mirror_state == MirrorState.ENABLED:
                self.world.replicate_later(self.site, _set_data(image))
                self._take_mirror_snapshot(image, MirrorSnapshotState.PRIMARY)

    def read(self, name: str, offset: int, length: int) -> bytes:
        with self.world.lock:
            image = self._get(self._enter("read", name), name)
            chunk = bytes(image.data[offset : offset + length])
            return chunk + b"\0" * (length - len(chunk))

    # ---- per-image mirroring -----------------------------------------------------------------
    def mirror_info(self, name: str) -> MirrorInfo:
        with self.world.lock:
            return _info(self._get(self._enter("mirror_info", name), name))

    def enable_mirroring(self, name: str, mode: MirrorMode) -> None:
        with self.world.lock:
            state = self._enter("enable", name)
            image = self._get(state, name)
            if state.pool_mode != PoolMirrorMode.IMAGE:
                raise InvalidState(
                    f"pool mirroring mode is {state.pool_mode}, not image",
                    site=self.site,
                    image=name,
                )
            if image.mirror_state == MirrorState.ENABLED:
                if image.mode != mode:
                    raise InvalidState(
                        f"already mirrored in {image.mode} mode", site=self.site, image=name
                    )
                return
            if mode == MirrorMode.JOURNAL:
                # librbd adds what journaling needs itself (measured).
                image.features |= {Feature.EXCLUSIVE_LOCK, Feature.JOURNALING}
            image.mirror_state, image.mode, image.primary = MirrorState.ENABLED, mode, True
            image.written_at = image.written_at or self.world.now()  # Ceph snapshots at enable
            image.global_id, image.orphan = str(uuid.uuid4()), False
            self.world.replicate_later(self.site, _create_copy(image))
            self._take_mirror_snapshot(image, MirrorSnapshotState.PRIMARY)

    def disable_mirroring(self, name: str, force: bool = False) -> None:
        with self.world.lock:
            state = self._enter("disable", name)
            image = self._get(state, name)
            if image.mirror_state == MirrorState.DISABLED:
                return
            if not image.primary and not force:
                raise InvalidState(
                    "image is non-primary; disable with force", site=self.site, image=name
                )
            if image.primary:
                self.world.replicate_later(self.site, _delete_copy(image.global_id))
            state.schedules.pop(name, None)
            if image.mode == MirrorMode.JOURNAL:
                image.features.discard(Feature.JOURNALING)  # and leaves exclusive-lock (measured)
            image.mirror_state, image.mode, image.primary = MirrorState.DISABLED, None, False
            image.global_id = ""

    def demote(self, name: str) -> None:
        with self.world.lock:
            image = self._get(self._enter("demote", name), name)
            if image.mirror_state != MirrorState.ENABLED or not image.primary:
                raise InvalidState("image is not primary", site=self.site, image=name)
            image.primary, image.orphan, image.lock_broken = False, True, False
            image.daemon_kept_lock = False
            image.demoted_here = True
            self._take_mirror_snapshot(image, MirrorSnapshotState.PRIMARY_DEMOTED)
            self.world.replicate_later(self.site, _peer_demoted(image.global_id))

    def replayed_since_own_demotion(self, name: str) -> bool | None:
        with self.world.lock:
            image = self._get(self._enter("replayed_since_own_demotion", name), name)
            return not (image.demoted_here and image.mirror_state == MirrorState.ENABLED)

    def last_mirror_snapshot(self, name: str) -> tuple[MirrorSnapshotState, bool] | None:
        with self.world.lock:
            image = self._get(self._enter("last_mirror_snapshot", name), name)
            if image.mode != MirrorMode.SNAPSHOT or image.mirror_state != MirrorState.ENABLED:
                return None
            if image.primary:
                return MirrorSnapshotState.PRIMARY, True
            if image.demoted_here:
                return MirrorSnapshotState.PRIMARY_DEMOTED, True
            if image.orphan:
                return MirrorSnapshotState.NON_PRIMARY_DEMOTED, True
            return MirrorSnapshotState.NON_PRIMARY, image.first_sync_done

    def image_users(self, name: str) -> list[ImageUser]:
        with self.world.lock:
            return list(self._get(self._enter("image_users", name), name).users)

    def mirror_daemon_lock_holders(self, name: str) -> list[str]:
        with self.world.lock:
            state = self._enter("mirror_daemon_lock_holders", name)
            return [DAEMON] if _daemon_holds_lock(state, self._get(state, name)) else []

    def break_image_lock(self, name: str, only: Collection[str] | None = None) -> list[str]:
        with self.world.lock:
            state = self._enter("break_image_lock", name)
            image = self._get(state, name)
            held = _daemon_holds_lock(state, image) and (only is None or DAEMON in only)
            if held or only is None:
                image.lock_broken = True
            if held and self.breaks_blocklist:
                state.blocklisted.append(daemon_address(self.site))
            return [DAEMON] if held else []

    def mirror_daemon_addresses(self, names: Sequence[str]) -> dict[str, str]:
        with self.world.lock:
            state = self._enter("mirror_daemon_addresses", f"{len(names)} images")
            held = any(
                _daemon_holds_lock(state, state.images[n]) for n in names if n in state.images
            )
            return {DAEMON: daemon_address(self.site)} if held else {}

    def blocklist(self, address: str, seconds: int) -> None:
        with self.world.lock:
            state = self._enter("blocklist", address)
            if state.blocklist_denied:
                raise PermissionDenied("osd blocklist add: access denied", site=self.site)
            state.blocklisted.append(address)
            if address == daemon_address(self.site):
                state.daemon_out_until = self.world.clock() + seconds

    def blocklist_on_break_lock(self, enabled: bool) -> None:
        self.breaks_blocklist = enabled

    def promote(self, name: str, force: bool = False, only_if_replayed: bool = False) -> None:
        with self.world.lock:
            state = self.world.sites[self.site]
            image = state.images.get(name)
            journal = image is not None and image.mode == MirrorMode.JOURNAL
            out = _daemon_out(self.world, state)
            stalls = (
                force
                and state.handoff_stalls
                and not out
                and image
                and not journal
                and _daemon_holds_lock(state, image)
            )
            keeps_lock = bool(force and state.handoff_stalls and image and journal)
            keeps_lock = keeps_lock and image is not None and _daemon_holds_lock(state, image)
        while stalls and image and not image.lock_broken and not self.world._released.is_set():
            time.sleep(0.01)  # the hand-off never comes: until its lock is broken
        if stalls and image and image.lock_broken and state.times_out_after_take:
            raise OperationTimedOut("RBD operation timeout", site=self.site, image=name)
        refuses = force and state.handoff_refuses and not out and image and not journal
        if refuses and image and _daemon_holds_lock(state, image):
            raise ImageBusy("the copy's lock holder will not let go", site=self.site, image=name)
        with self.world.lock:
            image = self._get(self._enter("promote", name), name)
            demoted_here = image.demoted_here and image.mirror_state == MirrorState.ENABLED
            if only_if_replayed and demoted_here and not image.primary:
                raise ImageBusy(UNREPLAYED, site=self.site, image=name)
            if image.mirror_state != MirrorState.ENABLED or image.primary:
                raise InvalidState(
                    "image is already primary or not mirrored", site=self.site, image=name
                )
            if force and image.mode == MirrorMode.SNAPSHOT and not image.first_sync_done:
                raise InvalidState(NOTHING_TO_PROMOTE, site=self.site, image=name)
            if not force and not image.orphan:
                raise ImageBusy(
                    "the peer is still primary or its demotion has not propagated yet",
                    site=self.site,
                    image=name,
                )
            for other in self._peer_images(image.global_id):
                if other.primary:  # forced while the peer is primary: their histories split
                    other.split_brain = True
            if force and not image.orphan:
                # Forced before a peer's own demotion arrived: they split all the same.
                for peer in self.world._peers_of(self.site):
                    copy = _by_global_id(self.world.sites[peer], image.global_id)
                    if copy is not None and not copy.primary and copy.demoted_here:
                        copy.split_brain = True
            if force and out and not journal and _daemon_holds_lock(state, image):
                # librbd breaks the dead holder's lock to promote: one blocklist entry more.
                image.lock_broken = True
                if self.breaks_blocklist:
                    state.blocklisted.append(daemon_address(self.site))
            image.primary, image.orphan, image.split_brain = True, False, False
            image.demoted_here, image.daemon_kept_lock = False, keeps_lock
            self.world.replicate_later(self.site, _peer_promoted(image.global_id))
            self._take_mirror_snapshot(image, MirrorSnapshotState.PRIMARY)

    def resync(self, name: str) -> None:
        with self.world.lock:
            image = self._get(self._enter("resync", name), name)
            if image.primary:
                raise InvalidState("cannot resync a primary image", site=self.site, image=name)
            image.resyncing = True
            for site in self.world.sites.values():
                source = _by_global_id(site, image.global_id)
                if site.backend_id != self.site and source is not None and source.primary:
                    self.world.replicate_later(site.backend_id, _resynced(image.global_id, source))

    def mirror_status(self, name: str) -> ImageStatus:
        with self.world.lock:
            image = self._get(self._enter("mirror_status", name), name)
            if image.mirror_state == MirrorState.DISABLED:
                raise ImageNotFound("image is not mirrored", site=self.site, image=name)
            return self._status(image, datetime.fromtimestamp(self.world.now(), UTC))

    def _peer_images(self, global_id: str) -> list[FakeImage]:
        return [
            image
            for site in self.world.sites.values()
            if site.backend_id != self.site and (image := _by_global_id(site, global_id))
        ]

    # ---- the pool ---------------------------------------------------------------------------
    def mirror_infos(self) -> dict[str, MirrorInfo]:
        with self.world.lock:
            images = self._enter("mirror_infos").images.values()
            return {i.name: _info(i) for i in images if i.mirror_state != MirrorState.DISABLED}

    def mirror_statuses(self) -> dict[str, ImageStatus]:
        with self.world.lock:
            images = self._enter("mirror_statuses").images.values()
            now = datetime.fromtimestamp(self.world.now(), UTC)
            return {
                i.name: self._status(i, now)
                for i in images
                if i.mirror_state != MirrorState.DISABLED
            }

    def _status(self, image: FakeImage, now: datetime) -> ImageStatus:
        """What this site's rbd-mirror would say, in Ceph's words and description format."""
        status = self._daemon_status(image, now)
        return replace(status, up=self.world.sites[self.site].mirror_daemon_up)

    def _daemon_status(self, image: FakeImage, now: datetime) -> ImageStatus:
        if image.primary:
            return ImageStatus(ReplayState.STOPPED, "local image is primary", now, True)
        if image.resyncing:
            return ImageStatus(ReplayState.SYNCING, "syncing", now, True)
        if image.split_brain:
            return ImageStatus(ReplayState.ERROR, "split-brain", now, True)
        # Until the peer's demotion reaches the copy (`orphan`), its rbd-mirror replays on
        # and reports as before (the lab: "replaying" with its last figures).
        primary = next(
            (
                (site, other)
                for site in self.world.sites.values()
                if site.backend_id != self.site
                and (other := _by_global_id(site, image.global_id))
                and (other.primary or not image.orphan)
            ),
            None,
        )
        if primary is None:
            return ImageStatus(ReplayState.STOPPED, "remote image demoted", now, True)
        site, source = primary
        if site.frozen:  # not checked against Ceph: what the lab shows here is for status.py
            return ImageStatus(ReplayState.ERROR, "remote cluster unreachable", now, True)
        tail: dict[str, object]
        if image.mode == MirrorMode.JOURNAL:
            tail = {"entries_behind_primary": source.version - image.version}
        else:
            tail = {"remote_snapshot_timestamp": int(source.written_at), "replay_state": "idle"}
            if image.first_sync_done:  # Ceph leaves it out until the copy holds a snapshot
                tail["local_snapshot_timestamp"] = int(image.written_at)
            else:
                tail["replay_state"] = "syncing"
        return ImageStatus(ReplayState.REPLAYING, f"replaying, {json.dumps(tail)}", now, True)

    def pool_mirror_mode(self) -> PoolMirrorMode:
        with self.world.lock:
            return self._enter("pool_mirror_mode").pool_mode

    def set_pool_mirror_mode(self, mode: PoolMirrorMode) -> None:
        with self.world.lock:
            self._enter("set_pool_mirror_mode").pool_mode = mode

    def peers(self) -> list[Peer]:
        with self.world.lock:
            return list(self._enter("peers").peers)

    def monitors(self) -> list[Monitor]:
        with self.world.lock:
            self._enter("monitors")
            port = 3300 + sorted(self.world.sites).index(self.site)
            return [Monitor("a", (f"v2:127.0.0.1:{port}", f"v1:127.0.0.1:{port + 3489}"))]

    def site_name(self) -> str:
        with self.world.lock:
            state = self._enter("site_name")
            return state.site_name if state.name_set else f"fsid-of-{self.site}"

    def set_site_name(self, name: str) -> None:
        with self.world.lock:
            state = self._enter("set_site_name")
            state.site_name, state.name_set = name, True

    def create_peer_token(self) -> str:
        with self.world.lock:
            return f"token-of:{self._enter('create_peer_token').backend_id}"

    def import_peer_token(self, token: str) -> None:
        with self.world.lock:
            self._enter("import_peer_token")
            self.world.peer(token.removeprefix("token-of:"), self.site)

    def _snapshot_mirrored(self, state: FakeSite, name: str) -> None:
        image = state.images.get(name)
        if image is None or image.mode != MirrorMode.SNAPSHOT:
            raise InvalidState(
                f"image {name} is not in snapshot mirror mode", site=self.site, image=name
            )

    def snapshot_schedules(self, name: str) -> list[str]:
        with self.world.lock:
            state = self._enter("snapshot_schedules", name)
            self._snapshot_mirrored(state, name)
            return list(state.schedules.get(name, []))

    def pool_snapshot_schedules(self) -> dict[str, list[str]]:
        with self.world.lock:
            state = self._enter("pool_snapshot_schedules")
            return {name: list(found) for name, found in state.schedules.items() if found}

    def add_snapshot_schedule(self, name: str, interval: str) -> None:
        with self.world.lock:
            state = self._enter("add_snapshot_schedule", name)
            self._snapshot_mirrored(state, name)
            if interval not in (intervals := state.schedules.setdefault(name, [])):
                intervals.append(interval)

    def remove_snapshot_schedule(self, name: str, interval: str) -> None:
        with self.world.lock:
            state = self._enter("remove_snapshot_schedule", name)
            if interval in state.schedules.get(name, []):
                state.schedules[name].remove(interval)

    def lock(self, name: str, cookie: str, holder: str, duration: int) -> None:
        with self.world.lock:
            locks = self._enter("lock").locks
            held = locks.get(name)
            if held and held.cookie != cookie and held.expires_at > self.world.clock():
                raise LockHeld(f"lock {name!r} is held", site=self.site, holder=held.holder)
            locks[name] = FakeLock(cookie, holder, self.world.clock() + duration)

    def unlock(self, name: str, cookie: str) -> None:
        with self.world.lock:
            locks = self._enter("unlock").locks
            if (held := locks.get(name)) and held.cookie == cookie:
                del locks[name]

    # ---- drills (issue 16) -------------------------------------------------------------------
    # Snapshot mode as the fake plays it: a primary takes a mirror snapshot when mirroring is
    # enabled, at each write (as an eager schedule would: the fake replicates every write), at
    # a demote or a promote, and on `create_mirror_snapshot`; its copy gets a non-primary
    # snapshot naming it when the replication daemon brings that state over. Kept as on the
    # lab: the primary's newest 5, the copy's newest only. A copy's snapshot holds the copy as
    # it was before that sync (measured), its head the synced state.
    def _take_mirror_snapshot(self, image: FakeImage, snap_state: MirrorSnapshotState) -> None:
        if image.mode != MirrorMode.SNAPSHOT or image.mirror_state != MirrorState.ENABLED:
            return
        site = self.world.sites[self.site]
        site.last_snap_id += 1
        before = bytes(image.mirror_snaps[-1].data) if image.mirror_snaps else b""
        snap = FakeSnap(
            site.last_snap_id,
            snap_state,
            True,
            None,
            image.size,
            self.world.now(),
            bytes(image.data),
        )
        image.mirror_snaps = [*image.mirror_snaps, snap][-5:]
        self.world.replicate_later(self.site, _snapshot_copied(image.global_id, snap, before))

    def mirror_snapshots(self, name: str) -> list[MirrorSnapshot]:
        with self.world.lock:
            image = self._get(self._enter("mirror_snapshots", name), name)
            # A copy a test put mid first sync holds no whole snapshot yet.
            synced = image.primary or image.first_sync_done
            return [
                MirrorSnapshot(
                    s.id,
                    s.state,
                    s.complete and synced,
                    s.primary_snap_id,
                    s.size,
                    datetime.fromtimestamp(s.timestamp, UTC),
                )
                for s in image.mirror_snaps
            ]

    def extent_digests(
        self, name: str, snap_id: int | None, extents: Sequence[tuple[int, int]]
    ) -> list[str]:
        with self.world.lock:
            data = self._snapshot_data(self._enter("extent_digests", name), name, snap_id)
        return [
            hashlib.sha256(
                data[offset : offset + length].ljust(length, b"\0")
                if offset < len(data)
                else b"\0" * length
            ).hexdigest()
            for offset, length in extents
        ]

    def allocated_extents(self, name: str, snap_id: int, limit: int) -> list[tuple[int, int]]:
        with self.world.lock:
            data = self._snapshot_data(self._enter("allocated_extents", name), name, snap_id)
        # Runs of 4 KiB blocks holding anything but zeros.
        block, found = 4096, list[tuple[int, int]]()
        for offset in range(0, len(data), block):
            if not any(data[offset : offset + block]):
                continue
            if found and found[-1][0] + found[-1][1] == offset:
                found[-1] = (found[-1][0], found[-1][1] + block)
            else:
                found.append((offset, block))
        return found[:limit]

    def _snapshot_data(self, state: FakeSite, name: str, snap_id: int | None) -> bytes:
        image = self._get(state, name)
        if snap_id is None:
            return bytes(image.data)
        snap = next((s for s in image.mirror_snaps if s.id == snap_id), None)
        if snap is not None:
            return snap.data
        user = next((u for u in image.user_snaps if u[0] == snap_id), None)
        if user is None:  # librbd: ENOENT for a snapshot removed meanwhile
            raise ImageNotFound(f"no snapshot {snap_id}", site=self.site, image=name)
        return user[3]

    def lock_holder(self, name: str) -> str | None:
        with self.world.lock:
            held = self._enter("lock_holder").locks.get(name)
            return held.holder if held and held.expires_at > self.world.clock() else None

    def user_snapshots(self, name: str) -> list[UserSnapshot]:
        with self.world.lock:
            image = self._get(self._enter("user_snapshots", name), name)
            return [
                UserSnapshot(i, n, image.size, datetime.fromtimestamp(t, UTC))
                for i, n, t, _ in image.user_snaps
            ]

    def create_snapshot(self, name: str, snapshot: str) -> int:
        with self.world.lock:
            state = self._enter("create_snapshot", name)
            image = self._primary(state, name, "create a snapshot")
            if any(n == snapshot for _, n, _, _ in image.user_snaps):
                raise ImageExists(f"snapshot {snapshot} exists", site=self.site, image=name)
            state.last_snap_id += 1
            image.user_snaps.append(
                (state.last_snap_id, snapshot, self.world.now(), bytes(image.data))
            )
            if image.mode == MirrorMode.JOURNAL and image.mirror_state == MirrorState.ENABLED:
                self.world.replicate_later(self.site, _user_snap(image.global_id, snapshot))
            return state.last_snap_id

    def remove_snapshot(self, name: str, snapshot: str) -> None:
        with self.world.lock:
            image = self._get(self._enter("remove_snapshot", name), name)
            if not any(n == snapshot for _, n, _, _ in image.user_snaps):
                return
            image = self._primary(self.world.sites[self.site], name, "remove a snapshot")
            image.user_snaps = [u for u in image.user_snaps if u[1] != snapshot]
            if image.mode == MirrorMode.JOURNAL and image.mirror_state == MirrorState.ENABLED:
                self.world.replicate_later(self.site, _user_snap(image.global_id, snapshot, False))

    def create_mirror_snapshot(self, name: str) -> int:
        with self.world.lock:
            state = self._enter("create_mirror_snapshot", name)
            image = self._primary(state, name, "create a mirror snapshot")
            if image.mode != MirrorMode.SNAPSHOT:
                raise InvalidState("not mirrored in snapshot mode", site=self.site, image=name)
            self._take_mirror_snapshot(image, MirrorSnapshotState.PRIMARY)
            return image.mirror_snaps[-1].id


_MONITOR_CALLS = frozenset({"monitors", "blocklist"})  # monitor commands, not OSD ops


def _gated(method: Callable[..., Any]) -> Callable[..., Any]:
    """Before a call takes the lock: a frozen site hangs for the timeout then times out; an
    injected fault is raised; the operation's latency is spent, counting calls in flight."""

    @functools.wraps(method)
    def call(self: FakeCluster, *args: Any, **kwargs: Any) -> Any:
        world, operation = self.world, method.__name__
        image = args[0] if args and isinstance(args[0], str) else ""
        if world.sites[self.site].frozen:
            with world.lock:
                world.timeouts.append((self.site, operation))
            # Monitor commands time out after the connection's mon op timeout (the connect
            # timeout); OSD ops after frozen_call_s, the OSD op timeout, when it is set.
            mon = operation in _MONITOR_CALLS
            waited = self.timeout if mon else world.frozen_call_s or self.timeout
            time.sleep(waited)
            raise OperationTimedOut(
                f"no answer within {waited:g}s", site=self.site, image=image or None
            )
        if fault := world.faults.get((self.site, operation, image)):
            raise fault
        if (self.site, operation, image) in world.hangs:
            world._released.wait()
        with world.lock:
            world.in_flight[operation] = world.in_flight.get(operation, 0) + 1
            world.max_in_flight[operation] = max(
                world.max_in_flight.get(operation, 0), world.in_flight[operation]
            )
        try:
            time.sleep(world.latency.get(operation, 0.0))
            result = method(self, *args, **kwargs)
            if (self.site, operation, image) in world.lost_answers:
                raise OperationTimedOut("answer lost", site=self.site, image=image or None)
            return result
        finally:
            with world.lock:
                world.in_flight[operation] -= 1

    return call


for _name, _method in list(vars(FakeCluster).items()):
    if callable(_method) and not _name.startswith("_") and _name != "close":
        setattr(FakeCluster, _name, _gated(_method))


def _daemon_out(world: FakeCeph, site: FakeSite) -> bool:
    """Its rbd-mirror blocklisted: its locks are a dead holder's, its hand-offs never come."""
    return world.clock() < site.daemon_out_until


def _daemon_holds_lock(site: FakeSite, image: FakeImage) -> bool:
    return (
        site.mirror_daemon_up
        and image.mirror_state == MirrorState.ENABLED
        and (not image.primary or image.daemon_kept_lock)
        and not image.lock_broken
    )


def _info(image: FakeImage) -> MirrorInfo:
    return MirrorInfo(image.mirror_state, image.mode, image.primary, image.global_id)


def _write(buffer: bytearray, offset: int, data: bytes) -> None:
    if len(buffer) < offset + len(data):
        buffer.extend(b"\0" * (offset + len(data) - len(buffer)))
    buffer[offset : offset + len(data)] = data


def _by_global_id(site: FakeSite, global_id: str) -> FakeImage | None:
    return next((i for i in site.images.values() if i.global_id == global_id), None)


# What the replication daemon does on the peer, one closure per kind of event.
def _create_copy(source: FakeImage) -> Callable[[FakeSite], None]:
    name, size, global_id, mode = source.name, source.size, source.global_id, source.mode
    features, data = set(source.features), bytearray(source.data)
    version, written_at = source.version, source.written_at

    def apply(site: FakeSite) -> None:
        if name not in site.images and site.pool_mode != PoolMirrorMode.DISABLED:
            site.images[name] = FakeImage(
                name,
                size,
                features,
                data=data,
                mirror_state=MirrorState.ENABLED,
                mode=mode,
                global_id=global_id,
                version=version,
                written_at=written_at,
            )

    return apply


def _user_snap(global_id: str, snapshot: str, created: bool = True) -> Callable[[FakeSite], None]:
    """A journal-mode copy replays the primary's snapshot (taken of its own head, which the
    writes replayed before it made what the primary's was), or its removal."""

    def apply(site: FakeSite) -> None:
        image = _by_global_id(site, global_id)
        if image is None or image.primary or image.split_brain:
            return
        image.user_snaps = [u for u in image.user_snaps if u[1] != snapshot]
        if created:
            site.last_snap_id += 1
            now = time.time()
            image.user_snaps.append((site.last_snap_id, snapshot, now, bytes(image.data)))

    return apply


def _set_data(source: FakeImage) -> Callable[[FakeSite], None]:
    global_id, data = source.global_id, bytes(source.data)
    version, written_at = source.version, source.written_at

    def apply(site: FakeSite) -> None:
        image = _by_global_id(site, global_id)
        if image and not image.primary and not image.split_brain:
            image.data = bytearray(data)
            image.version, image.written_at = version, written_at

    return apply


def _peer_demoted(global_id: str) -> Callable[[FakeSite], None]:
    def apply(site: FakeSite) -> None:
        image = _by_global_id(site, global_id)
        if image and not image.primary and not image.split_brain:
            image.orphan, image.demoted_here = True, False

    return apply


def _peer_promoted(global_id: str) -> Callable[[FakeSite], None]:
    def apply(site: FakeSite) -> None:
        image = _by_global_id(site, global_id)
        if image and not image.primary and not image.split_brain:
            image.orphan = image.demoted_here = False

    return apply


def _resynced(global_id: str, source: FakeImage) -> Callable[[FakeSite], None]:
    """The copy is thrown away and copied anew from the primary, as it is when applied."""

    def apply(site: FakeSite) -> None:
        image = _by_global_id(site, global_id)
        if image is None or image.primary or not image.resyncing or not source.primary:
            return
        image.data = bytearray(source.data)
        image.version, image.written_at = source.version, source.written_at
        image.split_brain = image.resyncing = image.orphan = False
        # Ceph re-creates the copy under a new image id, and its schedule (kept by id) lapses.
        site.schedules.pop(image.name, None)

    return apply


def _delete_copy(global_id: str) -> Callable[[FakeSite], None]:
    def apply(site: FakeSite) -> None:
        if (image := _by_global_id(site, global_id)) and not image.primary:
            del site.images[image.name]
            site.schedules.pop(image.name, None)

    return apply


def _snapshot_copied(global_id: str, snap: FakeSnap, before: bytes) -> Callable[[FakeSite], None]:
    """The copy's non-primary snapshot of the primary's `snap`: read at it, the copy as it was
    before this sync (`before`: the primary's previous snapshot, which it held)."""
    copied = {
        MirrorSnapshotState.PRIMARY: MirrorSnapshotState.NON_PRIMARY,
        MirrorSnapshotState.PRIMARY_DEMOTED: MirrorSnapshotState.NON_PRIMARY_DEMOTED,
    }[snap.state]

    def apply(site: FakeSite) -> None:
        image = _by_global_id(site, global_id)
        if image is None or image.primary or image.split_brain or image.resyncing:
            return
        site.last_snap_id += 1
        image.mirror_snaps = [
            FakeSnap(site.last_snap_id, copied, True, snap.id, snap.size, snap.timestamp, before)
        ]

    return apply
