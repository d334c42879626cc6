"""rbdfail status on the fake: primary site, lag, split brain, an unreachable site, the state,
and the Prometheus file."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from rbdfail.check import FAIL, run_checks
from rbdfail.cli import main
from rbdfail.cluster import ImageStatus, ImageUser, MirrorMode, ReplayState
from rbdfail.config import Config
from rbdfail.metrics import write_textfile
from rbdfail.state import STATE_FILE, Journal, State, read_state
from rbdfail.status import StatusReport, gather
from tests.fakeceph import FakeCeph, FakeCluster
from tests.helpers import eventually


@pytest.fixture
def sites(primary: FakeCluster, secondary: FakeCluster) -> tuple[FakeCluster, FakeCluster]:
    return primary, secondary


def status(config: Config, world: FakeCeph, state: State | None = None) -> StatusReport:
    return gather(config, state or State(), world.connect)


def mirrored(primary: FakeCluster, secondary: FakeCluster, name: str, mode: MirrorMode) -> None:
    primary.create_image(name, 1 << 20)
    primary.enable_mirroring(name, mode)
    eventually(lambda: name in secondary.list_images(), 2)


def test_status__healthy(config: Config, fake_ceph: FakeCeph, sites) -> None:
    primary, secondary = sites
    mirrored(primary, secondary, "s-1", MirrorMode.SNAPSHOT)
    mirrored(primary, secondary, "j-1", MirrorMode.JOURNAL)
    primary.create_image("plain-1", 1 << 20)

    report = status(config, fake_ceph)

    assert report.problems == []
    rows = {v.name: v.to_json() for v in report.volumes}
    assert {n: r["primary_site"] for n, r in rows.items()} == {
        "j-1": "default",
        "plain-1": "default",
        "s-1": "default",
    }
    assert rows["s-1"]["sites"]["secondary"]["state"] == "replaying"
    assert rows["s-1"]["sites"]["default"]["description"] == "local image is primary"
    assert (rows["s-1"]["lag_seconds"], rows["j-1"]["entries_behind"]) == (0.0, 0)
    assert rows["plain-1"]["sites"]["secondary"]["state"] == "absent"
    assert rows["plain-1"]["status"] == "available"
    json.dumps(report.to_json())  # the document runbooks read is plain JSON


def test_status__lag_while_writes_have_not_reached_the_copy(
    config: Config, fake_ceph: FakeCeph, sites
) -> None:
    primary, secondary = sites
    mirrored(primary, secondary, "s-1", MirrorMode.SNAPSHOT)
    mirrored(primary, secondary, "j-1", MirrorMode.JOURNAL)
    fake_ceph.replication_delay = 60
    fake_ceph.advance(1.1)  # the snapshot timestamps count whole seconds
    for _ in range(3):
        primary.write("j-1", 0, b"x")
    primary.write("s-1", 0, b"x")

    rows = {v.name: v for v in status(config, fake_ceph).volumes}

    assert rows["j-1"].entries_behind == 3
    assert rows["s-1"].lag_seconds is not None and rows["s-1"].lag_seconds >= 1


def test_status__forced_promote_shows_split_brain(
    config: Config, fake_ceph: FakeCeph, sites
) -> None:
    primary, secondary = sites
    mirrored(primary, secondary, "s-1", MirrorMode.SNAPSHOT)
    secondary.promote("s-1", force=True)
    report = status(config, fake_ceph)
    assert report.volumes[0].primary_site == "split-brain"
    assert "volume s-1: primary: split-brain" in report.problems


def test_status__a_demoted_copy_called_split_brain_after_a_clean_switch__resync_named(
    config: Config, fake_ceph: FakeCeph, sites
) -> None:
    """Ceph's rbd-mirror can report the demoted journal copy split-brain after a clean switch
    (docs/design/replay-proofs.md): only one site is primary, and the copy needs a
    resync, which status names with the site to run it on."""
    primary, secondary = sites
    mirrored(primary, secondary, "j-1", MirrorMode.JOURNAL)
    primary.demote("j-1")
    fake_ceph.advance(1)
    secondary.promote("j-1")
    fake_ceph.sites["default"].images["j-1"].split_brain = True

    report = status(config, fake_ceph)

    assert report.volumes[0].primary_site == "secondary"
    problems = [p for p in report.problems if p.startswith("volume j-1: ")]
    assert problems[0] == "volume j-1: default: error: split-brain"
    assert "resync it on default (`rbd mirror image resync`)" in problems[1]
    assert "once secondary is known to hold the newest writes" in problems[1]
    # Split-brain, it never replays: the resync is what to do, not waiting for its replay.
    assert not [p for p in problems if "replayed nothing" in p]


def test_status__a_journal_copy_whose_replay_has_not_resumed_after_a_switch__named(
    config: Config, fake_ceph: FakeCeph, sites
) -> None:
    """Issue 28: a journal copy demoted by its own site that has replayed nothing of the new
    primary since is one a switch back must wait for (Ceph alone would promote it without the
    primary's writes): status says so, naming the site, until its replay resumes."""
    primary, secondary = sites
    mirrored(primary, secondary, "j-1", MirrorMode.JOURNAL)
    primary.demote("j-1")
    fake_ceph.advance(1)
    fake_ceph.sites["default"].replay_paused = True  # default's rbd-mirror replays nothing
    secondary.promote("j-1")
    fake_ceph.advance(1)

    report = status(config, fake_ceph)

    (volume,) = report.volumes
    assert volume.primary_site == "secondary"
    assert volume.to_json()["sites"]["default"]["replayed_since_demotion"] is False
    assert volume.to_json()["sites"]["secondary"]["replayed_since_demotion"] is None
    assert (
        "volume j-1: default: replayed nothing of secondary since default demoted it: a switch "
        "to default now waits for it, then rolls back" in " ".join(report.problems)
    )
    fake_ceph.sites["default"].replay_paused = False
    fake_ceph.advance(1)
    resumed = status(config, fake_ceph)
    assert resumed.volumes[0].to_json()["sites"]["default"]["replayed_since_demotion"] is True
    assert not [p for p in resumed.problems if "replayed nothing" in p]


def test_status__demoted_everywhere_is_primary_nowhere(
    config: Config, fake_ceph: FakeCeph, sites
) -> None:
    primary, secondary = sites
    mirrored(primary, secondary, "s-1", MirrorMode.SNAPSHOT)
    primary.demote("s-1")
    assert status(config, fake_ceph).volumes[0].primary_site == "none"


def test_status__frozen_site_costs_one_timeout_and_the_other_is_shown(
    config: Config, fake_ceph: FakeCeph, sites
) -> None:
    primary, secondary = sites
    mirrored(primary, secondary, "s-1", MirrorMode.SNAPSHOT)
    primary.create_image("plain-1", 1 << 20)
    fake_ceph.freeze("secondary")

    started = time.monotonic()
    report = status(config, fake_ceph)
    elapsed = time.monotonic() - started

    assert elapsed < 3 * config.replication_connect_timeout
    assert report.sites["secondary"].reachable is False
    timeout = config.replication_connect_timeout
    assert f"site secondary: unreachable: no answer from the monitors within {timeout:g}s" in (
        report.problems
    )
    rows = {v.name: v for v in report.volumes}
    assert rows["s-1"].primary_site == "default"  # known from the reachable site
    assert rows["s-1"].sites["default"].state == "stopped"
    assert rows["plain-1"].primary_site == "default"


def test_status__primary_frozen_the_copy_says_primary_is_unknown(
    config: Config, fake_ceph: FakeCeph, sites
) -> None:
    primary, secondary = sites
    mirrored(primary, secondary, "s-1", MirrorMode.SNAPSHOT)
    fake_ceph.freeze("default")
    report = status(config, fake_ceph)
    assert report.volumes[0].primary_site == "unknown"
    assert report.volumes[0].sites["secondary"].primary is False


def test_status__active_backend_disagreeing_with_the_images_is_said(
    config: Config, fake_ceph: FakeCeph, sites, tmp_path: Path
) -> None:
    primary, secondary = sites
    mirrored(primary, secondary, "s-1", MirrorMode.SNAPSHOT)
    (tmp_path / STATE_FILE).write_text(
        json.dumps(
            {
                "active_backend": "secondary",
                "volumes": {"s-1": {"status": "available"}},
            }
        )
    )
    report = status(config, fake_ceph, read_state(tmp_path))
    assert report.problems == [
        "the state dir says 'secondary' is active, but the replicated volumes are primary "
        "on 'default'"
    ]


def test_status__state_of_a_volume_set_to_error_keeps_its_previous_status(
    config: Config, fake_ceph: FakeCeph, sites, tmp_path: Path
) -> None:
    primary, _ = sites
    primary.create_image("plain-1", 1 << 20)
    (tmp_path / STATE_FILE).write_text(
        json.dumps(
            {
                "volumes": {"plain-1": {"status": "error", "previous_status": "in-use"}},
            }
        )
    )
    row = status(config, fake_ceph, read_state(tmp_path)).volumes[0].to_json()
    assert (row["status"], row["previous_status"]) == ("error", "in-use")


def test_read_state__without_a_failover_default_is_active(tmp_path: Path) -> None:
    assert read_state(tmp_path) == State("default", {})


def test_status__a_stopped_rbd_mirror_is_reported_from_the_statuses_it_stamps(
    config: Config, fake_ceph: FakeCeph, sites
) -> None:
    primary, secondary = sites
    mirrored(primary, secondary, "s-1", MirrorMode.SNAPSHOT)
    assert status(config, fake_ceph).to_json()["sites"]["secondary"]["rbd_mirror"] == "up"
    fake_ceph.sites["secondary"].mirror_daemon_up = False
    report = status(config, fake_ceph)
    assert report.to_json()["sites"]["secondary"]["rbd_mirror"] == "down"
    assert any(p.startswith("site secondary: rbd-mirror is down") for p in report.problems)


def test_status__a_daemon_taken_out_not_back_after_its_entry_lapsed__said_with_what_to_do(
    config: Config, fake_ceph: FakeCeph, sites
) -> None:
    """Issue 25 item 3: a forced failover blocklisted the secondary's rbd-mirror for 60 s;
    still down once that lapsed, status and check say so and say to restart it there. Before
    the entry lapses the daemon being down is expected and said without it."""
    primary, secondary = sites
    mirrored(primary, secondary, "s-1", MirrorMode.SNAPSHOT)
    fake_ceph.sites["secondary"].mirror_daemon_up = False
    Journal(config.state_dir, "r1").write("daemon-out", site="secondary", expires_s=60)

    fresh = status(config, fake_ceph)
    expected = "the image statuses say its daemon is not running; start it on that site"
    assert f"site secondary: rbd-mirror is down: {expected}" in fresh.problems

    later = gather(config, State(), fake_ceph.connect, now=time.time() + 61)
    (down,) = [p for p in later.problems if "rbd-mirror is down" in p]
    assert "a forced failover blocklisted it at " in down and " for 60s" in down
    assert "restart the rbd-mirror daemon on secondary" in down
    item = {i.name: i for i in run_checks(later, "secondary", None)}["rbd-mirror on secondary"]
    assert item.verdict == FAIL and "restart the rbd-mirror daemon on secondary" in item.reason


def test_status__statuses_no_daemon_has_reported_yet_say_nothing_of_its_health(
    config: Config, fake_ceph: FakeCeph, sites, monkeypatch: pytest.MonkeyPatch
) -> None:
    primary, secondary = sites
    mirrored(primary, secondary, "s-1", MirrorMode.SNAPSHOT)
    not_reported = ImageStatus(ReplayState.UNKNOWN, "status not found", None, False)
    monkeypatch.setattr(FakeCluster, "mirror_statuses", lambda self: {"s-1": not_reported})
    report = status(config, fake_ceph)
    assert report.to_json()["sites"]["default"]["rbd_mirror"] == "unknown"
    assert not any("rbd-mirror is down" in p for p in report.problems)


# ---- status --prometheus: the file node_exporter's textfile collector reads, parsed back
# with prometheus_client's own parser ----
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(path: Path) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(path.read_text())
        for s in family.samples
    }


