"""The source lost: the target's rbd-mirror taken out of the way once, forced promotes all at
once outside the call budget, and a source that dies under slow demotes found by probing it
(docs/design/taking-locks.md)."""

from __future__ import annotations

import json
import time

from rbdfail.config import Config
from rbdfail.state import journal_lines
from rbdfail.switch.model import Action
from tests.fakeceph import DAEMON, FakeCeph, FakeCluster, daemon_address
from tests.helpers import Recorder, by_name, calls, primary_on, replicated, run, volumes


def test_source_lost__the_daemon_is_blocklisted_once__every_copy_forced_without_a_handoff(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    names = [*volumes("s", 20), "j-1"]
    replicated(primary, secondary, names)
    fake_ceph.freeze("default")
    fake_ceph.sites["secondary"].handoff_stalls = True  # stuck on the lost source
    recorder = Recorder()

    started = time.monotonic()
    report = run(config, fake_ceph, recorder, break_locks_after=30)

    assert time.monotonic() - started < 10  # no 30 s grace waited out
    assert report.result == "complete", report.volumes
    assert {v.action for v in report.volumes} == {Action.FORCE_PROMOTED}
    # One address, one entry: none per image, from librbd's breaks.
    assert fake_ceph.sites["secondary"].blocklisted == [daemon_address("secondary")]
    assert calls(fake_ceph, "secondary", "mirror_daemon_addresses") == [f"{len(names)} images"]
    assert not set(calls(fake_ceph, "secondary", "break_image_lock")) - {"j-1"}
    for name in names:
        assert primary_on(secondary, name)
        secondary.write(name, 0, b"after the failover")
        assert "rbd-mirror blocklisted for 60s first" in by_name(report)[name].detail
    assert report.daemon_out is not None and report.daemon_out.error is None
    assert report.daemon_out.clients == {DAEMON: daemon_address("secondary")}
    document = json.loads(json.dumps(report.to_json()))
    assert document["daemon_out"]["addresses"] == [daemon_address("secondary")]
    assert document["daemon_out"]["expires_s"] == 60
    assert report.plan.to_json()["takes_daemon_out_s"] == 60
    out = [line for line in journal_lines(config.state_dir) if line.get("event") == "daemon-out"]
    assert len(out) == 1 and out[0]["addresses"] == [daemon_address("secondary")]


def test_source_lost_without_break_locks__the_daemon_is_never_blocklisted(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    replicated(primary, secondary, ["s-1", "s-2"])
    fake_ceph.freeze("default")

    report = run(config, fake_ceph, break_locks_after=None)

    assert report.result == "complete"
    assert fake_ceph.sites["secondary"].blocklisted == []
    assert calls(fake_ceph, "secondary", "mirror_daemon_addresses") == []
    assert report.daemon_out is None and report.plan.takes_daemon_out_s is None


def test_source_lost__blocklist_refused__said__each_stalled_handoff_taken_instead(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    replicated(primary, secondary, ["s-1", "s-2"])
    fake_ceph.freeze("default")
    fake_ceph.sites["secondary"].handoff_stalls = True
    fake_ceph.sites["secondary"].blocklist_denied = True

    report = run(config, fake_ceph, break_locks_after=0.2)

    assert report.result == "complete"
    assert report.daemon_out is not None and report.daemon_out.error
    assert sorted(calls(fake_ceph, "secondary", "break_image_lock")) == ["s-1", "s-2"]
    assert [e["event"] for e in journal_lines(config.state_dir)].count("daemon-not-out") == 1


def test_source_lost__forced_promotes_all_in_flight_at_once__not_held_to_the_call_budget(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    names = volumes("s", 40)
    replicated(primary, secondary, names)
    fake_ceph.freeze("default")
    fake_ceph.latency["promote"] = 0.3  # the hand-off's latency, not work

    started = time.monotonic()
    report = run(config, fake_ceph, concurrency=4)

    assert report.result == "complete"
    assert fake_ceph.max_in_flight["promote"] == len(names)  # not 4
    assert time.monotonic() - started < 2.5  # 40 / 4 x 0.3 s = 3 s, plus the connect


def test_source_dies_under_slow_demotes__found_by_probing_its_monitors__all_forced_at_once(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    """Its storage dies as the demotes start: each would fail only after the OSD op timeout
    (here 6 s); its monitors' silence says so within the connect timeout."""
    names = volumes("s", 8)
    replicated(primary, secondary, names)
    fake_ceph.frozen_call_s = 6.0
    recorder = Recorder()

    def storage_dies(name: str, step: str) -> None:
        if step == "demote":
            fake_ceph.freeze("default")

    recorder.on_step = storage_dies
    started = time.monotonic()
    report = run(config, fake_ceph, recorder, op_timeout_s=6.0)
    took = time.monotonic() - started

    assert report.result == "complete", report.volumes
    assert {v.action for v in report.volumes} == {Action.FORCE_PROMOTED}
    assert all(primary_on(secondary, n) for n in names)
    assert took < 4, took  # not the 6 s a demote takes to fail
    events = [line["event"] for line in journal_lines(config.state_dir)]
    assert "source-probe-failed" in events and "demote-left-running" in events
    assert report.primary_lost
