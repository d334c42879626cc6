"""`rbdfail import-cinder`: real-looking cinder.conf files read as Cinder reads them, the volume
types from openstack's JSON, placeholders the loader refuses, and a file that loads."""

from __future__ import annotations

import errno
import json
import os
import tempfile
import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rbdfail.cinder.conf import RBD_DRIVER as RBD
from rbdfail.cinder.importer import import_cinder
from rbdfail.cinder.model import CinderImport
from rbdfail.cinder.writer import write_new_file
from rbdfail.cli import main
from rbdfail.cluster import MirrorMode
from rbdfail.config import Config, Deployment, SiteConfig, load_config, load_deployment
from rbdfail.errors import ConfigError

DATA = Path(__file__).parent / "data" / "cinder"
SINGLE = DATA / "single-replicated.conf"
MULTI = DATA / "multi-backend.conf"
UNREPLICATED = DATA / "no-replication.conf"
TWO_DEVICES = DATA / "two-devices.conf"
TWO_REPLICATED = DATA / "two-replicated.conf"
TWO_REPLICATED_TYPES = DATA / "two-replicated-types.json"
REPLICATED_AND_NOT = DATA / "replicated-and-not.conf"
SAME_POOL = DATA / "same-pool.conf"
TIMEOUTS = DATA / "different-timeouts.conf"
TYPES = DATA / "volume-types.json"
OLD_CLIENT_TYPES = DATA / "volume-types-old-client.json"
SECRETS = (  # the secret UUIDs the example files hold: none may reach the output
    "457eb676-33da-42ec-9a8c-9293d545c337",
    "0c9b6a3e-8c1e-4bcb-9a5f-7d6bb5a1e0c2",
    "5a0f9a3c-7d0c-4f7e-b4a5-c1ad7f1d2e8b",
)


def write(tmp_path: Path, text: str, name: str = "cinder.conf") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def types_file(tmp_path: Path, *entries: Mapping[str, object]) -> Path:
    path = tmp_path / "types.json"
    path.write_text(json.dumps(list(entries)))
    return path


REPLICATED_CEPH = {
    "ID": "6c0b7b28",
    "Name": "ceph-replicated",
    "Properties": {"replication_enabled": "<is> True", "volume_backend_name": "ceph"},
}


def loaded(tmp_path: Path, result: CinderImport) -> Config:
    path = tmp_path / "rbdfail.yaml"
    path.write_text(result.text)
    return load_config(path)


def loaded_deployment(tmp_path: Path, text: str) -> Deployment:
    path = tmp_path / "rbdfail.yaml"
    path.write_text(text)
    return load_deployment(path)


def refused_load(tmp_path: Path, result: CinderImport) -> ConfigError:
    path = tmp_path / "rbdfail.yaml"
    path.write_text(result.text)
    with pytest.raises(ConfigError) as caught:
        load_deployment(path)
    return caught.value


