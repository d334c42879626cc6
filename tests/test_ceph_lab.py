"""The real adapter on the lab: its connection errors each name the site and say what to do,
and so does a forced promote that Ceph refuses."""

from __future__ import annotations

import dataclasses
import os
import signal
import time
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
