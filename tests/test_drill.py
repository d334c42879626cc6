"""`rbdfail drill` on the fake two-site Ceph: verdicts, the JSON contract and exit codes, the
sample, --exec, the switch always winning, and nothing written anywhere."""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from rbdfail.cli import main
from rbdfail.cluster import MirrorMode
from rbdfail.config import load_config
from rbdfail.drill import (
    ALLOCATED_PER_SAMPLE,
    BLOCK,
    DRILL_SNAPSHOT,
    DrillRequest,
    Verdict,
    run_command,
    run_drill,
    sample_extents,
)
from rbdfail.state import read_drill
from rbdfail.switch.lock import LOCK_NAME
from rbdfail.switch.model import Operation, SwitchRequest, options_for
from rbdfail.switch.usecase import run_switch
from tests.conftest import fake_site
from tests.fakeceph import FakeCeph, FakeCluster
from tests.helpers import eventually

MiB = 1 << 20
# What a drill may call: reads only (and never `lock`).
READS = {
    "list",  # list_images, as the fake records it
    "list_images",
    "metadata_values",
    "mirror_infos",
    "mirror_info",
    "mirror_snapshots",
    "extent_digests",
    "allocated_extents",
    "lock_holder",
    "user_snapshots",
}
# Its only writes: a journal-mode primary's user snapshot, taken and removed (drill.py).
DRILL_WRITES = {"create_snapshot", "remove_snapshot"}


@pytest.fixture
def volumes(primary: FakeCluster, secondary: FakeCluster) -> list[str]:
    """Two snapshot-mode volumes with data, one journal-mode, one plain; copies synced."""
    names = ["s-1", "s-2", "j-1"]
    for name in names:
        primary.create_image(name, 4 * MiB)
        primary.write(name, 0, b"head" * 1024)
        primary.enable_mirroring(
            name, MirrorMode.JOURNAL if name[0] == "j" else MirrorMode.SNAPSHOT
        )
        primary.write(name, 3 * MiB, name.encode() * 2000)
    primary.create_image("vm-1", MiB)
    eventually(lambda: all(n in secondary.list_images() for n in names), 2)
    eventually(lambda: all(secondary.mirror_snapshots(n) for n in ("s-1", "s-2")), 2)
    return names


class Recording:
    """A site whose method calls are noted by name (which calls a drill makes)."""

    def __init__(self, inner: FakeCluster, called: list[str]) -> None:
        self._inner, self._called = inner, called
        self.site, self.pool = inner.site, inner.pool

    def __getattr__(self, name: str) -> Any:
        self._called.append(name)
        return getattr(self._inner, name)


def rbdfail(world: FakeCeph, config_file: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["-c", str(config_file), *args], obj=world.connect)


def drill_json(world: FakeCeph, config_file: Path, *args: str) -> tuple[int, dict[str, Any]]:
    result = rbdfail(world, config_file, "drill", "--json", *args)
    assert result.stdout, result.stderr
    return result.exit_code, json.loads(result.stdout)


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in report["volumes"]}


def only_reads(world: FakeCeph, journal: tuple[str, ...] = ()) -> None:
    """Reads only, but for the drill's own snapshot of a journal-mode primary; and no
    snapshot of the drill's left on either site."""
    for site in world.sites.values():
        done = {operation for operation, _ in site.calls}
        writes = {(op, image) for op, image in site.calls if op in DRILL_WRITES}
        assert done - DRILL_WRITES <= READS, done - READS
        allowed = {(op, n) for op in DRILL_WRITES for n in journal}
        assert writes <= (allowed if site.backend_id == "default" else set()), writes
        for image in site.images.values():
            assert not [u for u in image.user_snaps if u[1].startswith(DRILL_SNAPSHOT)], image.name


