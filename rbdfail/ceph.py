"""The only module that imports librados/librbd: `CephCluster`, the real `Cluster`.

One connection per site, opened once and shared by every worker thread (librados handles are
thread-safe, and python-rbd releases the GIL, so threads run in parallel).

Two kinds of time (design.md), set apart on the connection:
- liveness, "is this site there?": the monitors must answer within the connect timeout
  (`replication_connect_timeout`), which bounds `client_mount_timeout` and
  `rados_mon_op_timeout`. A dead or partitioned site is found in that time: connect, monitor
  commands and the first OSD map all go through the monitors.
- work, "how long may an operation on a live site take": `rados_osd_op_timeout` is never below
  OSD_OP_FLOOR_S. Cinder sets it to the connect timeout, and that turns a forced promote into
  a hang (see OSD_OP_FLOOR_S). The engine bounds each volume's work with its own budget and hard
  limit, and a call that outlasts both is given up on (workers.py).
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import shutil
import struct
import subprocess
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import Any, NoReturn

from rbdfail.cluster import (
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
    CephBindingsMissing,
    CephError,
    ImageBusy,
    ImageExists,
    ImageNotFound,
    InvalidState,
    LockHeld,
    OperationTimedOut,
    PermissionDenied,
    SiteUnreachable,
)
from rbdfail.limits import OSD_OP_FLOOR_S
from rbdfail.workers import all_at_once, read_each

try:
    import rados
    import rbd
except ImportError as exc:  # pragma: no cover - depends on the host
    raise CephBindingsMissing(
        f"the Ceph Python bindings (rados, rbd) cannot be imported: {exc}",
        hint="apt-get install python3-rados python3-rbd, and run rbdfail with Debian's "
        "/usr/bin/python3 or a virtualenv made with --system-site-packages (`make venv`)",
    ) from exc

# Why OSD ops are never cut short of this: librbd retries without limit when an op it sends
# times out: `C_InvokeAsyncRequest::handle_remote_request` (an operation proxied to the lock
# owner, such as the orphan snapshot a forced promote has this site's rbd-mirror create) and
# `ImageWatcher::handle_request_lock` both take -ETIMEDOUT as "ask again". So a timeout shorter
# than what a loaded survivor's OSD needs turns those into endless loops: Ceph's own default is
# no timeout at all. (The forced-promote hangs of issue 12 were another loop, which no timeout
# bounds: see `break_image_lock` and switch/forced.py `LockTaker`.) The floor,
# OSD_OP_FLOOR_S, is in limits.py: the engine's time limits allow for it too.
# How long Ceph blocklists the holder of a lock that `break_image_lock` breaks: this site's
# rbd-mirror when the peer is lost. Short, so the daemon resumes by itself once the entry
# lapses (its pool replayer retries every 5 s; docs/design/taking-locks.md); Ceph's
# default is an hour.
BLOCKLIST_S = 60
_LOCK_MAY_RENEW = 1  # LIBRADOS_LOCK_FLAG_MAY_RENEW, which python-rados does not export
_LOCK_HOLDER_XATTR = "rbdfail.holder"
_BULK_READERS = 32  # threads for one-object-per-image reads (they release the GIL)

_FEATURE_BITS = {
    Feature.LAYERING: rbd.RBD_FEATURE_LAYERING,
    Feature.STRIPINGV2: rbd.RBD_FEATURE_STRIPINGV2,
    Feature.EXCLUSIVE_LOCK: rbd.RBD_FEATURE_EXCLUSIVE_LOCK,
    Feature.OBJECT_MAP: rbd.RBD_FEATURE_OBJECT_MAP,
    Feature.FAST_DIFF: rbd.RBD_FEATURE_FAST_DIFF,
    Feature.DEEP_FLATTEN: rbd.RBD_FEATURE_DEEP_FLATTEN,
    Feature.JOURNALING: rbd.RBD_FEATURE_JOURNALING,
    Feature.DATA_POOL: rbd.RBD_FEATURE_DATA_POOL,
    Feature.OPERATIONS: rbd.RBD_FEATURE_OPERATIONS,
    Feature.MIGRATING: rbd.RBD_FEATURE_MIGRATING,
    Feature.NON_PRIMARY: rbd.RBD_FEATURE_NON_PRIMARY,
}
_MIRROR_MODES = {
    rbd.RBD_MIRROR_IMAGE_MODE_JOURNAL: MirrorMode.JOURNAL,
    rbd.RBD_MIRROR_IMAGE_MODE_SNAPSHOT: MirrorMode.SNAPSHOT,
}
_MIRROR_STATES = {
    rbd.RBD_MIRROR_IMAGE_DISABLING: MirrorState.DISABLING,
    rbd.RBD_MIRROR_IMAGE_ENABLED: MirrorState.ENABLED,
    rbd.RBD_MIRROR_IMAGE_DISABLED: MirrorState.DISABLED,
    # librbd's RBD_MIRROR_IMAGE_CREATING, which python-rbd does not export: the state of a
    # copy while rbd-mirror creates it from the peer's image.
    3: MirrorState.CREATING,
}
_SNAPSHOT_STATES = {
    rbd.RBD_SNAP_MIRROR_STATE_PRIMARY: MirrorSnapshotState.PRIMARY,
    rbd.RBD_SNAP_MIRROR_STATE_PRIMARY_DEMOTED: MirrorSnapshotState.PRIMARY_DEMOTED,
    rbd.RBD_SNAP_MIRROR_STATE_NON_PRIMARY: MirrorSnapshotState.NON_PRIMARY,
    rbd.RBD_SNAP_MIRROR_STATE_NON_PRIMARY_DEMOTED: MirrorSnapshotState.NON_PRIMARY_DEMOTED,
}
_POOL_MODES = {
    rbd.RBD_MIRROR_MODE_DISABLED: PoolMirrorMode.DISABLED,
    rbd.RBD_MIRROR_MODE_IMAGE: PoolMirrorMode.IMAGE,
    rbd.RBD_MIRROR_MODE_POOL: PoolMirrorMode.POOL,
}
_DIRECTIONS = {
    rbd.RBD_MIRROR_PEER_DIRECTION_RX: "rx",
    rbd.RBD_MIRROR_PEER_DIRECTION_TX: "tx",
    rbd.RBD_MIRROR_PEER_DIRECTION_RX_TX: "rx-tx",
}


def connect(site: SiteConfig, timeout: float) -> CephCluster:
    """Connect to a site's pool, failing within about `timeout` seconds if it does not answer."""
    if not site.conf.is_file():
        raise SiteUnreachable(
            f"Ceph configuration file {site.conf} not found",
            site=site.backend_id,
            hint="fix `conf` for this site in rbdfail.yaml, or copy the cluster's ceph.conf there",
        )
    seconds = str(max(1, math.ceil(timeout)))
    options = {
        "client_mount_timeout": seconds,
        "rados_mon_op_timeout": seconds,
        "rados_osd_op_timeout": str(max(OSD_OP_FLOOR_S, math.ceil(timeout))),
        # Never `rbd_blocklist_expire_seconds` here: with it set, every lock librbd breaks by
        # itself (a demote or promote that finds the image's lock held by a dead client, such
        # as an earlier rbdfail's demote left running on a lost site) fails EINVAL when it
        # blocklists the holder (measured on 16.2.15). `break_image_lock` sets it for its own
        # takes, as they were measured (docs/design/taking-locks.md).
    }
    if site.keyring:
        options["keyring"] = str(site.keyring)
    who = f"client.{site.user}"
    client, connected = None, False
    try:
        client = rados.Rados(
            conffile=str(site.conf),
            rados_id=site.user,
            clustername=site.cluster_name,
            conf=options,
        )
        client.connect(timeout=int(seconds))
        connected = True
        ioctx = client.open_ioctx(site.pool)
        if site.namespace:
            _enter_namespace(site, ioctx)
    except rados.TimedOut as exc:
        _shutdown(client)
        raise SiteUnreachable(
            f"no answer from the monitors within {seconds}s",
            site=site.backend_id,
            hint=f"the site may be down or partitioned; check its mon hosts in {site.conf}",
        ) from exc
    except (rados.PermissionDeniedError, rados.PermissionError) as exc:
        _shutdown(client)
        raise PermissionDenied(
            f"{who} was refused by the cluster ({exc})",
            site=site.backend_id,
            # Measured: a user whose keyring is missing gets EACCES too, not ENOENT.
            hint=f"check that the keyring of {who} is where `keyring` in rbdfail.yaml or "
            f"{site.conf} says, that the key matches, and its caps (`ceph auth get {who}`)",
        ) from exc
    except rados.ObjectNotFound as exc:
        _shutdown(client)
        if connected:
            raise CephError(
                f"pool {site.pool!r} does not exist",
                site=site.backend_id,
                hint="fix `pool` in rbdfail.yaml or create the pool (`rbdfail setup`)",
            ) from exc
        raise SiteUnreachable(f"cannot connect: {exc}", site=site.backend_id) from exc
    except rados.Error as exc:
        _shutdown(client)
        raise SiteUnreachable(f"cannot connect: {exc}", site=site.backend_id) from exc
    except CephError:
        _shutdown(client)
        raise
    return CephCluster(site, client, ioctx, timeout)


