"""rbdfail.yaml: Cinder's model and defaults, and one clear error per mistake, with its place."""

from __future__ import annotations

import textwrap
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
    load_deployment,
)
from rbdfail.errors import ConfigError

EXAMPLE = Path(__file__).parents[1] / "examples" / "rbdfail.yaml"
MINIMAL = """\
backend:
  pool: volumes
replication_device:
  - backend_id: secondary
"""
# Two types and two rules whose globs overlap: the first rule must win.
TYPED = (
    MINIMAL
    + """\
volume_types:
  gold: {replication_enabled: true}
  plain: {}
volumes:
  - {match: "db-*", type: gold}
  - {match: "db-*", type: plain}
  - {match: "vm-*", type: plain}
"""
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rbdfail.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def load(tmp_path: Path, text: str) -> Config:
    return load_config(write(tmp_path, text))


def refused(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    assert caught.value.exit_code == 2
    return caught.value


def at(tmp_path: Path, line: int | None = None) -> str:
    """The `FILE:LINE` a message starts with."""
    file = tmp_path / "rbdfail.yaml"
    return f"{file}:{line}" if line else str(file)


# ---- what loads -------------------------------------------------------------------------------
def test_load__full_file_with_every_field_and_both_device_forms(tmp_path: Path) -> None:
    (tmp_path / "a.keyring").write_text("[client.rbd]\n")
    (tmp_path / "b.keyring").write_text("[client.rbd]\n")
    config = load(
        tmp_path,
        f"""\
        backend:
          name: rbd-1
          conf: /etc/ceph/site-a.conf
          user: rbd
          pool: vols
          cluster_name: site-a
          keyring: {tmp_path / "a.keyring"}
        replication_device:
          - backend_id: site-b
            conf: /etc/ceph/site-b.conf
            user: rbd-b
            pool: vols
            cluster_name: site-b
            keyring: {tmp_path / "b.keyring"}
            secret_uuid: 457eb676-33da-42ec-9a8c-9293d545c337
          - "backend_id:site-c, conf:/etc/ceph/site-c.conf, user:rbd-c, secret_uuid:4a5b-11"
        replication_connect_timeout: 2.5
        volume_timeout: 30
        concurrency: 8
        volume_types:
          gold:
            replication_enabled: "<is> True"
            mirror_mode: snapshot
            snapshot_interval: 30m
          silver: {{replication_enabled: true, mirror_mode: journal}}
          bronze:
        volumes:
          - match: "db-*"
            type: gold
          - {{match: "*", type: bronze}}
        state_dir: /srv/rbdfail
        """,
    )
    assert config == Config(
        path=tmp_path / "rbdfail.yaml",
        backend_name="rbd-1",
        backend=SiteConfig(
            "default",
            Path("/etc/ceph/site-a.conf"),
            "rbd",
            "vols",
            "site-a",
            tmp_path / "a.keyring",
        ),
        replication_devices=(
            SiteConfig(
                "site-b",
                Path("/etc/ceph/site-b.conf"),
                "rbd-b",
                "vols",
                "site-b",
                tmp_path / "b.keyring",
            ),
            SiteConfig("site-c", Path("/etc/ceph/site-c.conf"), "rbd-c", "vols"),
        ),
        volume_types=(
            VolumeType("gold", True, MirrorMode.SNAPSHOT, "30m"),
            VolumeType("silver", True, MirrorMode.JOURNAL),
            VolumeType("bronze", False),
        ),
        volumes=(VolumeRule("db-*", "gold"), VolumeRule("*", "bronze")),
        replication_connect_timeout=2.5,
        volume_timeout=30.0,
        concurrency=8,
        state_dir=Path("/srv/rbdfail"),
    )
    assert isinstance(config.volume_timeout, float)
    assert config.sites == (config.backend, *config.replication_devices)
    assert config.site("site-c") is config.replication_devices[1]
    assert config.site("default") is config.backend


def test_load__the_example_file(tmp_path: Path) -> None:
    config = load_config(EXAMPLE)
    assert config.backend_name == "ceph"
    assert config.backend == SiteConfig("default", Path("/etc/ceph/ceph.conf"), "cinder", "volumes")
    assert config.replication_devices == (
        SiteConfig("secondary", Path("/etc/ceph/secondary.conf"), "cinder", "volumes"),
    )
    assert config.volume_types == (
        VolumeType("replicated", True, MirrorMode.JOURNAL),
        VolumeType("replicated-snap", True, MirrorMode.SNAPSHOT, "1h"),
        VolumeType("standard", False),
    )
    assert [config.volume_type_for(n).name for n in ("db-1", "vm-1", "x")] == [
        "replicated",
        "replicated-snap",
        "standard",
    ]
    assert config.state_dir == Path("/var/lib/rbdfail")


def test_load__the_example_file_of_several_backends() -> None:
    deployment = load_deployment(EXAMPLE.parent / "rbdfail-backends.yaml")
    hdd, ssd = deployment.backends
    assert (hdd.backend_name, hdd.backend.pool, ssd.backend_name, ssd.backend.pool) == (
        "ceph-hdd",
        "volumes-hdd",
        "ceph-ssd",
        "volumes-ssd",
    )
    # Cinder's string form of a device, inheriting its backend's pool.
    assert ssd.replication_devices == (
        SiteConfig("secondary", Path("/etc/ceph/secondary.conf"), "cinder", "volumes-ssd"),
    )
    assert hdd.volume_types == ssd.volume_types and hdd.state_scope == "ceph-hdd"


def test_load__minimal_file_gets_cinder_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, MINIMAL)
    assert config.backend_name == "ceph"
    assert config.backend == SiteConfig("default", Path("/etc/ceph/ceph.conf"), "cinder", "volumes")
    # Cinder's defaults for a device: conf /etc/ceph/<backend_id>.conf, the backend's user.
    assert config.replication_devices == (
        SiteConfig("secondary", Path("/etc/ceph/secondary.conf"), "cinder", "volumes", "ceph"),
    )
    assert (config.replication_connect_timeout, config.volume_timeout, config.concurrency) == (
        5.0,
        60.0,
        256,
    )
    assert config.state_dir == Path("/var/lib/rbdfail")
    assert (config.volume_types, config.volumes) == ((), ())


def test_load__device_user_and_pool_fall_back_to_the_backend_ones(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """\
        backend: {pool: rbd-vols, user: openstack}
        replication_device: ["backend_id:dr", {backend_id: third, user: other}]
        """,
    )
    assert [(d.user, d.pool) for d in config.replication_devices] == [
        ("openstack", "rbd-vols"),
        ("other", "rbd-vols"),
    ]
    assert config.replication_devices[0].conf == Path("/etc/ceph/dr.conf")


def test_load__cinder_string_device_ignores_secret_uuid_and_spaces(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """\
        backend: {pool: v}
        replication_device:
          - " backend_id : dr ,conf:/etc/ceph/dr.conf,  secret_uuid:1234-abcd, "
        """,
    )
    assert config.replication_devices == (
        SiteConfig("dr", Path("/etc/ceph/dr.conf"), "cinder", "v"),
    )


def test_load__relative_paths_are_resolved_against_the_file_s_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "etc" / "keys").mkdir(parents=True)
    (tmp_path / "etc" / "keys" / "a.keyring").write_text("")
    monkeypatch.chdir(tmp_path)  # the cwd is elsewhere than the file: it must not matter
    path = tmp_path / "etc" / "rbdfail.yaml"
    path.write_text(
        "backend: {pool: p, conf: a.conf, keyring: keys/a.keyring}\n"
        "replication_device: [{backend_id: b, conf: ../b.conf}]\n"
        "state_dir: state\n"
    )
    config = load_config(Path("etc/rbdfail.yaml"))
    assert config.backend.conf == path.parent / "a.conf"
    assert config.backend.keyring == path.parent / "keys" / "a.keyring"
    assert config.replication_devices[0].conf == path.parent / ".." / "b.conf"
    assert config.state_dir == path.parent / "state"
    assert all(p.is_absolute() for p in (config.backend.conf, config.state_dir))