def refused(conf: Path, backend: str | None = None, types: Path | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        import_cinder(conf, backend, volume_types=types)
    assert caught.value.exit_code == 2
    return caught.value


SIMPLE = """\
[DEFAULT]
enabled_backends = ceph

[ceph]
volume_driver = cinder.volume.drivers.rbd.RBDDriver
volume_backend_name = ceph
rbd_pool = volumes
rbd_user = cinder
replication_device = backend_id:secondary,conf:/etc/ceph/secondary.conf,user:cinder
"""


# ---- round trips: what Cinder says, rbdfail loads ---------------------------------------------
def test_single_backend_with_replication__round_trip_through_load_config(tmp_path: Path) -> None:
    result = import_cinder(SINGLE, volume_types=types_file(tmp_path, REPLICATED_CEPH))
    assert result.todo == ()
    config = loaded(tmp_path, result)
    assert config.backend_name == "ceph"
    assert config.backend == SiteConfig(
        "default", Path("/etc/ceph/ceph.conf"), "cinder", "volumes", "ceph", None
    )
    # Cinder connects to a replication target with its backend_id as the cluster name.
    assert config.replication_devices == (
        SiteConfig("secondary", Path("/etc/ceph/secondary.conf"), "cinder", "volumes", "secondary"),
    )
    assert config.replication_connect_timeout == 10
    replicated = config.volume_type("ceph-replicated")
    assert replicated.replicated and replicated.mirror_mode == MirrorMode.JOURNAL
    assert config.volume_type_for("volume-0f3c5a2e").name == "ceph-replicated"


def test_single_backend__every_value_says_where_it_came_from(tmp_path: Path) -> None:
    text = import_cinder(SINGLE, volume_types=types_file(tmp_path, REPLICATED_CEPH)).text
    assert f"from {SINGLE}, backend section [ceph]" in text
    for line, origin in [
        ("pool: volumes", "# [ceph] rbd_pool"),
        ("user: cinder", "# [ceph] rbd_user"),
        ("conf: /etc/ceph/ceph.conf", "# [ceph] rbd_ceph_conf"),
        ("cluster_name: ceph", "# rbd_cluster_name not set: Cinder's default"),
        ("- backend_id: secondary", "# [ceph] replication_device"),
        ("replication_connect_timeout: 10", "# [ceph] replication_connect_timeout"),
        ("ceph-replicated:", f"# {tmp_path / 'types.json'} 'ceph-replicated'"),
    ]:
        assert any(line in row and origin in row for row in text.splitlines()), (line, origin)


def test_key_material__never_written_and_said_so() -> None:
    for conf, backend in (
        (SINGLE, None),
        (MULTI, "ceph-fast"),
        (MULTI, None),
        (TWO_DEVICES, None),
        (TWO_REPLICATED, None),
        (REPLICATED_AND_NOT, None),
    ):
        text = import_cinder(conf, backend).text
        for secret in SECRETS:
            assert secret not in text
        assert all(line.lstrip().startswith("#") for line in text.splitlines() if "secret" in line)
    notes = import_cinder(TWO_DEVICES).notes
    assert (
        "[ceph] replication_device #2: secret_uuid ignored: a libvirt secret, not copied" in notes
    )


def test_several_rbd_backends_none_replicated__names_them_and_exits_2(tmp_path: Path) -> None:
    conf = write(
        tmp_path,
        MULTI.read_text()
        .replace("replication_device = backend_id:dr,conf:/etc/ceph/dr.conf,user:cinder-dr", "")
        .replace("ceph-slow, lvm-local", "ceph-slow,lvm-local"),
    )
    error = refused(conf)
    assert str(error) == (
        f"{conf}: 2 RBD backends in enabled_backends, none with replication_device: "
        "ceph-fast, ceph-slow"
    )
    assert error.hint is not None and "--backend NAME" in error.hint


@pytest.mark.parametrize(
    ("backend", "pool"), [("ceph-fast", "volumes-ssd"), ("ceph-slow", "volumes-hdd")]
)
def test_multi_backend__each_pool_with_backend_defaults_inherited(
    tmp_path: Path, backend: str, pool: str
) -> None:
    types = types_file(
        tmp_path,
        *(
            {
                "Name": f"{name}-dr",
                "Properties": {"replication_enabled": "<is> True", "volume_backend_name": name},
            }
            for name in ("ceph-fast", "ceph-slow")
        ),
    )
    result = import_cinder(MULTI, backend, volume_types=types)
    config = loaded(tmp_path, result)
    assert config.backend_name == backend
    assert config.backend.pool == pool
    # From [backend_defaults]; [DEFAULT]'s stale rbd_pool = volumes-old is not Cinder's either.
    assert config.backend.user == "cinder"
    assert config.backend.conf == Path("/etc/ceph/ceph.conf")
    assert config.replication_connect_timeout == 7
    assert [(d.backend_id, d.user, str(d.conf)) for d in config.replication_devices] == [
        ("dr", "cinder-dr", "/etc/ceph/dr.conf")
    ]
    assert [t.name for t in config.volume_types] == [f"{backend}-dr"]  # the other is passed over
    assert config.volume_type_for("volume-1").replicated
    assert "[backend_defaults] rbd_user" in result.text
    assert "volumes-old" not in result.text


def test_only_type_for_the_backend_does_not_replicate__said_so() -> None:
    result = import_cinder(MULTI, "ceph-fast", volume_types=TYPES)  # only __DEFAULT__ may land here
    assert "no volume type of backend 'ceph-fast' replicates: a failover would move no volume" in (
        result.notes
    )


def test_default_section__not_inherited_as_cinder_ignores_driver_options_there(
    tmp_path: Path,
) -> None:
    conf = write(
        tmp_path,
        """\
        [DEFAULT]
        enabled_backends = ceph
        rbd_pool = volumes
        rbd_user = old-cinder

        [ceph]
        volume_driver = cinder.volume.drivers.rbd.RBDDriver
        replication_device = backend_id:secondary
        """,
    )
    error = refused(conf)
    assert str(error) == f"{conf}: [ceph] has no rbd_pool (nor has [backend_defaults])"
    assert error.hint is not None and "`rbd`" in error.hint

    conf.write_text(conf.read_text() + "rbd_pool = volumes\n")
    result = import_cinder(conf)
    assert "user: admin" in result.text  # librados' default user, as Cinder connects
    assert "old-cinder" not in result.text
    assert any(
        note.startswith("[DEFAULT] rbd_user is ignored: Cinder has read driver options only")
        for note in result.notes
    )


def test_backend_defaults__inherited_and_the_section_wins(tmp_path: Path) -> None:
    conf = write(
        tmp_path,
        """\
        [DEFAULT]
        enabled_backends = ceph

        [backend_defaults]
        rbd_pool = shared
        rbd_user = shared-user
        rbd_cluster_name = site-a

        [ceph]
        volume_driver = cinder.volume.drivers.rbd.RBDDriver
        rbd_pool = volumes
        replication_device = backend_id:secondary
        """,
    )
    result = import_cinder(conf, volume_types=types_file(tmp_path, {"Name": "t", "Properties": {}}))
    config = loaded(tmp_path, result)
    assert (config.backend.pool, config.backend.user) == ("volumes", "shared-user")
    # rbd_ceph_conf not set: librados looks for /etc/ceph/$cluster.conf.
    assert config.backend.conf == Path("/etc/ceph/site-a.conf")
    # A device's user defaults to rbd_user (Cinder's rule), its conf to /etc/ceph/<id>.conf.
    assert config.replication_devices[0].user == "shared-user"
    assert config.replication_devices[0].conf == Path("/etc/ceph/secondary.conf")
    assert "conf not given: Cinder's default" in result.text


def test_two_replication_device_lines__both_kept_in_order(tmp_path: Path) -> None:
    """oslo.config's MultiOpt: each line is a device. configparser alone keeps only the last
    (strict=False) or refuses the file (strict)."""
    result = import_cinder(
        TWO_DEVICES,
        volume_types=types_file(
            tmp_path,
            REPLICATED_CEPH
            | {
                "Properties": {
                    "replication_enabled": "<is> True",
                    "volume_backend_name": "ceph-replicated",
                }
            },
        ),
    )
    config = loaded(tmp_path, result)
    assert [
        (d.backend_id, str(d.conf), d.user, d.cluster_name) for d in config.replication_devices
    ] == [
        ("secondary", "/etc/ceph/secondary.conf", "cinder", "secondary"),
        ("tertiary", "/etc/ceph/tertiary.conf", "cinder-t", "tertiary"),  # over three lines
    ]
    assert "# [ceph] replication_device #2" in result.text


def test_section_names_match_case_insensitively_and_quotes_are_stripped() -> None:
    # enabled_backends = Ceph, section [ceph], volume_driver in double quotes (oslo strips them).
    assert import_cinder(TWO_DEVICES).backend == "ceph"


def test_repeated_single_valued_key__last_wins_and_repeated_section_merges(tmp_path: Path) -> None:
    conf = write(
        tmp_path,
        SIMPLE + "rbd_pool = first-mistake\nrbd_pool = volumes-b\n\n[ceph]\nrbd_user = cinder-b\n",
    )
    config = loaded(
        tmp_path, import_cinder(conf, volume_types=types_file(tmp_path, REPLICATED_CEPH))
    )
    assert (config.backend.pool, config.backend.user) == ("volumes-b", "cinder-b")


def test_without_replication__written_with_a_placeholder_the_loader_refuses(tmp_path: Path) -> None:
    result = import_cinder(UNREPLICATED)
    assert result.backend == "rbd-1"
    assert "replication_device: []" in result.text
    assert any(item.startswith("replication_device:") for item in result.todo)
    error = refused_load(tmp_path, result)
    assert "replication_device: needs at least one secondary site" in str(error)
    assert 'match: "vol-*"' in result.text  # [DEFAULT] volume_name_template = vol-%s


def test_several_types__the_rules_are_a_placeholder_the_loader_quotes(tmp_path: Path) -> None:
    result = import_cinder(SINGLE, volume_types=TYPES)
    assert result.todo == (
        "volumes: which volume has which type (Cinder keeps it in its database): write the rules",
    )
    error = refused_load(tmp_path, result)
    assert "volumes[0].type: no volume type 'FILL IN: the type of the volumes no rule above" in str(
        error
    )
    assert "(one of: ceph-replicated, ceph-standard, __DEFAULT__)" in str(error)
    # The lvm type is another backend's; __DEFAULT__ (no volume_backend_name) may be here.
    assert "volume type 'lvm' passed over: it is for backend 'lvm', not 'ceph'" in result.notes
    config = loaded(tmp_path, CinderImport(_fill(result.text, "ceph-standard"), "ceph", (), ()))
    assert not config.volume_type("ceph-standard").replicated
    assert not config.volume_type("__DEFAULT__").replicated


def _fill(text: str, type_name: str) -> str:
    start = text.index('"FILL IN')
    return text[:start] + type_name + text[text.index("\n", start) :]


def test_without_volume_types__placeholder_types_and_rules(tmp_path: Path) -> None:
    result = import_cinder(SINGLE)
    assert [item.split(":")[0] for item in result.todo] == ["volume_types", "volumes"]
    assert "FILL IN" in str(refused_load(tmp_path, result))
    config = loaded(tmp_path, CinderImport(_fill(result.text, "replicated"), "ceph", (), ()))
    assert config.volume_type_for("volume-1").replicated


def test_only_replicated_rbd_backend_is_picked_among_several(tmp_path: Path) -> None:
    conf = write(
        tmp_path,
        SIMPLE.replace("enabled_backends = ceph", "enabled_backends = ceph,scratch,lvm")
        + textwrap.dedent(
            """\

        [scratch]
        volume_driver = cinder.volume.drivers.rbd.RBDDriver
        rbd_pool = scratch

        [lvm]
        volume_driver = cinder.volume.drivers.lvm.LVMVolumeDriver
        """
        ),
    )
    result = import_cinder(conf)
    assert result.backend == "ceph"
    assert any("passed over: scratch" in note for note in result.notes)


def test_no_rbd_backend__names_what_there_is(tmp_path: Path) -> None:
    conf = write(tmp_path, "[DEFAULT]\nenabled_backends = lvm\n[lvm]\nvolume_group = cinder\n")
    error = refused(conf)
    assert str(error) == f"{conf}: no RBD backend in enabled_backends: lvm (LVMVolumeDriver)"


@pytest.mark.parametrize(
    ("backend", "message"),
    [
        ("nope", "no section [nope] (sections: [DEFAULT], [backend_defaults], [ceph-fast]"),
        ("DEFAULT", "[DEFAULT] is not a backend's section"),
        ("Backend_Defaults", "[backend_defaults] is not a backend's section"),
        (
            "lvm-local",
            "[lvm-local] is not an RBD backend: volume_driver is "
            "cinder.volume.drivers.lvm.LVMVolumeDriver",
        ),
    ],
)
def test_backend_option__missing_section_or_not_rbd(backend: str, message: str) -> None:
    assert message in str(refused(MULTI, backend))


def test_no_enabled_backends__asks_for_backend(tmp_path: Path) -> None:
    conf = write(tmp_path, SIMPLE.replace("enabled_backends = ceph", "debug = true"))
    error = refused(conf)
    assert "enabled_backends is not set" in str(error)
    assert import_cinder(conf, "ceph").backend == "ceph"


# ---- several backends: every replicated one, under `backends:` -------------------------------
def sites(config: Config) -> list[tuple[str, str, str, str, str]]:
    return [(s.backend_id, str(s.conf), s.user, s.pool, s.cluster_name) for s in config.sites]


def test_two_replicated_backends__each_under_its_section_with_its_own_devices(
    tmp_path: Path,
) -> None:
    one_type = types_file(
        tmp_path, {"Name": "mirrored", "Properties": REPLICATED_CEPH["Properties"]}
    )
    result = import_cinder(TWO_REPLICATED, volume_types=one_type)
    assert (result.backend, result.backends) == ("ceph-hdd", ("ceph-hdd", "ceph-ssd"))
    assert "backend:" not in result.text.splitlines()
    # No type: the placeholder types and rules, which the loader refuses by their FILL IN.
    assert [item.split(":")[0] for item in result.todo] == ["volume_types", "volumes"]
    assert "FILL IN" in str(refused_load(tmp_path, result))

    types = types_file(
        tmp_path, {"Name": "mirrored", "Properties": {"replication_enabled": "<is> True"}}
    )
    result = import_cinder(TWO_REPLICATED, volume_types=types)
    assert result.todo == ()  # one type for every backend: every volume's
    deployment = loaded_deployment(tmp_path, result.text)
    hdd, ssd = deployment.backends
    assert (hdd.backend_name, hdd.state_scope, ssd.backend_name) == (
        "ceph-hdd",
        "ceph-hdd",
        "ceph-ssd",
    )
    assert sites(hdd) == [
        ("default", "/etc/ceph/ceph.conf", "cinder", "volumes-hdd", "ceph"),
        ("secondary", "/etc/ceph/secondary.conf", "cinder", "volumes-hdd", "secondary"),
    ]
    assert sites(ssd) == [
        ("default", "/etc/ceph/ceph.conf", "cinder-ssd", "volumes-ssd", "ceph"),
        ("secondary", "/etc/ceph/secondary.conf", "cinder-ssd", "volumes-ssd", "secondary"),
        ("tertiary", "/etc/ceph/tertiary.conf", "cinder-ssd", "volumes-ssd", "tertiary"),
    ]
    assert hdd.replication_connect_timeout == ssd.replication_connect_timeout == 10
    assert ssd.volume_type_for("volume-1").replicated
    text = result.text
    assert f"from {TWO_REPLICATED}, backend sections [ceph-hdd], [ceph-ssd]" in text
    rows = text.splitlines()
    # The key is the section; a volume_backend_name that differs is kept as a comment.
    assert any(
        row.startswith("  ceph-ssd:") and "volume_backend_name 'fast'" in row for row in rows
    )
    assert any(
        row.startswith("  ceph-hdd:") and "also its volume_backend_name" in row for row in rows
    )
    assert any(
        "replication_connect_timeout: 10" in row
        and "[ceph-hdd] replication_connect_timeout; [ceph-ssd] replication_connect_timeout" in row
        for row in rows
    )
    assert "the only volume type, for every backend" in text
    # Both backends' notes from the same secret once each; no secret itself.
    assert (
        result.notes.count(
            "rbd_secret_uuid ignored: it names a libvirt secret; no key material is copied"
        )
        == 1
    )


def test_two_replicated_backends__each_type_says_which_backend_it_is_for(tmp_path: Path) -> None:
    result = import_cinder(TWO_REPLICATED, volume_types=TWO_REPLICATED_TYPES)
    rows = result.text.splitlines()
    for name, where in [
        ("hdd-replicated:", "volume_backend_name='ceph-hdd': backend [ceph-hdd]"),
        ("ssd-replicated:", "volume_backend_name='fast': backend [ceph-ssd]"),
        ("ssd-scratch: {}", "volume_backend_name='fast': backend [ceph-ssd]"),
        ("__DEFAULT__: {}", "no volume_backend_name: any backend"),
    ]:
        assert any(row.startswith(f"  {name}") and where in row for row in rows), name
    assert (
        "volume type 'lvm' passed over: it is for backend 'lvm', not 'ceph-hdd' or 'fast'"
        in result.notes
    )
    # The rules are global: several types, so the catch-all is a FILL IN naming them all.
    assert result.todo == (
        "volumes: which volume has which type (Cinder keeps it in its database): write the rules",
    )
    error = refused_load(tmp_path, result)
    assert "(one of: hdd-replicated, ssd-replicated, ssd-scratch, __DEFAULT__)" in str(error)
    assert "rbd image-meta set POOL/IMAGE" in result.text
    assert "(POOL: the volume's backend's pool: volumes-hdd, volumes-ssd)" in result.text
    deployment = loaded_deployment(tmp_path, _fill(result.text, "ssd-scratch"))
    assert [b.backend_name for b in deployment.backends] == ["ceph-hdd", "ceph-ssd"]
    assert [(t.name, t.replicated) for t in deployment.backends[0].volume_types] == [
        ("hdd-replicated", True),
        ("ssd-replicated", True),
        ("ssd-scratch", False),
        ("__DEFAULT__", False),
    ]


def test_two_replicated_backends__one_type_for_one_of_them_is_not_everyones(
    tmp_path: Path,
) -> None:
    types = types_file(
        tmp_path,
        {
            "Name": "hdd-replicated",
            "Properties": {"replication_enabled": "<is> True", "volume_backend_name": "ceph-hdd"},
        },
    )
    result = import_cinder(TWO_REPLICATED, volume_types=types)
    # The SSD backend's volumes have no type of their own: the catch-all is the operator's.
    assert [item.split(":")[0] for item in result.todo] == ["volumes"]
    assert (
        f"no volume type in {types} is for backend 'fast' ([ceph-ssd]): the rules below must "
        "give its volumes a type" in result.notes
    )


def test_multi_backend__both_written_with_backend_defaults_inherited(tmp_path: Path) -> None:
    result = import_cinder(MULTI, volume_types=types_file(tmp_path, REPLICATED_CEPH))
    assert result.backends == ("ceph-fast", "ceph-slow")
    # REPLICATED_CEPH is for volume_backend_name 'ceph': neither backend's.
    assert (
        "volume type 'ceph-replicated' passed over: it is for backend 'ceph', not "
        in (result.notes[-1])
    )
    deployment = loaded_deployment(tmp_path, _fill(result.text, "replicated"))
    assert [(b.backend_name, b.backend.pool) for b in deployment.backends] == [
        ("ceph-fast", "volumes-ssd"),
        ("ceph-slow", "volumes-hdd"),
    ]
    for backend in deployment.backends:  # [backend_defaults]' device, for each
        assert [(d.backend_id, d.user, str(d.conf)) for d in backend.replication_devices] == [
            ("dr", "cinder-dr", "/etc/ceph/dr.conf")
        ]
    assert "volumes-old" not in result.text  # [DEFAULT]'s stale rbd_pool
    assert "  # Left out: [lvm-local], not an RBD backend (LVMVolumeDriver)" in result.text


def test_one_replicated_and_one_not__the_one_backend_shape_and_the_other_named(
    tmp_path: Path,
) -> None:
    result = import_cinder(REPLICATED_AND_NOT, volume_types=types_file(tmp_path, REPLICATED_CEPH))
    assert result.backends == ("ceph",)
    assert result.text.splitlines().count("backend:") == 1 and "backends:" not in result.text
    assert (
        "RBD backend(s) without replication_device passed over: ceph-scratch (import one with "
        "--backend NAME)" in result.notes
    )
    assert "# - RBD backend(s) without replication_device passed over: ceph-scratch" in result.text
    config = loaded(tmp_path, result)
    assert sites(config) == [
        ("default", "/etc/ceph/ceph.conf", "cinder", "volumes", "ceph"),
        ("secondary", "/etc/ceph/secondary.conf", "cinder", "volumes", "secondary"),
    ]
    # Asked for, the unreplicated one is written alone, its secondary site a FILL IN.
    alone = import_cinder(REPLICATED_AND_NOT, "ceph-scratch")
    assert "replication_device: []" in alone.text and "pool: scratch" in alone.text


def test_two_backends_on_one_pool__refused_naming_both(tmp_path: Path) -> None:
    error = refused(SAME_POOL)
    assert str(error) == (
        f"{SAME_POOL}: [ceph-gold] and [ceph-silver] use the same pool 'volumes' of "
        "/etc/ceph/ceph.conf: rbdfail fails over a pool's images, it cannot fail over one of "
        "these backends without the other"
    )
    assert error.hint is not None and "--backend NAME" in error.hint
    # Each alone is fine; and the loader refuses the pair too, as import-cinder does.
    single = import_cinder(
        SAME_POOL, "ceph-silver", volume_types=types_file(tmp_path, {"Name": "t", "Properties": {}})
    )
    assert loaded(tmp_path, single).backend.pool == "volumes"
    text = import_cinder(
        TWO_REPLICATED, volume_types=types_file(tmp_path, {"Name": "t", "Properties": {}})
    ).text
    with pytest.raises(ConfigError, match="the same pool as backend 'ceph-hdd'"):
        loaded_deployment(tmp_path, text.replace("pool: volumes-ssd", "pool: volumes-hdd"))


def test_different_connect_timeouts__the_largest_said_so(tmp_path: Path) -> None:
    result = import_cinder(
        TIMEOUTS, volume_types=types_file(tmp_path, {"Name": "t", "Properties": {}})
    )
    assert result.backends == ("ceph-local", "ceph-remote")
    note = (
        "replication_connect_timeout differs between the backends ([ceph-local] 5, "
        "[ceph-remote] 30): rbdfail has one for all, and takes the largest, 30 s"
    )
    assert any(n.startswith(note) for n in result.notes)
    assert any(
        row.startswith("replication_connect_timeout: 30") and "the largest of the backends'" in row
        for row in result.text.splitlines()
    )
    local, remote = loaded_deployment(tmp_path, result.text).backends
    assert local.replication_connect_timeout == remote.replication_connect_timeout == 30
    assert sites(remote) == [
        ("default", "/etc/ceph/remote.conf", "cinder", "volumes", "remote"),
        ("remote-dr", "/etc/ceph/remote-dr.conf", "cinder", "volumes", "remote-dr"),
    ]
    # What enabled_backends holds that the file does not, named in it and in the notes.
    assert "  # Left out: [ceph-images], an RBD backend without replication_device" in result.text
    assert "--backend ceph-images" in result.text
    assert "  # Left out: [lvm-1], not an RBD backend (LVMVolumeDriver)" in result.text
    assert any("passed over: ceph-images" in n for n in result.notes)
    # volume_backend_name not set: the RBD driver reports 'RBD', the scheduler's name for both.
    assert "volume_backend_name 'RBD': not set: Cinder's RBD driver reports 'RBD'" in result.text


def test_several_backends__a_section_name_rbdfail_cannot_take_is_refused(tmp_path: Path) -> None:
    conf = write(
        tmp_path,
        TWO_REPLICATED.read_text()
        .replace("enabled_backends = ceph-hdd,", "enabled_backends = ceph hdd,")
        .replace("[ceph-hdd]", "[ceph hdd]"),
    )
    error = refused(conf)
    assert str(error).startswith(f"{conf}: [ceph hdd]: the section's name cannot name an rbdfail")
    assert import_cinder(conf, "ceph hdd").backends == ("ceph hdd",)  # alone, it has `name:`


def test_a_backend_named_twice_in_enabled_backends_is_one(tmp_path: Path) -> None:
    conf = write(
        tmp_path, SIMPLE.replace("enabled_backends = ceph", "enabled_backends = ceph, Ceph")
    )
    assert import_cinder(conf).backends == ("ceph",)


# ---- malformed input: a clear message naming the file, section and key ---------------------
@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "rbd_pool = volumes\n[ceph]\n",
            ":1: not a cinder.conf: 'rbd_pool = volumes' comes before",
        ),
        (
            "[DEFAULT]\nenabled_backends = ceph\nthis is not a key\n",
            ":3: not a cinder.conf line: 'this is not a key' (expected `key = value`",
        ),
        ("<html>502 Bad Gateway</html>\n", ":1: not a cinder.conf"),
    ],
    ids=["key-before-section", "line-without-value", "not-ini"],
)
def test_malformed_file__names_the_line(tmp_path: Path, text: str, message: str) -> None:
    conf = write(tmp_path, text)
    assert str(refused(conf)).startswith(f"{conf}{message}")


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("conf:/etc/ceph/secondary.conf", "[ceph] replication_device has no backend_id"),
        ("", "[ceph] replication_device has no backend_id"),
        (
            "backend_id:secondary,/etc/ceph/x.conf",
            "[ceph] replication_device: part 2 is not key:value",
        ),
        ("backend_id:a,backend_id:b", "[ceph] replication_device: 'backend_id' is given twice"),
        ("backend_id:default", "backend_id 'default' is Cinder's id for the backend itself"),
        (
            "backend_id:s,conf:secondary.conf",
            "[ceph] replication_device: conf 'secondary.conf' is a relative path",
        ),
        ("backend_id:s,conf:$state_path/s.conf", "conf uses oslo.config's $substitution"),
    ],
)
def test_replication_device_refused(tmp_path: Path, device: str, message: str) -> None:
    conf = write(
        tmp_path,
        SIMPLE.replace("backend_id:secondary,conf:/etc/ceph/secondary.conf,user:cinder", device),
    )
    assert message in str(refused(conf))