def _enter_namespace(site: SiteConfig, ioctx: Any) -> None:
    """Work inside the site's RBD namespace. Measured: in a namespace that does not exist,
    listing finds nothing and raises nothing, so a typo would read as an empty site."""
    if not rbd.RBD().namespace_exists(ioctx, site.namespace):
        raise CephError(
            f"RBD namespace {site.namespace!r} does not exist in pool {site.pool!r}",
            site=site.backend_id,
            hint=f"fix `namespace` in rbdfail.yaml, or create it on every site "
            f"(`rbd namespace create {site.where}`, then `rbd mirror pool enable {site.where} "
            "image`)",
        )
    ioctx.set_namespace(site.namespace)


def connect_all(sites: list[SiteConfig], timeout: float) -> list[CephCluster]:
    """Connect to every site at once, so that dead sites cost one timeout in all; on any
    failure close what did connect and raise the first error (in the sites' order)."""
    return all_at_once(lambda site: connect(site, timeout), sites, lambda c: c.close())


def _shutdown(client: Any) -> None:
    if client is not None:
        with suppress(rados.Error):
            client.shutdown()


class CephCluster(Cluster):
    """A site's pool through librados/librbd."""

    def __init__(self, site: SiteConfig, client: Any, ioctx: Any, timeout: float) -> None:
        self.site = site.backend_id
        self.pool = site.pool
        self.config = site
        self.timeout = timeout
        self._client = client
        self._ioctx = ioctx  # in the site's namespace, if it has one
        # Peers are the pool's, whatever the namespace (a namespace lists none: measured).
        self._pool_ioctx = client.open_ioctx(site.pool) if site.namespace else ioctx
        self._rbd = rbd.RBD()
        self._mirror_clients: tuple[float, frozenset[str]] | None = None  # (read at, ids)
        self._mirror_clients_lock = threading.Lock()  # one `rados` run for every worker

    def close(self) -> None:
        # Both return at once even when the site is frozen (measured), so no guard thread.
        if self._pool_ioctx is not self._ioctx:
            self._pool_ioctx.close()
        self._ioctx.close()
        self._client.shutdown()

    # ---- error translation ----------------------------------------------------------
    @contextmanager
    def _op(self, image: str | None = None) -> Iterator[None]:
        """Run a librados/librbd call, turning its exceptions into rbdfail's."""
        try:
            yield
        except (rbd.Error, rados.Error) as exc:
            self._raise(exc, image)

    def _raise(self, exc: Exception, image: str | None) -> NoReturn:
        site, text = self.site, str(exc)
        if isinstance(exc, rbd.Timeout | rados.TimedOut):
            raise OperationTimedOut(
                f"timed out ({text}; monitors get {self.timeout:g}s, OSD ops "
                f"{max(OSD_OP_FLOOR_S, self.timeout):g}s)",
                site=site,
                image=image,
                hint="the site may be down or partitioned",
            ) from exc
        if isinstance(exc, rbd.ImageNotFound | rados.ObjectNotFound):
            raise ImageNotFound("image not found", site=site, image=image) from exc
        if isinstance(exc, rbd.ImageExists):
            raise ImageExists("image already exists", site=site, image=image) from exc
        if isinstance(exc, rbd.ImageBusy):
            raise ImageBusy(text, site=site, image=image) from exc
        if isinstance(exc, rbd.InvalidArgument):
            raise InvalidState(text, site=site, image=image) from exc
        if isinstance(exc, rbd.ReadOnlyImage):
            raise InvalidState(f"image is not primary here ({text})", site=site, image=image)
        if isinstance(
            exc, rbd.PermissionError | rados.PermissionError | rados.PermissionDeniedError
        ):
            raise PermissionDenied(
                text,
                site=site,
                image=image,
                hint="check the cephx caps of the configured user (`ceph auth get client.USER`)",
            ) from exc
        if getattr(exc, "errno", None) in (errno.EACCES, errno.EPERM):  # e.g. rbd.OSError(13)
            raise PermissionDenied(
                text,
                site=site,
                image=image,
                hint="the configured cephx user lacks the caps for this; see its caps with "
                "`ceph auth get client.USER`",
            ) from exc
        raise CephError(text, site=site, image=image) from exc

    @contextmanager
    def _image(self, name: str, read_only: bool = False) -> Iterator[Any]:
        with self._op(name), rbd.Image(self._ioctx, name, read_only=read_only) as image:
            yield image

    # ---- images ---------------------------------------------------------------------
    def list_images(self) -> list[str]:
        with self._op():
            return list(self._rbd.list(self._ioctx))

    def create_image(
        self, name: str, size: int, features: frozenset[Feature] | None = None
    ) -> None:
        bits = None if features is None else _bits(features)
        with self._op(name):
            self._rbd.create(self._ioctx, name, size, features=bits)

    def remove_image(self, name: str) -> None:
        with self._op(name):
            self._rbd.remove(self._ioctx, name)

    def image_features(self, name: str) -> frozenset[Feature]:
        with self._image(name, read_only=True) as image:
            bits = image.features()
        return frozenset(f for f, bit in _FEATURE_BITS.items() if bits & bit)

    def update_features(self, name: str, features: Iterable[Feature], enabled: bool) -> None:
        with self._image(name) as image:
            image.update_features(_bits(features), enabled)

    def get_metadata(self, name: str, key: str) -> str | None:
        with self._image(name, read_only=True) as image:
            try:
                return str(image.metadata_get(key))
            except KeyError:
                return None

    def set_metadata(self, name: str, key: str, value: str) -> None:
        with self._image(name) as image:
            image.metadata_set(key, value)

    def remove_metadata(self, name: str, key: str) -> None:
        with self._image(name) as image, suppress(KeyError):
            image.metadata_remove(key)

    def metadata_values(self, key: str) -> dict[str, str]:
        # Not an image open per volume, which costs far more for many images: librbd keeps image
        # metadata as `metadata_<key>` in the omap of the image's header object, and that omap
        # key is read directly (docs/performance.md has the timings). The contract test holds
        # this to librbd's own metadata_set.
        with self._op():
            ids = {entry["id"]: entry["name"] for entry in self._rbd.list2(self._ioctx)}

        def read(image_id: str) -> tuple[str, bytes | None]:
            with rados.ReadOpCtx() as op:
                values, _ = self._ioctx.get_omap_vals_by_keys(op, (f"metadata_{key}",))
                try:
                    self._ioctx.operate_read_op(op, f"rbd_header.{image_id}")
                except rados.ObjectNotFound:
                    return ids[image_id], None  # removed since the listing: not an error
                return ids[image_id], next((v for _, v in values), None)

        with self._op(), ThreadPoolExecutor(max_workers=_BULK_READERS) as pool:
            found = list(pool.map(read, ids))
        return {name: value.decode() for name, value in found if value is not None}

    def write(self, name: str, offset: int, data: bytes) -> None:
        with self._image(name) as image:
            image.write(data, offset)
            image.flush()

    def read(self, name: str, offset: int, length: int) -> bytes:
        with self._image(name, read_only=True) as image:
            return bytes(image.read(offset, length))

    # ---- per-image mirroring ----------------------------------------------------------
    def mirror_info(self, name: str) -> MirrorInfo:
        with self._image(name, read_only=True) as image:
            info = image.mirror_image_get_info()
            state = _MIRROR_STATES.get(info["state"], MirrorState.UNKNOWN)
            # librbd answers "journal" for the mode of an image that is not mirrored at all.
            mode = (
                _MIRROR_MODES.get(image.mirror_image_get_mode(), MirrorMode.UNKNOWN)
                if state != "disabled"
                else None
            )
        return MirrorInfo(state, mode, bool(info["primary"]), info["global_id"])

    def enable_mirroring(self, name: str, mode: MirrorMode) -> None:
        bit = next(b for b, m in _MIRROR_MODES.items() if m == mode)
        with self._image(name) as image:
            image.mirror_image_enable(bit)

    def disable_mirroring(self, name: str, force: bool = False) -> None:
        with self._image(name) as image:
            image.mirror_image_disable(force)

    def demote(self, name: str) -> None:
        with self._image(name) as image:
            try:
                image.mirror_image_demote()
            except rbd.ReadOnlyImage as exc:
                # Measured: EROFS at once while another client holds the image's exclusive
                # lock and will not release it (an explicit lock_acquire); still primary.
                raise InvalidState(
                    "demote refused: another client holds the image's lock and will not "
                    "release it (read-only)",
                    site=self.site,
                    image=name,
                ) from exc

    def promote(self, name: str, force: bool = False, only_if_replayed: bool = False) -> None:
        with self._image(name) as image:
            if only_if_replayed and self._demoted_here_since(image):
                raise ImageBusy(UNREPLAYED, site=self.site, image=name)
            try:
                image.mirror_image_promote(force)
            except rbd.ReadOnlyImage as exc:
                # Measured: while the peer's demotion is being replayed, promote answers EROFS
                # as well as EBUSY; both mean "not propagated yet, retry". Forced, it is the
                # holder of the copy's lock (this site's rbd-mirror) refusing to let go.
                why = "the copy's lock holder will not let go" if force else "not propagated yet"
                raise ImageBusy(f"{why} (read-only)", site=self.site, image=name) from exc
            except rbd.ImageNotFound as exc:
                # The image is open, so it exists: ENOENT here is about its snapshots, which
                # the peer's demotion being replayed changes (docs/performance.md, run O).
                # Retried like a busy copy, within its deadline.
                raise ImageBusy(
                    "a mirror snapshot changed under the promote (not found)",
                    site=self.site,
                    image=name,
                ) from exc
            except rbd.InvalidArgument as exc:
                if force and not any(
                    snap.get("mirror", {}).get("complete") for snap in image.list_snaps()
                ):
                    raise InvalidState(NOTHING_TO_PROMOTE, site=self.site, image=name) from exc
                raise

    def _demoted_here_since(self, image: Any) -> bool:
        """Whether the open copy was demoted by this site itself and has replayed nothing of
        the peer since: snapshot mode, its newest mirror snapshot is its own demotion; journal
        mode, its journal's newest tag is an orphan tag whose predecessor is local."""
        if image.features() & rbd.RBD_FEATURE_JOURNALING:
            return _journal_demoted_here(self._ioctx, image.id())
        return _newest_mirror_state(image) == MirrorSnapshotState.PRIMARY_DEMOTED

    def replayed_since_own_demotion(self, name: str) -> bool | None:
        with self._image(name, read_only=True) as image:
            if image.features() & rbd.RBD_FEATURE_JOURNALING:
                owners = _journal_newest_tag_owners(self._ioctx, image.id())
                return None if owners is None else owners != _OWN_DEMOTION
            return _newest_mirror_state(image) != MirrorSnapshotState.PRIMARY_DEMOTED

    def last_mirror_snapshot(self, name: str) -> tuple[MirrorSnapshotState, bool] | None:
        with self._image(name, read_only=True) as image:
            return _newest_mirror_snapshot(image)

    def image_users(self, name: str) -> list[ImageUser]:
        mirror_daemons = self._rbd_mirror_clients()
        with self._image(name, read_only=True) as image:
            watchers = list(image.watchers_list())
            lockers = (image.list_lockers() or {}).get("lockers", [])
        holders = {str(client): str(addr) for client, _cookie, addr in lockers}
        users = {f"client.{w['id']}": str(w["addr"]) for w in watchers} | holders
        return [
            ImageUser(client, addr, client in holders)
            for client, addr in sorted(users.items())
            if client not in mirror_daemons
        ]

    def _rbd_mirror_clients(self, max_age: float = 60) -> frozenset[str]:
        """The connections of the rbd-mirror daemons to this site: each watches the pool's
        `rbd_mirroring` object (its own site's daemon and the peers' alike), and the peer's
        daemon watches every snapshot-mode primary it replays. python-rados cannot list an
        object's watchers, so this asks the `rados` tool (ceph-common) once a minute; without
        it nothing is left out, and a snapshot-mode primary shows the peer's daemon as a user."""
        with self._mirror_clients_lock:
            now = time.monotonic()
            if self._mirror_clients is not None and now - self._mirror_clients[0] < max_age:
                return self._mirror_clients[1]
            found = self._list_mirror_clients()
            self._mirror_clients = (now, found)
            return found

    def _list_mirror_clients(self) -> frozenset[str]:
        tool = shutil.which("rados")
        found: frozenset[str] = frozenset()
        if tool:
            command = [tool, "-c", str(self.config.conf), "--id", self.config.user]
            command += ["--cluster", self.config.cluster_name]
            if self.config.keyring:
                command += ["--keyring", str(self.config.keyring)]
            command += ["--client_mount_timeout", str(max(1, math.ceil(self.timeout)))]
            command += ["-p", self.pool, "listwatchers", "rbd_mirroring"]
            if self.config.namespace:
                command += ["--namespace", self.config.namespace]
            with suppress(OSError, subprocess.SubprocessError):
                out = subprocess.run(
                    command, capture_output=True, text=True, timeout=self.timeout + 5, check=False
                ).stdout
                found = frozenset(part for part in out.split() if part.startswith("client."))
        return found

    def mirror_daemon_lock_holders(self, name: str) -> list[str]:
        with self._image(name, read_only=True) as image:
            lockers = (image.list_lockers() or {}).get("lockers", [])
            watching = {f"client.{w['id']}" for w in image.watchers_list()}
        holders = [str(client) for client, _cookie, _addr in lockers]
        daemons = self._rbd_mirror_clients()
        if any(client not in daemons for client in holders):
            # A daemon whose pool replayer restarted (after a blocklist) has a new connection.
            daemons = self._rbd_mirror_clients(max_age=5)
        # A holder that no longer watches the image is dead: a daemon connection blocklisted by
        # an earlier run's take (no longer an `rbd_mirroring` watcher either) can keep a journal
        # copy's lock, refusing writes (EINVAL; docs/design/taking-locks.md). Its lock is safe
        # to take.
        return [client for client in holders if client in daemons or client not in watching]

    def break_image_lock(self, name: str, only: Collection[str] | None = None) -> list[str]:
        # python-rbd's lock_get_owners answers EINVAL on a non-primary copy ("exclusive-lock
        # feature is not enabled": such an image has no ExclusiveLock object here), so the
        # holders come from the lock itself; break_lock blocklists each one for BLOCKLIST_S
        # (`rbd_blocklist_expire_seconds`, set on this connection by its first take) before
        # breaking, which needs only the rbd profile's `osd blocklist add`.
        # Never this connection's own lock (a promote of ours may hold it by now): breaking
        # it would blocklist rbdfail itself.
        me = f"client.{self._client.get_instance_id()}"
        with self._op(name):
            self._client.conf_set("rbd_blocklist_expire_seconds", str(BLOCKLIST_S))
        with self._image(name, read_only=True) as image:
            lockers = (image.list_lockers() or {}).get("lockers", [])
            holders = [
                (client, cookie)
                for client, cookie, _addr in lockers
                if client != me and (only is None or client in only)
            ]
            for client, cookie in holders:
                with suppress(rbd.ImageNotFound):  # released meanwhile
                    image.break_lock(client, cookie)
        return [str(client) for client, _cookie in holders]

    def mirror_daemon_addresses(self, names: Sequence[str]) -> dict[str, str]:
        def holders(name: str) -> list[tuple[str, str]]:
            with self._image(name, read_only=True) as image:
                lockers = (image.list_lockers() or {}).get("lockers", [])
            return [(str(client), str(addr)) for client, _cookie, addr in lockers]

        held = read_each(holders, list(names), (ImageNotFound,), threads=_BULK_READERS)
        found = {client: addr for pairs in held.values() for client, addr in pairs}
        daemons = self._rbd_mirror_clients(max_age=5)
        return {client: addr for client, addr in found.items() if client in daemons}

    def blocklist(self, address: str, seconds: int) -> None:
        command = {
            "prefix": "osd blocklist",
            "blocklistop": "add",
            "addr": address,
            "expire": float(seconds),
        }
        try:
            self._mon(command, f"osd blocklist add {address}")
        except PermissionDenied as exc:
            raise PermissionDenied(
                exc.reason,
                site=self.site,
                hint="the rbd profile's mon caps allow `osd blocklist add`; check "
                "`ceph auth get client.USER`",
            ) from None

    def blocklist_on_break_lock(self, enabled: bool) -> None:
        # Images opened after this read it (librbd copies the connection's config at open).
        with self._op():
            self._client.conf_set("rbd_blocklist_on_break_lock", str(enabled).lower())

    def resync(self, name: str) -> None:
        with self._image(name) as image:
            image.mirror_image_resync()

    def mirror_status(self, name: str) -> ImageStatus:
        with self._image(name, read_only=True) as image:
            return _image_status(image.mirror_image_get_status())

    # ---- the pool as a whole ------------------------------------------------------------
    def mirror_infos(self) -> dict[str, MirrorInfo]:
        with self._op():
            names = {entry["id"]: entry["name"] for entry in self._rbd.list2(self._ioctx)}
            infos = list(self._rbd.mirror_image_info_list(self._ioctx))
        return {
            names[image_id]: MirrorInfo(
                _MIRROR_STATES.get(info["state"], MirrorState.UNKNOWN),
                _MIRROR_MODES.get(info["mode"], MirrorMode.UNKNOWN),
                bool(info["primary"]),
                info["global_id"],
            )
            for image_id, info in infos
            if image_id in names  # created or removed between the two calls
        }

    def mirror_statuses(self) -> dict[str, ImageStatus]:
        with self._op():
            entries = list(self._rbd.mirror_image_status_list(self._ioctx))
        return {entry["name"]: _image_status(entry) for entry in entries}

    def pool_mirror_mode(self) -> PoolMirrorMode:
        with self._op():
            return _POOL_MODES.get(self._rbd.mirror_mode_get(self._ioctx), PoolMirrorMode.UNKNOWN)

    def set_pool_mirror_mode(self, mode: PoolMirrorMode) -> None:
        bit = next(b for b, m in _POOL_MODES.items() if m == mode)
        with self._op():
            # A namespace mirrors only in a pool that mirrors: the pool's own mode first.
            if (
                self._pool_ioctx is not self._ioctx
                and mode != PoolMirrorMode.DISABLED
                and self._rbd.mirror_mode_get(self._pool_ioctx) == rbd.RBD_MIRROR_MODE_DISABLED
            ):
                self._rbd.mirror_mode_set(self._pool_ioctx, rbd.RBD_MIRROR_MODE_IMAGE)
            self._rbd.mirror_mode_set(self._ioctx, bit)

    def peers(self) -> list[Peer]:
        with self._op():
            return [
                Peer(p["uuid"], p["site_name"], _DIRECTIONS.get(p["direction"], "unknown"))
                for p in self._rbd.mirror_peer_list(self._pool_ioctx)
            ]

    def monitors(self) -> list[Monitor]:
        out = self._mon({"prefix": "mon dump", "format": "json"}, "mon dump")
        return [
            Monitor(
                m["name"],
                tuple(
                    f"{a['type']}:{a['addr']}" for a in m.get("public_addrs", {}).get("addrvec", [])
                ),
            )
            for m in json.loads(out)["mons"]
        ]

    def site_name(self) -> str:
        with self._op():
            return str(self._rbd.mirror_site_name_get(self._client))

    def set_site_name(self, name: str) -> None:
        with self._op():
            self._rbd.mirror_site_name_set(self._client, name)

    def create_peer_token(self) -> str:
        with self._op():
            return str(self._rbd.mirror_peer_bootstrap_create(self._pool_ioctx))

    def import_peer_token(self, token: str) -> None:
        with self._op():
            self._rbd.mirror_peer_bootstrap_import(
                self._pool_ioctx, rbd.RBD_MIRROR_PEER_DIRECTION_RX_TX, token
            )

    # ---- mirror-snapshot schedules ------------------------------------------------------
    def pool_snapshot_schedules(self) -> dict[str, list[str]]:
        out = self._mgr(
            "",
            prefix="rbd mirror snapshot schedule list",
            level_spec=f"{self.config.where}/",
            recursive=True,
            format="json",
        )
        found: dict[str, list[str]] = {}
        for level in json.loads(out or "{}").values():
            # "pool/image" or "pool/namespace/image"; pool- and namespace-wide ones have no
            # image part.
            where, _, image = str(level.get("name", "")).rpartition("/")
            if where == self.config.where and image:
                found.setdefault(image, []).extend(s["interval"] for s in level["schedule"])
        return found

    def snapshot_schedules(self, name: str) -> list[str]:
        out = self._mgr(
            name,
            prefix="rbd mirror snapshot schedule list",
            level_spec=f"{self.config.where}/{name}",
            format="json",
        )
        return [
            s["interval"] for level in json.loads(out or "{}").values() for s in level["schedule"]
        ]

    def add_snapshot_schedule(self, name: str, interval: str) -> None:
        self._mgr(
            name,
            prefix="rbd mirror snapshot schedule add",
            level_spec=f"{self.config.where}/{name}",
            interval=interval,
        )

    def remove_snapshot_schedule(self, name: str, interval: str) -> None:
        self._mgr(
            name,
            prefix="rbd mirror snapshot schedule remove",
            level_spec=f"{self.config.where}/{name}",
            interval=interval,
        )

    def _mgr(self, image: str, **command: object) -> str:
        """A mgr command; its negative return codes become rbdfail's exceptions."""
        with self._op(image):
            ret, out, status = self._client.mgr_command(
                json.dumps(command), b"", timeout=max(1, math.ceil(self.timeout))
            )
        if ret >= 0:
            return bytes(out).decode()
        raise _command_error(ret, status, f"{command['prefix']}", site=self.site, image=image)

    def _mon(self, command: dict[str, object], what: str) -> str:
        """A monitor command, bounded by the connection's timeout. A silent monitor answers
        -ETIMEDOUT when it lapses: OperationTimedOut like any call, which is what tells a
        lost site (the source watch) from a refused command."""
        with self._op():
            ret, out, status = self._client.mon_command(
                json.dumps(command), b"", timeout=max(1, math.ceil(self.timeout))
            )
        if ret >= 0:
            return bytes(out).decode()
        raise _command_error(ret, status, what, site=self.site)

    # ---- the lock ---------------------------------------------------------------------------
    def lock(self, name: str, cookie: str, holder: str, duration: int) -> None:
        # cls_lock creates the object; the holder goes into an xattr of it, because python-rados
        # cannot list a lock's lockers (and a refused run must be able to say who holds it).
        with self._op():
            try:
                self._ioctx.lock_exclusive(
                    name, name, cookie, desc=cookie, duration=duration, flags=_LOCK_MAY_RENEW
                )
            except rados.ObjectBusy:  # another cookie holds it
                raise LockHeld(
                    f"lock {name!r} is held", site=self.site, holder=self._lock_holder(name)
                ) from None
            self._ioctx.set_xattr(name, _LOCK_HOLDER_XATTR, holder.encode())

    def _lock_holder(self, name: str) -> str:
        with suppress(rados.ObjectNotFound, rados.NoData):
            return bytes(self._ioctx.get_xattr(name, _LOCK_HOLDER_XATTR)).decode()
        return ""

    def unlock(self, name: str, cookie: str) -> None:
        with self._op(), suppress(rados.ObjectNotFound):  # ENOENT: not held by this cookie
            self._ioctx.unlock(name, name, cookie)

    # ---- drills (issue 16): read-only, at one mirror snapshot --------------------------------
    # Measured on the lab (Ceph 16.2.15, python-rbd 16.2):
    # - a mirror snapshot cannot be named: opening at its name, cloning it and diff_iterate
    #   from it all answer ENOENT (librbd looks names up in the user namespace); it is reached
    #   by id with `set_snap_by_id` on an image opened read-only;
    # - a copy's non-primary snapshot holds the copy as it was BEFORE that snapshot's sync
    #   (rbd-mirror creates it, then copies the primary's changes into the head): read at that
    #   snapshot, a copy synced to the primary's snapshot N showed the primary's N-1, and its
    #   head showed N exactly. See drill.py for how the copy is read.
    def mirror_snapshots(self, name: str) -> list[MirrorSnapshot]:
        with self._image(name, read_only=True) as image:
            found = []
            for snap in image.list_snaps():
                mirror = snap.get("mirror")
                if snap.get("namespace") != rbd.RBD_SNAP_NAMESPACE_TYPE_MIRROR or not mirror:
                    continue
                primary_snap = mirror.get("primary_snap_id")
                found.append(
                    MirrorSnapshot(
                        id=int(snap["id"]),
                        state=_SNAPSHOT_STATES.get(
                            mirror.get("state", -1), MirrorSnapshotState.UNKNOWN
                        ),
                        complete=bool(mirror.get("complete")),
                        # A primary's own snapshot carries CEPH_NOSNAP - 1 here (measured).
                        primary_snap_id=primary_snap
                        if primary_snap is not None and primary_snap < _NO_PRIMARY_SNAP
                        else None,
                        size=int(snap["size"]),
                        timestamp=_utc(image.get_snap_timestamp(snap["id"])),
                    )
                )
        return sorted(found, key=lambda s: s.id)

    def extent_digests(
        self, name: str, snap_id: int | None, extents: Sequence[tuple[int, int]]
    ) -> list[str]:
        # Side by side extents are read in one call of up to _DIGEST_CHUNK and hashed apart:
        # a sample's blocks holding data mostly touch, and one OSD op per 64 KiB block made a
        # sampled drill of 200 small volumes slower than reading them whole (bench).
        with self._image(name, read_only=True) as image:
            if snap_id is not None:
                image.set_snap_by_id(snap_id)
            size = image.size()

            def read(position: int, length: int) -> bytes:
                # librbd refuses a read past the end (EINVAL): what lies there is zeros.
                readable = max(0, min(length, size - position))
                data = bytes(image.read(position, readable)) if readable else b""
                return data + b"\0" * (length - len(data))

            digests = []
            for run in _side_by_side(extents, _DIGEST_CHUNK):
                start = run[0][0]
                if len(run) > 1:
                    data = read(start, run[-1][0] + run[-1][1] - start)
                    digests += [
                        hashlib.sha256(data[o - start : o - start + n]).hexdigest() for o, n in run
                    ]
                    continue
                digest, position, end = hashlib.sha256(), start, start + run[0][1]
                while position < end:
                    chunk = min(_DIGEST_CHUNK, end - position)
                    digest.update(read(position, chunk))
                    position += chunk
                digests.append(digest.hexdigest())
        return digests

    def allocated_extents(self, name: str, snap_id: int, limit: int) -> list[tuple[int, int]]:
        found: list[tuple[int, int]] = []

        def note(offset: int, length: int, exists: bool) -> int:
            if exists and len(found) < limit:
                found.append((offset, length))
            return 0

        with self._image(name, read_only=True) as image:
            image.set_snap_by_id(snap_id)
            image.diff_iterate(0, image.size(), None, note)
        return found

    def lock_holder(self, name: str) -> str | None:
        # python-rados cannot list a lock's lockers, and taking the lock to see would make a
        # switch starting then find it held (refused, exit 4): cls_lock's get_info asks the
        # OSD, which drops lapsed lockers before answering. Its reply (cls_lock_types.h):
        # ENCODE_START header (6 bytes), then the lockers map, its count first.
        request = _encoded_string(name)
        with self._op():
            try:
                ret, out = self._ioctx.execute(
                    name, "lock", "get_info", _encode_start(request), 65536
                )
            except rados.ObjectNotFound:
                return None  # never locked on this site
        if ret < 0 or len(out) < 10:
            return None
        lockers = struct.unpack_from("<I", bytes(out), 6)[0]
        return (self._lock_holder(name) or "holder unknown") if lockers else None

    def create_mirror_snapshot(self, name: str) -> int:
        with self._image(name) as image:
            return int(image.mirror_image_create_snapshot())

    def user_snapshots(self, name: str) -> list[UserSnapshot]:
        with self._image(name, read_only=True) as image:
            return _user_snapshots(image)

    def create_snapshot(self, name: str, snapshot: str) -> int:
        with self._image(name) as image:
            image.create_snap(snapshot)
            return next(s.id for s in _user_snapshots(image) if s.name == snapshot)

    def remove_snapshot(self, name: str, snapshot: str) -> None:
        with self._image(name) as image:
            if any(s.name == snapshot for s in _user_snapshots(image)):
                with suppress(rbd.ImageNotFound):  # removed meanwhile: done
                    image.remove_snap(snapshot)