def test_drill__synced_copies_identical_in_both_modes__exit_0_json_contract(
    fake_ceph: FakeCeph, config_file: Path, volumes: list[str]
) -> None:
    for site in fake_ceph.sites.values():
        site.calls.clear()

    code, report = drill_json(fake_ceph, config_file)

    assert {"target", "result", "duration_s", "volumes"} <= set(report)
    assert (report["target"], report["result"]) == ("secondary", "complete")
    found = by_name(report)
    assert set(found) == {"s-1", "s-2", "j-1"}  # replicated ones only: not vm-1
    for name in ("s-1", "s-2"):
        volume = found[name]
        assert {"name", "verdict", "snapshot", "rpo_seconds", "checked_bytes", "detail"} <= set(
            volume
        )
        assert volume["verdict"] == "identical", volume
        assert volume["checked_bytes"] > 0 and volume["rpo_seconds"] >= 0
        primary_snap = fake_ceph.sites["default"].images[name].mirror_snaps[-1].id
        assert volume["snapshot"]["primary_id"] == primary_snap
    journal = found["j-1"]
    assert journal["verdict"] == "identical" and journal["checked_bytes"] > 0, journal
    assert journal["snapshot"]["taken_at"] is not None and journal["rpo_seconds"] >= 0
    assert code == 0
    only_reads(fake_ceph, journal=("j-1",))


def test_drill__a_journal_copy_damaged_on_the_target_differs__its_snapshot_gone_on_both(
    fake_ceph: FakeCeph, config_file: Path, volumes: list[str]
) -> None:
    copy = fake_ceph.sites["secondary"].images["j-1"]
    copy.data[3 * MiB + 100 : 3 * MiB + 108] = b"corrupt!"  # as a disk fault would
    forget_calls(fake_ceph)

    code, report = drill_json(fake_ceph, config_file, "j-1")

    found = by_name(report)["j-1"]
    assert found["verdict"] == "differs" and found["differing_offsets"] == [3 * MiB], found
    assert code == 3
    only_reads(fake_ceph, journal=("j-1",))


def test_drill__a_journal_copy_not_replaying__unknown_named__its_snapshot_removed(
    fake_ceph: FakeCeph, config_file: Path, volumes: list[str]
) -> None:
    fake_ceph.sites["secondary"].replay_paused = True  # its rbd-mirror replays nothing
    forget_calls(fake_ceph)

    code, report = drill_json(fake_ceph, config_file, "j-1", "--timeout", "1")

    found = by_name(report)["j-1"]
    assert found["verdict"] == "unknown", found
    assert "had not replayed the drill's snapshot" in found["detail"]
    assert "secondary" in found["detail"] and code == 3
    assert not fake_ceph.sites["default"].images["j-1"].user_snaps
    fake_ceph.sites["secondary"].replay_paused = False  # it replays the snapshot, then its removal
    eventually(lambda: primary_replayed(fake_ceph), 2)
    only_reads(fake_ceph, journal=("j-1",))


def forget_calls(world: FakeCeph) -> None:
    for site in world.sites.values():
        site.calls.clear()


def primary_replayed(world: FakeCeph) -> bool:
    world.run_replication()
    return not world._pending


def test_drill__a_snapshot_left_by_a_killed_drill_is_removed_by_the_next(
    fake_ceph: FakeCeph,
    config_file: Path,
    volumes: list[str],
    primary: FakeCluster,
    secondary: FakeCluster,
) -> None:
    left = f"{DRILL_SNAPSHOT}1700000000-dead00"
    primary.create_snapshot("j-1", left)
    image = fake_ceph.sites["default"].images["j-1"]
    image.user_snaps = [(i, n, t - 3600, d) for i, n, t, d in image.user_snaps]  # an hour ago
    eventually(lambda: secondary.user_snapshots("j-1"), 2)
    forget_calls(fake_ceph)

    code, report = drill_json(fake_ceph, config_file, "j-1")

    found = by_name(report)["j-1"]
    assert code == 0 and found["verdict"] == "identical", found
    assert "removed 1 snapshot(s) left by an earlier drill" in found["detail"]
    only_reads(fake_ceph, journal=("j-1",))


def test_drill__all_identical_is_exit_0_and_recorded_for_status_and_prometheus(
    fake_ceph: FakeCeph, config_file: Path, volumes: list[str], tmp_path: Path
) -> None:
    code, report = drill_json(fake_ceph, config_file, "s-1", "s-2")
    assert code == 0 and report["result"] == "complete", report
    drills = read_drill(load_config(config_file).state_dir)
    assert set(drills) == {"s-1", "s-2"} and drills["s-1"]["target"] == "secondary"
    assert abs(drills["s-1"]["last_success"] - time.time()) < 60

    status = rbdfail(fake_ceph, config_file, "status", "--json")
    assert json.loads(status.stdout)["drills"] == drills
    prom = tmp_path / "rbdfail.prom"
    rbdfail(fake_ceph, config_file, "status", "--prometheus", str(prom))
    text = prom.read_text()
    assert 'rbdfail_drill_last_success_timestamp_seconds{target="secondary",volume="s-1"}' in text


