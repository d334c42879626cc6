"""Volume inventory on the fake: types from rules and metadata, mirroring as the site has it."""

from __future__ import annotations

from pathlib import Path

import pytest

from rbdfail.cluster import MirrorMode
from rbdfail.config import Config, load_config
from rbdfail.volumes import VOLUME_TYPE_KEY, list_volumes
from tests.conftest import fake_site
from tests.fakeceph import FakeCeph, FakeCluster

CONFIG = """\
backend: {pool: volumes}
replication_device: ["backend_id:secondary"]
volume_types:
  gold: {replication_enabled: "<is> True", mirror_mode: snapshot}
  silver: {replication_enabled: "<is> True"}
  bronze: {}
volumes:
  - {match: "db-*", type: gold}
  - {match: "vm-*", type: bronze}
"""


@pytest.fixture
def config(tmp_path: Path) -> Config:
    path = tmp_path / "rbdfail.yaml"
    path.write_text(CONFIG)
    return load_config(path)


@pytest.fixture
def primary(fake_ceph: FakeCeph) -> FakeCluster:
    return fake_ceph.connect(fake_site("default"), 1)


def test_list_volumes__types_from_rules_metadata_override_and_untyped(
    config: Config, primary: FakeCluster
) -> None:
    for name in ("db-a", "vm-b", "vm-c", "other"):
        primary.create_image(name, 1 << 20)
    primary.set_metadata("vm-c", VOLUME_TYPE_KEY, "silver")
    primary.enable_mirroring("db-a", MirrorMode.SNAPSHOT)

    volumes = {v.name: v for v in list_volumes(primary, config)}

    assert [(v.volume_type, v.replicated, v.mirror_mode) for v in volumes.values()] == [
        ("gold", True, "snapshot"),
        ("(untyped)", False, None),
        ("bronze", False, None),
        ("silver", True, "journal"),
    ]
    assert volumes["db-a"].mirroring is not None and volumes["db-a"].mirroring.primary
    assert volumes["vm-c"].mirroring is None


def test_list_volumes__reads_the_pool_in_passes_with_no_call_per_image(
    config: Config, primary: FakeCluster, fake_ceph: FakeCeph
) -> None:
    for index in range(20):
        primary.create_image(f"db-{index}", 1 << 20)
    primary.set_metadata("db-7", VOLUME_TYPE_KEY, "silver")
    fake_ceph.sites["default"].calls.clear()
    volumes = list_volumes(primary, config)
    assert sorted(op for op, _ in fake_ceph.sites["default"].calls) == [
        "list",
        "metadata_values",
        "mirror_infos",
    ]
    assert next(v for v in volumes if v.name == "db-7").volume_type == "silver"


def test_list_volumes__an_unknown_type_in_metadata_is_that_volumes_problem_only(
    config: Config, primary: FakeCluster
) -> None:
    primary.create_image("db-x", 1 << 20)
    primary.create_image("db-y", 1 << 20)
    primary.set_metadata("db-x", VOLUME_TYPE_KEY, "golld")
    volumes = {v.name: v for v in list_volumes(primary, config)}
    assert volumes["db-y"].volume_type == "gold"
    assert (volumes["db-x"].volume_type, volumes["db-x"].replicated) == ("golld?", False)
    assert volumes["db-x"].type_error == (
        "rbdfail.volume_type names unknown type 'golld' (did you mean 'gold'?)"
    )