def _user_snapshots(image: Any) -> list[UserSnapshot]:
    found = [
        UserSnapshot(
            int(snap["id"]),
            snap["name"],
            int(snap["size"]),
            _utc(image.get_snap_timestamp(snap["id"])),
        )
        for snap in image.list_snaps()
        if snap.get("namespace", rbd.RBD_SNAP_NAMESPACE_TYPE_USER)
        == rbd.RBD_SNAP_NAMESPACE_TYPE_USER
    ]
    return sorted(found, key=lambda s: s.id)


# A mon or mgr command's negative return code, as rbdfail's exception.
_COMMAND_ERRORS: dict[int, type[CephError]] = {
    -errno.EINVAL: InvalidState,
    -errno.ENOENT: ImageNotFound,
    -errno.EACCES: PermissionDenied,
    -errno.EPERM: PermissionDenied,
    -errno.ETIMEDOUT: OperationTimedOut,
}


def _command_error(
    ret: int, status: str, what: str, *, site: str, image: str | None = None
) -> CephError:
    reason = status or errno.errorcode.get(-ret, str(ret))
    return _COMMAND_ERRORS.get(ret, CephError)(f"{what}: {reason}", site=site, image=image)


# librbd numbers them 0 (unknown) .. 6 (stopped), in order; a newer one is shown as unknown.
_REPLAY_STATES = dict(enumerate(ReplayState))


