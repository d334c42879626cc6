"""What a switch does beside moving volumes (issue 15): the volume's mirror-snapshot schedule
follows the primary, and clients still using a source volume are named (or, with
--require-idle, the volume is left where it is). On the fake two-site Ceph."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from rbdfail.cluster import ImageUser
from rbdfail.config import Config, load_config
from rbdfail.errors import PermissionDenied
from rbdfail.state import journal_lines
from rbdfail.switch.model import Action, Operation, Plan, SwitchRequest
from rbdfail.switch.usecase import run_switch
from tests.conftest import TWO_SITES, write_config
from tests.fakeceph import FakeCeph, FakeCluster
from tests.helpers import OPTIONS, by_name, replicated, switch

SCHEDULED = TWO_SITES.replace(
    "snap: {replication_enabled: true, mirror_mode: snapshot}",
    "snap: {replication_enabled: true, mirror_mode: snapshot, snapshot_interval: 1m}",
)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return load_config(write_config(tmp_path, SCHEDULED))


@pytest.fixture
def scheduled(primary: FakeCluster, secondary: FakeCluster) -> list[str]:
    """Three snapshot-mode volumes with their schedule on `default`, as enable-mirroring
    leaves them, and a journal-mode one (no schedule to follow)."""
    names = ["s-1", "s-2", "s-3"]
    replicated(primary, secondary, [*names, "j-1"])
    for name in names:
        primary.add_snapshot_schedule(name, "1m")
    return names


def test_failover__adds_the_schedule_on_the_target_once_primary__journaled__source_keeps_its(
    config: Config, fake_ceph: FakeCeph, scheduled: list[str], secondary: FakeCluster
) -> None:
    report = switch(config, fake_ceph, Operation.FAILOVER)
    assert report.result == "complete"
    on_target = secondary.pool_snapshot_schedules()
    assert on_target == {name: ["1m"] for name in scheduled}  # not the journal-mode one
    assert fake_ceph.sites["default"].schedules == {name: ["1m"] for name in scheduled}
    for name in scheduled:
        assert "snapshot schedule 1m added" in by_name(report)[name].detail
        steps = [
            line["step"]
            for line in journal_lines(config.state_dir)
            if line.get("run", report.run_id) == report.run_id
            and line.get("volume") == name
            and line.get("event") == "step"
        ]
        # After the promote, never before: a failure there must not cost the switch.
        assert steps[-1] == "add-schedule" and "promote" in steps


def test_failback__schedules_already_on_both_sites__nothing_added(
    config: Config, fake_ceph: FakeCeph, scheduled: list[str]
) -> None:
    switch(config, fake_ceph, Operation.FAILOVER)
    fake_ceph.sites["default"].calls.clear()
    back = switch(config, fake_ceph, Operation.FAILBACK)
    assert back.result == "complete"
    assert all(v.schedule is None for v in back.plan.volumes)
    assert [op for op, _ in fake_ceph.sites["default"].calls].count("add_snapshot_schedule") == 0


def test_rerun__a_volume_already_primary_on_the_target_gets_its_missing_schedule(
    config: Config, fake_ceph: FakeCeph, scheduled: list[str], secondary: FakeCluster
) -> None:
    """A failover run before schedules followed the primary left the new primaries without."""
    switch(config, fake_ceph, Operation.FAILOVER)
    fake_ceph.sites["secondary"].schedules.clear()
    again = switch(config, fake_ceph, Operation.FAILOVER)
    assert {v.name: v.plan for v in again.plan.volumes if v.schedule} == {
        name: Plan.NOTHING for name in scheduled
    }
    assert {v.name: v.action for v in again.volumes if v.name in scheduled} == {
        name: Action.ALREADY_PRIMARY for name in scheduled
    }
    assert set(secondary.pool_snapshot_schedules()) == set(scheduled)


def test_schedule_refused_on_the_target__volume_switched_all_the_same__said_in_its_detail(
    config: Config, fake_ceph: FakeCeph, scheduled: list[str]
) -> None:
    fake_ceph.faults[("secondary", "add_snapshot_schedule", "s-2")] = PermissionDenied(
        "mgr caps", site="secondary"
    )
    report = switch(config, fake_ceph, Operation.FAILOVER)
    s2 = by_name(report)["s-2"]
    assert s2.action == Action.DEMOTED_PROMOTED
    assert "snapshot schedule could not be added on secondary" in s2.detail
    assert report.result == "complete"


def test_users__named_in_the_plan_and_warned__moved_all_the_same(
    config: Config, fake_ceph: FakeCeph, scheduled: list[str]
) -> None:
    fake_ceph.sites["default"].images["s-1"].users = [
        ImageUser("client.4250", "10.0.0.9:0/1", holds_lock=True)
    ]
    request = SwitchRequest(Operation.FAILOVER, OPTIONS, "secondary", dry_run=True)
    plan = run_switch(config, request, connect=fake_ceph.connect).plan
    s1 = next(v for v in plan.volumes if v.name == "s-1")
    assert s1.users == ("client.4250 (holds its lock)",) and s1.plan == Plan.DEMOTE_PROMOTE
    assert any("1 volumes are still open on default: s-1" in w for w in plan.warnings)
    assert switch(config, fake_ceph, Operation.FAILOVER).result == "complete"


def test_users_with_require_idle__that_volume_left_where_it_is__the_rest_moved(
    config: Config, fake_ceph: FakeCeph, scheduled: list[str], primary: FakeCluster
) -> None:
    fake_ceph.sites["default"].images["s-1"].users = [ImageUser("client.9", "a", False)]
    request = SwitchRequest(Operation.FAILOVER, replace(OPTIONS), "secondary", require_idle=True)
    report = run_switch(config, request, connect=fake_ceph.connect).report
    assert report is not None
    s1 = by_name(report)["s-1"]
    assert s1.action == Action.FAILED and "still open on default by client.9" in (s1.error or "")
    assert primary.mirror_info("s-1").primary  # untouched
    assert by_name(report)["s-2"].action == Action.DEMOTED_PROMOTED


def test_users__not_read_for_a_run_nobody_reads_the_plan_of(
    config: Config, fake_ceph: FakeCeph, scheduled: list[str]
) -> None:
    """A call per volume (0.8-1.9 s for 200 on the lab) on the way to the first demote: a
    `--yes` run without --require-idle does without, and says so."""
    fake_ceph.sites["default"].images["s-1"].users = [ImageUser("client.9", "a", False)]
    request = SwitchRequest(Operation.FAILOVER, OPTIONS, "secondary", read_users=False)
    result = run_switch(config, request, connect=fake_ceph.connect)
    assert result.plan.users_read is False and result.plan.warnings == ()
    assert ("image_users", "s-1") not in fake_ceph.sites["default"].calls
    assert result.report is not None and by_name(result.report)["s-1"].action == "demoted+promoted"
