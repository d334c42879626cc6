"""Failover on the fake two-site Ceph: the plan, demote-then-force-promote, timeouts, rollback,
the journal and resuming, concurrency, Ctrl-C and the lock."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from rbdfail.cluster import MirrorMode
from rbdfail.config import Config
from rbdfail.errors import (
    ImageBusy,
    ImageNotFound,
    InvalidState,
    LockedByAnotherRun,
    LockHeld,
    OperationTimedOut,
    RbdfailError,
    TargetUnreachable,
)
from rbdfail.state import State, VolumeRecord, journal_lines, read_state, write_state
from rbdfail.switch.history import unfinished_run
from rbdfail.switch.lock import LOCK_NAME, SwitchLock
from rbdfail.switch.model import (
    Action,
    Plan,
    VolumeOutcome,
)
from rbdfail.switch.plan_failover import plan_failover
from rbdfail.switch.sites import Sites, connect_failback_sites, connect_sites, read_for_failover
from rbdfail.workers import CallSlots
from tests.fakeceph import FakeCeph, FakeCluster
from tests.helpers import (
    CONNECT_TIMEOUT,
    Recorder,
    by_name,
    calls,
    eventually,
    primary_on,
    replicated,
    run,
    volumes,
)


# ---- clean ---------------------------------------------------------------------------------
def test_clean__every_replicated_volume_demoted_then_promoted_with_its_data(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    names = ["s-1", "s-2", "j-1"]
    replicated(primary, secondary, names, data=True)
    primary.create_image("vm-1", 1 << 20)

    report = run(config, fake_ceph)

    assert report.result == "complete" and not report.forced and report.primary_lost is None
    outcomes = by_name(report)
    for name in names:
        assert outcomes[name].action == Action.DEMOTED_PROMOTED, outcomes[name]
        assert primary_on(secondary, name) and not primary_on(primary, name)
        assert secondary.read(name, 0, len(name)) == name.encode()
    assert outcomes["vm-1"].action == Action.NOT_REPLICATED
    assert outcomes["vm-1"].status == "error"
    assert calls(fake_ceph, "secondary", "promote").count("s-1") >= 1
    state = read_state(config.state_dir)
    assert state.active_backend == "secondary"
    assert state.volume("vm-1") == VolumeRecord("error", "available")
    assert report.to_json()["volumes"][0].keys() >= {
        "name",
        "action",
        "status",
        "error",
        "duration_s",
    }


def test_clean__a_promote_answering_busy_until_the_demotion_arrives_is_retried_not_forced(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    replicated(primary, secondary, ["s-1"])
    fake_ceph.replication_delay = 0.6  # the demotion reaches the secondary 0.6 s later

    report = run(config, fake_ceph)

    assert by_name(report)["s-1"].action == Action.DEMOTED_PROMOTED
    assert len(calls(fake_ceph, "secondary", "promote")) > 1  # ImageBusy, then success
    assert by_name(report)["s-1"].duration_s >= 0.6


def test_rerun__of_a_finished_failover_changes_nothing_and_keeps_previous_statuses(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    replicated(primary, secondary, ["s-1"])
    primary.create_image("vm-1", 1 << 20)
    write_state(config.state_dir, State(volumes={"vm-1": VolumeRecord("in-use")}))
    run(config, fake_ceph)
    demotes = len(calls(fake_ceph, "default", "demote"))

    again = run(config, fake_ceph)

    assert by_name(again)["s-1"].action == Action.ALREADY_PRIMARY
    assert again.result == "complete"
    assert len(calls(fake_ceph, "default", "demote")) == demotes
    # The second run must not take the first run's `error` as the status to restore.
    assert read_state(config.state_dir).volume("vm-1") == VolumeRecord("error", "in-use")


# ---- the source lost ------------------------------------------------------------------------
def test_source_unreachable_from_the_start__all_forced_after_one_connect_timeout(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    names = volumes("s", 12)
    replicated(primary, secondary, names)
    fake_ceph.freeze("default")
    fake_ceph.latency["promote"] = 0.05

    report = run(config, fake_ceph, concurrency=4)

    assert report.result == "complete" and report.forced
    assert {v.action for v in report.volumes} == {Action.FORCE_PROMOTED}
    assert not report.plan.source_reachable
    assert all(primary_on(secondary, n) for n in names)
    # One connect timeout waited, not one per volume.
    assert fake_ceph.timeouts == [("default", "connect")]


def test_source_lost__a_stalled_lock_handoff_is_taken_over_after_the_grace__no_hang(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    names = volumes("s", 6)
    replicated(primary, secondary, names)
    fake_ceph.freeze("default")
    # The daemon cannot be taken out (blocklist refused): each copy's lock is taken instead.
    fake_ceph.sites["secondary"].blocklist_denied = True
    fake_ceph.sites["secondary"].handoff_stalls = True  # its rbd-mirror is stuck on default
    recorder = Recorder()

    report = run(config, fake_ceph, recorder, break_locks_after=0.2)

    assert report.result == "complete" and report.calls_left_running == 0
    assert all(primary_on(secondary, n) for n in names)
    for name in names:
        mine = [step for volume, step in recorder.steps if volume == name]
        # "lock-taken" is written by the taker, maybe just after the promote went on.
        assert mine[0] == "force-promote", mine
        assert set(mine) == {"force-promote", "take-lock", "lock-taken", "force-promoted"}
        assert mine.index("take-lock") < mine.index("force-promoted")
        assert "client.rbd-mirror" in by_name(report)[name].detail
    taken = [line for line in journal_lines(config.state_dir) if line.get("step") == "lock-taken"]
    assert sorted(line["volume"] for line in taken) == names
    assert all(line["holders"] == ["client.rbd-mirror"] for line in taken)
    assert report.plan.breaks_locks_after == 0.2


def test_source_lost__a_lock_holder_refusing_at_once__its_lock_taken_at_once_then_forced(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    """Seen on the lab right after another run had taken locks from the same daemon: the
    forced promote answered EROFS at once. Waiting out the grace would only add time."""
    replicated(primary, secondary, ["s-1", "s-2"])
    fake_ceph.freeze("default")
    # The daemon cannot be taken out (blocklist refused): each copy's lock is taken instead.
    fake_ceph.sites["secondary"].blocklist_denied = True
    fake_ceph.sites["secondary"].handoff_refuses = True

    started = time.monotonic()
    report = run(config, fake_ceph, break_locks_after=30)

    assert time.monotonic() - started < 15  # not the 30 s grace
    assert report.result == "complete"
    assert sorted(calls(fake_ceph, "secondary", "break_image_lock")) == ["s-1", "s-2"]


def test_source_lost__a_stalled_promote_timing_out_after_its_lock_was_taken__forced_again(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    """Seen on the lab (CI): the promote waiting since before the take answered ETIMEDOUT 2 s
    after it; the next forced promote went through."""
    replicated(primary, secondary, ["s-1", "s-2"])
    fake_ceph.freeze("default")
    fake_ceph.sites["secondary"].handoff_stalls = True
    fake_ceph.sites["secondary"].times_out_after_take = True

    report = run(config, fake_ceph, break_locks_after=0.2)

    assert report.result == "complete", report.volumes
    assert primary_on(secondary, "s-1") and primary_on(secondary, "s-2")


def test_source_lost__a_forced_promote_timing_out_once_is_tried_again__forced(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    # Lab, the disaster test's re-run once the secondary was back: one forced promote of four
    # timed out after 4 s (no lock taken) while the others went through.
    replicated(primary, secondary, ["s-1", "s-2"])
    fake_ceph.freeze("default")
    fake_ceph.lost_answers.add(("secondary", "promote", "s-1"))  # done, answer lost

    report = run(config, fake_ceph)

    assert {v.name: v.action for v in report.volumes} == {
        "s-1": Action.FORCE_PROMOTED,
        "s-2": Action.FORCE_PROMOTED,
    }
    assert report.result == "complete" and primary_on(secondary, "s-1")
    assert calls(fake_ceph, "secondary", "promote").count("s-1") == 2


def test_source_lost__a_journal_copy_forced_while_its_daemon_keeps_the_lock__taken__writable(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    """Lab: a journal-mode forced promote goes through at once (it needs no lock) while the
    target's rbd-mirror, stuck on the lost source, keeps the copy's lock: every write refused
    for 80 s. The lock is taken from the daemon once the grace has passed."""
    replicated(primary, secondary, ["j-1", "j-2", "s-1"])
    fake_ceph.freeze("default")
    # The daemon cannot be taken out (blocklist refused): each copy's lock is taken instead.
    fake_ceph.sites["secondary"].blocklist_denied = True
    fake_ceph.sites["secondary"].handoff_stalls = True
    recorder = Recorder()

    report = run(config, fake_ceph, recorder, break_locks_after=0.2)

    assert report.result == "complete", report.volumes
    for name in ("j-1", "j-2", "s-1"):
        assert primary_on(secondary, name)
        secondary.write(name, 0, b"after the failover")  # refused while the daemon held it
        mine = [step for volume, step in recorder.steps if volume == name]
        assert {"take-lock", "lock-taken"} <= set(mine), (name, mine)
    for name in ("j-1", "j-2"):
        mine = [step for volume, step in recorder.steps if volume == name]
        assert mine.index("force-promoted") < mine.index("take-lock"), mine  # after, not before
        assert "its lock taken from secondary's rbd-mirror" in by_name(report)[name].detail
    assert sorted(calls(fake_ceph, "secondary", "break_image_lock")) == ["j-1", "j-2", "s-1"]


def test_source_lost__a_journal_copy_whose_daemon_lets_go__no_lock_taken(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    """Lab: with the target's rbd-mirror not stuck, the copy's lock is free 0.02 s after the
    forced promote. Taking it would blocklist the daemon for every image: never then."""
    replicated(primary, secondary, ["j-1"])
    fake_ceph.freeze("default")

    report = run(config, fake_ceph, break_locks_after=0.2)

    assert report.result == "complete"
    assert calls(fake_ceph, "secondary", "mirror_daemon_lock_holders") == ["j-1"]
    assert calls(fake_ceph, "secondary", "break_image_lock") == []
    secondary.write("j-1", 0, b"writable")


def test_source_lost_without_break_locks__a_journal_copy_s_kept_lock_is_named__a_rerun_takes_it(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    """The same when a run is killed between the promote and the take: the re-run finds the
    copy primary already, and frees it all the same."""
    replicated(primary, secondary, ["j-1"])
    fake_ceph.freeze("default")
    fake_ceph.sites["secondary"].handoff_stalls = True

    report = run(config, fake_ceph, break_locks_after=None)

    outcome = by_name(report)["j-1"]
    assert outcome.action == Action.FORCE_PROMOTED, outcome
    assert "writes are refused there" in outcome.detail and "--break-locks" in outcome.detail
    assert calls(fake_ceph, "secondary", "break_image_lock") == []
    with pytest.raises(InvalidState, match="read-only"):
        secondary.write("j-1", 0, b"refused")

    again = run(config, fake_ceph, break_locks_after=0.2)

    outcome = by_name(again)["j-1"]
    assert outcome.action == Action.ALREADY_PRIMARY, outcome
    assert "its lock taken from secondary's rbd-mirror" in outcome.detail, outcome
    secondary.write("j-1", 0, b"writable")


def test_source_reachable__a_copy_primary_already__no_lock_looked_at(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    replicated(primary, secondary, ["j-1"])
    assert run(config, fake_ceph).result == "complete"

    again = run(config, fake_ceph)

    assert by_name(again)["j-1"].action == Action.ALREADY_PRIMARY
    assert calls(fake_ceph, "secondary", "mirror_daemon_lock_holders") == []


def test_source_lost__a_lock_handoff_that_works_is_left_alone(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    """Taking the lock blocklists the daemon for every image: only when it stalls."""
    replicated(primary, secondary, ["s-1", "s-2"])
    fake_ceph.freeze("default")

    report = run(config, fake_ceph, break_locks_after=0.5)

    assert report.result == "complete"
    assert calls(fake_ceph, "secondary", "break_image_lock") == []


def test_source_lost_after_every_demote__the_roll_back_finds_it__forced_within_the_limit(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    """The source's storage dies right after the demotes, before they reach the target: no
    demote fails to say so. The promotes wait out the budget, the roll-back's call to the
    source fails only after the OSD op timeout, and then the volume is forced. Seen on the
    lab (chaos suite): given up on at the hard limit instead, and forced after the report."""
    replicated(primary, secondary, ["s-1"])
    fake_ceph.replication_delay = 3600  # the demotion never reaches the target
    fake_ceph.frozen_call_s = 2.0  # the OSD op timeout of the dead source
    recorder = Recorder()

    def storage_dies(name: str, step: str) -> None:
        if step == "demoted":
            fake_ceph.freeze("default")

    recorder.on_step = storage_dies
    report = run(
        config, fake_ceph, recorder, volume_timeout=1.0, forced_promote_s=1.0, op_timeout_s=2.0
    )

    outcome = by_name(report)["s-1"]
    assert outcome.action == Action.FORCE_PROMOTED, outcome
    assert report.primary_lost and report.calls_left_running == 0
    assert primary_on(secondary, "s-1")


def test_source_lost_without_break_locks__a_stalled_handoff_is_given_up_named__a_rerun_finishes(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    replicated(primary, secondary, ["s-1", "s-2"])
    fake_ceph.freeze("default")
    fake_ceph.sites["secondary"].handoff_stalls = True

    first = run(config, fake_ceph, break_locks_after=None, volume_timeout=0.5)

    assert first.result == "failed" and first.calls_left_running == 2
    outcome = by_name(first)["s-1"]
    assert outcome.error and "given up" in outcome.error and "--break-locks" in outcome.error
    assert outcome.hint and "rbdfail failover --to secondary" in outcome.hint
    assert not calls(fake_ceph, "secondary", "break_image_lock")

    again = run(config, fake_ceph, break_locks_after=0.2)

    assert again.result == "complete"
    assert {v.action for v in again.volumes} == {Action.FORCE_PROMOTED}
    assert primary_on(secondary, "s-1") and primary_on(secondary, "s-2")


def test_source_alive__no_lock_is_ever_taken_even_when_forcing(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    """--force with a live source forces through Ceph's own hand-off: the target's rbd-mirror
    is replaying from a live peer and must not be blocklisted."""
    replicated(primary, secondary, ["s-1"])
    fake_ceph.faults[("secondary", "promote", "s-1")] = ImageBusy("not yet", site="secondary")

    def clear_fault(name: str, step: str) -> None:
        if step == "force-promote":
            fake_ceph.faults.clear()

    recorder = Recorder()
    recorder.on_step = clear_fault
    report = run(config, fake_ceph, recorder, force=True, volume_timeout=0.3)

    assert by_name(report)["s-1"].action == Action.FORCE_PROMOTED
    assert not calls(fake_ceph, "secondary", "break_image_lock")


def test_source_unreachable__a_copy_mid_first_sync_fails_named__the_others_forced(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    names = volumes("s", 6)
    replicated(primary, secondary, names)
    fake_ceph.sites["secondary"].images["s-03"].first_sync_done = False
    fake_ceph.freeze("default")

    report = run(config, fake_ceph)

    assert report.result == "partial"
    outcome = by_name(report)["s-03"]
    assert outcome.action == Action.FAILED
    assert "s-03" in (outcome.error or "") and "first sync" in (outcome.error or "")
    assert not primary_on(secondary, "s-03")  # nothing consistent there: left as it was
    others = [n for n in names if n != "s-03"]
    assert all(by_name(report)[n].action == Action.FORCE_PROMOTED for n in others)
    assert all(primary_on(secondary, n) for n in others)


def test_source_lost_during_the_demotions__no_more_demotes__the_rest_forced(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    names = volumes("s", 10)
    replicated(primary, secondary, names)
    recorder = Recorder()

    def freeze_after_two_volumes(name: str, step: str) -> None:
        if step == "promoted" and sum(s == "promoted" for _, s in recorder.steps) == 2:
            fake_ceph.freeze("default")

    recorder.on_step = freeze_after_two_volumes
    # One volume at a time, so the loss lands at a known point.
    report = run(config, fake_ceph, observer=recorder, concurrency=1, volumes_per_slot=1)

    outcomes = by_name(report)
    demoted = [n for n in names if outcomes[n].action == Action.DEMOTED_PROMOTED]
    forced = [n for n in names if outcomes[n].action == Action.FORCE_PROMOTED]
    assert len(demoted) == 2 and len(forced) == 8, outcomes
    assert report.primary_lost and "default" in report.primary_lost
    assert len(recorder.lost) == 1
    # The third demotion timed out; no other was started after it.
    assert len(calls(fake_ceph, "default", "demote")) == 2
    assert [t for t in fake_ceph.timeouts if t[1] == "demote"] == [("default", "demote")]
    assert all(primary_on(secondary, n) for n in names)
    assert report.result == "complete"


def test_source_lost_while_a_demote_hangs__that_volume_forced_too_not_given_up_on(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    # Chaos suite, the source's daemons killed under the demotes: a demote in flight never
    # returned, and its volume was given up on at its hard limit instead of forced.
    replicated(primary, secondary, ["s-1", "s-2"])
    fake_ceph.hangs.add(("default", "demote", "s-1"))
    fake_ceph.latency["demote"] = 0.3  # s-1's demote is in flight when s-2's times out
    fake_ceph.faults[("default", "demote", "s-2")] = OperationTimedOut(
        "no answer within 0.3s", site="default", image="s-2"
    )

    started = time.monotonic()
    report = run(config, fake_ceph, volume_timeout=30)

    assert time.monotonic() - started < 10  # not the hard limit (30 s and more)
    outcomes = by_name(report)
    assert outcomes["s-1"].action == outcomes["s-2"].action == Action.FORCE_PROMOTED, outcomes
    assert "had not returned" in outcomes["s-1"].detail
    assert primary_on(secondary, "s-1") and primary_on(secondary, "s-2")
    assert report.result == "complete"
    assert report.calls_left_running == 1  # s-1's demote, still inside the source's librbd
    journal = [json.loads(line) for line in (config.state_dir / "journal.jsonl").open()]
    assert any(line["event"] == "demote-left-running" for line in journal)


def test_source_lost_after_a_demotion_before_it_propagated__forced_not_left_nowhere(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    replicated(primary, secondary, ["s-1", "s-2"])
    recorder = Recorder()

    def freeze_at_first_demotion(name: str, step: str) -> None:
        if step == "demoted":
            fake_ceph.freeze("default")  # the demotion cannot reach the secondary any more

    recorder.on_step = freeze_at_first_demotion
    report = run(config, fake_ceph, observer=recorder, concurrency=1, volume_timeout=1.0)

    first, second = report.volumes
    assert first.action == Action.FORCE_PROMOTED, first
    assert "default" in first.detail and "lost" in first.detail and "forced" in first.detail
    assert second.action == Action.FORCE_PROMOTED
    assert primary_on(secondary, "s-1") and primary_on(secondary, "s-2")
    assert report.result == "complete"


def test_target_unreachable__refused_and_nothing_touched(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    replicated(primary, secondary, ["s-1"])
    fake_ceph.freeze("secondary")
    before = list(fake_ceph.sites["default"].calls)

    with pytest.raises(TargetUnreachable, match="secondary") as caught:
        run(config, fake_ceph)

    assert "nothing was changed" in (caught.value.hint or "")
    fake_ceph.thaw("secondary")
    assert primary_on(primary, "s-1") and not primary_on(secondary, "s-1")
    changing = {"demote", "promote", "write", "enable", "disable"}
    assert not [c for c in fake_ceph.sites["default"].calls[len(before) :] if c[0] in changing]
    assert not (config.state_dir / "state.json").exists()


# ---- promotes that do not succeed -------------------------------------------------------------
def test_promote_never_possible__rolled_back_to_the_source__reported_failed(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    replicated(primary, secondary, ["s-1", "s-2"])
    fake_ceph.replication_delay = 3600  # the demotion never reaches the secondary

    report = run(config, fake_ceph, volume_timeout=0.5)

    for name in ("s-1", "s-2"):
        outcome = by_name(report)[name]
        assert outcome.action == Action.FAILED
        assert outcome.error and "rolled back" in outcome.error
        assert primary_on(primary, name) and not primary_on(secondary, name)  # never nowhere
        assert outcome.status == "available"  # nothing moved: statuses are left alone
    assert report.result == "failed"
    assert read_state(config.state_dir).active_backend == "default"


def test_promote_never_possible_with_force__forced_on_the_target(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    replicated(primary, secondary, ["s-1"])
    fake_ceph.replication_delay = 3600

    report = run(config, fake_ceph, volume_timeout=0.5, force=True)

    assert by_name(report)["s-1"].action == Action.FORCE_PROMOTED
    assert primary_on(secondary, "s-1")


def test_promote_that_took_effect_but_timed_out__not_rolled_back__no_split_brain(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    """Issue 13 item 3: rolling back without looking made it primary on both sites."""
    replicated(primary, secondary, ["s-1"])
    fake_ceph.lost_answers.add(("secondary", "promote", "s-1"))

    report = run(config, fake_ceph)

    assert by_name(report)["s-1"].action == Action.DEMOTED_PROMOTED
    assert primary_on(secondary, "s-1") and not primary_on(primary, "s-1")
    assert calls(fake_ceph, "default", "promote") == []  # no roll-back


def test_promote_failed_and_the_target_cannot_say__not_rolled_back__named(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    replicated(primary, secondary, ["s-1"])
    fake_ceph.lost_answers.add(("secondary", "promote", "s-1"))
    fake_ceph.faults[("secondary", "mirror_info", "s-1")] = OperationTimedOut(
        "no answer", site="secondary"
    )

    report = run(config, fake_ceph)

    outcome = by_name(report)["s-1"]
    assert outcome.action == Action.FAILED
    assert "not rolled back" in str(outcome.error) and "rbdfail status s-1" in str(outcome.error)
    assert calls(fake_ceph, "default", "promote") == []
    fake_ceph.faults.clear()
    assert primary_on(secondary, "s-1")  # where the lost answer's promote took effect


def test_demote_refused_while_still_primary__failed_named__never_forced(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    """Issue 13 item 4: a refused demote (a client holding the lock) was taken as done."""
    replicated(primary, secondary, ["s-1", "s-2"])
    fake_ceph.faults[("default", "demote", "s-1")] = InvalidState(
        "Read-only file system", site="default", image="s-1"
    )

    report = run(config, fake_ceph, force=True, volume_timeout=0.5)

    outcome = by_name(report)["s-1"]
    assert outcome.action == Action.FAILED and "refused" in str(outcome.error)
    assert primary_on(primary, "s-1") and not primary_on(secondary, "s-1")
    assert "s-1" not in calls(fake_ceph, "secondary", "promote")
    assert by_name(report)["s-2"].action == Action.DEMOTED_PROMOTED


def test_rerun_after_the_source_came_back__split_brain_is_said__not_already_primary(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    """Issue 13 item 8."""
    replicated(primary, secondary, ["s-1"])
    fake_ceph.freeze("default")
    assert run(config, fake_ceph).result == "complete"
    fake_ceph.thaw("default")

    again = run(config, fake_ceph)

    outcome = by_name(again)["s-1"]
    assert outcome.action == Action.FAILED and "split brain" in str(outcome.error)
    assert again.result != "complete"


def test_hung_call__volume_reported_timed_out__the_command_finishes(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    replicated(primary, secondary, ["s-1", "s-2", "s-3"])
    fake_ceph.hangs.add(("secondary", "promote", "s-2"))

    started = time.monotonic()
    report = run(config, fake_ceph, volume_timeout=0.5)

    # Reaching this line is the point (the hung call is released only after the test); the
    # bound only tells a slow finish from a hang when reading a failure.
    assert time.monotonic() - started < 30
    outcomes = by_name(report)
    assert outcomes["s-2"].action == Action.FAILED
    assert outcomes["s-2"].error and "given up" in outcomes["s-2"].error
    assert "promote" in outcomes["s-2"].error  # the step it was stuck in
    assert outcomes["s-1"].action == outcomes["s-3"].action == Action.DEMOTED_PROMOTED
    assert report.calls_left_running == 1
    assert report.result == "partial"
    assert read_state(config.state_dir).volume("s-2").status == "error"


def test_hung_call__what_it_does_after_being_given_up_is_journaled_as_late(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    replicated(primary, secondary, ["s-1"])
    fake_ceph.hangs.add(("secondary", "promote", "s-1"))
    recorder = Recorder()
    run(config, fake_ceph, recorder, volume_timeout=0.3)
    steps_seen = list(recorder.steps)

    fake_ceph.release_hangs()  # the call returns after the run ended: promoted after all

    def late_lines() -> list[dict[str, Any]]:
        return [line for line in journal_lines(config.state_dir) if "late" in line["event"]]

    late = eventually(late_lines, 5)
    assert [(line["event"], line.get("step")) for line in late] == [("late-step", "promoted")]
    events = [line["event"] for line in journal_lines(config.state_dir)]
    assert events.index("end") < events.index("late-step")
    assert recorder.steps == steps_seen  # not shown as progress of a finished run


def test_image_vanished_from_the_source_mid_run__named_and_the_rest_done(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    replicated(primary, secondary, ["s-1", "s-2"])
    fake_ceph.faults[("default", "demote", "s-1")] = ImageNotFound(
        "image not found", site="default", image="s-1"
    )

    report = run(config, fake_ceph)

    outcome = by_name(report)["s-1"]
    assert outcome.action == Action.FAILED and outcome.error and "vanished" in outcome.error
    assert by_name(report)["s-2"].action == Action.DEMOTED_PROMOTED
    assert report.result == "partial"


# ---- planning ----------------------------------------------------------------------------------
def test_plan__replicated_but_not_mirrored_and_no_copy_yet_are_failures_named(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    replicated(primary, secondary, ["s-ok"])
    primary.create_image("s-unmirrored", 1 << 20)
    fake_ceph.replication_delay = 3600
    primary.create_image("s-nocopy", 1 << 20)
    primary.enable_mirroring("s-nocopy", MirrorMode.SNAPSHOT)
    sites = connect_sites(config, State(), "secondary", fake_ceph.connect, 1)

    plan = {v.name: v for v in plan_failover(config, read_for_failover(config, sites)).volumes}

    assert plan["s-ok"].plan == Plan.DEMOTE_PROMOTE
    assert plan["s-unmirrored"].plan == Plan.CANNOT
    assert "enable-mirroring" in plan["s-unmirrored"].reason
    assert plan["s-nocopy"].plan == Plan.CANNOT and "no copy" in plan["s-nocopy"].reason


def test_plan__failover_to_the_backend_itself_is_refused(
    config: Config, fake_ceph: FakeCeph
) -> None:
    with pytest.raises(RbdfailError, match="the backend itself") as caught:
        connect_sites(config, State(), "default", fake_ceph.connect, 1)
    assert "rbdfail failback" in (caught.value.hint or "")


# ---- a kill, and the re-run --------------------------------------------------------------------
class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs in the dying run (no `end`, no state)."""