def test_replication_device__a_secret_in_a_bad_part_is_not_echoed(tmp_path: Path) -> None:
    conf = write(tmp_path, SIMPLE.replace("user:cinder", "AQBsecretkeymaterial=="))
    error = refused(conf)
    assert "AQBsecret" not in str(error) and "part 3 is not key:value" in str(error)


def test_replication_device__two_with_one_backend_id(tmp_path: Path) -> None:
    conf = write(tmp_path, SIMPLE + "replication_device = backend_id:secondary\n")
    assert "replication_device #2: backend_id 'secondary' is taken" in str(refused(conf))


@pytest.mark.parametrize(
    ("value", "outcome"),
    [("abc", "'abc' is not a whole number"), ("-1", None), ("90000", "over a day")],
)
def test_replication_connect_timeout(tmp_path: Path, value: str, outcome: str | None) -> None:
    conf = write(tmp_path, SIMPLE + f"replication_connect_timeout = {value}\n")
    if outcome:
        assert "[ceph] replication_connect_timeout" in str(refused(conf))
        assert outcome in str(refused(conf))
    else:  # no timeout in Cinder; rbdfail needs one
        result = import_cinder(conf)
        assert "replication_connect_timeout: 5" in result.text
        assert any("is -1 (no timeout in Cinder)" in note for note in result.notes)