@pytest.mark.parametrize(
    ("value", "replicated"),
    [
        ('"<is> True"', True),
        ('"<is> False"', False),
        ('"<IS>  true"', True),
        ('"<is>False"', False),
        ("true", True),
        ("false", False),
        ("yes", True),  # YAML 1.1's boolean, as yaml.safe_load reads it
        ('"true"', True),
        ('"FALSE"', False),
        ("", False),  # no value: the default
    ],
)
def test_load__replication_enabled_reads_cinder_syntax_and_booleans(
    tmp_path: Path, value: str, replicated: bool
) -> None:
    config = load(tmp_path, MINIMAL + f"volume_types:\n  t:\n    replication_enabled: {value}\n")
    assert config.volume_type("t") == VolumeType("t", replicated)


@pytest.mark.parametrize("interval", ["30m", "1h", "12h", "1d", "90m"])
def test_load__snapshot_interval_in_minutes_hours_or_days(tmp_path: Path, interval: str) -> None:
    spec = f"{{mirror_mode: snapshot, snapshot_interval: {interval}}}"
    config = load(tmp_path, MINIMAL + f"volume_types:\n  t: {spec}\n")
    assert config.volume_type("t") == VolumeType("t", False, MirrorMode.SNAPSHOT, interval)


def test_load__yaml_merge_keys_may_be_overridden(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """\
        backend: &site {pool: v, user: u}
        replication_device:
          - {<<: *site, backend_id: b, user: other}
        """,
    )
    assert config.replication_devices[0] == SiteConfig("b", Path("/etc/ceph/b.conf"), "other", "v")


