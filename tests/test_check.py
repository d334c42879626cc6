"""rbdfail check on the fake: each item's verdict, and ready or not."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from rbdfail.check import CheckItem, ready, run_checks
from rbdfail.cli import main
from rbdfail.cluster import ImageUser, MirrorMode
from rbdfail.config import Config, load_config
from rbdfail.state import State
from rbdfail.status import gather
from tests.conftest import TWO_SITES, write_config
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


def verdicts(
    config: Config, world: FakeCeph, max_rpo: float | None = None, require_idle: bool = False
) -> dict[str, str]:
    return {item.name: item.verdict for item in items_of(config, world, max_rpo, require_idle)}


def items_of(
    config: Config, world: FakeCeph, max_rpo: float | None = None, require_idle: bool = False
) -> list[CheckItem]:
    report = gather(config, State(), world.connect, now=world.now(), with_users=True)
    return run_checks(report, "secondary", max_rpo, require_idle)


def reason(items: list[CheckItem], name: str) -> str:
    return next(i.reason for i in items if i.name == name)


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
        "copies on secondary synced once",
        "RPO",
        "snapshot schedules",
        "sources idle",
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


def test_check__rpo_grows_while_no_snapshot_comes__over_the_limit_fails(
    config: Config, fake_ceph: FakeCeph, sites
) -> None:
    """A stopped schedule used to read as 0 s lag for ever: the RPO counts from the time of
    the newest snapshot the copy holds, so it grows."""
    assert verdicts(config, fake_ceph, max_rpo=30)["RPO"] == "pass"
    fake_ceph.advance(120)  # nothing written, nothing snapshotted
    items = items_of(config, fake_ceph, max_rpo=30)
    assert [i.verdict for i in items if i.name == "RPO"] == ["fail"]
    assert "s-1 ≤12" in reason(items, "RPO") and "s-2 ≤12" in reason(items, "RPO")
    assert verdicts(config, fake_ceph, max_rpo=300)["RPO"] == "pass"
    assert verdicts(config, fake_ceph)["RPO"] == "pass"  # no limit: no verdict


def test_check__a_copy_in_its_first_sync_is_named_and_its_rpo_unknown_fails(
    config: Config, fake_ceph: FakeCeph, sites
) -> None:
    fake_ceph.sites["secondary"].images["s-2"].first_sync_done = False
    items = items_of(config, fake_ceph, max_rpo=3600)
    found = {i.name: i for i in items}
    assert found["copies on secondary synced once"].verdict == "fail"
    assert "s-2" in found["copies on secondary synced once"].reason
    assert found["RPO"].verdict == "fail"
    assert "s-2 unknown (first sync not finished" in found["RPO"].reason
    assert "s-1" not in found["RPO"].reason


def test_check__journal_copy_behind_has_only_a_lower_bound__fails(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    primary.create_image("j-1", 1 << 20)
    primary.enable_mirroring("j-1", MirrorMode.JOURNAL)
    eventually(lambda: "j-1" in secondary.list_images(), 2)
    assert verdicts(config, fake_ceph, max_rpo=5)["RPO"] == "pass"  # caught up just now
    fake_ceph.replication_delay = 3600  # replay held back, as rbd_mirroring_replay_delay does
    primary.write("j-1", 0, b"new")
    items = items_of(config, fake_ceph, max_rpo=5)
    assert "j-1 ≥0s (1 entries behind at rbd-mirror's last report" in reason(items, "RPO")


def test_check__a_journal_copy_demoted_on_the_target_not_replayed_since__warned(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    """After a failback whose copy on the target has replayed nothing of default since the
    target demoted it, a failover would wait for it, then roll it back (issue 28)."""
    primary.create_image("j-1", 1 << 20)
    primary.enable_mirroring("j-1", MirrorMode.JOURNAL)
    eventually(lambda: "j-1" in secondary.list_images(), 2)
    name = "copies on secondary replayed the source since their demotion"
    assert verdicts(config, fake_ceph)[name] == "pass"
    primary.demote("j-1")
    fake_ceph.advance(1)
    secondary.promote("j-1")
    fake_ceph.advance(1)
    fake_ceph.sites["secondary"].replay_paused = True
    secondary.demote("j-1")
    fake_ceph.advance(1)
    primary.promote("j-1")  # back home; the secondary's copy replays nothing of it

    items = items_of(config, fake_ceph)

    assert reason(items, name) == (
        "1 replayed nothing of the source since their own demotion (a failover waits for "
        "them, then rolls them back): j-1"
    )
    assert next(i.verdict for i in items if i.name == name) == "warn"


def test_check__schedule_missing_on_the_primary_or_silent_for_3_intervals_fails(
    tmp_path: Path, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    config = load_config(
        write_config(
            tmp_path,
            TWO_SITES.replace(
                "snap: {replication_enabled: true, mirror_mode: snapshot}",
                "snap: {replication_enabled: true, mirror_mode: snapshot, snapshot_interval: 1m}",
            ),
        )
    )
    primary.create_image("s-1", 1 << 20)
    primary.enable_mirroring("s-1", MirrorMode.SNAPSHOT)
    eventually(lambda: "s-1" in secondary.list_images(), 2)
    items = items_of(config, fake_ceph)
    assert [i.verdict for i in items if i.name == "snapshot schedules"] == ["fail"]
    assert "s-1 (no 1m snapshot schedule on the primary site)" in reason(
        items, "snapshot schedules"
    )
    primary.add_snapshot_schedule("s-1", "1m")
    assert verdicts(config, fake_ceph)["snapshot schedules"] == "pass"
    fake_ceph.advance(181)  # the fake's scheduler never fires: 3 intervals without a snapshot
    items = items_of(config, fake_ceph)
    assert "has not fired in 3 of its intervals" in reason(items, "snapshot schedules")
    report = gather(config, State(), fake_ceph.connect, now=fake_ceph.now())
    assert report.volumes[0].schedule_ok is False
    assert any("has not fired" in p for p in report.problems)


def test_check__a_client_with_a_source_open_warns__fails_with_require_idle(
    config: Config, fake_ceph: FakeCeph, sites
) -> None:
    fake_ceph.sites["default"].images["s-1"].users = [
        ImageUser("client.4250", "10.0.0.9:0/3723439154", holds_lock=True)
    ]
    items = items_of(config, fake_ceph)
    assert [i.verdict for i in items if i.name == "sources idle"] == ["warn"]
    assert reason(items, "sources idle").endswith("s-1 (client.4250)")
    assert ready(items)
    assert verdicts(config, fake_ceph, require_idle=True)["sources idle"] == "fail"


def test_check__unknown_target_is_a_usage_error(config_file: Path) -> None:
    result = CliRunner().invoke(main, ["-c", str(config_file), "check", "--to", "secondry"])
    assert result.exit_code == 2
    assert "did you mean 'secondary'?" in result.stderr


def test_check__target_rbd_mirror_down_is_not_ready(config: Config, fake_ceph: FakeCeph, sites):
    fake_ceph.sites["secondary"].mirror_daemon_up = False
    assert verdicts(config, fake_ceph)["rbd-mirror on secondary"] == "fail"