def test_windows_line_ends_and_a_byte_order_mark_are_read(tmp_path: Path) -> None:
    conf = tmp_path / "cinder.conf"
    conf.write_bytes(b"\xef\xbb\xbf" + SIMPLE.replace("\n", "\r\n").encode())
    config = loaded(
        tmp_path, import_cinder(conf, volume_types=types_file(tmp_path, REPLICATED_CEPH))
    )
    assert (config.backend.pool, config.replication_devices[0].user) == ("volumes", "cinder")


def test_missing_unreadable_and_not_utf8_files(tmp_path: Path) -> None:
    assert (
        str(refused(tmp_path / "nope.conf")) == f"{tmp_path / 'nope.conf'}: cinder.conf not found"
    )
    assert "cannot read the cinder.conf" in str(refused(tmp_path))  # a directory
    latin = tmp_path / "latin1.conf"
    latin.write_bytes("[DEFAULT]\nname = caf\xe9\n".encode("latin-1"))
    assert str(refused(latin)) == f"{latin}: the cinder.conf is not UTF-8 text"


def test_empty_rbd_user_is_not_set_and_empty_rbd_pool_is_refused(tmp_path: Path) -> None:
    conf = write(tmp_path, SIMPLE.replace("rbd_user = cinder", "rbd_user ="))
    assert "user: admin" in import_cinder(conf).text
    conf = write(tmp_path, SIMPLE.replace("rbd_pool = volumes", "rbd_pool ="))
    assert str(refused(conf)) == f"{conf}: [ceph] rbd_pool is empty"


