"""rbdfail connection-info: where to attach a volume now, never with key material."""

from __future__ import annotations

from pathlib import Path

import pytest

from rbdfail.cluster import MirrorMode
from rbdfail.config import Config, load_config
from rbdfail.connection import connection_info
from rbdfail.errors import ImageBusy, RbdfailError
from tests.conftest import fake_site
from tests.fakeceph import FakeCeph, FakeCluster
from tests.helpers import eventually

CONFIG = """\
backend: {pool: volumes, user: cinder, conf: /fake/default.conf}
replication_device: [{backend_id: secondary, conf: /fake/secondary.conf, user: dr}]
replication_connect_timeout: 0.2
"""


@pytest.fixture
def config(tmp_path: Path) -> Config:
    (tmp_path / "rbdfail.yaml").write_text(CONFIG)
    return load_config(tmp_path / "rbdfail.yaml")


@pytest.fixture
def mirrored(fake_ceph: FakeCeph) -> tuple[FakeCluster, FakeCluster]:
    primary = fake_ceph.connect(fake_site("default"), 1)
    secondary = fake_ceph.connect(fake_site("secondary"), 1)
    primary.create_image("db-1", 1 << 20)
    primary.enable_mirroring("db-1", MirrorMode.SNAPSHOT)
    eventually(lambda: "db-1" in secondary.list_images(), 2)
    return primary, secondary


def test_connection_info__where_it_is_primary_as_cinder_hands_it_out(
    config: Config, fake_ceph: FakeCeph, mirrored
) -> None:
    info = connection_info(config, fake_ceph.connect, "db-1")
    assert info["site"] == "default"
    assert info["data"] | {"monitors": None} == {
        "name": "volumes/db-1",
        "pool": "volumes",
        "volume": "db-1",
        "cluster_name": "ceph",
        "hosts": ["127.0.0.1"],
        "ports": ["6789"],
        "monitors": None,
        "auth_enabled": True,
        "auth_username": "cinder",
        "secret_type": "ceph",
    }


def test_connection_info__after_a_switch_points_at_the_secondary_and_its_user(
    config: Config, fake_ceph: FakeCeph, mirrored
) -> None:
    primary, secondary = mirrored
    primary.demote("db-1")
    eventually(lambda: secondary.promote("db-1") is None, 2, (ImageBusy,))
    info = connection_info(config, fake_ceph.connect, "db-1")
    assert (info["site"], info["data"]["auth_username"]) == ("secondary", "dr")


def test_connection_info__split_brain_is_refused(config: Config, fake_ceph: FakeCeph, mirrored):
    mirrored[1].promote("db-1", force=True)
    with pytest.raises(RbdfailError, match="primary on default and secondary"):
        connection_info(config, fake_ceph.connect, "db-1")


def test_connection_info__primary_site_frozen_is_refused_naming_it(
    config: Config, fake_ceph: FakeCeph, mirrored
) -> None:
    fake_ceph.freeze("default")
    with pytest.raises(RbdfailError, match=r"primary nowhere .*default unreachable"):
        connection_info(config, fake_ceph.connect, "db-1")


def test_connection_info__unknown_volume(config: Config, fake_ceph: FakeCeph) -> None:
    with pytest.raises(RbdfailError, match="'ghost' exists on no site"):
        connection_info(config, fake_ceph.connect, "ghost")
