"""After a switch, the exact cinder-manage and nova-manage lines (rbdfail runs none)."""

from __future__ import annotations

import json
from pathlib import Path

from rbdfail.cinder.importer import import_cinder
from rbdfail.cinder.seed import seed_state
from rbdfail.cinder.steps import reset_active_backend, steps_for, steps_from
from rbdfail.config import Config, load_deployment
from rbdfail.switch.model import Action, Operation, SwitchPlan, SwitchReport, VolumeOutcome

DATA = Path(__file__).parent / "data" / "cinder"
DB_ID = "0f3c5a2e-7d41-4b9e-8a6c-2e1f0d9c8b71"
WEB_ID = "6a7b8c9d-0e1f-4a2b-8c3d-4e5f6a7b8c92"
OLD_ID = "f6a7b8c9-d0e1-4f2a-9b3c-4d5e6f7a8b92"
CACHE_ID = "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f"


def imported(tmp_path: Path) -> tuple[Config, Config]:
    state = tmp_path / "state"
    result = import_cinder(
        DATA / "cinder.conf",
        None,
        DATA / "types.json",
        DATA / "volumes.json",
        "__DEFAULT__",
    )
    text = result.text.replace(
        "replication_connect_timeout:", f"state_dir: {state}\nreplication_connect_timeout:"
    )
    path = tmp_path / "rbdfail.yaml"
    path.write_text(text)
    seed_state(result, state)
    gold, fast = load_deployment(path).backends
    return gold, fast


def report(
    pool: str, moved: dict[str, Action], active: str, operation: Operation = Operation.FAILOVER
) -> SwitchReport:
    source, target = ("default", "secondary") if active != "default" else ("secondary", "default")
    plan = SwitchPlan(source, target, True, None, (), operation=operation)
    volumes = tuple(
        VolumeOutcome(f"{pool}/volume-{i}", action, "available", None, 0.1)
        for i, action in moved.items()
    )
    return SwitchReport("run-1", plan, volumes, 1.0, None, False, active)


def test_reset_active_backend__failover_and_failback(tmp_path: Path) -> None:
    gold, fast = imported(tmp_path)
    assert reset_active_backend(gold, "secondary") == (
        "cinder-manage db reset_active_backend --enable-replication --active-backend-id "
        "secondary --backend-host hostgroup@ceph-gold"
    )
    assert reset_active_backend(fast, "default") == (
        "cinder-manage db reset_active_backend --enable-replication --backend-host "
        "controller-1@ceph-fast"
    )


def test_failover__cinder_and_nova_lines_for_the_attached_volumes_that_moved(
    tmp_path: Path,
) -> None:
    gold, fast = imported(tmp_path)
    steps = steps_for(
        [
            (
                gold,
                report(
                    "volumes-gold",
                    {
                        DB_ID: Action.DEMOTED_PROMOTED,
                        WEB_ID: Action.NOT_REPLICATED,  # attached, but it did not move
                        OLD_ID: Action.FORCE_PROMOTED,
                    },
                    "secondary",
                ),
            ),
            (fast, report("volumes-fast", {CACHE_ID: Action.FAILED}, "default")),
        ]
    )
    assert steps.lines() == [
        "# With the backend's cinder-volume stopped, then start it again:",
        "cinder-manage db reset_active_backend --enable-replication --active-backend-id "
        "secondary --backend-host hostgroup@ceph-gold",
        "# On each compute host named (the instances stopped first):",
        "nova-manage volume_attachment get_connector --json > connector-compute-03.json"
        "   # on compute-03",
        "nova-manage volume_attachment get_connector --json > connector.json"
        "   # on the instance's compute host",
        "# Then, where nova-manage runs, with each host's connector file:",
        f"nova-manage volume_attachment refresh 8e1b6d3f-2a4c-4e5f-b7a9-0c1d2e3f4a56 {DB_ID} "
        "connector-compute-03.json",
        f"nova-manage volume_attachment refresh 3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f {OLD_ID} "
        "connector.json",
    ]
    assert json.loads(json.dumps(steps.to_json()))["cinder_manage"] == [steps.cinder_manage[0]]


def test_nothing_moved__no_steps(tmp_path: Path) -> None:
    gold, _ = imported(tmp_path)
    steps = steps_for([(gold, report("volumes-gold", {DB_ID: Action.FAILED}, "default"))])
    assert steps.empty
    assert steps.to_json() == {
        "cinder_manage": [],
        "get_connector": [],
        "nova_manage": [],
        "notes": [],
    }


def test_without_cinder_host_or_volume_list__none_after_a_switch_a_placeholder_host_on_request(
    tmp_path: Path,
) -> None:
    path = tmp_path / "rbdfail.yaml"
    path.write_text(
        "backend: {name: ceph, pool: volumes}\n"
        "replication_device: [{backend_id: secondary}]\n"
        f"state_dir: {tmp_path / 'state'}\n"
        "volume_types: {replicated: {replication_enabled: '<is> True'}}\n"
        "volumes: [{match: '*', type: replicated}]\n"
    )
    config = load_deployment(path).backends[0]
    plan = SwitchPlan("default", "secondary", True, None, ())
    moved = VolumeOutcome("volume-1", Action.DEMOTED_PROMOTED, "available", None, 0.1)
    report = SwitchReport("r", plan, (moved,), 1.0, None, False, "secondary")
    # A switch prints no steps for a backend Cinder does not know of ...
    assert steps_for([(config, report)]).empty
    # ... `cinder-steps`, asked for, gives them with a placeholder host.
    steps = steps_from([(config, "secondary", {"volume-1"})])
    assert steps.cinder_manage == (
        "cinder-manage db reset_active_backend --enable-replication --active-backend-id "
        "secondary --backend-host HOST@ceph",
    )
    assert steps.nova_manage == ()
    assert steps.notes == (
        f"backend ceph: no cinder_host in {path}: HOST@BACKEND is the cinder-volume host "
        "`cinder-manage service list` shows",
    )


