"""enable-mirroring / disable-mirroring on the real lab, through the command line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from rbdfail import ceph
from rbdfail.cli import main
from rbdfail.cluster import Cluster, Feature, MirrorMode, MirrorState
from rbdfail.mirroring import ADDED_FEATURES_KEY
from tests.conftest import RunningLab
from tests.helpers import eventually, lab_config

pytestmark = pytest.mark.lab

LAYERING = frozenset({Feature.LAYERING})


@pytest.fixture
def lab_config_every_type(lab: RunningLab, tmp_path: Path, image_name: str) -> Path:
    """The lab's config with types of every kind, for images prefixed with this test's name."""
    hourly = {"replication_enabled": "<is> True", "mirror_mode": "snapshot"}
    return lab_config(
        lab.lab.config_file,
        tmp_path,
        [
            {"match": f"{image_name}-j*", "type": "replicated-journal"},
            {"match": f"{image_name}-s*", "type": "replicated"},
            {"match": f"{image_name}-h*", "type": "hourly"},
        ],
        types={"hourly": hourly | {"snapshot_interval": "1h"}},
    )


@pytest.fixture
def primary(lab: RunningLab) -> Iterator[Cluster]:
    cluster = ceph.connect(lab.config.backend, 5)
    yield cluster
    cluster.close()


def rbdfail(lab_config_every_type: Path, *args: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(main, ["-c", str(lab_config_every_type), *args, "--json"])
    return result.exit_code, json.loads(result.stdout)


def test_enable_then_disable__features_schedules_and_peer_copies(
    lab: RunningLab, lab_config_every_type: Path, primary: Cluster, image_name: str
) -> None:
    journal, snapshot, hourly, plain = (f"{image_name}-{k}" for k in ("j", "s", "h", "plain"))
    for name in (journal, snapshot, hourly, plain):
        primary.create_image(name, 4 << 20, LAYERING)

    code, report = rbdfail(lab_config_every_type, "enable-mirroring", journal, snapshot, hourly)

    assert code == 0, report
    assert {v["name"]: v["action"] for v in report["volumes"]} == {
        journal: "enabled",
        snapshot: "enabled",
        hourly: "enabled",
    }
    assert primary.image_features(journal) == LAYERING | {
        Feature.EXCLUSIVE_LOCK,
        Feature.JOURNALING,
    }
    assert primary.get_metadata(journal, ADDED_FEATURES_KEY) == "exclusive-lock,journaling"
    assert primary.snapshot_schedules(hourly) == ["1h"]
    assert primary.mirror_info(plain).state == MirrorState.DISABLED

    secondary = ceph.connect(lab.config.replication_devices[0], 5)
    try:
        eventually(lambda: {journal, snapshot, hourly} <= set(secondary.list_images()), 60)
    finally:
        secondary.close()

    code, report = rbdfail(lab_config_every_type, "enable-mirroring", journal, snapshot, hourly)
    assert code == 0
    assert {v["action"] for v in report["volumes"]} == {"already-enabled"}

    code, report = rbdfail(lab_config_every_type, "disable-mirroring", journal, snapshot, hourly)
    assert code == 0, report
    for name in (journal, snapshot, hourly):
        assert primary.image_features(name) == LAYERING, name
        assert primary.mirror_info(name).state == MirrorState.DISABLED
    assert primary.get_metadata(journal, ADDED_FEATURES_KEY) is None
    primary.enable_mirroring(hourly, MirrorMode.SNAPSHOT)  # schedules are only listed then
    assert primary.snapshot_schedules(hourly) == []


def test_enable__missing_image_and_mismatch_exit_3_and_the_rest_is_done(
    lab_config_every_type: Path, primary: Cluster, image_name: str
) -> None:
    good, plain = f"{image_name}-s", f"{image_name}-plain"
    primary.create_image(good, 4 << 20)
    primary.create_image(plain, 4 << 20)
    code, report = rbdfail(
        lab_config_every_type, "enable-mirroring", good, plain, f"{image_name}-s-ghost"
    )
    assert code == 3
    assert report["result"] == "partial"
    assert {v["name"]: (v["action"], v["detail"].split(":")[0]) for v in report["volumes"]} == {
        good: ("enabled", "mirrored in snapshot mode"),
        plain: ("mismatch", "its type 'standard' is not replicated"),
        f"{image_name}-s-ghost": ("failed", "image not found"),
    }
    assert primary.mirror_info(good).primary is True
