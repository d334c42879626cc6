"""Names, confs and Ceph answers rbdfail did not expect: volume names with rich markup, spaces,
unicode or great length; a ceph.conf that cannot be read; a newer Ceph's mirror states and
modes. Each is shown as it is, refused with a clear error, or planned as `cannot`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from prometheus_client.parser import text_string_to_metric_families

from rbdfail.cli import AppContext, main
from rbdfail.cluster import Cluster, MirrorMode, MirrorState, PoolMirrorMode, ReplayState
from rbdfail.config import Config, SiteConfig, check_conf_readable, load_config
from rbdfail.errors import ConfigError
from rbdfail.pools import SetupAction, prepare
from tests.conftest import TWO_SITES, fake_site, write_config
from tests.fakeceph import FakeCeph, FakeCluster
from tests.helpers import eventually

# Replicated by the test config's `s-*` rule; the last one is longer than any table column.
ODD_NAMES = [
    "s-[bold]x",
    "s-[/x]",
    "s-[x]",
    "s-a b",
    "s-ünïcødé-卷",
    's-q"uote\\d',
    "s-" + "n" * 300,
]
SHORT = ODD_NAMES[:-2]  # short enough not to be folded in a table cell


def rbdfail(world: FakeCeph, config: Config, *args: str) -> Result:
    return CliRunner().invoke(main, ["-c", str(config.path), *args], obj=world.connect)


@pytest.fixture
def odd(config: Config, primary: FakeCluster, secondary: FakeCluster) -> list[str]:
    for name in ODD_NAMES:
        primary.create_image(name, 1 << 20)
        primary.enable_mirroring(name, MirrorMode.SNAPSHOT)
    primary.create_image("[red]plain", 1 << 20)  # not replicated
    eventually(lambda: set(ODD_NAMES) <= set(secondary.list_images()), 2)
    return ODD_NAMES


LISTINGS = pytest.mark.parametrize(
    "command",
    [("volumes",), ("status",), ("failover", "--to", "secondary", "--dry-run")],
    ids=["volumes", "status", "plan"],
)


# ---- names --------------------------------------------------------------------------------------
@LISTINGS
def test_names__with_markup_spaces_and_unicode_are_shown_as_they_are(
    config: Config, fake_ceph: FakeCeph, odd: list[str], command: tuple[str, ...]
) -> None:
    result = rbdfail(fake_ceph, config, *command)
    assert result.exit_code == 0, result.output
    for name in [*SHORT, "[red]plain"]:
        assert name in result.stdout, name


@LISTINGS
def test_names__every_one_in_the_json_unchanged(
    config: Config, fake_ceph: FakeCeph, odd: list[str], command: tuple[str, ...]
) -> None:
    result = rbdfail(fake_ceph, config, *command, "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    listed = document if isinstance(document, list) else document["volumes"]
    assert {v["name"] for v in listed} == {*odd, "[red]plain"}


def test_names__switch_report_table_and_json_show_each_and_each_moved(
    config: Config, fake_ceph: FakeCeph, odd: list[str]
) -> None:
    table = rbdfail(fake_ceph, config, "failover", "--to", "secondary", "--yes")
    assert table.exit_code == 0, table.output
    for name in SHORT:
        assert name in table.stdout
    back = rbdfail(fake_ceph, config, "failback", "--yes", "--json")
    assert back.exit_code == 0, back.output
    actions = {v["name"]: v["action"] for v in json.loads(back.stdout)["volumes"]}
    assert actions == {**dict.fromkeys(odd, "demoted+promoted"), "[red]plain": "restored"}


def test_names__prometheus_labels_read_back_as_the_names(
    config: Config, fake_ceph: FakeCeph, odd: list[str], tmp_path: Path
) -> None:
    metrics = tmp_path / "rbdfail.prom"
    result = rbdfail(fake_ceph, config, "status", "--json", "--prometheus", str(metrics))
    assert result.exit_code == 0, result.output
    families = {f.name: f for f in text_string_to_metric_families(metrics.read_text())}
    labelled = {s.labels["volume"] for s in families["rbdfail_volume_primary_site"].samples}
    assert labelled == {*odd, "[red]plain"}


# ---- a ceph.conf that cannot be read ------------------------------------------------------------
@pytest.mark.parametrize("kind", ["missing", "a directory"])
def test_connect__conf_that_cannot_be_read_is_a_config_error_before_librados(
    tmp_path: Path, kind: str
) -> None:
    pytest.importorskip("rados", reason="connect imports rbdfail.ceph first: no bindings, exit 1")
    conf = tmp_path / "ceph.conf"
    if kind == "a directory":
        conf.mkdir()
    site = SiteConfig("secondary", conf, "cinder", "volumes")
    with pytest.raises(ConfigError) as caught:
        AppContext(None, False).connect(site, 1)
    assert caught.value.exit_code == 2
    assert str(caught.value).startswith(f"{conf}: the Ceph configuration of site 'secondary'")
    assert caught.value.hint is not None and "nothing was changed" in caught.value.hint


def test_cli__failover_with_the_source_conf_unreadable__exit_2_not_a_forced_failover(
    tmp_path: Path, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    """A source that cannot be connected to is taken as lost and forced: a local mistake in
    its conf must not be. The fake stands for the sites, behind the same conf check."""
    primary.create_image("s-1", 1 << 20)
    primary.enable_mirroring("s-1", MirrorMode.SNAPSHOT)
    eventually(lambda: "s-1" in secondary.list_images(), 2)
    target_conf = tmp_path / "secondary.conf"
    target_conf.write_text("[global]\n")
    config = write_config(tmp_path, TWO_SITES.replace("/fake/secondary.conf", str(target_conf)))

    def connect(site: SiteConfig, timeout: float) -> Cluster:
        check_conf_readable(site)
        return fake_ceph.connect(site, timeout)

    result = CliRunner().invoke(
        main, ["-c", str(config), "failover", "--to", "secondary", "--yes"], obj=connect
    )
    assert result.exit_code == 2, result.output
    assert "/fake/default.conf: the Ceph configuration of site 'default' cannot be read" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr
    assert fake_ceph.sites["default"].images["s-1"].primary  # nothing forced
    assert not fake_ceph.sites["secondary"].images["s-1"].primary


# ---- what a newer Ceph may say ------------------------------------------------------------------
def test_image_status__a_replay_state_number_this_rbdfail_does_not_know_is_unknown() -> None:
    pytest.importorskip("rados", reason="rbdfail.ceph needs the Ceph bindings")
    from rbdfail import ceph

    assert ceph._image_status({"state": 42, "description": "new"}).state == ReplayState.UNKNOWN
    assert ceph._image_status({"state": 4}).state == ReplayState.REPLAYING


@pytest.mark.parametrize(("field", "value"), [("mode", MirrorMode.UNKNOWN), ("state", None)])
def test_failover__copy_in_a_mirror_state_or_mode_unknown_to_rbdfail__cannot_and_untouched(
    config: Config,
    fake_ceph: FakeCeph,
    primary: FakeCluster,
    secondary: FakeCluster,
    field: str,
    value: MirrorMode | None,
) -> None:
    for name in ("s-new", "s-old"):
        primary.create_image(name, 1 << 20)
        primary.enable_mirroring(name, MirrorMode.SNAPSHOT)
    eventually(lambda: {"s-new", "s-old"} <= set(secondary.list_images()), 2)
    copy = fake_ceph.sites["secondary"].images["s-new"]
    if field == "mode":
        copy.mode = value
    else:
        copy.mirror_state = MirrorState.UNKNOWN

    status = rbdfail(fake_ceph, config, "status", "--json")
    assert status.exit_code in (0, 3) and "Traceback" not in status.output
    result = rbdfail(fake_ceph, config, "failover", "--to", "secondary", "--yes", "--json")

    assert result.exit_code == 3, result.output
    outcomes = {v["name"]: v for v in json.loads(result.stdout)["volumes"]}
    assert outcomes["s-old"]["action"] == "demoted+promoted"
    assert outcomes["s-new"]["action"] == "failed"
    assert "does not know" in outcomes["s-new"]["error"] or "unknown" in outcomes["s-new"]["error"]
    assert fake_ceph.sites["default"].images["s-new"].primary


def test_setup__pool_in_a_mirror_mode_unknown_to_rbdfail__reported_not_changed() -> None:
    world = FakeCeph()
    world.sites["secondary"].pool_mode = PoolMirrorMode.UNKNOWN
    backend, device = (
        world.connect(fake_site("default"), 1),
        world.connect(fake_site("secondary"), 1),
    )
    items = prepare(backend, [device])
    mode_item = next(i for i in items if i.site == "secondary" and i.item == "pool mirroring mode")
    assert mode_item.action == SetupAction.FAILED and "does not know" in mode_item.detail
    assert world.sites["secondary"].pool_mode == PoolMirrorMode.UNKNOWN


def test_config__mirror_mode_unknown_is_not_a_mode_to_configure(tmp_path: Path) -> None:
    path = tmp_path / "rbdfail.yaml"
    path.write_text(
        "backend: {pool: v}\nreplication_device: [backend_id:b]\n"
        "volume_types:\n  t: {replication_enabled: true, mirror_mode: unknown}\n"
    )
    with pytest.raises(ConfigError, match="unknown mode 'unknown'"):
        load_config(path)
