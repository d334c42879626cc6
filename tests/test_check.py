"""rbdfail check on the fake: each item's verdict, and ready or not."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from rbdfail.check import ready, run_checks
from rbdfail.cli import main
from rbdfail.cluster import MirrorMode
from rbdfail.config import Config
from rbdfail.state import State
from rbdfail.status import gather
from tests.conftest import RunningLab
from tests.fakeceph import FakeCeph, FakeCluster
from tests.helpers import eventually


@pytest.fixture
def sites(primary: FakeCluster, secondary: FakeCluster) -> tuple[FakeCluster, FakeCluster]:
    for name in ("s-1", "s-2"):
        primary.create_image(name, 1 << 20)
        primary.enable_mirroring(name, MirrorMode.SNAPSHOT)
    primary.create_image("plain-1", 1 << 20)
    eventually(lambda: {"s-1", "s-2"} <= set(secondary.list_images()), 2)
    return primary, secondary


def verdicts(config: Config, world: FakeCeph, max_lag: float | None = None) -> dict[str, str]:
    items = run_checks(gather(config, State(), world.connect), "secondary", max_lag)
    return {item.name: item.verdict for item in items}


def test_check__healthy_pool_is_ready_with_every_item_passing(
    config: Config, fake_ceph: FakeCeph, sites
) -> None:
    items = run_checks(gather(config, State(), fake_ceph.connect), "secondary", 60)
    assert {i.verdict for i in items} == {"pass"}, [i for i in items if i.verdict != "pass"]
    assert ready(items)
    assert {i.name for i in items} >= {
        "sites reachable",
        "rbd-mirror on secondary",
        "replicated volumes mirrored",
        "no split-brain",
        "no image in error",
        "copies on secondary replaying",
        "replication lag",
    }


def test_check__target_unreachable_is_not_ready(config: Config, fake_ceph: FakeCeph, sites):
    fake_ceph.freeze("secondary")
    items = run_checks(gather(config, State(), fake_ceph.connect), "secondary", None)
    assert [(i.name, i.verdict) for i in items] == [("sites reachable", "fail")]
    assert "nowhere to fail over to" in items[0].reason
    assert not ready(items)


def test_check__source_unreachable_warns_that_only_forced_is_possible(
    config: Config, fake_ceph: FakeCeph, sites
) -> None:
    fake_ceph.freeze("default")
    items = run_checks(gather(config, State(), fake_ceph.connect), "secondary", None)
    reachable = next(i for i in items if i.name == "sites reachable")
    assert reachable.verdict == "warn" and "only a forced failover" in reachable.reason
    assert ready(items)


def test_check__split_brain_and_unmirrored_volumes_fail(
    config: Config, fake_ceph: FakeCeph, sites
) -> None:
    primary, secondary = sites
    secondary.promote("s-1", force=True)
    primary.create_image("s-unmirrored", 1 << 20)
    found = verdicts(config, fake_ceph)
    assert (found["no split-brain"], found["replicated volumes mirrored"]) == ("fail", "fail")


def test_check__lag_over_the_limit_fails(config: Config, fake_ceph: FakeCeph, sites) -> None:
    primary, _ = sites
    fake_ceph.replication_delay = 60
    fake_ceph.advance(2.1)  # the snapshot timestamps count whole seconds
    primary.write("s-1", 0, b"new")
    assert verdicts(config, fake_ceph, max_lag=1)["replication lag"] == "fail"
    assert verdicts(config, fake_ceph, max_lag=30)["replication lag"] == "pass"


@pytest.mark.lab
def test_check__on_the_lab_a_frozen_target_is_not_ready_exit_1(
    lab: RunningLab, tmp_path: Path
) -> None:
    config = yaml.safe_load(lab.lab.config_file.read_text())
    config["replication_connect_timeout"] = 2
    short = tmp_path / "rbdfail.yaml"
    short.write_text(yaml.safe_dump(config))
    lab.lab.freeze("secondary")
    try:
        started = time.monotonic()
        result = CliRunner().invoke(main, ["-c", str(short), "check", "--json"])
        elapsed = time.monotonic() - started
    finally:
        lab.lab.thaw("secondary")
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert (document["target"], document["ready"]) == ("secondary", False)
    assert document["items"][0]["verdict"] == "fail"
    assert elapsed < 2 + 3


def test_check__unknown_target_is_a_usage_error(config_file: Path) -> None:
    result = CliRunner().invoke(main, ["-c", str(config_file), "check", "--to", "secondry"])
    assert result.exit_code == 2
    assert "did you mean 'secondary'?" in result.stderr


def test_check__target_rbd_mirror_down_is_not_ready(config: Config, fake_ceph: FakeCeph, sites):
    fake_ceph.sites["secondary"].mirror_daemon_up = False
    assert verdicts(config, fake_ceph)["rbd-mirror on secondary"] == "fail"
