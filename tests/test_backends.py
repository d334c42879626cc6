"""A file of several backends (issue 18), on the fake: each backend's pool is a fake world of
its own (pools mirror independently in Ceph: peers, modes and images are per pool), reached
through one connect that picks the world by pool, as librados picks the pool by name."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from rbdfail.cli import main
from rbdfail.cluster import Cluster, MirrorMode, MirrorState
from rbdfail.config import SiteConfig, load_config, load_deployment
from rbdfail.errors import ConfigError
from rbdfail.state import journal_lines, read_state
from tests.fakeceph import FakeCeph
from tests.helpers import CONNECT_TIMEOUT, eventually

TWO_BACKENDS = f"""\
backends:
  ceph:
    pool: volumes
    conf: /fake/default.conf
    replication_device: [{{backend_id: secondary, conf: /fake/secondary.conf}}]
  fast:
    pool: fast
    conf: /fake/default.conf
    replication_device: [{{backend_id: secondary, conf: /fake/secondary.conf}}]
replication_connect_timeout: {CONNECT_TIMEOUT}
volume_timeout: 5
volume_types:
  snap: {{replication_enabled: true, mirror_mode: snapshot}}
  plain: {{}}
volumes:
  - {{match: "s-*", type: snap}}
  - {{match: "*", type: plain}}