# ---- what is refused, and how it is said --------------------------------------------------------
def test_load__misspelt_top_level_key_suggests_the_right_one(tmp_path: Path) -> None:
    error = refused(tmp_path, MINIMAL + "volume_tmeout: 30\n")
    assert error.message == f"{at(tmp_path, 5)}: volume_tmeout: unknown key"
    assert error.hint == "did you mean 'volume_timeout'?"


def test_load__misspelt_nested_key_names_its_dotted_path_and_line(tmp_path: Path) -> None:
    error = refused(tmp_path, "backend:\n  pool: v\n  usr: x\nreplication_device: [b]\n")
    assert error.message == f"{at(tmp_path, 3)}: backend.usr: unknown key"
    assert error.hint == "did you mean 'user'?"


def test_load__unknown_key_without_a_close_one_lists_the_allowed_keys(tmp_path: Path) -> None:
    error = refused(tmp_path, MINIMAL + "volume_types:\n  t:\n    colour: blue\n")
    assert error.message == f"{at(tmp_path, 7)}: volume_types.t.colour: unknown key"
    assert error.hint == "allowed keys: mirror_mode, replication_enabled, snapshot_interval"


def test_load__unknown_key_in_a_cinder_string_names_the_entry_and_its_line(tmp_path: Path) -> None:
    error = refused(
        tmp_path, "backend: {pool: v}\nreplication_device:\n  - 'backend_id:b, cnof:/x'\n"
    )
    assert error.message == f"{at(tmp_path, 3)}: replication_device[0].cnof: unknown key"
    assert error.hint == "did you mean 'conf'?"