def test_metrics__lag_split_brain_and_errors_are_series(
    config: Config, fake_ceph: FakeCeph, sites, tmp_path: Path
) -> None:
    primary, secondary = sites
    mirrored(primary, secondary, "s-lag", MirrorMode.SNAPSHOT)
    mirrored(primary, secondary, "j-lag", MirrorMode.JOURNAL)
    mirrored(primary, secondary, "s-split", MirrorMode.SNAPSHOT)
    fake_ceph.replication_delay = 60
    fake_ceph.advance(1.1)  # the snapshot timestamps count whole seconds
    primary.write("s-lag", 0, b"x")
    for _ in range(2):
        primary.write("j-lag", 0, b"x")
    secondary.promote("s-split", force=True)
    out = tmp_path / "rbdfail.prom"

    write_textfile([(config, status(config, fake_ceph))], out, 1700.0)

    got = samples(out)
    assert got[("rbdfail_healthy", frozenset())] == 0
    assert got[("rbdfail_status_timestamp_seconds", frozenset())] == 1700.0
    assert got[("rbdfail_volume_lag_seconds", frozenset({("volume", "s-lag")}))] >= 1
    assert got[("rbdfail_volume_entries_behind", frozenset({("volume", "j-lag")}))] == 2
    split = {("volume", "s-split"), ("primary_site", "split-brain")}
    assert got[("rbdfail_volume_primary_site", frozenset(split))] == 1
    replaying = {("volume", "s-lag"), ("site", "secondary"), ("state", "replaying")}
    assert got[("rbdfail_volume_mirror_state", frozenset(replaying))] == 1
    for site in ("default", "secondary"):
        assert got[("rbdfail_site_reachable", frozenset({("site", site)}))] == 1