"""


class Pools:
    """Two fake worlds, one per pool, on the same two sites; their calls are counted together
    (one lock, one tally), as the calls to two pools of one cluster would be."""

    def __init__(self) -> None:
        self.worlds = {pool: FakeCeph(replication_delay=0.05) for pool in ("volumes", "fast")}
        first = self.worlds["volumes"]
        for world in self.worlds.values():
            world.peer("default", "secondary")
            world.lock, world.in_flight, world.max_in_flight = (
                first.lock,
                first.in_flight,
                first.max_in_flight,
            )

    def connect(self, site: SiteConfig, timeout: float) -> Cluster:
        return self.worlds[site.pool].connect(site, timeout)

    def replicated(self, pool: str, *names: str) -> None:
        world = self.worlds[pool]
        primary = world.connect(SiteConfig("default", Path("/fake"), "cinder", pool), 1)
        for name in names:
            primary.create_image(name, 1 << 20)
            if name.startswith("s-"):
                primary.enable_mirroring(name, MirrorMode.SNAPSHOT)
        copies = {n for n in names if n.startswith("s-")}
        secondary = world.connect(SiteConfig("secondary", Path("/fake"), "cinder", pool), 1)
        eventually(lambda: copies <= set(secondary.list_images()), 2)

    def primary_on(self, pool: str, name: str) -> list[str]:
        world = self.worlds[pool]
        return [site for site, state in world.sites.items() if state.images[name].primary]

    def release(self) -> None:
        for world in self.worlds.values():
            world.release_hangs()


@pytest.fixture
def pools() -> Iterator[Pools]:
    pools = Pools()
    pools.replicated("volumes", "s-1", "s-2", "vm-1")
    pools.replicated("fast", "s-1", "s-3")  # s-1: the same name in both pools
    yield pools
    pools.release()


@pytest.fixture
def two_backends_config_file(tmp_path: Path) -> Path:
    path = tmp_path / "rbdfail.yaml"
    path.write_text(TWO_BACKENDS + f"state_dir: {tmp_path / 'state'}\n")
    return path


def rbdfail(pools: Pools, two_backends_config_file: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["-c", str(two_backends_config_file), *args], obj=pools.connect)


# ---- the file ---------------------------------------------------------------------------------
def test_config__each_backend_its_pool_and_devices__settings_shared(
    two_backends_config_file: Path,
) -> None:
    deployment = load_deployment(two_backends_config_file)
    assert [(b.backend_name, b.backend.pool, b.state_scope) for b in deployment.backends] == [
        ("ceph", "volumes", "ceph"),
        ("fast", "fast", "fast"),
    ]
    assert {b.replication_devices[0].backend_id for b in deployment.backends} == {"secondary"}
    assert {b.volume_timeout for b in deployment.backends} == {5}
    assert deployment.backends[1].shown("s-1") == "fast/s-1"


def test_config__the_one_backend_shape_is_still_one_backend_unscoped(tmp_path: Path) -> None:
    from tests.conftest import TWO_SITES, write_config

    config = load_config(write_config(tmp_path, TWO_SITES))
    assert config.state_scope is None and config.shown("s-1") == "s-1"


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (
            lambda t: t.replace("    pool: fast\n", "    pool: volumes\n"),
            "backends.fast.pool: the same pool as backend 'ceph'",
        ),
        (
            lambda t: "backend: {pool: volumes}\n" + t,
            "backend: cannot be given with `backends`",
        ),
        (
            lambda t: t.replace("  fast:\n", "  'fa st':\n"),
            "is not a backend name",
        ),
        (
            lambda t: t.replace(
                "    replication_device: [{backend_id: secondary, conf: /fake/secondary.conf}]\n"
                "replication_connect_timeout",
                "replication_connect_timeout",
            ),
            "backends.fast.replication_device: required key missing",
        ),
    ],
)
def test_config__mistakes_are_named_with_their_place(
    tmp_path: Path, change: object, said: str
) -> None:
    path = tmp_path / "rbdfail.yaml"
    path.write_text(change(TWO_BACKENDS))  # type: ignore[operator]
    with pytest.raises(ConfigError, match=said.replace("(", r"\(").replace(")", r"\)")):
        load_deployment(path)


def test_cli__an_unknown_backend_is_named_with_the_known_ones(
    pools: Pools, two_backends_config_file: Path
) -> None:
    result = rbdfail(
        pools, two_backends_config_file, "--backend", "fats", "failover", "--to", "secondary"
    )
    assert result.exit_code == 2
    assert "no backend 'fats'" in result.stderr and "did you mean 'fast'" in result.stderr


# ---- failover and failback of every backend -----------------------------------------------------
def test_failover__every_backend_in_one_run__report_by_backend__one_state_file(
    pools: Pools, two_backends_config_file: Path, tmp_path: Path
) -> None:
    result = rbdfail(
        pools, two_backends_config_file, "failover", "--to", "secondary", "--yes", "--json"
    )
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["result"] == "complete" and report["left_out"] == []
    by_backend = {part["backend"]: part for part in report["backends"]}
    assert by_backend["ceph"]["pool"] == "volumes" and by_backend["fast"]["pool"] == "fast"
    assert {v["name"]: v["action"] for v in by_backend["fast"]["volumes"]} == {
        "s-1": "demoted+promoted",
        "s-3": "demoted+promoted",
    }
    assert {v["name"]: v["action"] for v in by_backend["ceph"]["volumes"]}[
        "vm-1"
    ] == "not-replicated"
    # Ceph agrees: each pool's replicated volumes are primary on the secondary only.
    for pool, names in (("volumes", ["s-1", "s-2"]), ("fast", ["s-1", "s-3"])):
        assert all(pools.primary_on(pool, n) == ["secondary"] for n in names)
    state_dir = tmp_path / "state"
    document = json.loads((state_dir / "state.json").read_text())
    assert set(document["backends"]) == {"ceph", "fast"}
    assert read_state(state_dir, "fast").active_backend == "secondary"
    assert read_state(state_dir, "ceph").volume("vm-1").status == "error"
    # Each journal line says whose volume it is: the two s-1 are two volumes.
    steps = {
        (line["backend"], line["volume"])
        for line in journal_lines(state_dir)
        if line.get("step") == "promoted"
    }
    assert steps == {("ceph", "s-1"), ("ceph", "s-2"), ("fast", "s-1"), ("fast", "s-3")}
    # Progress names volumes pool/name, where the two s-1 could not be told apart otherwise.
    assert "fast/s-1" in result.stderr and "volumes/s-1" in result.stderr

    result = rbdfail(pools, two_backends_config_file, "failback", "--yes", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["result"] == "complete"
    for pool, names in (("volumes", ["s-1", "s-2"]), ("fast", ["s-1", "s-3"])):
        assert all(pools.primary_on(pool, n) == ["default"] for n in names)
    assert read_state(state_dir, "ceph").volume("vm-1").status == "available"


def test_failover__one_backend_named__only_its_volumes_move_and_only_its_record(
    pools: Pools, two_backends_config_file: Path, tmp_path: Path
) -> None:
    result = rbdfail(
        pools,
        two_backends_config_file,
        "--backend",
        "fast",
        "failover",
        "--to",
        "secondary",
        "--yes",
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["result"] == "complete"  # the one-backend report
    assert pools.primary_on("fast", "s-3") == ["secondary"]
    assert pools.primary_on("volumes", "s-2") == ["default"]
    assert read_state(tmp_path / "state", "fast").active_backend == "secondary"
    assert read_state(tmp_path / "state", "ceph").active_backend == "default"


def test_failover__dry_run_plans_every_backend_and_changes_nothing(
    pools: Pools, two_backends_config_file: Path, tmp_path: Path
) -> None:
    result = rbdfail(
        pools, two_backends_config_file, "failover", "--to", "secondary", "--dry-run", "--json"
    )
    assert result.exit_code == 0, result.stderr
    plans = json.loads(result.stdout)
    assert plans["dry_run"] is True
    assert [part["backend"] for part in plans["backends"]] == ["ceph", "fast"]
    assert pools.primary_on("fast", "s-1") == ["default"]
    assert not (tmp_path / "state" / "state.json").exists()


def test_failover__a_backend_locked_by_another_run__refused_naming_it__nothing_changed(
    pools: Pools, two_backends_config_file: Path
) -> None:
    fast = pools.worlds["fast"].connect(SiteConfig("secondary", Path("/f"), "cinder", "fast"), 1)
    fast.lock("rbdfail.failover", "someone-else", '{"host": "other", "what": "failover"}', 30)

    result = rbdfail(pools, two_backends_config_file, "failover", "--to", "secondary", "--yes")

    assert result.exit_code == 4, result.stderr
    assert "backend 'fast'" in result.stderr
    assert pools.primary_on("volumes", "s-2") == ["default"]  # the other backend untouched
    # The other backend's locks, taken at the same time, were given back.
    assert all(not site.locks for site in pools.worlds["volumes"].sites.values())


def test_failover__a_backend_without_the_target_is_left_out_and_named(
    pools: Pools, tmp_path: Path
) -> None:
    text = TWO_BACKENDS.replace(
        "    pool: fast\n    conf: /fake/default.conf\n"
        "    replication_device: [{backend_id: secondary, conf: /fake/secondary.conf}]",
        "    pool: fast\n    conf: /fake/default.conf\n"
        "    replication_device: [{backend_id: third, conf: /fake/third.conf}]",
    )
    path = tmp_path / "rbdfail.yaml"
    path.write_text(text + f"state_dir: {tmp_path / 'state'}\n")

    result = rbdfail(pools, path, "failover", "--to", "secondary", "--yes", "--json")

    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["left_out"] == ["backend 'fast' replicates to third, not 'secondary'"]
    assert [part["backend"] for part in report["backends"]] == ["ceph"]
    assert pools.primary_on("fast", "s-3") == ["default"]


def test_failover__the_backends_share_one_budget_of_calls(
    pools: Pools, two_backends_config_file: Path
) -> None:
    for pool, prefix in (("volumes", "s-v"), ("fast", "s-f")):
        pools.replicated(pool, *(f"{prefix}{i}" for i in range(12)))
        pools.worlds[pool].latency.update(demote=0.05, promote=0.05)

    args = ("failover", "--to", "secondary", "--yes", "--concurrency", "3")
    result = rbdfail(pools, two_backends_config_file, *args)

    assert result.exit_code == 0, result.stderr
    in_flight = pools.worlds["volumes"].max_in_flight  # both pools' calls, counted together
    assert 1 < in_flight["demote"] <= 3 and in_flight["promote"] <= 3


def test_failover__the_call_trace_holds_every_backends_calls(
    pools: Pools, two_backends_config_file: Path, tmp_path: Path
) -> None:
    trace = tmp_path / "calls.jsonl"
    args = ("failover", "--to", "secondary", "--yes", "--call-trace", str(trace))
    assert rbdfail(pools, two_backends_config_file, *args).exit_code == 0
    demoted = {json.loads(line)["image"] for line in trace.read_text().splitlines()} & {
        "s-1",
        "s-2",
        "s-3",
    }
    assert demoted == {"s-1", "s-2", "s-3"}  # s-3 is in fast only, s-2 in volumes only


def test_check__to_a_device_one_backend_lacks__checks_the_others(
    pools: Pools, tmp_path: Path
) -> None:
    text = TWO_BACKENDS.replace(
        "    pool: fast\n    conf: /fake/default.conf\n"
        "    replication_device: [{backend_id: secondary, conf: /fake/secondary.conf}]",
        "    pool: fast\n    conf: /fake/default.conf\n"
        "    replication_device: [{backend_id: third, conf: /fake/third.conf}]",
    )
    path = tmp_path / "rbdfail.yaml"
    path.write_text(text + f"state_dir: {tmp_path / 'state'}\n")
    result = rbdfail(pools, path, "check", "--to", "secondary", "--json")
    assert result.exit_code == 0, result.stdout
    document = json.loads(result.stdout)
    assert [part["backend"] for part in document["backends"]] == ["ceph"]
    result = rbdfail(pools, path, "check", "--to", "fourth")
    assert result.exit_code == 2 and "fourth" in result.stderr


def test_single_backend_commands_refuse_a_file_of_several_naming_the_way(
    pools: Pools, two_backends_config_file: Path
) -> None:
    result = rbdfail(pools, two_backends_config_file, "connection-info", "s-1")
    assert result.exit_code == 2
    assert "has several (ceph, fast)" in result.stderr and "--backend ceph" in result.stderr


# ---- status and check of every backend ----------------------------------------------------------
def test_status__every_backend_by_name__metrics_labelled_by_backend(
    pools: Pools, two_backends_config_file: Path, tmp_path: Path
) -> None:
    prom = tmp_path / "rbdfail.prom"
    result = rbdfail(pools, two_backends_config_file, "status", "--json", "--prometheus", str(prom))
    assert result.exit_code in (0, 3), result.stderr
    document = json.loads(result.stdout)
    parts = {part["backend"]: part for part in document["backends"]}
    assert parts["fast"]["pool"] == "fast"
    assert {v["name"] for v in parts["fast"]["volumes"]} == {"s-1", "s-3"}
    assert {v["name"] for v in parts["ceph"]["volumes"]} == {"s-1", "s-2", "vm-1"}
    text = prom.read_text()
    assert (
        'rbdfail_volume_primary_site{primary_site="default",volume="s-1",volume_backend="fast"}'
        in text
    )
    assert 'volume="s-1",volume_backend="ceph"' in text

    result = rbdfail(
        pools, two_backends_config_file, "status"
    )  # the tables, each under its backend
    assert "backend ceph (pool volumes)" in result.stdout
    assert "backend fast (pool fast)" in result.stdout


def test_check__every_backend__ready_only_when_each_is(
    pools: Pools, two_backends_config_file: Path
) -> None:
    result = rbdfail(pools, two_backends_config_file, "check", "--to", "secondary", "--json")
    document = json.loads(result.stdout)
    assert [part["backend"] for part in document["backends"]] == ["ceph", "fast"]
    assert document["ready"] is True and result.exit_code == 0, result.stdout

    # A split brain in one pool: that backend is not ready, so neither is the file.
    pools.worlds["fast"].sites["secondary"].images["s-3"].primary = True
    result = rbdfail(pools, two_backends_config_file, "check", "--to", "secondary", "--json")
    document = json.loads(result.stdout)
    parts = {part["backend"]: part for part in document["backends"]}
    assert parts["fast"]["ready"] is False and document["ready"] is False
    assert result.exit_code == 1


# ---- the other commands -------------------------------------------------------------------------
def test_enable_mirroring_and_volumes__every_backend(
    pools: Pools, two_backends_config_file: Path
) -> None:
    for pool in ("volumes", "fast"):
        primary = pools.worlds[pool].connect(SiteConfig("default", Path("/f"), "cinder", pool), 1)
        primary.create_image("s-new", 1 << 20)  # replicated by its type, not mirrored yet

    result = rbdfail(pools, two_backends_config_file, "enable-mirroring", "--json")

    assert result.exit_code == 0, result.stderr
    parts = {part["backend"]: part for part in json.loads(result.stdout)["backends"]}
    assert set(parts) == {"ceph", "fast"}
    for pool in ("volumes", "fast"):
        assert pools.worlds[pool].sites["default"].images["s-new"].mode == MirrorMode.SNAPSHOT
    listing = json.loads(rbdfail(pools, two_backends_config_file, "volumes", "--json").stdout)
    names = {part["backend"]: {v["name"] for v in part["volumes"]} for part in listing["backends"]}
    assert names == {"ceph": {"s-1", "s-2", "s-new", "vm-1"}, "fast": {"s-1", "s-3", "s-new"}}


def test_disable_mirroring__names_images__so_the_backend_must_be_named(
    pools: Pools, two_backends_config_file: Path
) -> None:
    result = rbdfail(pools, two_backends_config_file, "disable-mirroring", "s-1")
    assert result.exit_code == 2 and "--backend ceph" in result.stderr
    assert pools.worlds["fast"].sites["default"].images["s-1"].mode == MirrorMode.SNAPSHOT

    result = rbdfail(
        pools, two_backends_config_file, "--backend", "fast", "disable-mirroring", "s-1"
    )
    assert result.exit_code == 0, result.stderr
    assert pools.worlds["fast"].sites["default"].images["s-1"].mirror_state == MirrorState.DISABLED
    assert pools.worlds["volumes"].sites["default"].images["s-1"].mode == MirrorMode.SNAPSHOT


def test_drill__every_backend__recorded_as_pool_slash_name(
    pools: Pools, two_backends_config_file: Path, tmp_path: Path
) -> None:
    result = rbdfail(pools, two_backends_config_file, "drill", "--to", "secondary", "--json")
    assert result.exit_code == 0, result.stderr + result.stdout
    parts = {part["backend"]: part for part in json.loads(result.stdout)["backends"]}
    assert {v["name"] for v in parts["fast"]["volumes"]} == {"s-1", "s-3"}
    recorded = json.loads((tmp_path / "state" / "drill.json").read_text())["volumes"]
    assert {"volumes/s-1", "fast/s-1", "fast/s-3", "volumes/s-2"} <= set(recorded)