def test_load__unknown_key_in_a_volume_rule(tmp_path: Path) -> None:
    error = refused(tmp_path, TYPED + "  - {match: x, typ: gold}\n")
    assert error.message == f"{at(tmp_path, 12)}: volumes[3].typ: unknown key"
    assert error.hint == "did you mean 'type'?"


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ("concurrency: many", "concurrency: expected an integer, got the string 'many'"),
        ("concurrency: true", "concurrency: expected an integer, got true"),
        ("concurrency: 2.5", "concurrency: expected an integer, got 2.5"),
        ("volume_timeout: false", "volume_timeout: expected a number, got false"),
        ("volume_timeout: 1m", "volume_timeout: expected a number, got the string '1m'"),
        (
            "replication_connect_timeout: [5]",
            "replication_connect_timeout: expected a number, got a list",
        ),
        ("state_dir: [a]", "state_dir: expected a string, got a list"),
        ("volumes: {a: b}", "volumes: expected a list, got a mapping"),
        ("volume_types: [gold]", "volume_types: expected a mapping, got a list"),
    ],
)
def test_load__wrong_type_names_the_expected_one(tmp_path: Path, extra: str, problem: str) -> None:
    assert refused(tmp_path, MINIMAL + extra + "\n").message == f"{at(tmp_path, 5)}: {problem}"


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ("concurrency: 0", "concurrency: must be at least 1"),
        ("volume_timeout: 0", "volume_timeout: must be greater than 0"),
        ("replication_connect_timeout: -1", "replication_connect_timeout: must be greater than 0"),
        ("volume_timeout: .nan", "volume_timeout: must be a number, not nan"),
        ("volume_timeout: .inf", "volume_timeout: must be finite"),
        ("volume_timeout: -.inf", "volume_timeout: must be finite"),
        ("volume_timeout: 1.0e+10", "volume_timeout: must be at most 86400 (one day)"),
        ("volume_timeout: 86401", "volume_timeout: must be at most 86400 (one day)"),
        (f"volume_timeout: {10**400}", "volume_timeout: must be finite"),
        (
            "replication_connect_timeout: 1.0e+10",
            "replication_connect_timeout: must be at most 86400 (one day)",
        ),
        ("concurrency: 1025", "concurrency: must be at most 1024"),
        (f"concurrency: {10**400}", "concurrency: must be at most 1024"),
        ("concurrency: -5", "concurrency: must be at least 1"),
        ("state_dir: ' '", "state_dir: must not be empty"),
    ],
)
def test_load__out_of_range_values__nan_inf_huge_and_negative_numbers_refused(
    tmp_path: Path, extra: str, problem: str
) -> None:
    assert refused(tmp_path, MINIMAL + extra + "\n").message == f"{at(tmp_path, 5)}: {problem}"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "backend: [volumes]\nreplication_device: [b]\n",
            "1: backend: expected a mapping, got a list",
        ),
        (
            "backend: {pool: v}\nreplication_device: {backend_id: b}\n",
            "2: replication_device: expected a list, got a mapping",
        ),
        (
            "backend: {pool: v, user: 5}\nreplication_device: [b]\n",
            "1: backend.user: expected a string, got 5",
        ),
        (
            "backend: {pool: v}\nreplication_device: [{backend_id: b, conf: [x]}]\n",
            "2: replication_device[0].conf: expected a string, got a list",
        ),
        (
            "backend: {pool: v}\nreplication_device:\n  - 7\n",
            "3: replication_device[0]: expected a mapping, got 7",
        ),
    ],
)
def test_load__wrong_type_of_a_section_or_nested_value(
    tmp_path: Path, text: str, problem: str
) -> None:
    assert refused(tmp_path, text).message == f"{at(tmp_path)}:{problem}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("replication_device: [b]\n", ": backend: required key missing"),
        ("backend: {pool: v}\n", ": replication_device: required key missing"),
        ("backend: {user: x}\nreplication_device: [b]\n", ":1: backend.pool: required key missing"),
        (
            "backend:\n  pool:\nreplication_device: [b]\n",
            ":2: backend.pool: required key has no value",
        ),
        (
            "backend: {pool: v}\nreplication_device:\n  - conf: /x\n",
            ":3: replication_device[0].backend_id: required key missing",
        ),
        (
            "backend: {pool: v}\nreplication_device: ['conf:/x, user:u']\n",
            ":2: replication_device[0].backend_id: required key missing",
        ),
        (
            "backend: {pool: v}\nreplication_device: []\n",
            ":2: replication_device: needs at least one secondary site",
        ),
    ],
)
def test_load__missing_required_key(tmp_path: Path, text: str, message: str) -> None:
    error = refused(tmp_path, text)
    assert error.message == at(tmp_path) + message
    assert error.hint is not None


def test_load__duplicate_backend_id_names_the_first_device(tmp_path: Path) -> None:
    error = refused(
        tmp_path,
        "backend: {pool: v}\nreplication_device:\n  - backend_id: b\n  - 'backend_id:b'\n",
    )
    assert error.message == (
        f"{at(tmp_path, 4)}: replication_device[1].backend_id: "
        "'b' is already used by replication_device[0]"
    )
    assert error.hint == "give each replication device its own backend_id, e.g. secondary"


def test_load__backend_id_default_is_the_backend_s_own(tmp_path: Path) -> None:
    error = refused(tmp_path, "backend: {pool: v}\nreplication_device:\n  - backend_id: default\n")
    assert error.message == (
        f"{at(tmp_path, 3)}: replication_device[0].backend_id: "
        "'default' is already used by the backend itself (Cinder's id)"
    )