def test_metrics__rpo_last_sync_schedule_and_users_per_volume(
    config: Config, fake_ceph: FakeCeph, sites, tmp_path: Path
) -> None:
    primary, secondary = sites
    mirrored(primary, secondary, "s-old", MirrorMode.SNAPSHOT)
    fake_ceph.sites["default"].images["s-old"].users = [ImageUser("client.9", "a", False)]
    fake_ceph.advance(50)
    mirrored(primary, secondary, "s-new", MirrorMode.SNAPSHOT)
    mirrored(primary, secondary, "s-syncing", MirrorMode.SNAPSHOT)
    fake_ceph.sites["secondary"].images["s-syncing"].first_sync_done = False
    out = tmp_path / "rbdfail.prom"
    now = fake_ceph.now()

    report = gather(config, State(), fake_ceph.connect, now=now, with_users=True)
    write_textfile([(config, report)], out, now)

    got = samples(out)
    rpo = {
        v: got.get(("rbdfail_volume_rpo_seconds", frozenset({("volume", v)})))
        for v in ("s-old", "s-new", "s-syncing")
    }
    assert rpo["s-old"] is not None and 49 <= rpo["s-old"] <= 52
    assert rpo["s-new"] is not None and rpo["s-new"] <= 2
    assert rpo["s-syncing"] is None  # unknown is left out, never 0
    synced = got[("rbdfail_volume_last_sync_timestamp_seconds", frozenset({("volume", "s-new")}))]
    assert now - 2 <= synced <= now
    assert got[("rbdfail_volume_users", frozenset({("volume", "s-old")}))] == 1
    assert got[("rbdfail_volume_users", frozenset({("volume", "s-new")}))] == 0
    # The fake's `snap` type asks for no schedule: nothing to judge, no series.
    assert not any(name == "rbdfail_volume_schedule_ok" for name, _ in got)
    worst = report.to_json()["sites"]["secondary"]["worst_rpo"]
    assert worst["volume"] == "s-syncing" and worst["first_sync_done"] is False


