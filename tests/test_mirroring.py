"""enable-mirroring / disable-mirroring on the fake two-site Ceph."""

from __future__ import annotations

from pathlib import Path

import pytest

from rbdfail import mirroring
from rbdfail.cluster import Feature, MirrorMode
from rbdfail.config import Config, load_config
from rbdfail.errors import PermissionDenied
from rbdfail.mirroring import ADDED_FEATURES_KEY, plan_disable, plan_enable
from rbdfail.volumes import list_volumes
from tests.conftest import fake_site
from tests.fakeceph import FakeCeph, FakeCluster
from tests.helpers import eventually

CONFIG = """\
backend: {pool: volumes}
replication_device: ["backend_id:secondary"]
volume_types:
  journaled: {replication_enabled: "<is> True", mirror_mode: journal}
  snap: {replication_enabled: "<is> True", mirror_mode: snapshot}
  hourly: {replication_enabled: "<is> True", mirror_mode: snapshot, snapshot_interval: 1h}
  plain: {}
volumes:
  - {match: "j-*", type: journaled}
  - {match: "s-*", type: snap}
  - {match: "h-*", type: hourly}
  - {match: "*", type: plain}
"""
LAYERING = frozenset({Feature.LAYERING})


@pytest.fixture
def config(tmp_path: Path) -> Config:
    (tmp_path / "rbdfail.yaml").write_text(CONFIG)
    return load_config(tmp_path / "rbdfail.yaml")


@pytest.fixture
def primary(fake_ceph: FakeCeph) -> FakeCluster:
    return fake_ceph.connect(fake_site("default"), 1)


def enable(primary: FakeCluster, config: Config, *names: str, concurrency: int = 8):
    steps = plan_enable(list_volumes(primary, config), names)
    return mirroring.enable(primary, steps, concurrency)


def disable(primary: FakeCluster, config: Config, *names: str):
    steps = plan_disable(list_volumes(primary, config), names)
    return mirroring.disable(primary, steps, 8)


def outcomes(report: mirroring.Report) -> dict[str, str]:
    return {v.name: v.outcome.value for v in report.volumes}


# ---- the plan ---------------------------------------------------------------------------------
def test_plan_enable__classifies_every_case(primary: FakeCluster, config: Config) -> None:
    for name in ("j-new", "s-done", "s-other-mode", "plain-mirrored", "plain-alone"):
        primary.create_image(name, 1 << 20)
    primary.enable_mirroring("s-done", MirrorMode.SNAPSHOT)
    primary.enable_mirroring("s-other-mode", MirrorMode.JOURNAL)
    primary.enable_mirroring("plain-mirrored", MirrorMode.SNAPSHOT)

    steps = {s.name: s for s in plan_enable(list_volumes(primary, config), ())}

    assert {n: (s.outcome.value, s.todo) for n, s in steps.items()} == {
        "j-new": ("enabled", True),
        "s-done": ("already-enabled", False),
        "s-other-mode": ("mismatch", False),
        "plain-mirrored": ("mismatch", False),
    }
    assert "its type asks for snapshot" in steps["s-other-mode"].reason
    assert "not replicated" in steps["plain-mirrored"].reason


def test_plan_enable__named_images_missing_or_not_replicated(
    primary: FakeCluster, config: Config
) -> None:
    primary.create_image("plain-1", 1 << 20)
    steps = plan_enable(list_volumes(primary, config), ("ghost", "plain-1"))
    assert [(s.name, s.outcome.value, s.reason.split(":")[0]) for s in steps] == [
        ("ghost", "failed", "image not found"),
        ("plain-1", "mismatch", "its type 'plain' is not replicated"),
    ]


def test_enable__dry_run_report_changes_nothing(primary: FakeCluster, config: Config) -> None:
    primary.create_image("j-1", 1 << 20)
    steps = plan_enable(list_volumes(primary, config), ())
    report = mirroring.dry_run_report("enable-mirroring", "default", steps)
    assert report.dry_run and outcomes(report) == {"j-1": "enabled"}
    assert primary.mirror_info("j-1").state == "disabled"


# ---- enabling and disabling ------------------------------------------------------------------
def test_enable_journal__adds_and_records_only_missing_features__disable_restores_exactly(
    primary: FakeCluster, config: Config
) -> None:
    primary.create_image("j-bare", 1 << 20, LAYERING)
    primary.create_image("j-locked", 1 << 20, LAYERING | {Feature.EXCLUSIVE_LOCK})

    report = enable(primary, config)

    assert outcomes(report) == {"j-bare": "enabled", "j-locked": "enabled"}
    by_name = {v.name: v for v in report.volumes}
    assert by_name["j-bare"].features_changed == (Feature.EXCLUSIVE_LOCK, Feature.JOURNALING)
    assert by_name["j-locked"].features_changed == (Feature.JOURNALING,)
    assert primary.get_metadata("j-bare", ADDED_FEATURES_KEY) == "exclusive-lock,journaling"
    assert primary.get_metadata("j-locked", ADDED_FEATURES_KEY) == "journaling"
    assert primary.mirror_info("j-bare").mode == MirrorMode.JOURNAL

    report = disable(primary, config, "j-bare", "j-locked")

    assert outcomes(report) == {"j-bare": "disabled", "j-locked": "disabled"}
    assert primary.image_features("j-bare") == LAYERING
    assert primary.image_features("j-locked") == LAYERING | {Feature.EXCLUSIVE_LOCK}
    assert primary.get_metadata("j-bare", ADDED_FEATURES_KEY) is None