def _image_status(entry: dict[str, Any]) -> ImageStatus:
    # "status not found" entries carry state 0 and a 1970 last_update (measured).
    updated = entry.get("last_update")
    return ImageStatus(
        _REPLAY_STATES.get(entry.get("state", 0), ReplayState.UNKNOWN),
        entry.get("description", ""),
        updated.replace(tzinfo=UTC) if updated and updated.year > 1970 else None,
        bool(entry.get("up", False)),
    )


def _newest_mirror_snapshot(image: Any) -> tuple[MirrorSnapshotState, bool] | None:
    """The open image's newest mirror snapshot: its state and whether it is complete (read
    from what the open loaded: no call to the OSDs)."""
    mirror = [s for s in image.list_snaps() if "mirror" in s]
    if not mirror:
        return None
    newest = max(mirror, key=lambda s: s["id"])["mirror"]
    state = _SNAPSHOT_STATES.get(newest.get("state", -1), MirrorSnapshotState.UNKNOWN)
    return state, bool(newest.get("complete"))


def _newest_mirror_state(image: Any) -> MirrorSnapshotState | None:
    newest = _newest_mirror_snapshot(image)
    return newest[0] if newest else None


# librbd's journal tag owners (librbd/Journal.h): a tag's mirror_uuid is "" when this site
# wrote it as primary, "<orphan>" for a demotion, else the peer's mirror uuid (replayed).
_LOCAL_MIRROR_UUID = ""
_ORPHAN_MIRROR_UUID = "<orphan>"
_OWN_DEMOTION = (_ORPHAN_MIRROR_UUID, _LOCAL_MIRROR_UUID)  # a demotion of this site's own


