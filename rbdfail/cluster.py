"""The one small interface through which rbdfail talks to a Ceph site.

`rbdfail.ceph.CephCluster` implements it with librados/librbd; the tests implement it with an
in-memory fake that obeys the same rules, and a contract test holds both to them. Everything
above this interface speaks rbdfail's types and exceptions only.

Rules every implementation follows (the ones failover depends on):
- a method on a missing image raises ImageNotFound;
- promote of an image that is already primary, or demote of one that is not, raises InvalidState;
- a non-forced promote raises ImageBusy while the peer is still primary or its demotion has not
  reached this site yet; a forced promote succeeds and may leave both sites primary;
- a call to an unreachable site raises SiteUnreachable or OperationTimedOut within the connect
  timeout, never hangs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class MirrorMode(StrEnum):
    """Per-image mirroring mode."""

    JOURNAL = "journal"
    SNAPSHOT = "snapshot"
    UNKNOWN = "unknown"  # one a newer Ceph has and this rbdfail does not know: never configured


class PoolMirrorMode(StrEnum):
    DISABLED = "disabled"
    IMAGE = "image"
    POOL = "pool"
    UNKNOWN = "unknown"  # one a newer Ceph has and this rbdfail does not know


class MirrorState(StrEnum):
    """Whether per-image mirroring is on (librbd's rbd_mirror_image_state_t)."""

    DISABLING = "disabling"
    ENABLED = "enabled"
    DISABLED = "disabled"
    CREATING = "creating"  # the peer's copy while rbd-mirror bootstraps it
    UNKNOWN = "unknown"  # one a newer Ceph has and this rbdfail does not know


class MirrorSnapshotState(StrEnum):
    """The state of a snapshot-mode image's newest mirror snapshot (librbd's
    cls::rbd::MirrorSnapshotState): who made it, and whether it is a demotion."""

    PRIMARY = "primary"
    PRIMARY_DEMOTED = "primary-demoted"  # this site demoted the image itself
    NON_PRIMARY = "non-primary"  # copied from the peer
    NON_PRIMARY_DEMOTED = "non-primary-demoted"  # the peer's demotion, replayed here
    UNKNOWN = "unknown"  # a state this release does not know


class Feature(StrEnum):
    """RBD image features rbdfail cares about, spelt as `rbd info` spells them."""

    LAYERING = "layering"
    STRIPINGV2 = "striping"
    EXCLUSIVE_LOCK = "exclusive-lock"
    OBJECT_MAP = "object-map"
    FAST_DIFF = "fast-diff"
    DEEP_FLATTEN = "deep-flatten"
    JOURNALING = "journaling"
    DATA_POOL = "data-pool"
    OPERATIONS = "operations"
    MIGRATING = "migrating"
    NON_PRIMARY = "non-primary"


# A snapshot-mode copy is force-promoted by rolling back to the last mirror snapshot it holds
# whole; one whose first sync never finished has none, and librbd answers EINVAL
# (docs/design/taking-locks.md).
NOTHING_TO_PROMOTE = (
    "no complete mirror snapshot here to promote: its first sync from the peer never finished, "
    "so this site holds nothing consistent of it and it stays non-primary"
)

# Why a non-forced promote is refused with `only_if_replayed` (Cluster.promote).
UNREPLAYED = "demoted here itself, and the peer's promotion not replayed here since"

# What `rbd create` gives an image when nothing else is asked for.
DEFAULT_FEATURES = frozenset(
    {
        Feature.LAYERING,
        Feature.EXCLUSIVE_LOCK,
        Feature.OBJECT_MAP,
        Feature.FAST_DIFF,
        Feature.DEEP_FLATTEN,
    }
)


@dataclass(frozen=True)
class MirrorInfo:
    """An image's mirroring on one site."""

    state: MirrorState
    mode: MirrorMode | None  # None while mirroring is disabled
    primary: bool
    global_id: str  # the same on both sites for one mirrored image; "" when disabled


def not_understood(*infos: MirrorInfo | None) -> str | None:
    """Why a volume cannot be switched when Ceph says of it what this rbdfail does not know (a
    newer release's state or mode): acting on a guess could leave it primary nowhere."""
    for info in infos:
        if info is None:
            continue
        what = "state" if info.state == MirrorState.UNKNOWN else None
        if info.mode == MirrorMode.UNKNOWN:
            what = "mode"
        if what:
            return (
                f"Ceph reports a mirror {what} this rbdfail does not know (a newer release?): "
                "switch it by hand with `rbd mirror image`, or upgrade rbdfail"
            )
    return None


class ReplayState(StrEnum):
    """What the site's rbd-mirror daemon says of an image (librbd's mirror image status state)."""

    UNKNOWN = "unknown"
    ERROR = "error"
    SYNCING = "syncing"
    STARTING_REPLAY = "starting_replay"
    REPLAYING = "replaying"
    STOPPING_REPLAY = "stopping_replay"
    STOPPED = "stopped"  # e.g. "local image is primary"


@dataclass(frozen=True)
class ImageStatus:
    """The site's own rbd-mirror status of one image; `description` is Ceph's text, which for a
    replaying image carries a JSON tail with the lag (see status.py)."""

    state: ReplayState
    description: str
    last_update: datetime | None  # None: no daemon has reported it yet
    up: bool  # the reporting daemon is running


@dataclass(frozen=True)
class ImageUser:
    """A client that has the image open, other than an rbd-mirror daemon: a writer a demote
    would cut off (its next write fails read-only)."""

    client: str  # "client.4123", Ceph's id of the connection
    address: str
    holds_lock: bool  # it holds the exclusive lock: it has written since it opened the image


@dataclass(frozen=True)
class Monitor:
    name: str
    addresses: tuple[str, ...]  # as Ceph writes them: "v2:10.0.0.1:3300", "v1:10.0.0.1:6789"


@dataclass(frozen=True)
class Peer:
    """A pool's mirroring peer; never carries the peer's key."""

    uuid: str
    site_name: str
    direction: str  # "rx", "tx" or "rx-tx"


# ---- drills (issue 16): reading both sites at one mirror snapshot, read-only ------------------
@dataclass(frozen=True)
class MirrorSnapshot:
    """One mirror snapshot of an image (snapshot namespace "mirror"), as this site holds it."""

    id: int  # this site's snapshot id
    state: MirrorSnapshotState
    complete: bool  # on a copy: its sync from the primary has finished
    primary_snap_id: int | None  # on a copy: the primary's snapshot it copies; None on a primary
    size: int  # the image's size at the snapshot, in bytes
    timestamp: datetime | None  # when this site took it


@dataclass(frozen=True)
class UserSnapshot:
    """One snapshot of an image in the user namespace: what journal mirroring carries to the
    copy (a mirror snapshot is snapshot mode's own, and not one of these)."""

    id: int  # this site's snapshot id
    name: str
    size: int  # the image's size at the snapshot, in bytes
    timestamp: datetime | None  # when this site took it (on a copy: when it replayed it)


class DrillReads(ABC):
    """What a drill asks of a site. Every call is a read (no lock taken, nothing written, no
    watch that outlives the call) except `create_mirror_snapshot`, which the drill never calls:
    it is what a mirror-snapshot schedule does, for tests and benches, and the drill's own
    user snapshot of a journal-mode primary (`create_snapshot`, `remove_snapshot`)."""

    @abstractmethod
    def mirror_snapshots(self, name: str) -> list[MirrorSnapshot]:
        """The image's mirror snapshots, oldest first; [] for journal mode or no mirroring."""

    @abstractmethod
    def extent_digests(
        self, name: str, snap_id: int | None, extents: Sequence[tuple[int, int]]
    ) -> list[str]:
        """sha256 (hex) of each (offset, length) extent, read from the image opened read-only,
        at the snapshot `snap_id` of this site, or its head when None. Past the end: zeros."""

    @abstractmethod
    def allocated_extents(self, name: str, snap_id: int, limit: int) -> list[tuple[int, int]]:
        """Up to `limit` (offset, length) extents holding data at the snapshot: every extent
        written since the image was created (diff_iterate from the beginning)."""

    @abstractmethod
    def lock_holder(self, name: str) -> str | None:
        """The holder's text of the RADOS lock `name` (see `lock`) while someone holds it,
        None when it is free or lapsed; never takes it."""

    @abstractmethod
    def create_mirror_snapshot(self, name: str) -> int:
        """A new mirror snapshot of a primary image (what a schedule does); its id."""

    @abstractmethod
    def user_snapshots(self, name: str) -> list[UserSnapshot]:
        """The image's user-namespace snapshots, oldest first."""

    @abstractmethod
    def create_snapshot(self, name: str, snapshot: str) -> int:
        """A user snapshot of a primary image; its id. In journal mode the copy's rbd-mirror
        replays it, in order with the writes, so the copy takes it at the same point.
        InvalidState on a copy (non-primary: read-only)."""

    @abstractmethod
    def remove_snapshot(self, name: str, snapshot: str) -> None:
        """Remove a user snapshot of a primary image (journal mode: the copy replays the
        removal); no error when it has none of that name (a copy that has one: InvalidState)."""


class Cluster(DrillReads):  # DrillReads: the drill's calls, above
    """One connection to one site's pool, shared by every worker thread.

    Implementations are thread-safe: failover runs many volumes at once over one connection.
    """

    site: str  # the backend id: "default" for the backend itself, else a replication device's
    pool: str

    @abstractmethod
    def close(self) -> None:
        """Release the connection. Must not hang on an unreachable site."""

    # images
    @abstractmethod
    def list_images(self) -> list[str]: ...

    @abstractmethod
    def create_image(
        self, name: str, size: int, features: frozenset[Feature] | None = None
    ) -> None: ...

    @abstractmethod
    def remove_image(self, name: str) -> None: ...

    @abstractmethod
    def image_features(self, name: str) -> frozenset[Feature]: ...

    @abstractmethod
    def update_features(self, name: str, features: Iterable[Feature], enabled: bool) -> None: ...

    @abstractmethod
    def get_metadata(self, name: str, key: str) -> str | None:
        """The image's metadata value for key, or None when it has none."""

    @abstractmethod
    def set_metadata(self, name: str, key: str, value: str) -> None: ...

    @abstractmethod
    def remove_metadata(self, name: str, key: str) -> None:
        """Remove key; no error when the image has no such key."""

    @abstractmethod
    def metadata_values(self, key: str) -> dict[str, str]:
        """key's value on every image of the pool that has it, by image name, in one pass."""

    @abstractmethod
    def write(self, name: str, offset: int, data: bytes) -> None: ...

    @abstractmethod
    def read(self, name: str, offset: int, length: int) -> bytes: ...

    # per-image mirroring
    @abstractmethod
    def mirror_info(self, name: str) -> MirrorInfo: ...

    @abstractmethod
    def enable_mirroring(self, name: str, mode: MirrorMode) -> None: ...

    @abstractmethod
    def disable_mirroring(self, name: str, force: bool = False) -> None: ...

    @abstractmethod
    def demote(self, name: str) -> None: ...

    @abstractmethod
    def promote(self, name: str, force: bool = False, only_if_replayed: bool = False) -> None:
        """`only_if_replayed` (non-forced): ImageBusy while the copy was demoted here itself and
        has not replayed the peer since: snapshot mode, its newest mirror snapshot is its own
        demotion; journal mode, its journal's newest tag is its own demotion (an orphan tag
        with a local predecessor). Ceph promotes such a copy without force at once, without
        the peer's writes (measured, issues 13 and 28). Checked in the same image open as the
        promote: no call of its own (journal mode: two omap reads of the journal's header)."""

    @abstractmethod
    def replayed_since_own_demotion(self, name: str) -> bool | None:
        """Whether a non-primary copy has replayed anything of the peer since this site last
        demoted it: False while its newest journal tag (journal mode) or mirror snapshot
        (snapshot mode) is its own demotion, when a switch to it must wait for the peer's
        demotion; None when that cannot be read (an unreadable journal header)."""

    @abstractmethod
    def last_mirror_snapshot(self, name: str) -> tuple[MirrorSnapshotState, bool] | None:
        """A snapshot-mode image's newest mirror snapshot: its state and whether it is
        complete; None when it has none (journal mode, not mirrored)."""

    @abstractmethod
    def image_users(self, name: str) -> list[ImageUser]:
        """The clients that have the image open (its watchers and lock holders), rbd-mirror's
        connections left out."""

    @abstractmethod
    def mirror_daemon_lock_holders(self, name: str) -> list[str]:
        """The rbd-mirror connections that hold the image's exclusive lock (client ids), and
        holders that no longer watch the image (dead: blocklisted); [] when none does, or when
        the daemons' connections cannot be told from clients'."""

    @abstractmethod
    def break_image_lock(self, name: str, only: Collection[str] | None = None) -> list[str]:
        """Take the image's exclusive lock from whoever holds it (on a copy: this site's
        rbd-mirror), or only from the holders in `only`. Ceph blocklists each holder for a
        while, so it cannot write after. The holders' client ids; [] when nobody held it."""

    @abstractmethod
    def mirror_daemon_addresses(self, names: Sequence[str]) -> dict[str, str]:
        """This site's rbd-mirror connections that hold the locks of these images, in one
        pass over them: client id -> address. Only holders that watch the pool's
        `rbd_mirroring` object (the daemons') are named, never another client."""

    @abstractmethod
    def blocklist(self, address: str, seconds: int) -> None:
        """Blocklist one client address for `seconds` (`osd blocklist add`, one monitor
        command): the client's calls fail and its watches and locks count as dead."""

    @abstractmethod
    def blocklist_on_break_lock(self, enabled: bool) -> None:
        """Whether librbd, on this connection, blocklists a lock holder it breaks (one monitor
        command per image; `rbd_blocklist_on_break_lock`). Off once the holder is blocklisted
        already: a second entry fences nothing more."""

    @abstractmethod
    def resync(self, name: str) -> None:
        """Have this site's rbd-mirror throw its copy away and copy the primary anew (for a
        copy whose history split from the primary's). InvalidState on a primary image. The
        copy may vanish from the pool's listing while it is re-copied."""

    @abstractmethod
    def mirror_status(self, name: str) -> ImageStatus:
        """This site's rbd-mirror status of one image."""

    # the pool as a whole
    @abstractmethod
    def mirror_infos(self) -> dict[str, MirrorInfo]:
        """Mirroring of every mirrored image of the pool, by name, in one pass."""

    @abstractmethod
    def mirror_statuses(self) -> dict[str, ImageStatus]:
        """This site's rbd-mirror status of every mirrored image, by name, in one pass."""

    @abstractmethod
    def pool_mirror_mode(self) -> PoolMirrorMode: ...

    @abstractmethod
    def set_pool_mirror_mode(self, mode: PoolMirrorMode) -> None: ...

    @abstractmethod
    def peers(self) -> list[Peer]: ...

    @abstractmethod
    def monitors(self) -> list[Monitor]:
        """The site's monitors as its monitor map says (not as a local ceph.conf lists them)."""

    @abstractmethod
    def site_name(self) -> str:
        """The site's mirroring name; its fsid when none was set (or the user may not read it)."""

    @abstractmethod
    def set_site_name(self, name: str) -> None: ...

    @abstractmethod
    def create_peer_token(self) -> str:
        """A bootstrap token for a peer. It holds a key: never print, log or store it."""

    @abstractmethod
    def import_peer_token(self, token: str) -> None:
        """Peer with the token's site in both directions (rx-tx)."""

    # mirror-snapshot schedules (through the mgr's rbd_support module)
    @abstractmethod
    def snapshot_schedules(self, name: str) -> list[str]:
        """The image's schedule intervals, e.g. ["1h"]."""

    @abstractmethod
    def pool_snapshot_schedules(self) -> dict[str, list[str]]:
        """Every image's schedule intervals, by image name, in one call. Kept per image id:
        a copy thrown away and re-created (resync) loses its schedule."""

    @abstractmethod
    def add_snapshot_schedule(self, name: str, interval: str) -> None:
        """Idempotent; InvalidState unless the image is mirrored in snapshot mode."""

    @abstractmethod
    def remove_snapshot_schedule(self, name: str, interval: str) -> None:
        """Idempotent."""

    # a lock every host sees (a RADOS lock on an object of the pool)
    @abstractmethod
    def lock(self, name: str, cookie: str, holder: str, duration: int) -> None:
        """Take the exclusive lock `name` for `duration` seconds, or renew it when `cookie`
        holds it already; `holder` (who, where, since when) is kept beside it. LockHeld,
        carrying the holder's text, while another cookie holds it. A lock whose holder died
        lapses after its duration."""

    @abstractmethod
    def unlock(self, name: str, cookie: str) -> None:
        """Release the lock; no error when `cookie` does not hold it (e.g. it lapsed)."""
