"""Failback on the fake two-site Ceph: after a clean and after a forced failover, the resync
of what split, one that does not finish in time, a kill and the re-run, statuses restored."""

from __future__ import annotations

import json
from typing import Any

import pytest

from rbdfail.config import Config
from rbdfail.errors import CephError, ImageNotFound, OperationTimedOut, TargetUnreachable
from rbdfail.state import Journal, State, VolumeRecord, read_state, write_state
from rbdfail.switch.history import forced_on
from rbdfail.switch.model import Action, Operation, Plan, SwitchReport
from tests.fakeceph import FakeCeph, FakeCluster
from tests.helpers import Recorder, by_name, calls, eventually, primary_on, replicated, run, switch


def back(
    config: Config, world: FakeCeph, resync: tuple[str, ...] = (), **overrides: Any
) -> SwitchReport:
    """One failback to `default`."""
    overrides = {"resync_timeout": 5.0, **overrides}
    return switch(config, world, Operation.FAILBACK, resync=resync, **overrides)


def forced_failover(config: Config, world: FakeCeph, names: list[str]) -> None:
    world.freeze("default")
    report = run(config, world)
    world.thaw("default")
    assert {by_name(report)[n].action for n in names} == {Action.FORCE_PROMOTED}


def test_failback__after_a_clean_failover__switched_home_with_the_writes_made_away(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    names = ["s-1", "j-1"]
    replicated(primary, secondary, names)
    primary.create_image("vm-1", 1 << 20)
    write_state(config.state_dir, State(volumes={"vm-1": VolumeRecord("in-use")}))
    assert run(config, fake_ceph).result == "complete"
    for name in names:
        secondary.write(name, 0, f"written on secondary: {name}".encode())
    # Failing back within the replication delay of the failover would race the secondary's
    # promotion reaching default (so it would on Ceph): let it replicate, as status shows.
    eventually(lambda: all(primary.read(n, 0, 9) == b"written o" for n in names), 2)

    report = back(config, fake_ceph)

    assert report.result == "complete" and report.plan.operation == "failback"
    outcomes = by_name(report)
    for name in names:
        assert outcomes[name].action == Action.DEMOTED_PROMOTED
        assert primary_on(primary, name) and not primary_on(secondary, name)
        data = f"written on secondary: {name}".encode()
        assert primary.read(name, 0, len(data)) == data
    assert calls(fake_ceph, "default", "resync") == []  # no resync after a clean failover
    assert outcomes["vm-1"].action == Action.RESTORED
    state = read_state(config.state_dir)
    assert state.active_backend == "default"
    assert state.volume("vm-1") == VolumeRecord("in-use")


def test_failback__after_a_forced_failover__the_split_copy_is_resynced_then_switched(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    names = ["s-1", "s-2"]
    replicated(primary, secondary, names)
    forced_failover(config, fake_ceph, names)
    for name in names:
        secondary.write(name, 0, b"kept: written on secondary")
        primary.write(name, 0, b"lost: written on the stale primary")  # split brain

    report = back(config, fake_ceph)

    assert report.result == "complete", report.volumes
    assert {v.plan for v in report.plan.volumes} == {Plan.RESYNC}
    for name in names:
        assert by_name(report)[name].action == Action.RESYNCED_PROMOTED
        assert primary_on(primary, name) and not primary_on(secondary, name)
        assert primary.read(name, 0, 26) == b"kept: written on secondary"
    assert sorted(calls(fake_ceph, "default", "resync")) == names


def test_failback__split_brain_not_journaled_as_forced_is_only_resynced_when_named(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    replicated(primary, secondary, ["s-1", "s-2"])
    for name in ("s-1", "s-2"):
        secondary.promote(name, force=True)  # by hand, outside rbdfail: no journal line
    write_state(config.state_dir, State(active_backend="secondary"))

    report = back(config, fake_ceph, resync=("s-2",))

    outcomes = by_name(report)
    assert outcomes["s-1"].action == Action.FAILED and "--resync" in str(outcomes["s-1"].error)
    assert primary_on(secondary, "s-1")  # untouched
    assert outcomes["s-2"].action == Action.RESYNCED_PROMOTED
    assert calls(fake_ceph, "default", "resync") == ["s-2"]
    assert report.result == "partial"


def test_failback__a_resync_that_does_not_finish_in_time_leaves_it_primary_away(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    replicated(primary, secondary, ["s-1"])
    forced_failover(config, fake_ceph, ["s-1"])
    fake_ceph.replication_delay = 3600  # the re-copy never completes

    report = back(config, fake_ceph, resync_timeout=0.5)

    outcome = by_name(report)["s-1"]
    assert outcome.action == Action.FAILED
    assert (
        outcome.error
        and "resync" in outcome.error
        and "still primary on secondary" in (outcome.error)
    )
    assert primary_on(secondary, "s-1")  # never primary nowhere
    assert report.result == "failed"
    assert read_state(config.state_dir).active_backend == "secondary"


class Killed(BaseException):
    """Stands for SIGKILL."""


def test_failback__kill_in_the_middle_then_rerun_completes_without_repeating(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    names = [f"s-{i}" for i in range(4)]
    replicated(primary, secondary, names)
    forced_failover(config, fake_ceph, names)
    fake_ceph.faults[("default", "promote", "s-2")] = Killed()

    with pytest.raises(Killed):
        back(config, fake_ceph, concurrency=1, volumes_per_slot=1)  # killed at a known point
    resyncs_before = calls(fake_ceph, "default", "resync")
    assert resyncs_before == ["s-0", "s-1", "s-2"]

    del fake_ceph.faults[("default", "promote", "s-2")]
    report = back(config, fake_ceph, concurrency=1)

    plans = {v.name: v.plan for v in report.plan.volumes}
    assert plans == {
        "s-0": Plan.NOTHING,
        "s-1": Plan.NOTHING,
        "s-2": Plan.PROMOTE,
        "s-3": Plan.RESYNC,
    }
    assert calls(fake_ceph, "default", "resync") == [*resyncs_before, "s-3"]  # none twice
    assert report.result == "complete" and report.plan.resumes is not None
    assert all(primary_on(primary, n) and not primary_on(secondary, n) for n in names)


def test_failback__home_unreachable__refused_and_nothing_touched(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    replicated(primary, secondary, ["s-1"])
    run(config, fake_ceph)
    fake_ceph.freeze("default")
    with pytest.raises(TargetUnreachable, match="cannot fail back") as caught:
        back(config, fake_ceph)
    assert "nothing was changed" in (caught.value.hint or "")
    fake_ceph.thaw("default")
    assert primary_on(secondary, "s-1")


def test_failback__twice_in_a_row_after_forced_failovers(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    replicated(primary, secondary, ["s-1"])
    for round_ in range(2):
        forced_failover(config, fake_ceph, ["s-1"])
        secondary.write("s-1", 0, f"round {round_}".encode())
        report = back(config, fake_ceph)
        assert by_name(report)["s-1"].action == Action.RESYNCED_PROMOTED, round_
        assert primary.read("s-1", 0, 7) == f"round {round_}".encode()
    assert calls(fake_ceph, "default", "resync") == ["s-1", "s-1"]


# ---- no newest write lost (issue 13) ------------------------------------------------------
def test_failback__active_site_unreachable__a_split_copy_is_never_taken_as_home(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    """Item 1: default's copy of a forced volume is a stale primary; with the secondary lost,
    'primary here already' would silently abandon the writes made there since."""
    replicated(primary, secondary, ["s-1", "s-2"])
    forced_failover(config, fake_ceph, ["s-1"])  # s-2 too: both forced
    secondary.write("s-1", 0, b"newest: written on secondary")
    fake_ceph.freeze("secondary")

    report = back(config, fake_ceph)

    outcomes = by_name(report)
    for name in ("s-1", "s-2"):
        assert outcomes[name].action == Action.FAILED, outcomes[name]
        assert "force-promoted on secondary" in str(outcomes[name].error)
    assert report.result == "failed"
    fake_ceph.thaw("secondary")
    assert primary_on(secondary, "s-1")
    assert secondary.read("s-1", 0, 28) == b"newest: written on secondary"


def test_failback__rerun_after_a_failed_resync__resyncs_again__never_promotes_the_stale_copy(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    """Item 2: the first run demoted default's stale copy, then its resync failed. Ceph would
    promote that copy without force (default demoted it itself) over the secondary's writes."""
    replicated(primary, secondary, ["s-1"])
    forced_failover(config, fake_ceph, ["s-1"])
    secondary.write("s-1", 0, b"kept: written on secondary")
    primary.write("s-1", 0, b"lost: written on the stale primary")
    fake_ceph.faults[("default", "resync", "s-1")] = CephError("resync refused", site="default")

    first = back(config, fake_ceph)

    assert by_name(first)["s-1"].action == Action.FAILED
    assert not primary_on(primary, "s-1") and primary_on(secondary, "s-1")  # demoted stale copy
    fake_ceph.faults.clear()

    again = back(config, fake_ceph)

    assert [v.plan for v in again.plan.volumes] == [Plan.RESYNC]
    assert by_name(again)["s-1"].action == Action.RESYNCED_PROMOTED
    assert primary.read("s-1", 0, 26) == b"kept: written on secondary"


def test_failback__a_resync_request_that_times_out__asked_again__completes(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    """Seen on the lab after a source lost mid-run came back: a resync request timed out while
    the copy's lock changed hands, and went through when asked again."""
    replicated(primary, secondary, ["s-1"])
    forced_failover(config, fake_ceph, ["s-1"])
    fake_ceph.faults = OnceEach(
        {("default", "resync", "s-1"): OperationTimedOut("error to resync image", site="default")}
    )

    report = back(config, fake_ceph)

    assert by_name(report)["s-1"].action == Action.RESYNCED_PROMOTED, report.volumes
    assert primary_on(primary, "s-1") and not primary_on(secondary, "s-1")
    assert fake_ceph.faults == {}  # the timeout struck: the request went through when asked again


def test_failback__a_resync_request_that_timed_out_but_went_through__the_copy_gone__completes(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    """Seen on the lab at 200 volumes: the request timed out, yet rbd-mirror took it and removed
    the copy to re-copy it, so asking again found no image (33 volumes failed that way)."""
    replicated(primary, secondary, ["s-1"])
    forced_failover(config, fake_ceph, ["s-1"])
    asked = ("default", "resync", "s-1")
    fake_ceph.lost_answers.add(asked)  # the first request is taken, its answer lost
    fake_ceph.faults = FromTheSecondCall(
        {asked: ImageNotFound("image not found", site="default", image="s-1")}
    )

    report = back(config, fake_ceph)

    assert by_name(report)["s-1"].action == Action.RESYNCED_PROMOTED, report.volumes
    assert primary_on(primary, "s-1") and not primary_on(secondary, "s-1")
    assert calls(fake_ceph, "default", "resync") == ["s-1"], "the second try raised first"
    lines = [json.loads(line) for line in (config.state_dir / "journal.jsonl").open()]
    events = [line["event"] for line in lines if line.get("volume") == "s-1"]
    assert events.count("resync-asked-again") == 1 and "resync-under-way" in events


def test_failback__a_copy_removed_by_hand_before_its_resync__named__still_primary_away(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    """A "not found" from the request is taken as a re-copy under way (above); a copy that does
    not come back is named at the resync timeout, with both readings, and the volume stays
    primary where it serves."""
    replicated(primary, secondary, ["s-1"])
    forced_failover(config, fake_ceph, ["s-1"])
    gone = ImageNotFound("image not found", site="default", image="s-1")
    fake_ceph.faults[("default", "resync", "s-1")] = gone
    fake_ceph.faults[("default", "mirror_status", "s-1")] = gone

    report = back(config, fake_ceph, resync_timeout=0.5)

    outcome = by_name(report)["s-1"]
    assert outcome.action == Action.FAILED, report.volumes
    assert "did not finish within 0.5s" in str(outcome.error), outcome.error
    assert "not found: being re-copied, or removed" in str(outcome.error), outcome.error
    assert primary_on(secondary, "s-1") and calls(fake_ceph, "default", "promote") == []


class FromTheSecondCall(dict[tuple[str, str, str], BaseException]):
    """Faults that strike every call but the first of their operation."""

    def __init__(self, faults: dict[tuple[str, str, str], BaseException]) -> None:
        super().__init__(faults)
        self.called: set[tuple[str, str, str]] = set()

    def get(  # type: ignore[override]
        self, key: tuple[str, str, str], default: BaseException | None = None
    ) -> BaseException | None:
        if key not in self.called:
            self.called.add(key)
            return default
        return super().get(key, default)


class OnceEach(dict[tuple[str, str, str], BaseException]):
    """Faults that each strike once."""

    def get(  # type: ignore[override]
        self, key: tuple[str, str, str], default: BaseException | None = None
    ) -> BaseException | None:
        return self.pop(key, default)


def test_failback__source_lost_mid_run__a_copy_not_resynced_yet_is_not_forced(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    replicated(primary, secondary, ["s-1"])
    forced_failover(config, fake_ceph, ["s-1"])
    fake_ceph.faults[("secondary", "mirror_infos", "")] = OperationTimedOut(
        "no answer", site="secondary"
    )  # answers the connect, then is lost while the plan reads it

    report = back(config, fake_ceph)

    outcome = by_name(report)["s-1"]
    assert outcome.action == Action.FAILED and "force-promoted on secondary" in str(outcome.error)
    assert calls(fake_ceph, "default", "promote") == []


def test_failback__a_volume_only_on_the_active_site_is_named__the_run_not_complete(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    """Issue 13 item 7: one created on the secondary during the outage was left out, and the
    run said `complete`."""
    replicated(primary, secondary, ["s-1"])
    assert run(config, fake_ceph).result == "complete"
    secondary.create_image("s-new", 1 << 20)  # created during the outage, never mirrored

    report = back(config, fake_ceph)

    outcomes = by_name(report)
    assert outcomes["s-1"].action == Action.DEMOTED_PROMOTED
    assert outcomes["s-new"].action == Action.FAILED
    assert "exists only on secondary" in str(outcomes["s-new"].error)
    assert report.result == "partial"


def test_failover_right_after_a_failback__waits_for_the_copy_to_replay__no_write_dropped(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    """Issue 13 item 10: the secondary's copy was demoted by the failback itself, so Ceph
    promotes it without force before it has replayed default's promotion and writes."""
    replicated(primary, secondary, ["s-1"])
    assert run(config, fake_ceph).result == "complete"
    eventually(lambda: not primary.mirror_info("s-1").primary, 2)
    fake_ceph.replication_delay = 0.5  # slow enough for the race to show
    assert back(config, fake_ceph).result == "complete"
    primary.write("s-1", 0, b"written on default after the failback")

    report = run(config, fake_ceph)

    assert by_name(report)["s-1"].action == Action.DEMOTED_PROMOTED
    assert secondary.read("s-1", 0, 37) == b"written on default after the failback"


def test_history__a_forced_promote_journaled_late_counts_as_forced(config: Config) -> None:
    """A volume given up on mid-run whose forced promote ended after the report (a late step,
    seen on the lab in the chaos suite) split its history all the same: failback resyncs it."""
    journal = Journal(config.state_dir, "r-1")
    journal.write("step", volume="s-1", step="force-promote", site="secondary")
    journal.write("given-up", volume="s-1", last_step="force-promote", after_s=55.0)
    journal.write("late-step", volume="s-1", step="force-promoted", site="secondary")

    assert forced_on(config.state_dir, "secondary", "default") == {"s-1": False}


def demoted_then_forced(
    config: Config, world: FakeCeph, primary: FakeCluster, names: list[str]
) -> SwitchReport:
    """Issue 13 item 9's case: each volume demoted on default, then default lost before the
    demotion reached the secondary: the promotes wait, the roll-back finds default lost, each
    volume is forced (journal: `demoted` on default, then `force-promoted` on secondary)."""
    world.replication_delay = 3600  # no demotion arrives
    recorder = Recorder()
    demoted: set[str] = set()

    def on_step(name: str, step: str) -> None:
        if step == "demoted":
            demoted.add(name)
            if demoted == set(names):
                world.freeze("default")

    recorder.on_step = on_step
    report = run(config, world, recorder, volume_timeout=0.5)
    world.thaw("default")
    world.advance(31)  # the run's lock on default, left to lapse once default was lost
    world.replication_delay = 0.05
    for name in names:
        assert by_name(report)[name].action == Action.FORCE_PROMOTED, report.volumes
        assert not primary_on(primary, name)  # demoted: no split brain of the classic kind
    return report


def test_failback__demoted_then_forced__ceph_says_split_brain__resynced_not_switched(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    """Item 9, as measured on the lab (both modes): default's demoted copy, once back, is
    reported `split-brain` and replays nothing of the secondary. The journal records the
    forced promote: the failback resyncs it, never demote+promote."""
    names = ["s-1", "j-1"]
    replicated(primary, secondary, names)
    demoted_then_forced(config, fake_ceph, primary, names)
    for name in names:
        secondary.write(name, 0, b"newest: written on secondary")
    eventually(lambda: primary.mirror_status("j-1").description == "split-brain", 2)
    assert primary.read("j-1", 0, 6) != b"newest"  # a split copy replays nothing

    report = back(config, fake_ceph)

    assert {v.plan for v in report.plan.volumes} == {Plan.RESYNC}, report.plan.volumes
    assert report.result == "complete", report.volumes
    for name in names:
        assert by_name(report)[name].action == Action.RESYNCED_PROMOTED
        assert primary.read(name, 0, 28) == b"newest: written on secondary"


def test_failback__demoted_then_forced__no_journal__ceph_s_split_brain_is_enough(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    """Without the journal's word (a state dir lost, a forced promote by hand), the failback
    planned demote+promote from the sites: in journal mode Ceph promotes the split copy at
    once, without the secondary's writes (measured on the lab); in snapshot mode never. It
    plans a resync from Ceph's own `split-brain` now."""
    names = ["s-1", "j-1"]
    replicated(primary, secondary, names)
    demoted_then_forced(config, fake_ceph, primary, names)
    (config.state_dir / "journal.jsonl").unlink()
    for name in names:
        secondary.write(name, 0, b"newest: written on secondary")
    eventually(lambda: primary.mirror_status("j-1").description == "split-brain", 2)

    report = back(config, fake_ceph)

    plans = {v.name: v for v in report.plan.volumes}
    assert {v.plan for v in plans.values()} == {Plan.RESYNC}
    assert "split-brain here (Ceph says" in plans["j-1"].reason
    assert report.result == "complete", report.volumes
    for name in names:
        assert primary.read(name, 0, 28) == b"newest: written on secondary"


def test_failback__split_copy_here_and_the_source_lost__not_forced(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    replicated(primary, secondary, ["j-1"])
    demoted_then_forced(config, fake_ceph, primary, ["j-1"])
    (config.state_dir / "journal.jsonl").unlink()
    eventually(lambda: primary.mirror_status("j-1").description == "split-brain", 2)
    fake_ceph.freeze("secondary")

    report = back(config, fake_ceph)

    outcome = by_name(report)["j-1"]
    assert outcome.action == Action.FAILED and "split-brain here" in str(outcome.error)
    assert calls(fake_ceph, "default", "promote") == []


def test_failover_after_a_failback__journal_copy_not_replayed__rolled_back_not_promoted(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    """Issue 28 item 1: the secondary's journal copy was demoted by the failback itself and
    its replay has not resumed: Ceph would promote it without force at once, without the write
    made at home. The switch waits for the proof within the volume's budget, then rolls back."""
    replicated(primary, secondary, ["j-1"])
    assert run(config, fake_ceph).result == "complete"
    eventually(lambda: not primary.mirror_info("j-1").primary, 2)
    assert back(config, fake_ceph).result == "complete"
    fake_ceph.sites["secondary"].replay_paused = True
    primary.write("j-1", 0, b"written on default after the failback")

    report = run(config, fake_ceph, volume_timeout=1.0)

    outcome = by_name(report)["j-1"]
    assert report.result == "failed"  # its only volume: nothing moved
    assert outcome.action == Action.FAILED and "rolled back" in str(outcome.error)
    assert primary_on(primary, "j-1") and not primary_on(secondary, "j-1")
    assert primary.read("j-1", 0, 37) == b"written on default after the failback"
    fake_ceph.sites["secondary"].replay_paused = False


def test_failback_that_moves_no_replicated_volume__leaves_state_as_it_was(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    """Issue 28 item 3: after a forced failover and writes on the secondary, default back and
    the secondary lost, the failback refuses every replicated volume (their newest writes are
    on the secondary); it must not call default active nor restore the unreplicated volumes."""
    names = ["s-1", "j-1"]
    replicated(primary, secondary, names)
    primary.create_image("vm-1", 1 << 20)
    write_state(config.state_dir, State(volumes={"vm-1": VolumeRecord("in-use")}))
    forced_failover(config, fake_ceph, names)
    for name in names:
        secondary.write(name, 0, b"newest: written on secondary")
    before = read_state(config.state_dir)
    assert before.active_backend == "secondary"
    fake_ceph.freeze("secondary")

    report = back(config, fake_ceph)

    outcomes = by_name(report)
    assert {outcomes[n].action for n in names} == {Action.FAILED}
    assert report.result == "failed"
    assert report.active_backend == "secondary"
    assert read_state(config.state_dir) == before
    assert outcomes["vm-1"].status == before.volume("vm-1").status


def test_failback__a_late_demote_lands_before_the_stale_copy_s_own__resynced_not_failed(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    """Issue 28 item 2: a demote left running on a lost source completes once it is back, so
    the copy the failback found primary is not primary by the time it demotes it: Ceph answers
    EINVAL. Never demote what is not primary: the copy is read again and resynced."""
    names = ["s-1", "j-1"]
    replicated(primary, secondary, names)
    forced_failover(config, fake_ceph, names)
    for name in names:
        secondary.write(name, 0, b"newest: written on secondary")
    recorder = Recorder()

    def late_demote(name: str, step: str) -> None:
        if step == "demote-stale" and primary_on(primary, name):
            primary.demote(name)  # the earlier run's demote, completing late

    recorder.on_step = late_demote

    report = back(config, fake_ceph, observer=recorder)

    assert report.result == "complete", report.volumes
    for name in names:
        assert by_name(report)[name].action == Action.RESYNCED_PROMOTED
        assert primary_on(primary, name) and not primary_on(secondary, name)
        assert primary.read(name, 0, 28) == b"newest: written on secondary"