def test_metrics__unreachable_site_is_0_and_unknown_figures_are_left_out(
    config: Config, fake_ceph: FakeCeph, sites, tmp_path: Path
) -> None:
    primary, secondary = sites
    mirrored(primary, secondary, "s-1", MirrorMode.SNAPSHOT)
    fake_ceph.freeze("default")
    out = tmp_path / "rbdfail.prom"

    write_textfile([(config, status(config, fake_ceph))], out, 0.0)

    got = samples(out)
    assert got[("rbdfail_site_reachable", frozenset({("site", "default")}))] == 0
    assert got[("rbdfail_site_reachable", frozenset({("site", "secondary")}))] == 1
    primary_unknown = {("volume", "s-1"), ("primary_site", "unknown")}
    assert got[("rbdfail_volume_primary_site", frozenset(primary_unknown))] == 1
    assert ("rbdfail_site_rbd_mirror_up", frozenset({("site", "default")})) not in got


def test_cli__status_prometheus_writes_the_file_beside_the_json(
    config_file: Path, fake_ceph: FakeCeph, sites, tmp_path: Path
) -> None:
    primary, secondary = sites
    mirrored(primary, secondary, "s-1", MirrorMode.SNAPSHOT)
    out = tmp_path / "rbdfail.prom"

    result = CliRunner().invoke(
        main,
        ["-c", str(config_file), "status", "--json", "--prometheus", str(out)],
        obj=fake_ceph.connect,
    )

    assert result.exit_code == 0, result.output
    got = samples(out)
    assert got[("rbdfail_healthy", frozenset())] == 1
    assert got[("rbdfail_active_backend", frozenset({("backend", "default")}))] == 1
    assert not list(tmp_path.glob("rbdfail.prom.*"))  # no temporary file left beside it


def test_cli__status_prometheus_into_a_missing_directory__exit_2_before_any_site_is_read(
    config_file: Path, fake_ceph: FakeCeph, tmp_path: Path
) -> None:
    calls_before = len(fake_ceph.sites["default"].calls)

    result = CliRunner().invoke(
        main,
        ["-c", str(config_file), "status", "--prometheus", str(tmp_path / "no" / "x.prom")],
        obj=fake_ceph.connect,
    )

    assert result.exit_code == 2
    assert "--prometheus" in result.stderr and str(tmp_path / "no") in result.stderr
    assert len(fake_ceph.sites["default"].calls) == calls_before