# ---- through the command line, on the fake sites ------------------------------------------------
SERVER = "8e1b6d3f-2a4c-4e5f-b7a9-0c1d2e3f4a56"
CINDER_CONFIG = """\
backend: {pool: volumes, conf: /fake/default.conf, cinder_host: hostgroup@ceph}
replication_device: [{backend_id: secondary, conf: /fake/secondary.conf}]
replication_connect_timeout: 1
volume_timeout: 5
volume_types:
  gold: {replication_enabled: '<is> True', mirror_mode: snapshot}
  __DEFAULT__: {}
volumes:
  - {match: volume-DB, type: gold}
  - {match: volume-CACHE, type: gold}
  - {match: 'volume-*', type: __DEFAULT__}
""".replace("DB", DB_ID).replace("CACHE", CACHE_ID)
RESET = (
    "cinder-manage db reset_active_backend --enable-replication --active-backend-id secondary "
    "--backend-host hostgroup@ceph"
)
REFRESH = f"nova-manage volume_attachment refresh {SERVER} {DB_ID} connector-compute-03.json"


def test_cli__failover_failback_and_cinder_steps(tmp_path: Path) -> None:
    from click.testing import CliRunner, Result

    from rbdfail.cli import main
    from rbdfail.cluster import MirrorMode
    from tests.conftest import fake_site, write_config
    from tests.fakeceph import FakeCeph
    from tests.helpers import eventually

    world = FakeCeph(replication_delay=0.05)
    world.peer("default", "secondary")
    try:
        primary = world.connect(fake_site("default"), 1)
        secondary = world.connect(fake_site("secondary"), 1)
        for volume_id in (DB_ID, CACHE_ID):
            primary.create_image(f"volume-{volume_id}", 1 << 20)
            primary.enable_mirroring(f"volume-{volume_id}", MirrorMode.SNAPSHOT)
        eventually(lambda: f"volume-{DB_ID}" in set(secondary.list_images()), 2)
        config_file = write_config(tmp_path, CINDER_CONFIG)
        state = tmp_path / "state"
        state.mkdir()
        (state / "cinder-attachments.json").write_text(
            json.dumps(
                {
                    "volumes": [
                        {
                            "image": f"volume-{DB_ID}",
                            "id": DB_ID,
                            "backend": None,
                            "servers": [SERVER],
                            "hosts": ["compute-03"],
                        }
                    ]
                }
            )
        )

        def rbdfail(*args: str) -> Result:
            return CliRunner().invoke(main, ["-c", str(config_file), *args], obj=world.connect)

        done = rbdfail("failover", "--to", "secondary", "--yes", "--json")
        assert done.exit_code == 0, done.stderr
        steps = json.loads(done.stdout)["cinder_steps"]
        assert steps["cinder_manage"] == [RESET]
        assert steps["nova_manage"] == [REFRESH]
        assert steps["get_connector"] == [
            "nova-manage volume_attachment get_connector --json > connector-compute-03.json"
            "   # on compute-03"
        ]

        past = rbdfail("cinder-steps")
        assert past.exit_code == 0, past.stderr
        assert past.stdout.splitlines()[0].startswith("failover to secondary, run ")
        assert RESET in [line.strip() for line in past.stdout.splitlines()]
        assert REFRESH in [line.strip() for line in past.stdout.splitlines()]
        assert json.loads(rbdfail("cinder-steps", "--json").stdout)["cinder_steps"] == steps

        back = rbdfail("failback", "--yes")
        assert back.exit_code == 0, back.stderr
        lines = [line.strip() for line in back.stdout.splitlines()]
        assert (
            "cinder-manage db reset_active_backend --enable-replication --backend-host "
            "hostgroup@ceph"
        ) in lines
        assert REFRESH in lines
    finally:
        world.release_hangs()


def test_cli__cinder_steps_without_a_run__exit_1(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from rbdfail.cli import main
    from tests.conftest import write_config

    config_file = write_config(tmp_path, CINDER_CONFIG)
    done = CliRunner().invoke(main, ["-c", str(config_file), "cinder-steps"])
    assert done.exit_code == 1
    assert "the journal holds no failover or failback" in done.stderr


def test_config__cinder_host_read_and_a_wrong_one_refused(tmp_path: Path) -> None:
    import pytest

    from rbdfail.errors import ConfigError

    path = tmp_path / "rbdfail.yaml"
    body = (
        "replication_device: [{backend_id: secondary}]\n"
        "volume_types: {plain: {}}\nvolumes: [{match: '*', type: plain}]\n"
    )
    path.write_text("backend: {pool: volumes, cinder_host: hostgroup@ceph}\n" + body)
    assert load_deployment(path).backends[0].cinder_host == "hostgroup@ceph"
    path.write_text("backend: {pool: volumes, cinder_host: 'no host'}\n" + body)
    with pytest.raises(ConfigError, match="is not a cinder-volume host@backend"):
        load_deployment(path)