def test_drill__a_copy_corrupted_on_the_target_differs_at_that_offset(
    fake_ceph: FakeCeph, config_file: Path, volumes: list[str]
) -> None:
    copy = fake_ceph.sites["secondary"].images["s-1"]
    copy.data[3 * MiB + 100 : 3 * MiB + 108] = b"corrupt!"  # as a disk fault would

    code, report = drill_json(fake_ceph, config_file, "s-1", "s-2")

    found = by_name(report)
    assert found["s-1"]["verdict"] == "differs"
    assert found["s-1"]["differing_offsets"] == [3 * MiB]  # the block holding the damage
    assert "3145728" in found["s-1"]["detail"]
    assert found["s-2"]["verdict"] == "identical"
    assert code == 3 and report["result"] == "partial"
    assert "s-1" not in read_drill(load_config(config_file).state_dir)


def test_drill__full_reads_every_byte_and_catches_damage_anywhere(
    fake_ceph: FakeCeph, config_file: Path, volumes: list[str]
) -> None:
    code, report = drill_json(fake_ceph, config_file, "--full", "s-1")
    assert code == 0 and by_name(report)["s-1"]["checked_bytes"] == 4 * MiB
    fake_ceph.sites["secondary"].images["s-1"].data[1234567] ^= 0xFF  # one bit pattern, anywhere
    code, report = drill_json(fake_ceph, config_file, "--full", "s-1")
    assert code == 3 and by_name(report)["s-1"]["verdict"] == "differs"


def test_drill__named_volumes_that_cannot_be_drilled_say_why(
    fake_ceph: FakeCeph, config_file: Path, volumes: list[str]
) -> None:
    code, report = drill_json(fake_ceph, config_file, "vm-1", "nope")
    found = by_name(report)
    assert found["vm-1"]["verdict"] == "unknown" and "not replicated" in found["vm-1"]["detail"]
    assert found["nope"]["verdict"] == "unknown" and "no such volume" in found["nope"]["detail"]
    assert code == 3 and report["result"] == "failed"