def test_load__cinder_string_that_is_not_key_value_pairs(tmp_path: Path) -> None:
    error = refused(tmp_path, "backend: {pool: v}\nreplication_device: ['backend_id:b, conf']\n")
    assert error.message == f"{at(tmp_path, 2)}: replication_device[0]: 'conf' is not key:value"
    assert error.hint is not None and "backend_id:secondary, conf:" in error.hint


@pytest.mark.parametrize("value", ['"yes please"', "1", '"<is> maybe"', "[true]"])
def test_load__replication_enabled_that_is_not_a_boolean(tmp_path: Path, value: str) -> None:
    error = refused(tmp_path, MINIMAL + f"volume_types:\n  t:\n    replication_enabled: {value}\n")
    assert error.message.startswith(f"{at(tmp_path, 7)}: volume_types.t.replication_enabled: ")
    assert error.message.endswith(" as true or false")
    assert error.hint == 'write "<is> True" or "<is> False" as Cinder does, or true / false'


def test_load__misspelt_mirror_mode_suggests_the_valid_one(tmp_path: Path) -> None:
    error = refused(tmp_path, MINIMAL + "volume_types:\n  t: {mirror_mode: snapshots}\n")
    assert (
        error.message == f"{at(tmp_path, 6)}: volume_types.t.mirror_mode: unknown mode 'snapshots'"
    )
    assert error.hint == "did you mean 'snapshot'?"


def test_load__unknown_mirror_mode_lists_the_valid_ones(tmp_path: Path) -> None:
    error = refused(tmp_path, MINIMAL + "volume_types:\n  t: {mirror_mode: async}\n")
    assert error.hint == "use one of: journal, snapshot"


@pytest.mark.parametrize("interval", ["90s", "0h", "01h", "1.5h", "h", "1 h", "1H", "60"])
def test_load__snapshot_interval_that_cannot_be_read(tmp_path: Path, interval: str) -> None:
    spec = f"{{mirror_mode: snapshot, snapshot_interval: '{interval}'}}"
    error = refused(tmp_path, MINIMAL + f"volume_types:\n  t: {spec}\n")
    assert error.message == (
        f"{at(tmp_path, 6)}: volume_types.t.snapshot_interval: "
        f"cannot read '{interval}' as an interval"
    )
    assert error.hint == "write a whole number of minutes, hours or days: 30m, 1h, 1d"


@pytest.mark.parametrize("mode", ["mirror_mode: journal, ", ""])
def test_load__snapshot_interval_is_refused_with_journal_mode(tmp_path: Path, mode: str) -> None:
    error = refused(tmp_path, MINIMAL + f"volume_types:\n  t: {{{mode}snapshot_interval: 1h}}\n")
    assert error.message == (
        f"{at(tmp_path, 6)}: volume_types.t.snapshot_interval: "
        "only for mirror_mode snapshot, not journal"
    )


def test_load__rule_naming_an_unknown_type_names_its_line_and_the_known_types(
    tmp_path: Path,
) -> None:
    error = refused(tmp_path, TYPED + "  - match: x\n    type: gld\n")
    assert error.message == (
        f"{at(tmp_path, 13)}: volumes[3].type: "
        "no volume type 'gld' in volume_types (known: gold, plain)"
    )
    assert error.hint == "did you mean 'gold'?"


def test_load__rule_naming_a_type_when_none_is_defined(tmp_path: Path) -> None:
    error = refused(tmp_path, MINIMAL + "volumes:\n  - {match: '*', type: standard}\n")
    assert error.message.endswith("no volume type 'standard' in volume_types (known: none)")
    assert error.hint == "define it under volume_types, or fix the rule"


def test_load__invalid_yaml_names_line_and_column(tmp_path: Path) -> None:
    error = refused(tmp_path, "backend:\n  pool: volumes\n   user: x\n")
    assert error.message == (
        f"{at(tmp_path, 3)}:8: invalid YAML: mapping values are not allowed here"
    )
    assert error.hint is not None


def test_load__key_given_twice_is_refused_with_both_lines(tmp_path: Path) -> None:
    error = refused(tmp_path, MINIMAL + "concurrency: 4\nbackend: {pool: other}\n")
    assert error.message == (
        f"{at(tmp_path, 6)}:1: invalid YAML: 'backend' is given twice (first on line 1)"
    )