def test_kill_mid_run_then_rerun__finishes_without_repeating_anything(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    names = volumes("s", 6)
    replicated(primary, secondary, names)
    # Dies just after demoting s-03: it is demoted, primary nowhere.
    fake_ceph.faults[("secondary", "promote", "s-03")] = Killed()

    with pytest.raises(Killed):
        run(config, fake_ceph, concurrency=1, volumes_per_slot=1)  # killed at a known point
    first_run = next(line["run"] for line in journal_lines(config.state_dir))
    assert not primary_on(primary, "s-03") and not primary_on(secondary, "s-03")
    done_before = [n for n in names if primary_on(secondary, n)]
    assert done_before == ["s-00", "s-01", "s-02"]
    demotes_before = calls(fake_ceph, "default", "demote")

    del fake_ceph.faults[("secondary", "promote", "s-03")]
    report = run(config, fake_ceph, concurrency=1)

    assert report.plan.resumes == first_run
    plans = {v.name: v.plan for v in report.plan.volumes}
    assert [plans[n] for n in done_before] == [Plan.NOTHING] * 3
    assert plans["s-03"] == Plan.PROMOTE
    assert report.result == "complete"
    assert all(primary_on(secondary, n) for n in names)
    new_demotes = calls(fake_ceph, "default", "demote")[len(demotes_before) :]
    # Up to 4 volumes per call slot are in progress: their order varies (seen under load).
    assert sorted(new_demotes) == ["s-04", "s-05"]  # nothing demoted twice
    events = [line["event"] for line in journal_lines(config.state_dir)]
    assert events.count("start") == 2 and events.count("end") == 1
    # Finished by the second run: a third resumes nothing.
    assert unfinished_run(config.state_dir, "secondary") is None


def test_journal__a_line_per_step_per_volume_in_order_and_no_key_material(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    replicated(primary, secondary, ["s-1"])
    run(config, fake_ceph)

    lines = list(journal_lines(config.state_dir))
    steps = [line["step"] for line in lines if line.get("volume") == "s-1"]
    assert steps == ["demote", "demoted", "promote", "promoted"]
    assert lines[0]["event"] == "start" and lines[-1]["event"] == "end"
    text = (config.state_dir / "journal.jsonl").read_text()
    assert "key" not in text.lower()


# ---- concurrency, Ctrl-C ------------------------------------------------------------------------
def test_concurrency__never_more_volumes_at_once_than_asked(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    names = volumes("s", 24)
    replicated(primary, secondary, names)
    fake_ceph.latency.update(demote=0.05, promote=0.05)

    report = run(config, fake_ceph, concurrency=4)

    assert report.result == "complete"
    # Bounds: at most what was asked, and more than one at a time (the timing decides how many).
    assert 1 < fake_ceph.max_in_flight["demote"] <= 4
    assert fake_ceph.max_in_flight["promote"] <= 4


def test_concurrency__volumes_waiting_for_their_demotion_to_arrive_hold_no_call_slot(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    names = volumes("s", 16)
    replicated(primary, secondary, names)
    fake_ceph.replication_delay = 0.3  # each demotion reaches the secondary 0.3 s later
    recorder = Recorder()
    waiting: set[str] = set()
    most_waiting = 0

    def count_waiting(name: str, step: str) -> None:
        nonlocal most_waiting
        if step == "demoted":
            waiting.add(name)
        elif step == "promoted":
            waiting.discard(name)
        most_waiting = max(most_waiting, len(waiting))

    recorder.on_step = count_waiting
    report = run(config, fake_ceph, observer=recorder, concurrency=2)

    assert report.result == "complete"
    assert fake_ceph.max_in_flight["demote"] <= 2 and fake_ceph.max_in_flight["promote"] <= 2
    assert most_waiting > 2  # more volumes waited at once than there are call slots


def test_call_slots__a_hung_call_written_off_frees_its_slot_once() -> None:
    slots = CallSlots(1)
    hung, release = threading.Event(), threading.Event()

    def hang() -> None:
        hung.set()
        release.wait()

    hung_thread = threading.Thread(target=slots.call, args=(hang,))
    hung_thread.start()
    hung.wait()
    slots.write_off(hung_thread.ident)

    assert slots.call(lambda: "through") == "through"  # not held up by the hung call
    release.set()
    hung_thread.join()
    in_call, most = 0, 0
    lock = threading.Lock()

    def one_call() -> None:
        nonlocal in_call, most
        with lock:
            in_call += 1
            most = max(most, in_call)
        time.sleep(0.02)
        with lock:
            in_call -= 1

    threads = [threading.Thread(target=slots.call, args=(one_call,)) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most <= 1  # the late return of the hung call gave no second slot back


def test_ctrl_c__no_new_volumes__running_ones_finish__recorded(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    names = volumes("s", 10)
    replicated(primary, secondary, names)
    fake_ceph.latency.update(demote=0.1)
    recorder = Recorder()

    def interrupt_once(outcome: VolumeOutcome) -> None:
        if len(recorder.finished_names) == 1:
            raise KeyboardInterrupt

    recorder.on_finished = interrupt_once
    # Two volumes in progress (one per call slot): the two running when Ctrl-C comes.
    report = run(config, fake_ceph, observer=recorder, concurrency=2, volumes_per_slot=1)

    assert report.interrupted and report.result == "partial"
    outcomes = by_name(report)
    moved = [n for n in names if outcomes[n].action == Action.DEMOTED_PROMOTED]
    untouched = [n for n in names if outcomes[n].action == Action.NOT_STARTED]
    assert len(moved) == 2 and len(untouched) == 8  # the two running ones finished
    assert all(primary_on(primary, n) for n in untouched)
    assert all(primary_on(secondary, n) for n in moved)
    assert list(journal_lines(config.state_dir))[-1]["interrupted"] is True
    assert read_state(config.state_dir).active_backend == "secondary"


# ---- the lock ----------------------------------------------------------------------------------
def test_lock__a_second_failover_is_refused_naming_the_first(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    replicated(primary, secondary, ["s-1"])
    holder = json.dumps(
        {
            "user": "alice",
            "host": "ops-host-2",
            "pid": 4242,
            "since": "2026-11-25T03:00:00",
            "run": "r-1",
            "what": "failover to secondary",
        }
    )
    secondary.lock(LOCK_NAME, "r-1", holder, 30)

    with pytest.raises(LockedByAnotherRun, match="another failover is running") as caught:
        run(config, fake_ceph)

    assert "alice@ops-host-2" in str(caught.value) and "pid 4242" in str(caught.value)
    assert primary_on(primary, "s-1")  # nothing done


def test_lock__of_a_dead_run_on_this_host_is_waited_out(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    replicated(primary, secondary, ["s-1"])
    dead = subprocess.Popen(["true"])
    dead.wait()
    holder = json.dumps(
        {
            "user": "root",
            "host": socket.gethostname(),
            "pid": dead.pid,
            "since": "earlier",
            "run": "r-dead",
            "what": "failover to secondary",
        }
    )
    secondary.lock(LOCK_NAME, "r-dead", holder, 1)  # lapses after 1 s
    waits: list[str] = []
    lock = SwitchLock(Sites("default", secondary, None, None), "r-new", "failover to secondary")

    lock.acquire(waits.append)
    lock.release()

    assert waits and "dead run" in waits[0]


def test_lock__released_at_the_end_so_the_next_run_may_start(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    replicated(primary, secondary, ["s-1"])
    run(config, fake_ceph)
    assert fake_ceph.sites["secondary"].locks == {}
    assert fake_ceph.sites["default"].locks == {}


def test_lock__a_failback_started_while_a_failover_runs_is_refused(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    """Opposite targets: each run locks both sites, so the second is refused whichever it is."""
    replicated(primary, secondary, ["s-1"])
    away = connect_sites(config, State(), "secondary", fake_ceph.connect, CONNECT_TIMEOUT)
    home = connect_failback_sites(
        config, State(active_backend="secondary"), fake_ceph.connect, CONNECT_TIMEOUT
    )
    going = SwitchLock(away, "r-1", "failover to secondary")
    going.acquire()
    try:
        with pytest.raises(RbdfailError, match="another failover is running: failover to"):
            SwitchLock(home, "r-2", "failback to default").acquire()
        for site in ("default", "secondary"):
            assert fake_ceph.sites[site].locks[LOCK_NAME].cookie == "r-1"
    finally:
        going.release()
    coming = SwitchLock(home, "r-3", "failback to default")
    coming.acquire()  # free again once the first has ended
    coming.release()


def test_lock__a_source_whose_lock_times_out_is_gone_on_without__the_target_still_locked(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    replicated(primary, secondary, ["s-1"])
    fake_ceph.faults[("default", "lock", LOCK_NAME)] = OperationTimedOut(
        "no answer", site="default"
    )
    sites = connect_sites(config, State(), "secondary", fake_ceph.connect, 1)
    said: list[str] = []
    lock = SwitchLock(sites, "r-1", "failover to secondary")
    lock.acquire(said.append)
    try:
        assert said == [
            "default: its lock could not be taken (no answer); going on with the target's only"
        ]
        assert LOCK_NAME in fake_ceph.sites["secondary"].locks
    finally:
        lock.release()


def test_lock__a_source_lost_in_the_run_is_left_to_its_lapse_not_waited_on(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    replicated(primary, secondary, ["s-1"])
    sites = connect_sites(config, State(), "secondary", fake_ceph.connect, 1)
    lock = SwitchLock(sites, "r-1", "failover to secondary")
    lock.acquire()
    fake_ceph.freeze("default")
    lock.release(source_lost=True)
    assert fake_ceph.sites["secondary"].locks == {}
    assert ("default", "unlock") not in fake_ceph.timeouts, "no unlock waited out on it"


# ---- the state dir -------------------------------------------------------------------------------
def test_state_dir_unusable__refused_before_anything_changes(
    tmp_path: Path,
    config: Config,
    fake_ceph: FakeCeph,
    primary: FakeCluster,
    secondary: FakeCluster,
) -> None:
    replicated(primary, secondary, ["s-1"])
    blocker = tmp_path / "file"
    blocker.write_text("")
    unusable = replace(config, state_dir=blocker / "state")
    calls_before = {site: len(fake_ceph.sites[site].calls) for site in ("default", "secondary")}

    with pytest.raises(RbdfailError, match=r"rbdfail's state|state dir"):
        run(unusable, fake_ceph)

    # Refused before anything changed: no lock taken, no volume touched on either site.
    for site in ("default", "secondary"):
        ops = {op for op, _ in fake_ceph.sites[site].calls[calls_before[site] :]}
        assert not ops & {"lock", "demote", "promote", "mirror_infos", "list_images"}, site
        assert fake_ceph.sites[site].locks == {}
    assert primary_on(primary, "s-1") and not primary_on(secondary, "s-1")


def test_record__non_replicated_previous_status_survives_a_partial_run(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    replicated(primary, secondary, ["s-1", "s-2"])
    primary.create_image("vm-1", 1 << 20)
    write_state(config.state_dir, State(volumes={"vm-1": VolumeRecord("in-use")}))
    fake_ceph.faults[("secondary", "promote", "s-2")] = OperationTimedOut(
        "no answer", site="secondary", image="s-2"
    )

    report = run(config, fake_ceph)

    assert report.result == "partial"
    state = read_state(config.state_dir)
    assert state.volume("vm-1") == VolumeRecord("error", "in-use")
    assert by_name(report)["s-2"].error and "rolled back" in str(by_name(report)["s-2"].error)
    assert state.volume("s-2").status == "error"
    assert os.path.exists(config.state_dir / "journal.jsonl")


# ---- the inventory: volumes only the lost site had ----------------------------------------
def test_source_lost__volumes_only_it_had_are_marked_from_its_last_listing(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    replicated(primary, secondary, ["s-1"])
    primary.create_image("vm-1", 1 << 20)
    primary.create_image("s-unmirrored", 1 << 20)
    sites = connect_sites(config, State(), "secondary", fake_ceph.connect, 1)
    read_for_failover(config, sites)  # a dry run lists the backend: remembered
    fake_ceph.freeze("default")

    report = run(config, fake_ceph)

    outcomes = by_name(report)
    assert outcomes["s-1"].action == Action.FORCE_PROMOTED
    assert outcomes["vm-1"].action == Action.NOT_REPLICATED
    assert outcomes["vm-1"].status == "error" and "listed" in outcomes["vm-1"].detail
    assert outcomes["s-unmirrored"].action == Action.FAILED  # replicated, no copy anywhere
    assert report.plan.inventory_taken_at is not None
    assert read_state(config.state_dir).volume("vm-1") == VolumeRecord("error", "available")


def test_source_lost_and_never_listed__only_the_copies_are_known(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    replicated(primary, secondary, ["s-1"])
    primary.create_image("vm-1", 1 << 20)
    fake_ceph.freeze("default")

    report = run(config, fake_ceph)

    assert [v.name for v in report.volumes] == ["s-1"]
    assert report.plan.inventory_taken_at is None
    assert report.result == "complete"


def test_lock__a_run_paused_past_its_lock_stops_issuing_calls__named__rerun_finishes(
    config: Config,
    fake_ceph: FakeCeph,
    primary: FakeCluster,
    secondary: FakeCluster,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 13 item 5: a host paused (Ctrl-Z, a VM stall) past the lock's lapse must not go
    on with calls another run may be making too, nor write state.json over what a run that
    went meanwhile recorded (seen on the lab: tests/test_chaos_lab.py)."""
    monkeypatch.setattr("rbdfail.switch.lock.PROVABLY_HELD_S", 0.3)
    replicated(primary, secondary, ["s-0", "s-1"])
    recorder = Recorder()

    def pause_after_the_demotion(name: str, step: str) -> None:
        if (name, step) == ("s-1", "demoted"):
            time.sleep(0.5)  # no renewal in between: they come every 10 s

    recorder.on_step = pause_after_the_demotion
    report = run(config, fake_ceph, recorder, concurrency=1, volumes_per_slot=1)

    assert by_name(report)["s-0"].action == Action.DEMOTED_PROMOTED  # before the pause
    outcome = by_name(report)["s-1"]
    assert outcome.action == Action.FAILED and "not renewed" in str(outcome.error)
    assert "s-1" not in calls(fake_ceph, "secondary", "promote")  # no call after the pause
    assert calls(fake_ceph, "default", "promote") == []  # not even a roll-back
    assert not (config.state_dir / "state.json").exists()
    assert report.state_error and "not renewed" in report.state_error
    assert any("state.json not written" in said for said in report.unrecorded)

    monkeypatch.setattr("rbdfail.switch.lock.PROVABLY_HELD_S", 20)
    again = run(config, fake_ceph)
    assert by_name(again)["s-1"].action == Action.DEMOTED_PROMOTED


def test_lock__paused_past_its_lapse_while_another_run_came_and_went__never_taken_again(
    config: Config,
    fake_ceph: FakeCeph,
    primary: FakeCluster,
    secondary: FakeCluster,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run paused (SIGSTOP, a VM stall) past its lock's lapse, while an opposite run took
    the locks, ran and released them: on resuming, its renewal finds the lock free. Taking it
    again would let it go on from a plan made before the other run; it must stop instead."""
    replicated(primary, secondary, ["s-1"])
    away = connect_sites(config, State(), "secondary", fake_ceph.connect, CONNECT_TIMEOUT)
    paused = SwitchLock(away, "r-paused", "failover to secondary")
    paused.acquire()
    try:
        fake_ceph.advance(31)  # its locks lapse while it is stopped
        home = connect_failback_sites(
            config, State(active_backend="secondary"), fake_ceph.connect, CONNECT_TIMEOUT
        )
        other = SwitchLock(home, "r-other", "failback to default")
        other.acquire()
        other.release()
        monkeypatch.setattr("rbdfail.switch.lock.PROVABLY_HELD_S", 0.05)
        time.sleep(0.1)  # not renewed for longer than it is provably held: the pause

        assert paused.renew(away.target) is False
        with pytest.raises(RbdfailError, match="not renewed"):
            paused.check()
        assert fake_ceph.sites["secondary"].locks == {}  # not taken again
        assert paused.renew(away.target) is False  # for good
    finally:
        paused.release()


def test_lock__taken_over_by_another_run__this_one_stops_issuing_calls(
    config: Config,
    fake_ceph: FakeCeph,
    primary: FakeCluster,
    secondary: FakeCluster,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("rbdfail.switch.lock.LOCK_DURATION", 0.3)  # renewed every 0.1 s
    replicated(primary, secondary, ["s-1", "s-2"])
    recorder = Recorder()

    def another_run_takes_the_lock(name: str, step: str) -> None:
        if step == "demoted" and not fake_ceph.faults:
            fake_ceph.faults[("secondary", "lock", LOCK_NAME)] = LockHeld(
                "held", site="secondary", holder='{"run": "the other one"}'
            )
            time.sleep(0.3)  # a renewal finds it

    recorder.on_step = another_run_takes_the_lock
    report = run(config, fake_ceph, recorder, concurrency=1, volumes_per_slot=1)

    assert report.result == "failed"
    errors = [str(v.error) for v in report.volumes]
    assert all("took this run's lock over" in e for e in errors), errors
    assert calls(fake_ceph, "secondary", "promote") == []