def test_drill__the_primary_no_longer_holding_the_snapshot_is_unknown_after_retries(
    fake_ceph: FakeCeph, config_file: Path, volumes: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("rbdfail.drill.SYNC_WAIT_S", 0.01)
    fake_ceph.sites["default"].images["s-1"].mirror_snaps.clear()
    code, report = drill_json(fake_ceph, config_file, "s-1")
    detail = by_name(report)["s-1"]["detail"]
    assert by_name(report)["s-1"]["verdict"] == "unknown" and "no longer holds" in detail
    assert code == 3


def test_drill__a_copy_that_syncs_under_the_read_is_read_again(
    fake_ceph: FakeCeph, config: Any, primary: FakeCluster, volumes: list[str]
) -> None:
    """The copy's head moves in a sync, which starts with a newer snapshot: a read during which
    the newest snapshot changed is not trusted, and the volume is read again."""
    reads = {"count": 0}
    real = FakeCluster.extent_digests

    def a_write_lands_during_the_first_read(self: FakeCluster, name: str, *args: Any) -> Any:
        result = real(self, name, *args)
        if self.site == "secondary" and reads["count"] == 0:
            reads["count"] += 1
            primary.write("s-1", 0, b"newer" * 100)  # replicated at the next call
            time.sleep(fake_ceph.replication_delay * 2)
        return result

    request = DrillRequest(names=("s-1",), connect_timeout=1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("rbdfail.drill.SYNC_WAIT_S", 0.01)
        patch.setattr(FakeCluster, "extent_digests", a_write_lands_during_the_first_read)
        report = run_drill(config, request, fake_ceph.connect)
    [volume] = report.volumes
    assert reads["count"] == 1
    assert volume.verdict == Verdict.IDENTICAL, volume
    newest = fake_ceph.sites["default"].images["s-1"].mirror_snaps[-1].id
    assert volume.snapshot is not None and volume.snapshot.primary_id == newest


def test_sample__first_middle_last_random_and_the_extents_holding_data() -> None:
    size = 1 << 40  # 1 TiB: never read whole
    allocated = [(5 * MiB, 8192), (700 * MiB + 3, 3 * MiB)]
    extents = sample_extents(size, allocated, 16, random.Random(1))
    offsets = {o for o, _ in extents}
    assert {0, size - BLOCK, 5 * MiB} <= offsets
    assert (700 * MiB) // BLOCK * BLOCK in offsets  # the block holding the extent's start
    assert (703 * MiB + 2) // BLOCK * BLOCK in offsets  # and its end
    assert all(o % BLOCK == 0 and 0 < n <= BLOCK and o + n <= size for o, n in extents)
    assert len(extents) <= 3 + 16 + 16 * ALLOCATED_PER_SAMPLE
    holding = {o for o, _ in sample_extents(8 * MiB, [(MiB, 2 * MiB)], 4, random.Random(1))}
    assert {MiB + i * BLOCK for i in range(32)} <= holding  # few enough: every block of them
    assert sample_extents(100, [], 4, random.Random(1)) == [(0, 100)]  # a tiny volume: whole
    many = [(i * MiB, 4096) for i in range(1000)]
    spread = {o for o, _ in sample_extents(2000 * MiB, many, 10, random.Random(1))}
    assert 0 in spread and 900 * MiB in spread  # spread over them, not the first ten


def test_drill__refused_with_exit_4_while_a_switch_holds_the_lock__nothing_read(
    fake_ceph: FakeCeph, config_file: Path, volumes: list[str], secondary: FakeCluster
) -> None:
    secondary.lock(LOCK_NAME, "run-x", json.dumps({"what": "failover to secondary"}), 30)
    result = rbdfail(fake_ceph, config_file, "drill")
    assert result.exit_code == 4, result.output
    assert "no drill now" in result.stderr and "failover to secondary" in result.stderr
    assert not [c for c in fake_ceph.sites["secondary"].calls if c[0] == "extent_digests"]


def test_drill__a_failover_starting_mid_drill_is_not_delayed_and_the_drill_stops_saying_so(
    fake_ceph: FakeCeph, config: Any, volumes: list[str], primary: FakeCluster
) -> None:
    more = [f"s-{i}" for i in range(3, 13)]
    for name in more:
        primary.create_image(name, MiB)
        primary.enable_mirroring(name, MirrorMode.SNAPSHOT)
    copies = fake_ceph.connect(fake_site("secondary"), 1)
    eventually(lambda: set(more) <= set(copies.list_images()), 2)
    fake_ceph.latency["extent_digests"] = 0.3  # a slow drill, one volume at a time
    fake_ceph.latency["promote"] = 1.5  # a switch that lasts longer than the drill looks
    request = DrillRequest(concurrency=1, connect_timeout=1)
    drilled: dict[str, Any] = {}
    called: list[str] = []  # by the drill's own connections

    def recording(site: Any, timeout: float) -> Any:
        return Recording(fake_ceph.connect(site, timeout), called)

    drill = threading.Thread(
        target=lambda: drilled.update(report=run_drill(config, request, recording))
    )
    drill.start()
    eventually(lambda: fake_ceph.max_in_flight.get("extent_digests"), 5)

    started = time.monotonic()
    switch = run_switch(
        config,
        SwitchRequest(Operation.FAILOVER, options_for(config), "secondary"),
        connect=fake_ceph.connect,
    )
    took = time.monotonic() - started
    drill.join(10)

    assert switch.report is not None and switch.report.result == "complete"  # never refused
    assert took < 5, took
    report = drilled["report"]
    assert report.stopped and "failover to secondary" in report.stopped
    not_drilled = [v for v in report.volumes if v.detail.startswith("not drilled: a failover")]
    assert not_drilled and all(v.verdict == Verdict.UNKNOWN for v in not_drilled)
    assert report.result != "complete"
    assert all(v.verdict != Verdict.DIFFERS for v in report.volumes)
    # Never `lock`; no write but the journal-mode volume's own snapshot.
    assert set(called) <= READS | DRILL_WRITES | {"close"}, set(called) - READS
    assert "lock_holder" in called


def test_drill__exec_gets_the_copy_read_only_details_and_its_exit_code_counts(
    fake_ceph: FakeCeph, config_file: Path, volumes: list[str], tmp_path: Path
) -> None:
    seen = tmp_path / "seen"
    command = f'env | grep ^RBDFAIL_DRILL_ | sort >> {seen}; test "$RBDFAIL_DRILL_VOLUME" = s-1'
    code, report = drill_json(fake_ceph, config_file, "s-1", "s-2", "--exec", command)
    found = by_name(report)
    assert found["s-1"]["exec"]["exit_code"] == 0 and found["s-1"]["verified"]
    assert found["s-2"]["exec"]["exit_code"] == 1 and not found["s-2"]["verified"]
    assert found["s-2"]["verdict"] == "identical"  # the comparison stands; the command failed
    assert code == 3
    env = seen.read_text()
    assert "RBDFAIL_DRILL_IMAGE_SPEC=volumes/s-1" in env and "RBDFAIL_DRILL_SITE=secondary" in env
    assert "RBDFAIL_DRILL_CONF=/fake/secondary.conf" in env and "KEY=" not in env


def test_drill__exec_that_outlives_its_timeout_is_ended(
    fake_ceph: FakeCeph, config_file: Path, volumes: list[str]
) -> None:
    started = time.monotonic()
    code, report = drill_json(
        fake_ceph, config_file, "s-1", "--exec", "sleep 30", "--exec-timeout", "1"
    )
    ran = by_name(report)["s-1"]["exec"]
    assert ran["exit_code"] is None and "exec-timeout" in ran["detail"]
    assert time.monotonic() - started < 10 and code == 3


def test_drill__the_active_site_as_target_is_a_usage_error(
    fake_ceph: FakeCeph, config_file: Path, volumes: list[str]
) -> None:
    result = rbdfail(fake_ceph, config_file, "drill", "--to", "default")
    assert result.exit_code == 2 and "active site" in result.stderr


def test_drill__an_unreachable_target_fails_in_bounded_time(
    fake_ceph: FakeCeph, config_file: Path, volumes: list[str]
) -> None:
    fake_ceph.freeze("secondary")
    started = time.monotonic()
    result = rbdfail(fake_ceph, config_file, "drill")
    assert result.exit_code == 1 and "secondary" in result.stderr
    assert time.monotonic() - started < 3


@pytest.mark.parametrize(
    "args",
    [
        ("--full", "--sample", "4"),
        ("--exec-timeout", "nan"),
        ("--timeout", "inf"),
        ("--sample", "0"),
    ],
    ids=" ".join,
)
def test_drill__bad_options_are_refused_exit_2_before_any_site_is_read(
    fake_ceph: FakeCeph, config_file: Path, args: tuple[str, ...]
) -> None:
    result = rbdfail(fake_ceph, config_file, "drill", *args)
    assert result.exit_code == 2, result.output
    assert not any(site.calls for site in fake_ceph.sites.values())


def test_drill__exec_during_which_the_copy_synced_does_not_count(
    fake_ceph: FakeCeph, config: Any, primary: FakeCluster, volumes: list[str]
) -> None:
    """The command reads the copy's head, which a sync moves: its exit code proves nothing."""
    real = run_command

    def a_sync_lands_while_it_runs(*args: Any) -> Any:
        primary.write("s-1", 0, b"newer" * 100)
        time.sleep(fake_ceph.replication_delay * 2)
        return real(*args)

    request = DrillRequest(names=("s-1",), exec_command="true", connect_timeout=1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("rbdfail.drill.run_command", a_sync_lands_while_it_runs)
        report = run_drill(config, request, fake_ceph.connect)
    [volume] = report.volumes
    assert volume.verdict == Verdict.IDENTICAL and not volume.verified
    assert volume.exec is not None and volume.exec.exit_code is None
    assert "started while it ran" in volume.exec.detail
    assert report.result == "failed"


def test_adapter_reads_side_by_side_extents_together_within_a_span() -> None:
    pytest.importorskip("rados", reason="rbdfail.ceph needs the Ceph bindings")
    from rbdfail.ceph import _side_by_side

    extents = [(0, 10), (10, 10), (20, 5), (40, 10), (50, 30), (80, 1)]
    assert list(_side_by_side(extents, 25)) == [
        [(0, 10), (10, 10), (20, 5)],
        [(40, 10)],  # a gap
        [(50, 30)],  # would span more than 25 with the one before
        [(80, 1)],
    ]
    assert list(_side_by_side([], 25)) == []
