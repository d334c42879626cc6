"""`rbdfail failover` as a runbook sees it, on the fake two-site Ceph: confirmation, JSON,
exit codes. The adapter's connect is pointed at the fake; the rados/rbd modules are untouched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from rbdfail import ceph
from rbdfail.cli import main
from rbdfail.cluster import MirrorMode
from rbdfail.config import load_config
from rbdfail.state import read_inventory
from tests.conftest import fake_site
from tests.fakeceph import FakeCeph
from tests.helpers import eventually


@pytest.fixture
def config_file(tmp_path: Path, fake_ceph: FakeCeph, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(ceph, "connect", fake_ceph.connect)
    path = tmp_path / "rbdfail.yaml"
    path.write_text(
        f"""\
backend: {{pool: volumes, conf: /fake/default.conf}}
replication_device: [{{backend_id: secondary, conf: /fake/secondary.conf}}]
replication_connect_timeout: 0.3
volume_timeout: 0.5
volume_types:
  snap: {{replication_enabled: true, mirror_mode: snapshot}}
  plain: {{}}
volumes:
  - {{match: "s-*", type: snap}}
  - {{match: "*", type: plain}}
state_dir: {tmp_path / "state"}
"""
    )
    primary = fake_ceph.connect(fake_site("default"), 1)
    for name in ("s-1", "s-2"):
        primary.create_image(name, 1 << 20)
        primary.enable_mirroring(name, MirrorMode.SNAPSHOT)
    primary.create_image("vm-1", 1 << 20)
    secondary = fake_ceph.connect(fake_site("secondary"), 1)
    eventually(lambda: {"s-1", "s-2"} <= set(secondary.list_images()), 2)
    return path


def failover(config_file: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["-c", str(config_file), "failover", *args])
    return result.exit_code, result.stdout, result.stderr


def primary_on(world: FakeCeph, site: str, name: str) -> bool:
    return world.sites[site].images[name].primary


def test_cli__without_a_terminal_or_yes__refused_with_exit_2_and_nothing_done(
    config_file: Path, fake_ceph: FakeCeph
) -> None:
    calls_before = len(fake_ceph.sites["default"].calls)
    code, _, err = failover(config_file, "--to", "secondary")
    assert code == 2
    assert "--yes" in err
    assert len(fake_ceph.sites["default"].calls) == calls_before  # refused before connecting


def test_cli__dry_run_json_is_the_plan_and_changes_nothing(
    config_file: Path, fake_ceph: FakeCeph
) -> None:
    code, out, _ = failover(config_file, "--to", "secondary", "--dry-run", "--json")
    assert code == 0
    plan = json.loads(out)
    assert plan["dry_run"] is True
    assert {v["name"]: v["plan"] for v in plan["volumes"]} == {
        "s-1": "demote+promote",
        "s-2": "demote+promote",
        "vm-1": "mark-error",
    }
    assert primary_on(fake_ceph, "default", "s-1")
    assert not (config_file.parent / "state" / "state.json").exists()


def test_cli__json_report_and_exit_0_when_complete(config_file: Path, fake_ceph: FakeCeph) -> None:
    code, out, err = failover(config_file, "--to", "secondary", "--yes", "--json")
    assert code == 0, err
    report = json.loads(out)  # stdout holds the JSON document and nothing else
    assert report["target"] == "secondary" and report["result"] == "complete"
    assert report["forced"] is False and isinstance(report["duration_s"], float)
    volumes = {v["name"]: v for v in report["volumes"]}
    assert volumes["s-1"]["action"] == "demoted+promoted"
    assert volumes["vm-1"] == {
        **volumes["vm-1"],
        "action": "not-replicated",
        "status": "error",
        "error": None,
    }
    assert set(volumes["s-1"]) >= {"name", "action", "status", "error", "duration_s"}
    assert "s-1 demoted+promoted" in err  # progress lines on stderr, not a terminal


def test_cli__exit_3_when_some_volume_failed_naming_it(
    config_file: Path, fake_ceph: FakeCeph
) -> None:
    fake_ceph.hangs.add(("secondary", "promote", "s-2"))
    code, out, _ = failover(config_file, "--to", "secondary", "--yes", "--json")
    assert code == 3
    volumes = {v["name"]: v for v in json.loads(out)["volumes"]}
    assert volumes["s-2"]["action"] == "failed" and "timed out" in volumes["s-2"]["error"]
    assert volumes["s-1"]["action"] == "demoted+promoted"


def test_cli__exit_1_when_no_volume_could_move(config_file: Path, fake_ceph: FakeCeph) -> None:
    fake_ceph.replication_delay = 3600  # no demotion ever reaches the secondary
    code, out, _ = failover(config_file, "--to", "secondary", "--yes", "--json")
    assert code == 1
    report = json.loads(out)
    assert report["result"] == "failed"
    assert all(primary_on(fake_ceph, "default", n) for n in ("s-1", "s-2"))  # rolled back


def test_cli__target_unreachable__exit_1_names_it_and_says_nothing_changed(
    config_file: Path, fake_ceph: FakeCeph
) -> None:
    fake_ceph.freeze("secondary")
    code, out, err = failover(config_file, "--to", "secondary", "--yes", "--json")
    assert code == 1 and out == ""
    assert "secondary" in err and "nothing was changed" in err
    assert primary_on(fake_ceph, "default", "s-1")


def test_cli__unknown_target_is_a_usage_error_naming_the_known_ones(config_file: Path) -> None:
    code, _, err = failover(config_file, "--to", "tertiary", "--yes")
    assert code == 2
    assert "secondary" in err


def test_cli__status_before_the_loss_lets_a_forced_failover_mark_the_unreplicated(
    config_file: Path, fake_ceph: FakeCeph
) -> None:
    CliRunner().invoke(main, ["-c", str(config_file), "status", "--json"])
    fake_ceph.freeze("default")
    code, out, _ = failover(config_file, "--to", "secondary", "--yes", "--json")
    assert code == 0
    volumes = {v["name"]: v for v in json.loads(out)["volumes"]}
    assert volumes["s-1"]["action"] == "force-promoted"
    assert volumes["vm-1"]["action"] == "not-replicated" and volumes["vm-1"]["status"] == "error"


def test_cli__failback_after_failover__json_exit_0_and_failover_to_default_is_the_same(
    config_file: Path, fake_ceph: FakeCeph
) -> None:
    assert failover(config_file, "--to", "secondary", "--yes")[0] == 0
    secondary = fake_ceph.connect(fake_site("secondary"), 1)
    secondary.write("s-1", 0, b"away")
    primary = fake_ceph.connect(fake_site("default"), 1)
    eventually(lambda: primary.read("s-1", 0, 4) == b"away", 2)

    result = CliRunner().invoke(main, ["-c", str(config_file), "failback", "--dry-run", "--json"])
    assert result.exit_code == 0
    plan = json.loads(result.stdout)
    assert plan["operation"] == "failback" and plan["target"] == "default"
    assert {v["name"]: v["plan"] for v in plan["volumes"]} == {
        "s-1": "demote+promote",
        "s-2": "demote+promote",
        "vm-1": "restore",
    }

    code, out, _ = failover(config_file, "--to", "default", "--yes", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["operation"] == "failback" and report["active_backend"] == "default"
    volumes = {v["name"]: v for v in report["volumes"]}
    assert volumes["s-1"]["action"] == "demoted+promoted"
    assert volumes["vm-1"]["action"] == "restored" and volumes["vm-1"]["status"] == "available"
    assert primary_on(fake_ceph, "default", "s-1") and primary.read("s-1", 0, 4) == b"away"


def test_cli__after_failover__volumes_and_mirroring_act_on_the_active_site(
    config_file: Path, fake_ceph: FakeCeph
) -> None:
    assert failover(config_file, "--to", "secondary", "--yes")[0] == 0
    secondary = fake_ceph.connect(fake_site("secondary"), 1)
    secondary.create_image("s-new", 1 << 20)  # made where the volumes live now
    primary = fake_ceph.connect(fake_site("default"), 1)

    listed = CliRunner().invoke(main, ["-c", str(config_file), "volumes", "--json"])
    assert listed.exit_code == 0
    assert {v["name"] for v in json.loads(listed.stdout)} == {"s-1", "s-2", "s-new"}

    invoke = ["-c", str(config_file), "enable-mirroring", "s-new", "--json"]
    enabled = CliRunner().invoke(main, invoke)
    assert enabled.exit_code == 0, enabled.output
    assert json.loads(enabled.stdout)["site"] == "secondary"
    assert primary_on(fake_ceph, "secondary", "s-new")
    eventually(lambda: "s-new" in primary.list_images(), 2)  # mirrored back to the backend

    elsewhere = CliRunner().invoke(main, [*invoke[:-2], "vm-1", "--site", "default", "--json"])
    assert json.loads(elsewhere.stdout)["site"] == "default"
    unknown = CliRunner().invoke(main, [*invoke, "--site", "tertiary"])
    assert unknown.exit_code == 2 and "secondary" in unknown.stderr


def test_cli__listing_a_site_that_is_not_active_keeps_the_active_sites_inventory(
    config_file: Path,
) -> None:
    for site in ([], ["--site", "secondary"]):
        listed = CliRunner().invoke(main, ["-c", str(config_file), "volumes", *site])
        assert listed.exit_code == 0
    inventory = read_inventory(load_config(config_file).state_dir)
    assert inventory is not None and inventory.site == "default"
    assert set(inventory.volume_types) == {"s-1", "s-2", "vm-1"}