def test_load__unsafe_yaml_tag_is_refused(tmp_path: Path) -> None:
    error = refused(tmp_path, MINIMAL + "state_dir: !!python/object/apply:os.getcwd []\n")
    assert error.message.startswith(f"{at(tmp_path, 5)}:12: invalid YAML: ")


@pytest.mark.parametrize("text", ["", "# only a comment\n"])
def test_load__empty_file(tmp_path: Path, text: str) -> None:
    error = refused(tmp_path, text)
    assert error.message == f"{at(tmp_path)}: the configuration file is empty"
    assert error.hint == "see examples/rbdfail.yaml"


@pytest.mark.parametrize(("text", "kind"), [("- a\n", "a list"), ("backend\n", "the string")])
def test_load__top_level_that_is_not_a_mapping(tmp_path: Path, text: str, kind: str) -> None:
    error = refused(tmp_path, text)
    assert error.message.startswith(f"{at(tmp_path)}: top level: expected a mapping, got {kind}")


def test_load__missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "absent.yaml")
    assert caught.value.message == f"{tmp_path / 'absent.yaml'}: configuration file not found"


def test_load__unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)  # a directory
    assert caught.value.message == f"{tmp_path}: cannot read the configuration file: Is a directory"


def test_load__keyring_that_does_not_exist_names_the_key_and_the_path(tmp_path: Path) -> None:
    error = refused(
        tmp_path, "backend: {pool: v}\nreplication_device:\n  - {backend_id: b, keyring: k/b.key}\n"
    )
    assert error.message == (
        f"{at(tmp_path, 3)}: replication_device[0].keyring: "
        f"keyring file {tmp_path / 'k' / 'b.key'} not found"
    )
    assert error.hint is not None and "leave keyring out" in error.hint


# ---- the type of each volume ------------------------------------------------------------------
def test_volume_type_for__first_matching_rule_wins(tmp_path: Path) -> None:
    config = load(tmp_path, TYPED)
    assert config.volume_type_for("db-1") == VolumeType("gold", True)
    assert config.volume_type_for("vm-1") == VolumeType("plain", False)


def test_volume_type_for__no_matching_rule_is_not_typed(tmp_path: Path) -> None:
    config = load(tmp_path, TYPED)
    assert config.volume_type_for("other") is NOT_TYPED
    assert config.volume_type_for("DB-1") is NOT_TYPED  # globs are case-sensitive, as Ceph names


def test_volume_type_for__metadata_override_wins_over_the_rules(tmp_path: Path) -> None:
    config = load(tmp_path, TYPED)
    assert config.volume_type_for("db-1", override="plain").name == "plain"
    assert config.volume_type_for("other", override="gold").name == "gold"


def test_volume_type_for__unknown_override_names_the_volume_and_the_type(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, TYPED).volume_type_for("db-1", override="gould")
    assert caught.value.message == (
        "volume 'db-1': its rbdfail.volume_type metadata names 'gould', "
        f"which is not in volume_types of {at(tmp_path)}"
    )
    assert caught.value.hint == "did you mean 'gold'?"


def test_volume_type__unknown_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, TYPED).volume_type("silver")
    assert caught.value.message == (
        f"{at(tmp_path)}: no volume type 'silver' in volume_types (known: gold, plain)"
    )


def test_site__unknown_id_names_the_known_ones_and_suggests(tmp_path: Path) -> None:
    config = load(tmp_path, MINIMAL)
    with pytest.raises(ConfigError) as caught:
        config.site("secondry")
    assert caught.value.message == (
        f"{at(tmp_path)}: no site with backend_id 'secondry' (known: default, secondary)"
    )
    assert caught.value.hint == "did you mean 'secondary'?"
    with pytest.raises(ConfigError) as caught:
        config.site("zzz")
    assert caught.value.hint == "use one of: default, secondary"


# ---- where the file comes from ----------------------------------------------------------------
@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A file in each place find_config_path looks; /etc's is patched into tmp_path."""
    paths = {name: tmp_path / f"{name}.yaml" for name in ("explicit", "env", "system")}
    paths["cwd"] = tmp_path / "cwd" / "rbdfail.yaml"
    paths["cwd"].parent.mkdir()
    for path in paths.values():
        path.write_text("")
    monkeypatch.setattr(config_module, "SYSTEM_CONFIG", paths["system"])
    return paths