def test_value_that_needs_quoting_round_trips_exactly(tmp_path: Path) -> None:
    conf = write(
        tmp_path,
        SIMPLE.replace("volume_backend_name = ceph", "volume_backend_name = yes").replace(
            "rbd_pool = volumes", "rbd_pool = vols #2: ssd"
        ),
    )
    types = types_file(tmp_path, {"Name": "on", "Properties": {"volume_backend_name": "yes"}})
    config = loaded(tmp_path, import_cinder(conf, volume_types=types))
    assert (config.backend_name, config.backend.pool) == ("yes", "vols #2: ssd")
    assert config.volume_type("on").name == "on"


# ---- volume types ------------------------------------------------------------------------------
def test_volume_types__the_old_clients_string_form_reads_as_the_dict_form(tmp_path: Path) -> None:
    """`Properties` is a mapping from osc-lib's DictColumn (clients since 2017), the string
    `key='value', key='value'` of utils.format_dict before."""
    read = {}
    for name, path in (("new", TYPES), ("old", OLD_CLIENT_TYPES)):
        result = import_cinder(SINGLE, volume_types=path)
        config = loaded(tmp_path, CinderImport(_fill(result.text, "ceph-standard"), "", (), ()))
        read[name] = [(t.name, t.replicated) for t in config.volume_types]
    expected = [("ceph-replicated", True), ("ceph-standard", False)]
    assert read == {"new": [*expected, ("__DEFAULT__", False)], "old": expected}


