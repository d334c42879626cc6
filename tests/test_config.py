"""Configuration: Cinder's model and defaults, and one clear error per mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from rbdfail import config as config_module
from rbdfail.cluster import MirrorMode
from rbdfail.config import (
    NOT_TYPED,
    Config,
    SiteConfig,
    VolumeRule,
    VolumeType,
    find_config_path,
    load_config,
)
from rbdfail.errors import ConfigError

EXAMPLE = Path(__file__).parent.parent / "examples" / "rbdfail.yaml"
MINIMAL = "backend:\n  pool: volumes\nreplication_device:\n  - backend_id: secondary\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rbdfail.yaml"
    path.write_text(text)
    return path


def load(tmp_path: Path, text: str) -> Config:
    return load_config(write(tmp_path, text))


def refused(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    return caught.value


# ---- what loads ------------------------------------------------------------------------------
def test_load__the_example_file(tmp_path: Path) -> None:
    config = load_config(EXAMPLE)
    assert config.backend == SiteConfig("default", Path("/etc/ceph/ceph.conf"), "cinder", "volumes")
    assert [d.backend_id for d in config.replication_devices] == ["secondary"]
    assert config.volume_type("replicated-snap") == VolumeType(
        "replicated-snap", True, MirrorMode.SNAPSHOT, "1h"
    )


def test_load__minimal_file_gets_cinder_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, MINIMAL)
    assert config.backend_name == "ceph"
    assert config.backend == SiteConfig("default", Path("/etc/ceph/ceph.conf"), "cinder", "volumes")
    assert config.replication_devices == (
        SiteConfig("secondary", Path("/etc/ceph/secondary.conf"), "cinder", "volumes"),
    )
    assert (config.replication_connect_timeout, config.volume_timeout, config.concurrency) == (
        5.0,
        60.0,
        32,
    )
    assert config.state_dir == Path("/var/lib/rbdfail")
    assert config.volume_types == () and config.volumes == ()


def test_load__device_user_falls_back_to_the_backend_user(tmp_path: Path) -> None:
    config = load(tmp_path, MINIMAL.replace("  pool: volumes\n", "  pool: volumes\n  user: rbd\n"))
    assert config.replication_devices[0].user == "rbd"


def test_load__cinder_string_device_with_secret_uuid(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        "backend: {pool: volumes}\nreplication_device:\n"
        '  - "backend_id:dr, conf:/etc/ceph/dr.conf, user:admin2, secret_uuid:1234-abcd"\n'
        "  - {backend_id: third}\n",
    )
    assert config.replication_devices == (
        SiteConfig("dr", Path("/etc/ceph/dr.conf"), "admin2", "volumes"),
        SiteConfig("third", Path("/etc/ceph/third.conf"), "cinder", "volumes"),
    )
    assert config.site("third") is config.replication_devices[1]
    assert config.sites[0] is config.backend


def test_load__relative_paths_follow_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "k.keyring").write_text("")
    config = load(
        tmp_path,
        "backend: {pool: p, conf: site-a.conf, keyring: keys/k.keyring}\n"
        "replication_device: [{backend_id: b, conf: ../b.conf}]\nstate_dir: state\n",
    )
    assert config.backend.conf == tmp_path / "site-a.conf"
    assert config.backend.keyring == tmp_path / "keys" / "k.keyring"
    assert config.replication_devices[0].conf == tmp_path / ".." / "b.conf"
    assert config.state_dir == tmp_path / "state"


@pytest.mark.parametrize(
    ("value", "replicated"),
    [
        ('"<is> True"', True),
        ('"<is> False"', False),
        ("true", True),
        ("false", False),
        ('"<IS> true"', True),
        ('"False"', False),
    ],
)
def test_load__replication_enabled_reads_cinder_and_plain_booleans(
    tmp_path: Path, value: str, replicated: bool
) -> None:
    config = load(tmp_path, MINIMAL + f"volume_types:\n  t:\n    replication_enabled: {value}\n")
    assert config.volume_type("t").replicated is replicated


def test_load__integer_timeouts_are_numbers(tmp_path: Path) -> None:
    config = load(tmp_path, MINIMAL + "replication_connect_timeout: 3\nvolume_timeout: 2.5\n")
    assert (config.replication_connect_timeout, config.volume_timeout) == (3.0, 2.5)


# ---- what is refused, and how it is said --------------------------------------------------------
def test_refused__misspelt_top_level_key_names_line_and_suggests(tmp_path: Path) -> None:
    error = refused(tmp_path, MINIMAL + "volume_tmeout: 30\n")
    assert error.message == f"{tmp_path / 'rbdfail.yaml'}:5: volume_tmeout: unknown key"
    assert error.hint == "did you mean 'volume_timeout'?"
    assert error.exit_code == 2


def test_refused__nested_unknown_key_without_close_match_lists_allowed(tmp_path: Path) -> None:
    error = refused(tmp_path, MINIMAL + "volume_types:\n  t:\n    colour: blue\n")
    assert error.message.endswith(":7: volume_types.t.colour: unknown key")
    assert error.hint == "allowed keys: mirror_mode, replication_enabled, snapshot_interval"


def test_refused__unknown_key_in_a_cinder_string(tmp_path: Path) -> None:
    error = refused(tmp_path, "backend: {pool: v}\nreplication_device: ['backend_id:b, cnof:/x']\n")
    assert "replication_device[0].cnof: unknown key" in error.message
    assert error.hint == "did you mean 'conf'?"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("concurrency: many\n", ":5: concurrency: expected an integer, got the string 'many'"),
        ("concurrency: true\n", ":5: concurrency: expected an integer, got true"),
        ("concurrency: 0\n", ":5: concurrency: must be at least 1"),
        ("volume_timeout: -1\n", ":5: volume_timeout: must be greater than 0"),
        ("state_dir: [a]\n", ":5: state_dir: expected a string, got a list"),
        ("volumes: {a: b}\n", ":5: volumes: expected a list, got a mapping"),
    ],
)
def test_refused__wrong_types_and_values(tmp_path: Path, extra: str, expected: str) -> None:
    assert refused(tmp_path, MINIMAL + extra).message.endswith(expected)


def test_refused__backend_as_a_list(tmp_path: Path) -> None:
    error = refused(tmp_path, "backend: [volumes]\nreplication_device: [{backend_id: b}]\n")
    assert error.message.endswith(":1: backend: expected a mapping, got a list")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("replication_device: [{backend_id: b}]\nbackend: {user: x}\n", "backend.pool: required"),
        (
            "backend: {pool: v}\nreplication_device: [{conf: /x}]\n",
            "replication_device[0].backend_id: required",
        ),
        ("backend: {pool: v}\n", "replication_device: required key missing"),
        ("backend: {pool: v}\nreplication_device: []\n", "needs at least one secondary site"),
    ],
)
def test_refused__missing_required_keys(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in refused(tmp_path, text).message


@pytest.mark.parametrize(
    ("ids", "expected"),
    [("[b, b]", "'b' is already used"), ("[default]", "'default' is already used by the backend")],
)
def test_refused__backend_ids_must_be_unique(tmp_path: Path, ids: str, expected: str) -> None:
    devices = ", ".join(f"{{backend_id: {i}}}" for i in ids.strip("[]").split(", "))
    assert (
        expected
        in refused(tmp_path, f"backend: {{pool: v}}\nreplication_device: [{devices}]\n").message
    )


def test_refused__replication_enabled_that_is_not_a_boolean(tmp_path: Path) -> None:
    error = refused(tmp_path, MINIMAL + "volume_types:\n  t: {replication_enabled: yes please}\n")
    assert "volume_types.t.replication_enabled: cannot read 'yes please'" in error.message
    assert error.hint is not None and "<is> True" in error.hint


def test_refused__unknown_mirror_mode_suggests(tmp_path: Path) -> None:
    error = refused(tmp_path, MINIMAL + "volume_types:\n  t: {mirror_mode: snapshots}\n")
    assert error.message.endswith(":6: volume_types.t.mirror_mode: unknown mode 'snapshots'")
    assert error.hint == "did you mean 'snapshot'?"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("{mirror_mode: snapshot, snapshot_interval: 90s}", "cannot read '90s'"),
        ("{mirror_mode: journal, snapshot_interval: 1h}", "only for mirror_mode snapshot"),
    ],
)
def test_refused__snapshot_interval(tmp_path: Path, spec: str, expected: str) -> None:
    assert expected in refused(tmp_path, MINIMAL + f"volume_types:\n  t: {spec}\n").message


def test_refused__rule_naming_an_unknown_type(tmp_path: Path) -> None:
    error = refused(
        tmp_path,
        MINIMAL + "volume_types:\n  gold: {}\nvolumes:\n  - {match: '*', type: gld}\n",
    )
    assert error.message.endswith(":8: volumes[0].type: no volume type 'gld' in volume_types")
    assert error.hint == "did you mean 'gold'?"


def test_refused__invalid_yaml_names_line_and_column(tmp_path: Path) -> None:
    error = refused(tmp_path, "backend:\n  pool: volumes\n   user: x\n")
    assert error.message.startswith(f"{tmp_path / 'rbdfail.yaml'}:3:")
    assert "invalid YAML" in error.message


def test_refused__empty_file(tmp_path: Path) -> None:
    assert refused(tmp_path, "").message.endswith("the configuration file is empty")


def test_refused__top_level_not_a_mapping(tmp_path: Path) -> None:
    assert "top level: expected a mapping, got a list" in refused(tmp_path, "- a\n").message


def test_refused__missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"absent\.yaml: configuration file not found"):
        load_config(tmp_path / "absent.yaml")


def test_refused__keyring_that_does_not_exist_names_key_and_path(tmp_path: Path) -> None:
    error = refused(tmp_path, MINIMAL.replace("  pool: volumes\n", "  pool: v\n  keyring: /no/k\n"))
    assert error.message.endswith(":3: backend.keyring: keyring file /no/k not found")


# ---- types of volumes ----------------------------------------------------------------------------
TYPED = MINIMAL + (
    "volume_types:\n  gold: {replication_enabled: true}\n  plain: {}\n"
    "volumes:\n  - {match: 'db-*', type: gold}\n  - {match: 'db-*', type: plain}\n"
)


def test_volume_type_for__first_matching_rule_wins(tmp_path: Path) -> None:
    config = load(tmp_path, TYPED)
    assert config.volumes[0] == VolumeRule("db-*", "gold")
    assert config.volume_type_for("db-1").name == "gold"
    assert config.volume_type_for("vm-1") is NOT_TYPED


def test_volume_type_for__metadata_override_wins(tmp_path: Path) -> None:
    assert load(tmp_path, TYPED).volume_type_for("db-1", override="plain").name == "plain"


def test_volume_type_for__unknown_override_names_volume_and_type(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"volume 'db-1'.*'gould'") as caught:
        load(tmp_path, TYPED).volume_type_for("db-1", override="gould")
    assert caught.value.hint == "did you mean 'gold'?"


def test_site__unknown_id_lists_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="known: default, secondary") as caught:
        load(tmp_path, MINIMAL).site("secondry")
    assert caught.value.hint == "did you mean 'secondary'?"


# ---- where the file comes from ------------------------------------------------------------------
def test_find_config_path__order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit, from_env, in_cwd, system = (
        tmp_path / n for n in ("e.yaml", "v.yaml", "rbdfail.yaml", "s.yaml")
    )
    for path in (explicit, from_env, in_cwd, system):
        path.write_text("")
    monkeypatch.setattr(config_module, "SYSTEM_CONFIG", system)
    env = {"RBDFAIL_CONFIG": str(from_env)}
    assert find_config_path(explicit, env, tmp_path) == explicit
    assert find_config_path(None, env, tmp_path) == from_env
    assert find_config_path(None, {}, tmp_path) == in_cwd
    assert find_config_path(None, {}, tmp_path / "elsewhere") == system


def test_find_config_path__nothing_found_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config_module, "SYSTEM_CONFIG", tmp_path / "etc.yaml")
    with pytest.raises(ConfigError, match=r"looked for .*rbdfail\.yaml, .*etc\.yaml") as caught:
        find_config_path(None, {}, tmp_path)
    assert "RBDFAIL_CONFIG" in (caught.value.hint or "")


def test_find_config_path__explicit_file_missing_says_where_it_came_from(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"nope.yaml: configuration file not found \(from --config"
    ):
        find_config_path(tmp_path / "nope.yaml", {}, tmp_path)