def test_find_config_path__explicit_then_env_then_cwd_then_etc(places: dict[str, Path]) -> None:
    env = {"RBDFAIL_CONFIG": str(places["env"])}
    cwd = places["cwd"].parent
    assert find_config_path(str(places["explicit"]), env, cwd) == places["explicit"]
    assert find_config_path(None, env, cwd) == places["env"]
    assert find_config_path(None, {}, cwd) == places["cwd"]
    assert find_config_path(None, {"RBDFAIL_CONFIG": ""}, cwd) == places["cwd"]
    assert find_config_path(None, {}, cwd.parent) == places["system"]


def test_find_config_path__explicit_file_must_exist(places: dict[str, Path]) -> None:
    missing = places["cwd"].parent / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        find_config_path(missing, {}, places["cwd"].parent)
    assert caught.value.message == f"{missing}: configuration file not found (from --config)"


def test_find_config_path__env_file_must_exist(places: dict[str, Path]) -> None:
    missing = places["cwd"].parent / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        find_config_path(None, {"RBDFAIL_CONFIG": str(missing)}, places["cwd"].parent)
    assert caught.value.message == (
        f"{missing}: configuration file not found (from $RBDFAIL_CONFIG)"
    )


def test_find_config_path__nothing_found_lists_the_places_searched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config_module, "SYSTEM_CONFIG", tmp_path / "etc" / "rbdfail.yaml")
    with pytest.raises(ConfigError) as caught:
        find_config_path(None, {}, tmp_path)
    assert caught.value.message == (
        f"no configuration file found: looked for {tmp_path / 'rbdfail.yaml'}, "
        f"{tmp_path / 'etc' / 'rbdfail.yaml'} (no --config given, $RBDFAIL_CONFIG not set)"
    )
    assert caught.value.hint == (
        "pass --config FILE or set RBDFAIL_CONFIG (see examples/rbdfail.yaml)"
    )


def test_load__the_bounds_themselves_are_accepted(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        MINIMAL + "volume_timeout: 86400\nreplication_connect_timeout: 0.1\nconcurrency: 1024\n",
    )
    assert (config.volume_timeout, config.replication_connect_timeout) == (86400.0, 0.1)
    assert config.concurrency == 1024


@pytest.mark.parametrize(
    ("device", "line"),
    [
        ("  - {backend_id: b, pool: other}\n", 4),
        ("  - 'backend_id:b, pool:other'\n", 4),
    ],
)
def test_load__device_pool_other_than_the_backend_s_is_refused_rbd_mirror_pairs_by_name(
    tmp_path: Path, device: str, line: int
) -> None:
    error = refused(tmp_path, "backend:\n  pool: volumes\nreplication_device:\n" + device)
    assert error.message == (
        f"{at(tmp_path, line)}: replication_device[0].pool: 'other' differs from backend.pool "
        "'volumes': rbd-mirror pairs pools by name, so the copies are in a pool of the same "
        "name on every site"
    )
    assert error.hint == "remove it (it defaults to backend.pool), or set it to 'volumes'"


def test_load__backend_namespace_is_inherited_by_its_devices(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        "backend:\n  pool: volumes\n  namespace: tenants\n"
        "replication_device:\n  - {backend_id: b}\n",
    )
    assert [s.namespace for s in config.sites] == ["tenants", "tenants"]
    assert config.backend.where == "volumes/tenants"
    plain = load(tmp_path, "backend: {pool: volumes}\nreplication_device: [{backend_id: b}]\n")
    assert plain.backend.where == "volumes"


def test_load__device_namespace_other_than_the_backend_s_or_a_bad_name_is_refused(
    tmp_path: Path,
) -> None:
    error = refused(
        tmp_path,
        "backend: {pool: volumes, namespace: a}\n"
        "replication_device:\n  - {backend_id: b, namespace: c}\n",
    )
    assert "replication_device[0].namespace: 'c' differs from backend.namespace 'a'" in (
        error.message
    )
    error = refused(
        tmp_path,
        "backend: {pool: volumes, namespace: 'a/b'}\nreplication_device: [{backend_id: b}]\n",
    )
    assert "backend.namespace: 'a/b' is not an RBD namespace name" in error.message