def test_volume_types__only_exactly_is_true_replicates_as_in_cinders_rbd_driver(
    tmp_path: Path,
) -> None:
    types = types_file(
        tmp_path,
        {"Name": "a", "Properties": {"replication_enabled": "<is> True"}},
        {"Name": "b", "Properties": {"replication_enabled": "True"}},
    )
    result = import_cinder(SINGLE, volume_types=types)
    config = loaded(tmp_path, CinderImport(_fill(result.text, "a"), "ceph", (), ()))
    assert config.volume_type("a").replicated and not config.volume_type("b").replicated
    assert "replication_enabled='True': Cinder's RBD driver mirrors only on exactly" in result.text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", ":1: not JSON"),
        ('{"Name": "a"}', "expected a list of volume types, got JSON an object"),
        ('[{"ID": "x"}]', 'entry 0: expected an object with a "Name"'),
        ('[{"Name": "a", "Is Public": true}]', "entry 0 ('a') has no \"Properties\""),
        ('[{"Name": "a", "Properties": "replication_enabled=yes"}]', 'cannot read "Properties"'),
        ('[{"Name": "a", "Properties": {}}, {"Name": "a", "Properties": {}}]', "listed twice"),
    ],
)
def test_volume_types__refused(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "types.json"
    path.write_text(content)
    error = refused(SINGLE, types=path)
    assert str(error).startswith(str(path)) and message in str(error)


def test_volume_types__without_properties_the_hint_gives_the_command(tmp_path: Path) -> None:
    error = refused(SINGLE, types=types_file(tmp_path, {"Name": "a"}))
    assert error.hint is not None
    assert "openstack volume type list --long -f json" in error.hint
    assert "--os-volume-api-version 3" in error.hint


# ---- the command line ----------------------------------------------------------------------
def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["import-cinder", *args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_cli__ready_file_exit_0_and_it_loads(tmp_path: Path) -> None:
    out = tmp_path / "rbdfail.yaml"
    types = types_file(tmp_path, REPLICATED_CEPH)
    code, stdout, stderr = cli(str(SINGLE), "--volume-types", str(types), "-o", str(out))
    assert code == 0, stderr
    assert stdout == ""
    assert f"wrote {out} from [ceph] of {SINGLE}" in stderr
    assert load_config(out).backend.pool == "volumes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rbdfail.yaml", "types.json"]


def test_cli__several_backends_written_exit_0_and_they_load(tmp_path: Path) -> None:
    out = tmp_path / "rbdfail.yaml"
    types = types_file(
        tmp_path, {"Name": "mirrored", "Properties": {"replication_enabled": "<is> True"}}
    )
    code, stdout, stderr = cli(str(TWO_REPLICATED), "--volume-types", str(types), "-o", str(out))
    assert code == 0, stderr
    assert f"wrote {out} from [ceph-hdd], [ceph-ssd] of {TWO_REPLICATED}" in stderr
    assert [b.backend.pool for b in load_deployment(out).backends] == ["volumes-hdd", "volumes-ssd"]
    code, _, stderr = cli(str(TIMEOUTS))
    assert code == 3
    assert "note: RBD backend(s) without replication_device passed over: ceph-images" in stderr
    assert "note: replication_connect_timeout differs between the backends" in stderr
    code, stdout, _ = cli(str(TWO_REPLICATED), "--backend", "ceph-ssd")
    assert code == 3 and "\nbackend:\n  name: fast " in stdout  # one backend, as before


def test_cli__without_output_the_yaml_goes_to_stdout_and_fill_ins_exit_3(tmp_path: Path) -> None:
    code, stdout, stderr = cli(str(SINGLE))
    assert code == 3
    assert stdout.startswith("# rbdfail configuration written by `rbdfail import-cinder`")
    assert "2 thing(s) to fill in first" in stderr
    assert "FILL IN volumes: which volume has which type" in stderr


@pytest.mark.parametrize(
    "args", [(str(SAME_POOL),), (str(DATA / "missing.conf"),), (str(SINGLE), "--backend", "nope")]
)
def test_cli__refused_exit_2_and_nothing_written(tmp_path: Path, args: tuple[str, ...]) -> None:
    out = tmp_path / "out.yaml"
    code, _, stderr = cli(*args, "-o", str(out))
    assert code == 2
    assert stderr.startswith("rbdfail: error: ")
    assert "hint:" in stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_cli__a_device_written_after_the_generic_help_text__exit_2_naming_it(
    tmp_path: Path,
) -> None:
    conf = DATA / "device-without-backend-id.conf"
    code, stdout, stderr = cli(str(conf), "-o", str(tmp_path / "out.yaml"))
    assert (code, stdout) == (2, "")
    assert f"error: {conf}: [ceph] replication_device has no backend_id" in stderr
    assert list(tmp_path.iterdir()) == []


def test_cli__existing_output_kept_unless_force(tmp_path: Path) -> None:
    out = tmp_path / "rbdfail.yaml"
    out.write_text("mine\n")
    code, _, stderr = cli(str(SINGLE), "-o", str(out))
    assert code == 2 and "already exists: not overwritten" in stderr and "--force" in stderr
    assert out.read_text() == "mine\n"
    code, _, _ = cli(str(SINGLE), "-o", str(out), "--force")
    assert code == 3 and out.read_text().startswith("# rbdfail configuration")
    assert [p.name for p in tmp_path.iterdir()] == ["rbdfail.yaml"]  # no temporary left


def test_cli__never_overwrites_its_input_even_with_force(tmp_path: Path) -> None:
    conf = write(tmp_path, SIMPLE)
    code, _, stderr = cli(str(conf), "-o", str(conf), "--force")
    assert code == 2 and "is the input" in stderr
    assert conf.read_text() == textwrap.dedent(SIMPLE)


def test_write_new_file__folder_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        write_new_file(tmp_path / "no" / "rbdfail.yaml", "x\n", force=False)
    assert "cannot write it" in str(caught.value)


# ---- hostile input: any text is imported or refused by name, never a traceback ---------------
_LINES = st.sampled_from(
    [
        "[DEFAULT]",
        "[ceph]",
        "[ceph-b]",
        "[backend_defaults]",
        "[",
        "enabled_backends = ceph",
        "enabled_backends = ,ceph,,",
        "enabled_backends = ceph, ceph-b",
        "volume_driver = cinder.volume.drivers.rbd.RBDDriver",
        "rbd_pool = volumes",
        "rbd_pool = volumes",
        "rbd_pool = volumes-b",
        "rbd_pool =",
        "rbd_user = cinder",
        "rbd_ceph_conf = /etc/ceph/ceph.conf",
        "rbd_cluster_name = ceph",
        "replication_device = backend_id:secondary",
        "replication_device = backend_id:tertiary,conf:/etc/ceph/t.conf,user:x,secret_uuid:s",
        "replication_device = conf:/x",
        "replication_device = ,,:",
        "replication_connect_timeout = 3",
        "replication_connect_timeout = 40",
        "replication_connect_timeout = -1",
        "    conf:/etc/ceph/continued.conf",
        "volume_name_template = v-%s",
        "# a comment",
        "",
    ]
)


_START = "[DEFAULT]\nenabled_backends = ceph\n[ceph]\nvolume_driver = " + RBD + "\n"
_TWO = (  # a second replicated backend, for the lines to break or complete
    "[DEFAULT]\nenabled_backends = ceph,ceph-b\n[backend_defaults]\nvolume_driver = " + RBD + "\n"
    "replication_device = backend_id:secondary\n[ceph-b]\nrbd_pool = volumes-b\n[ceph]\n"
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    start=st.sampled_from(["", _START, _START + "rbd_pool = volumes\n", _TWO]),
    lines=st.lists(st.one_of(_LINES, _LINES, st.text(max_size=30)), max_size=25),
)
def test_hostile__any_cinder_conf_is_imported_or_refused_by_name(
    start: str, lines: list[str]
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        conf = Path(folder) / "cinder.conf"
        text = start + "\n".join(lines)
        conf.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            result = import_cinder(conf)
        except ConfigError as exc:
            assert str(exc).startswith(str(conf)), str(exc)
            return
        out = Path(folder) / "rbdfail.yaml"
        out.write_text(result.text)
        try:
            load_deployment(out)
        except ConfigError as exc:
            assert result.todo, "a file with nothing to fill in must load"
            assert "FILL IN" in str(exc) or "needs at least one secondary site" in str(exc)
        for secret in ("secret_uuid:s", ":s\n"):
            assert secret not in result.text


def test_write_new_file__without_hard_links_still_refuses_an_existing_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(source: object, target: object) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)  # e.g. vfat, some FUSE file systems
    out = tmp_path / "rbdfail.yaml"
    write_new_file(out, "new\n", force=False)
    assert out.read_text() == "new\n"
    with pytest.raises(ConfigError, match="already exists"):
        write_new_file(out, "other\n", force=False)
    assert out.read_text() == "new\n"
    assert [p.name for p in tmp_path.iterdir()] == ["rbdfail.yaml"]
