"""`rbdfail failover` as a runbook sees it, on the fake two-site Ceph: confirmation, JSON,
exit codes. The CLI is handed the fake's connect; the rados/rbd modules are untouched."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from rbdfail.cli import main
from rbdfail.cluster import MirrorMode
from rbdfail.config import load_config
from rbdfail.state import read_inventory
from tests.conftest import TWO_SITES, fake_site, write_config
from tests.fakeceph import FakeCeph, FakeCluster
from tests.helpers import eventually


@pytest.fixture
def config_with_images(tmp_path: Path, primary: FakeCluster, secondary: FakeCluster) -> Path:
    # Volume budgets under the CLI's 1 s minimum: a hung promote is given up on quickly.
    path = write_config(tmp_path, TWO_SITES.replace("volume_timeout: 5", "volume_timeout: 0.5"))
    for name in ("s-1", "s-2"):
        primary.create_image(name, 1 << 20)
        primary.enable_mirroring(name, MirrorMode.SNAPSHOT)
    primary.create_image("vm-1", 1 << 20)
    eventually(lambda: {"s-1", "s-2"} <= set(secondary.list_images()), 2)
    return path


def rbdfail(world: FakeCeph, config_with_images: Path, *args: str) -> Result:
    """The command line, reaching the fake sites through the connect it is handed."""
    return CliRunner().invoke(main, ["-c", str(config_with_images), *args], obj=world.connect)


def failover(world: FakeCeph, config_with_images: Path, *args: str) -> tuple[int, str, str]:
    result = rbdfail(world, config_with_images, "failover", *args)
    return result.exit_code, result.stdout, result.stderr


def primary_on(world: FakeCeph, site: str, name: str) -> bool:
    return world.sites[site].images[name].primary


def test_cli__without_a_terminal_or_yes__refused_with_exit_2_and_nothing_done(
    config_with_images: Path, fake_ceph: FakeCeph
) -> None:
    calls_before = len(fake_ceph.sites["default"].calls)
    code, _, err = failover(fake_ceph, config_with_images, "--to", "secondary")
    assert code == 2
    assert "--yes" in err
    assert len(fake_ceph.sites["default"].calls) == calls_before  # refused before connecting


def test_cli__dry_run_json_is_the_plan_and_changes_nothing(
    config_with_images: Path, fake_ceph: FakeCeph
) -> None:
    code, out, _ = failover(
        fake_ceph, config_with_images, "--to", "secondary", "--dry-run", "--json"
    )
    assert code == 0
    plan = json.loads(out)
    assert plan["dry_run"] is True
    assert {v["name"]: v["plan"] for v in plan["volumes"]} == {
        "s-1": "demote+promote",
        "s-2": "demote+promote",
        "vm-1": "mark-error",
    }
    assert primary_on(fake_ceph, "default", "s-1")
    assert not (config_with_images.parent / "state" / "state.json").exists()


def test_cli__json_report_and_exit_0_when_complete(
    config_with_images: Path, fake_ceph: FakeCeph
) -> None:
    code, out, err = failover(fake_ceph, config_with_images, "--to", "secondary", "--yes", "--json")
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
    config_with_images: Path, fake_ceph: FakeCeph, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The hard limit allows for a dead site's OSD op timeout (30 s): the fake has none.
    monkeypatch.setattr("rbdfail.switch.model.OSD_OP_FLOOR_S", 1)
    fake_ceph.hangs.add(("secondary", "promote", "s-2"))
    code, out, _ = failover(fake_ceph, config_with_images, "--to", "secondary", "--yes", "--json")
    assert code == 3
    volumes = {v["name"]: v for v in json.loads(out)["volumes"]}
    assert volumes["s-2"]["action"] == "failed" and "given up" in volumes["s-2"]["error"]
    assert volumes["s-1"]["action"] == "demoted+promoted"


def test_cli__exit_1_when_no_volume_could_move(
    config_with_images: Path, fake_ceph: FakeCeph
) -> None:
    fake_ceph.replication_delay = 3600  # no demotion ever reaches the secondary
    code, out, _ = failover(fake_ceph, config_with_images, "--to", "secondary", "--yes", "--json")
    assert code == 1
    report = json.loads(out)
    assert report["result"] == "failed"
    assert all(primary_on(fake_ceph, "default", n) for n in ("s-1", "s-2"))  # rolled back


def test_cli__target_unreachable__exit_5_names_it_and_says_nothing_changed(
    config_with_images: Path, fake_ceph: FakeCeph
) -> None:
    fake_ceph.freeze("secondary")
    code, out, err = failover(fake_ceph, config_with_images, "--to", "secondary", "--yes", "--json")
    assert code == 5 and out == ""
    assert "secondary" in err and "nothing was changed" in err
    assert primary_on(fake_ceph, "default", "s-1")


def test_cli__unknown_target_is_a_usage_error_naming_the_known_ones(
    config_with_images: Path, fake_ceph: FakeCeph
) -> None:
    code, _, err = failover(fake_ceph, config_with_images, "--to", "tertiary", "--yes")
    assert code == 2
    assert "secondary" in err


def test_cli__status_before_the_loss_lets_a_forced_failover_mark_the_unreplicated(
    config_with_images: Path, fake_ceph: FakeCeph
) -> None:
    rbdfail(fake_ceph, config_with_images, "status", "--json")
    fake_ceph.freeze("default")
    code, out, _ = failover(fake_ceph, config_with_images, "--to", "secondary", "--yes", "--json")
    assert code == 0
    volumes = {v["name"]: v for v in json.loads(out)["volumes"]}
    assert volumes["s-1"]["action"] == "force-promoted"
    assert volumes["vm-1"]["action"] == "not-replicated" and volumes["vm-1"]["status"] == "error"
    # Only a force-promoted volume says which point in time its copy serves.
    assert volumes["s-1"]["rpo"]["last_sync"] is not None and "rpo" not in volumes["vm-1"]


def test_cli__forced_text_report_says_each_copys_point_in_time_and_the_worst(
    config_with_images: Path, fake_ceph: FakeCeph
) -> None:
    fake_ceph.freeze("default")

    code, out, _ = failover(fake_ceph, config_with_images, "--to", "secondary", "--yes")

    assert code == 0, out
    text = " ".join(out.replace("│", " ").split())
    assert re.search(r"s-1 force-promoted \S+ [0-9.]+s ~\d+s \(\d\d:\d\d:\d\dZ\)", text), text
    assert re.search(r"worst rpo ~\d+s \(\d\d:\d\d:\d\dZ\) \(s-[12]\)", text), text


def test_cli__failback_after_failover__json_exit_0_and_failover_to_default_is_the_same(
    config_with_images: Path, fake_ceph: FakeCeph
) -> None:
    assert failover(fake_ceph, config_with_images, "--to", "secondary", "--yes")[0] == 0
    secondary = fake_ceph.connect(fake_site("secondary"), 1)
    secondary.write("s-1", 0, b"away")
    primary = fake_ceph.connect(fake_site("default"), 1)
    eventually(lambda: primary.read("s-1", 0, 4) == b"away", 2)

    result = rbdfail(fake_ceph, config_with_images, "failback", "--dry-run", "--json")
    assert result.exit_code == 0
    plan = json.loads(result.stdout)
    assert plan["operation"] == "failback" and plan["target"] == "default"
    assert {v["name"]: v["plan"] for v in plan["volumes"]} == {
        "s-1": "demote+promote",
        "s-2": "demote+promote",
        "vm-1": "restore",
    }

    code, out, _ = failover(fake_ceph, config_with_images, "--to", "default", "--yes", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["operation"] == "failback" and report["active_backend"] == "default"
    volumes = {v["name"]: v for v in report["volumes"]}
    assert volumes["s-1"]["action"] == "demoted+promoted"
    assert volumes["vm-1"]["action"] == "restored" and volumes["vm-1"]["status"] == "available"
    assert primary_on(fake_ceph, "default", "s-1") and primary.read("s-1", 0, 4) == b"away"


def test_cli__after_failover__volumes_and_mirroring_act_on_the_active_site(
    config_with_images: Path, fake_ceph: FakeCeph
) -> None:
    assert failover(fake_ceph, config_with_images, "--to", "secondary", "--yes")[0] == 0
    secondary = fake_ceph.connect(fake_site("secondary"), 1)
    secondary.create_image("s-new", 1 << 20)  # made where the volumes live now
    primary = fake_ceph.connect(fake_site("default"), 1)

    listed = rbdfail(fake_ceph, config_with_images, "volumes", "--json")
    assert listed.exit_code == 0
    assert {v["name"] for v in json.loads(listed.stdout)} == {"s-1", "s-2", "s-new"}

    invoke = ["enable-mirroring", "s-new", "--json"]
    enabled = rbdfail(fake_ceph, config_with_images, *invoke)
    assert enabled.exit_code == 0, enabled.output
    assert json.loads(enabled.stdout)["site"] == "secondary"
    assert primary_on(fake_ceph, "secondary", "s-new")
    eventually(lambda: "s-new" in primary.list_images(), 2)  # mirrored back to the backend

    elsewhere = rbdfail(
        fake_ceph, config_with_images, *invoke[:-2], "vm-1", "--site", "default", "--json"
    )
    assert json.loads(elsewhere.stdout)["site"] == "default"
    unknown = rbdfail(fake_ceph, config_with_images, *invoke, "--site", "tertiary")
    assert unknown.exit_code == 2 and "secondary" in unknown.stderr


def test_cli__listing_a_site_that_is_not_active_keeps_the_active_sites_inventory(
    config_with_images: Path, fake_ceph: FakeCeph
) -> None:
    for site in ([], ["--site", "secondary"]):
        listed = rbdfail(fake_ceph, config_with_images, "volumes", *site)
        assert listed.exit_code == 0
    inventory = read_inventory(load_config(config_with_images).state_dir)
    assert inventory is not None and inventory.site == "default"
    assert set(inventory.volume_types) == {"s-1", "s-2", "vm-1"}


def test_cli__a_lock_held_by_another_run__exit_4_naming_it_and_nothing_done(
    config_with_images: Path, fake_ceph: FakeCeph, secondary: FakeCluster
) -> None:
    holder = {"user": "bob", "host": "elsewhere", "pid": 1, "since": "now", "run": "r-x"}
    secondary.lock("rbdfail.failover", "r-x", json.dumps({**holder, "what": "failback"}), 30)
    code, out, err = failover(fake_ceph, config_with_images, "--to", "secondary", "--yes", "--json")
    assert code == 4 and out == ""
    assert "another failover is running: failback by bob@elsewhere" in err
    assert primary_on(fake_ceph, "default", "s-1")


def test_cli__every_exit_code_is_in_the_help_of_failover_failback_and_the_readme() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for command in ([], ["failover"], ["failback"]):
        text = CliRunner().invoke(main, [*command, "--help"]).stdout
        for code in ("0", "1", "2", "3", "4", "5", "130"):
            assert re.search(rf"\n\s+{code} \w", text), (command, code)
    exit_codes = readme[readme.index("### Exit codes") :]
    for code in ("0", "1", "2", "3", "4", "5", "130"):
        assert f"\n| {code} |" in exit_codes, code
