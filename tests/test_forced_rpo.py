"""The point in time a force-promoted copy serves (its RPO), as the failover report says it:
`forced_rpo` on what the copy's site says, and the engine reading it before each forced
promote on the fake."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

from rbdfail.cluster import ImageStatus, MirrorSnapshot, MirrorSnapshotState, ReplayState
from rbdfail.config import Config
from rbdfail.errors import OperationTimedOut
from rbdfail.rpo import Bound, forced_rpo, says_enough
from rbdfail.state import journal_lines
from rbdfail.switch.model import Action
from tests.fakeceph import FakeCeph, FakeCluster
from tests.helpers import by_name, calls, primary_on, replicated, run, volumes

NOW = 1_800_000_000.0


def snap(snap_id: int, complete: bool, at: float) -> MirrorSnapshot:
    return MirrorSnapshot(
        snap_id,
        MirrorSnapshotState.NON_PRIMARY,
        complete,
        snap_id + 100,
        1 << 20,
        datetime.fromtimestamp(at, UTC),
    )


def replaying(**tail: float) -> ImageStatus:
    return ImageStatus(
        ReplayState.REPLAYING,
        f"replaying, {json.dumps(tail)}",
        datetime.fromtimestamp(NOW - 10, UTC),
        True,
    )


UNREACHABLE = ImageStatus(
    ReplayState.ERROR, "remote cluster unreachable", datetime.fromtimestamp(NOW, UTC), True
)


def test_forced_rpo__snapshot_mode__the_primarys_time_of_the_snapshot_the_copy_holds() -> None:
    status = replaying(local_snapshot_timestamp=NOW - 300, remote_snapshot_timestamp=NOW - 60)

    for listed in ([snap(1, True, NOW - 290), snap(2, False, NOW - 50)], None):
        rpo = forced_rpo(status, listed, NOW)

        assert (rpo.last_sync, rpo.seconds, rpo.bound) == (NOW - 300, 300, Bound.AT_MOST)
    assert says_enough(status) and says_enough(replaying(entries_behind_primary=0))
    assert not says_enough(UNREACHABLE) and not says_enough(None)


def test_forced_rpo__snapshot_mode_status_silent__the_newest_complete_snapshot_not_the_newest() -> (
    None
):
    """A copy's head may match the primary while its newest snapshot is still incomplete: a
    forced promote rolls it back to the newest complete one, so that is the point it serves."""
    rpo = forced_rpo(UNREACHABLE, [snap(1, True, NOW - 290), snap(2, False, NOW - 50)], NOW)

    assert (rpo.last_sync, rpo.bound) == (NOW - 290, Bound.ESTIMATE)
    assert "newest whole snapshot" in rpo.how


def test_forced_rpo__snapshot_mode_mid_first_sync__unknown_saying_why() -> None:
    rpo = forced_rpo(UNREACHABLE, [snap(1, False, NOW - 50)], NOW)

    assert rpo.last_sync is None and rpo.bound == Bound.UNKNOWN and rpo.first_sync


def test_forced_rpo__journal_mode__caught_up_at_the_last_report__at_most_since_then() -> None:
    rpo = forced_rpo(replaying(entries_behind_primary=0), [], NOW)

    assert (rpo.last_sync, rpo.seconds, rpo.bound) == (NOW - 10, 10, Bound.AT_MOST)


def test_forced_rpo__journal_mode_behind__at_least_and_no_time_claimed() -> None:
    rpo = forced_rpo(replaying(entries_behind_primary=42), [], NOW)

    assert (rpo.last_sync, rpo.seconds, rpo.bound) == (None, 10, Bound.AT_LEAST)
    assert "42 entries behind" in rpo.how


def test_forced_rpo__journal_mode_status_silent__unknown_saying_what_rbd_mirror_said() -> None:
    rpo = forced_rpo(UNREACHABLE, [], NOW)

    assert rpo.bound == Bound.UNKNOWN and "remote cluster unreachable" in rpo.how


# ---- the engine, on the fake ------------------------------------------------------------------
def test_forced_failover__each_forced_volume_says_the_point_its_copy_serves__read_before(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    names = [*volumes("s", 3), "j-1"]
    replicated(primary, secondary, names, data=True)
    held = {n: secondary.mirror_snapshots(n) for n in names}
    fake_ceph.freeze("default")
    started = time.time()

    report = run(config, fake_ceph)

    assert report.result == "complete" and report.forced
    for name in volumes("s", 3):
        rpo = by_name(report)[name].rpo
        assert rpo is not None and rpo.last_sync is not None, name
        newest = max((s for s in held[name] if s.complete), key=lambda s: s.id)
        assert newest.timestamp is not None
        assert rpo.last_sync == newest.timestamp.timestamp()
        assert rpo.seconds is not None and rpo.seconds <= time.time() - rpo.last_sync
    journal_copy = by_name(report)["j-1"].rpo
    assert journal_copy is not None and journal_copy.bound == Bound.UNKNOWN
    document = report.to_json()
    forced = [v for v in document["volumes"] if v["action"] == "force-promoted"]
    assert len(forced) == 4
    for volume in forced:
        assert volume["rpo"].keys() == {"seconds", "bound", "how", "last_sync", "first_sync_done"}
    # Read before each promote, in the journal; both reads of a copy, then its promote.
    points = [line for line in journal_lines(config.state_dir) if line["event"] == "copy-point"]
    assert sorted(line["volume"] for line in points) == sorted(names)
    assert all(0 <= line["read_s"] < time.time() - started for line in points)
    for name in names:
        made = [op for op, image in fake_ceph.sites["secondary"].calls if image == name]
        assert made.index("mirror_snapshots") < made.index("promote"), made


def test_clean_failover__no_volume_carries_an_rpo(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    replicated(primary, secondary, ["s-1", "j-1"])

    report = run(config, fake_ceph)

    assert {v.action for v in report.volumes} == {Action.DEMOTED_PROMOTED}
    assert all(v.rpo is None and "rpo" not in v.to_json() for v in report.volumes)


def test_forced_failover__a_copy_that_cannot_be_read__promoted_all_the_same_rpo_unknown(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    replicated(primary, secondary, ["s-1", "s-2"])
    # The source lost, the fake's statuses say nothing of the copies: their snapshots are read.
    fake_ceph.faults[("secondary", "mirror_snapshots", "s-1")] = OperationTimedOut(
        "timed out", site="secondary", image="s-1"
    )
    fake_ceph.freeze("default")

    report = run(config, fake_ceph)

    assert report.result == "complete"
    assert primary_on(secondary, "s-1") and primary_on(secondary, "s-2")
    rpo = by_name(report)["s-1"].rpo
    assert rpo is not None and rpo.bound == Bound.UNKNOWN and rpo.last_sync is None
    assert "not read before the promote" in rpo.how and "timed out" in rpo.how
    assert report.worst_rpo is not None and report.worst_rpo.name == "s-1"


def test_forced_with_the_source_alive__the_pools_statuses_read_once__no_copy_listed(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    """A copy's status that dates its point is enough: one listing of the pool's statuses
    for the whole run, no call per copy (what keeps the read cheap at scale)."""
    names = volumes("s", 4)
    replicated(primary, secondary, names)
    fake_ceph.replication_delay = 3600  # the demotions never arrive: each volume is forced

    report = run(config, fake_ceph, volume_timeout=0.5, force=True)

    assert {v.action for v in report.volumes} == {Action.FORCE_PROMOTED}
    for name in names:
        rpo = by_name(report)[name].rpo
        assert rpo is not None and rpo.bound == Bound.AT_MOST and rpo.last_sync is not None
        assert rpo.how == "the primary's snapshot the copy holds"
    made = [op for op, _ in fake_ceph.sites["secondary"].calls]
    assert "mirror_snapshots" not in made and "mirror_status" not in made
    points = [line for line in journal_lines(config.state_dir) if line["event"] == "copy-point"]
    assert len(points) == 4 and not any(line["listed"] for line in points)


def test_forced__the_pools_statuses_not_readable__each_copy_read_apart(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    names = volumes("s", 3)
    replicated(primary, secondary, names)
    fake_ceph.faults[("secondary", "mirror_statuses", "")] = OperationTimedOut(
        "timed out", site="secondary"
    )
    fake_ceph.replication_delay = 3600

    report = run(config, fake_ceph, volume_timeout=0.5, force=True)

    assert {v.action for v in report.volumes} == {Action.FORCE_PROMOTED}
    assert all((v.rpo is not None and v.rpo.bound == Bound.AT_MOST) for v in report.volumes)
    assert sorted(calls(fake_ceph, "secondary", "mirror_status")) == names