def _journal_demoted_here(ioctx: Any, image_id: str) -> bool:
    """Whether the journal's newest tag is this site's own demotion, nothing of the peer
    replayed after it. librbd promotes such a copy without force at once, whatever the peer
    wrote since (measured: it promoted without the peer's newest write). A copy that replayed
    the peer's demotion has an orphan tag whose predecessor is the peer's mirror uuid, and
    replay is in order, so that tag comes after every write the peer made before it. A header
    that cannot be read or decoded counts as not replayed: the promote waits, never goes
    through blind."""
    owners = _journal_newest_tag_owners(ioctx, image_id)
    return owners is None or owners == _OWN_DEMOTION


def _journal_newest_tag_owners(ioctx: Any, image_id: str) -> tuple[str, str] | None:
    """The mirror uuids of the journal's newest tag and of its predecessor; None when the
    header cannot be read or decoded.

    Read from the header object `journal.<image id>` (cls_journal): `next_tag_tid` (u64), and
    the newest tag under `tag_<tid as 16 hex digits>`: ENCODE_START, tid, tag_class, then its
    data (librbd TagData: mirror_uuid, predecessor mirror_uuid, ...)."""
    header = f"journal.{image_id}"
    next_tid = _omap_values(ioctx, header, ["next_tag_tid"]).get("next_tag_tid")
    if next_tid is None or len(next_tid) < 8:
        return None
    newest = struct.unpack_from("<Q", next_tid)[0] - 1
    key = f"tag_{newest:016x}"
    raw = _omap_values(ioctx, header, [key]).get(key)
    if raw is None:
        return None
    try:
        data_at = 6 + 16
        (size,) = struct.unpack_from("<I", raw, data_at)
        data = raw[data_at + 4 : data_at + 4 + size]
        owner, offset = _decoded_string(data, 0)
        predecessor, _ = _decoded_string(data, offset)
    except (struct.error, UnicodeDecodeError):
        return None
    return owner, predecessor