def test_enable_snapshot__with_interval_adds_schedule__disable_removes_it(
    primary: FakeCluster, config: Config
) -> None:
    primary.create_image("h-1", 1 << 20, LAYERING)
    primary.create_image("s-1", 1 << 20, LAYERING)
    report = enable(primary, config)
    assert outcomes(report) == {"h-1": "enabled", "s-1": "enabled"}
    assert primary.snapshot_schedules("h-1") == ["1h"]
    assert primary.snapshot_schedules("s-1") == []
    assert primary.image_features("h-1") == LAYERING  # snapshot mode needs no feature

    disable(primary, config, "h-1")
    assert primary.mirror_info("h-1").state == "disabled"
    primary.enable_mirroring("h-1", MirrorMode.SNAPSHOT)
    assert primary.snapshot_schedules("h-1") == []


def test_enable__rerun_is_idempotent_and_calls_no_enable(
    primary: FakeCluster, config: Config, fake_ceph: FakeCeph
) -> None:
    for name in ("j-1", "s-1", "h-1"):
        primary.create_image(name, 1 << 20)
    enable(primary, config)
    fake_ceph.sites["default"].calls.clear()

    report = enable(primary, config)

    assert set(outcomes(report).values()) == {"already-enabled"}
    assert report.result == "complete"
    operations = {op for op, _ in fake_ceph.sites["default"].calls}
    assert "enable_mirroring" not in operations and "update_features" not in operations
    assert primary.snapshot_schedules("h-1") == ["1h"]  # ensured, still one


def test_enable__one_refused_volume_fails_named__the_others_go_on(
    primary: FakeCluster, config: Config, fake_ceph: FakeCeph
) -> None:
    for name in ("s-1", "s-2", "s-3"):
        primary.create_image(name, 1 << 20)
    fake_ceph.faults[("default", "enable_mirroring", "s-2")] = PermissionDenied(
        "[errno 13] RBD permission error", site="default", image="s-2"
    )

    report = enable(primary, config)

    assert outcomes(report) == {"s-1": "enabled", "s-2": "failed", "s-3": "enabled"}
    failed = next(v for v in report.volumes if v.name == "s-2")
    assert failed.detail == "[errno 13] RBD permission error"
    assert report.result == "partial"
    assert report.to_json()["counts"] == {"enabled": 2, "failed": 1}


def test_enable__image_removed_between_plan_and_enable_fails_alone(
    primary: FakeCluster, config: Config
) -> None:
    primary.create_image("s-1", 1 << 20)
    primary.create_image("s-gone", 1 << 20)
    steps = plan_enable(list_volumes(primary, config), ())
    primary.remove_image("s-gone")
    report = mirroring.enable(primary, steps, 4)
    assert outcomes(report) == {"s-1": "enabled", "s-gone": "failed"}
    assert next(v for v in report.volumes if v.name == "s-gone").detail == "image not found"


def test_enable__runs_concurrently_within_the_bound(
    primary: FakeCluster, config: Config, fake_ceph: FakeCeph
) -> None:
    for index in range(24):
        primary.create_image(f"s-{index:02}", 1 << 20)
    fake_ceph.latency["enable_mirroring"] = 0.05
    report = enable(primary, config, concurrency=6)
    assert report.counts == {"enabled": 24}
    assert 1 < fake_ceph.max_in_flight["enable_mirroring"] <= 6
    assert report.duration_s < 24 * 0.05  # not one after another


def test_disable__non_primary_copy_is_refused_and_unmirrored_is_already_done(
    primary: FakeCluster, config: Config, fake_ceph: FakeCeph
) -> None:
    primary.create_image("s-1", 1 << 20)
    primary.create_image("plain-1", 1 << 20)
    enable(primary, config)
    secondary = fake_ceph.connect(fake_site("secondary"), 1)
    eventually(lambda: "s-1" in secondary.list_images(), 2)
    steps = plan_disable(list_volumes(secondary, config), ("s-1",))
    assert [(s.outcome.value, s.reason.split(":")[0]) for s in steps] == [
        ("failed", "not primary on this site")
    ]
    report = disable(primary, config, "plain-1")
    assert outcomes(report) == {"plain-1": "already-disabled"}


def test_enable__a_volume_with_an_unknown_type_fails_alone(
    primary: FakeCluster, config: Config
) -> None:
    primary.create_image("s-1", 1 << 20)
    primary.create_image("s-odd", 1 << 20)
    primary.set_metadata("s-odd", "rbdfail.volume_type", "snapp")
    report = enable(primary, config, "s-1", "s-odd")
    assert outcomes(report) == {"s-1": "enabled", "s-odd": "failed"}
    detail = next(v.detail for v in report.volumes if v.name == "s-odd")
    assert detail == "rbdfail.volume_type names unknown type 'snapp' (did you mean 'snap'?)"
