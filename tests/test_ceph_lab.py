"""The real adapter on the lab: its connection errors each name the site and say what to do,
and so does a forced promote that Ceph refuses."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rbdfail import ceph
from rbdfail.cluster import NOTHING_TO_PROMOTE, MirrorMode
from rbdfail.errors import CephError, InvalidState, PermissionDenied, SiteUnreachable
from tests.conftest import RunningLab
from tests.helpers import eventually

pytestmark = pytest.mark.lab


def test_connect__missing_conf_file_names_it(lab: RunningLab) -> None:
    site = dataclasses.replace(lab.config.backend, conf=Path("/nowhere/ceph.conf"))
    with pytest.raises(SiteUnreachable, match=r"/nowhere/ceph\.conf not found") as caught:
        ceph.connect(site, 2)
    assert caught.value.site == "default"


def test_connect__user_without_keyring_is_refused_and_named(lab: RunningLab) -> None:
    site = dataclasses.replace(lab.config.backend, user="nobody")
    with pytest.raises(PermissionDenied, match=r"client\.nobody was refused") as caught:
        ceph.connect(site, 2)
    assert "keyring" in (caught.value.hint or "")


def test_connect__missing_pool_is_named(lab: RunningLab) -> None:
    site = dataclasses.replace(lab.config.replication_devices[0], pool="nope")
    with pytest.raises(CephError, match="pool 'nope' does not exist") as caught:
        ceph.connect(site, 2)
    assert caught.value.site == "secondary"


def test_connect__no_key_material_in_any_error(lab: RunningLab) -> None:
    keyring = Path(lab.config.backend.conf).parent / "ceph.client.cinder.keyring"
    key = keyring.read_text().split("key = ")[1].split()[0]
    messages = []
    changes: list[dict[str, Any]] = [{"user": "nobody"}, {"pool": "nope"}, {"conf": Path("/no")}]
    for change in changes:
        try:
            ceph.connect(dataclasses.replace(lab.config.backend, **change), 2)
        except CephError as exc:
            messages.append(f"{exc} {exc.hint}")
    assert len(messages) == 3
    assert all(key not in m for m in messages)


def test_forced_promote__copy_stopped_mid_first_sync__refused_saying_why(
    lab: RunningLab, image_name: str
) -> None:
    # rbd itself, read-only, only to see the copy's mirror snapshot: the adapter has no call
    # for it, and the moment to stop the secondary's rbd-mirror is when it exists, incomplete.
    import rados
    import rbd

    primary = ceph.connect(lab.config.backend, 10)
    device = lab.config.replication_devices[0]
    secondary = ceph.connect(device, 10)
    mirror_pid = lab.lab.sites()["secondary"].pids["rbd-mirror"]
    cluster = rados.Rados(conffile=str(device.conf), rados_id=device.user)
    cluster.connect()
    ioctx = cluster.open_ioctx(device.pool)

    def first_snapshot_incomplete() -> bool:
        try:
            with rbd.Image(ioctx, image_name, read_only=True) as image:
                snaps = [s["mirror"] for s in image.list_snaps() if "mirror" in s]
        except rbd.ImageNotFound:
            return False
        assert not any(s["complete"] for s in snaps), "synced before it could be stopped"
        return bool(snaps)

    primary.create_image(image_name, 256 << 20)
    chunk = os.urandom(4 << 20)
    for index in range(32):  # 128 MiB: about a second of syncing on the lab
        primary.write(image_name, index * len(chunk), chunk)
    try:
        primary.enable_mirroring(image_name, MirrorMode.SNAPSHOT)
        deadline = time.monotonic() + 60
        while not first_snapshot_incomplete():
            assert time.monotonic() < deadline, "the copy's first snapshot never appeared"
            time.sleep(0.01)
        os.kill(mirror_pid, signal.SIGSTOP)
        try:
            with pytest.raises(InvalidState) as refused:
                secondary.promote(image_name, force=True)
        finally:
            os.kill(mirror_pid, signal.SIGCONT)
        assert NOTHING_TO_PROMOTE in str(refused.value) and image_name in str(refused.value)
        assert not secondary.mirror_info(image_name).primary
    finally:
        primary.disable_mirroring(image_name)
        eventually(lambda: image_name not in secondary.list_images(), 60)
        primary.remove_image(image_name)
        ioctx.close()
        cluster.shutdown()
        for site in (primary, secondary):
            site.close()


def test_demote__image_locked_by_a_dead_client__breaks_its_lock_and_demotes(
    lab: RunningLab, image_name: str, tmp_path: Path
) -> None:
    """The failback after a source lost mid-run: the demotes an earlier rbdfail left running
    there died with its process, each holding its image's exclusive lock. librbd breaks a dead
    holder's lock by itself, blocklisting it first; that blocklist failed EINVAL on every
    image while rbdfail's connection set `rbd_blocklist_expire_seconds` (190 of 200 volumes'
    failbacks failed `error demoting image`, on the lab)."""
    with held_by_a_dead_client(lab, image_name, tmp_path) as (primary, address):
        # Its watch lapses once it is blocklisted: as when the dead client was noticed.
        primary.blocklist(address, 60)
        primary.demote(image_name)  # EINVAL before: `error demoting image`
        assert not primary.mirror_info(image_name).primary


@contextlib.contextmanager
def held_by_a_dead_client(
    lab: RunningLab, image_name: str, tmp_path: Path
) -> Iterator[tuple[ceph.CephCluster, str]]:
    """A snapshot-mode primary whose exclusive lock a killed process holds; the connection to
    its site and that process's address."""
    primary = ceph.connect(lab.config.backend, 10)
    try:
        primary.create_image(image_name, 4 << 20)
        primary.enable_mirroring(image_name, MirrorMode.SNAPSHOT)
        ready = tmp_path / "locked"
        site = lab.config.backend
        args = [str(site.conf), site.user, site.pool, image_name, str(ready)]
        holder = subprocess.Popen([sys.executable, "-c", LOCK_AND_WAIT, *args])
        try:
            eventually(ready.exists, 30, interval=0.1)
        finally:
            holder.kill()  # dead, its lock still held
            holder.wait()
        yield primary, ready.read_text()
    finally:
        with contextlib.suppress(CephError):
            primary.disable_mirroring(image_name, force=True)
        with contextlib.suppress(CephError):
            primary.remove_image(image_name)
        primary.close()


# A client that takes an image's exclusive lock (a write does), says its address, and waits to
# be killed.
LOCK_AND_WAIT = """
import os, sys, time, rados, rbd
conf, user, pool, name, ready = sys.argv[1:]
client = rados.Rados(conffile=conf, rados_id=user)
client.connect()
image = rbd.Image(client.open_ioctx(pool), name)
image.write(b"held", 0)
with open(ready + ".tmp", "w") as out:
    out.write(next(iter(image.lock_get_owners()))["owner"])
os.rename(ready + ".tmp", ready)
time.sleep(600)
"""