def _omap_values(ioctx: Any, obj: str, keys: list[str]) -> dict[str, bytes]:
    with rados.ReadOpCtx() as op:
        values, _ = ioctx.get_omap_vals_by_keys(op, tuple(keys))
        ioctx.operate_read_op(op, obj)
        return {key: bytes(value) for key, value in values}


def _decoded_string(raw: bytes, offset: int) -> tuple[str, int]:
    (size,) = struct.unpack_from("<I", raw, offset)
    end = offset + 4 + size
    if end > len(raw):
        raise struct.error("string past the end")
    return raw[offset + 4 : end].decode(), end


def _bits(features: Iterable[Feature]) -> int:
    bits = 0
    for feature in features:
        bits |= _FEATURE_BITS[feature]
    return bits


# ---- drills (issue 16) ----------------------------------------------------------------------
_DIGEST_CHUNK = 4 << 20  # one RBD object: a read never holds more than this in memory
# Below CEPH_NOSNAP - 1, which librbd gives as the primary_snap_id of a primary's own snapshot.
_NO_PRIMARY_SNAP = (1 << 64) - 2


def _utc(stamp: datetime | None) -> datetime | None:
    """python-rbd gives a snapshot's timestamp as a naive datetime in UTC."""
    return stamp.replace(tzinfo=UTC) if stamp is not None else None


def _encoded_string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<I", len(raw)) + raw


def _encode_start(payload: bytes) -> bytes:
    """Ceph's ENCODE_START(1, 1): struct_v, struct_compat, then the payload's length."""
    return struct.pack("<BBI", 1, 1, len(payload)) + payload


def _side_by_side(extents: Sequence[tuple[int, int]], most: int) -> Iterator[list[tuple[int, int]]]:
    """The extents in their order, in runs that touch end to start and span at most `most`."""
    run: list[tuple[int, int]] = []
    for offset, length in extents:
        if run and offset == run[-1][0] + run[-1][1] and offset + length - run[0][0] <= most:
            run.append((offset, length))
            continue
        if run:
            yield run
        run = [(offset, length)]
    if run:
        yield run
