"""`import-cinder --volume-list`: each volume's exact type from `openstack volume list`, the
volumes left out named, the catch-all chosen, Cinder's statuses and attachments in the state
dir (never in the YAML)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from rbdfail.cinder.importer import import_cinder
from rbdfail.cinder.seed import seed_state
from rbdfail.cli import main
from rbdfail.config import Deployment, load_deployment
from rbdfail.errors import ConfigError
from rbdfail.state import VolumeRecord, read_state

DATA = Path(__file__).parent / "data" / "cinder"
CONF, TYPES, VOLUMES = DATA / "cinder.conf", DATA / "types.json", DATA / "volumes.json"
DB = "volume-0f3c5a2e-7d41-4b9e-8a6c-2e1f0d9c8b71"  # gold-replicated, in-use
WEB = "volume-6a7b8c9d-0e1f-4a2b-8c3d-4e5f6a7b8c92"  # gold, in-use
CACHE = "volume-c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f"  # fast-replicated, available
PLAIN = "volume-d4e5f6a7-b8c9-4d0e-9f1a-2b3c4d5e6f70"  # __DEFAULT__
OLD = "volume-f6a7b8c9-d0e1-4f2a-9b3c-4d5e6f7a8b92"  # old client's "Attached to" text
LVM_ID = "e5f6a7b8-c9d0-4e1f-8a2b-3c4d5e6f7a81"
sys.path.insert(0, str(DATA))
from generate import volumes as generated  # type: ignore[import-not-found]  # noqa: E402


def loaded(tmp_path: Path, text: str) -> Deployment:
    path = tmp_path / "rbdfail.yaml"
    path.write_text(text)
    return load_deployment(path)


def test_every_volume_gets_its_type_exactly_and_the_file_loads(tmp_path: Path) -> None:
    result = import_cinder(CONF, None, TYPES, VOLUMES, "__DEFAULT__")
    assert result.todo == ()
    gold, fast = loaded(tmp_path, result.text).backends
    assert (gold.backend_name, fast.backend_name) == ("ceph-gold", "ceph-fast")
    assert gold.volume_type_for(DB).name == "gold-replicated"
    assert gold.volume_type_for(DB).replicated
    assert gold.volume_type_for(WEB).name == "gold"
    assert fast.volume_type_for(CACHE).name == "fast-replicated"
    assert gold.volume_type_for(PLAIN).name == "__DEFAULT__"
    assert gold.volume_type_for("volume-not-listed").name == "__DEFAULT__"  # --unlisted
    assert f"  - {{match: {DB}, type: gold-replicated}}" in result.text.splitlines()


def test_a_volume_of_a_backend_not_written_is_left_out_and_named() -> None:
    result = import_cinder(CONF, None, TYPES, VOLUMES, "__DEFAULT__")
    assert LVM_ID not in result.text.split("# Notes from the import:")[0]
    assert (
        f"1 volume(s) of {VOLUMES} left out: type 'lvm' is not one of this file's "
        f"(__DEFAULT__, gold-replicated, gold, fast-replicated): {LVM_ID}"
    ) in result.notes


def test_nothing_not_needed_reaches_the_yaml() -> None:
    text = import_cinder(CONF, None, TYPES, VOLUMES, "__DEFAULT__").text
    for word in ("db-primary", "compute-03", "/dev/vdb", "8e1b6d3f", "in-use", "role"):
        assert word not in text


def test_without_unlisted__other_images_get_the_type_cinder_gives_a_volume_without_one(
    tmp_path: Path,
) -> None:
    result = import_cinder(CONF, None, TYPES, VOLUMES)  # cinder.conf: default_volume_type
    assert result.todo == ()
    gold, _ = loaded(tmp_path, result.text).backends
    assert gold.volume_type_for("volume-not-listed").name == "__DEFAULT__"
    assert gold.volume_type_for(DB).name == "gold-replicated"
    assert any("does not name get '__DEFAULT__'" in note for note in result.notes)


def test_without_unlisted_or_cinders_default_type__the_catch_all_is_a_placeholder(
    tmp_path: Path,
) -> None:
    types = json.loads(TYPES.read_text())
    without_default = [t for t in types if t["Name"] != "__DEFAULT__"]
    (tmp_path / "types.json").write_text(json.dumps(without_default))
    result = import_cinder(CONF, None, tmp_path / "types.json", VOLUMES)
    assert (
        f"volumes: the type of the images {VOLUMES} does not list (import again with "
        "--unlisted TYPE, or write it)"
    ) in result.todo
    with pytest.raises(ConfigError, match="FILL IN"):
        loaded(tmp_path, result.text)


def test_unlisted_must_be_a_type_of_the_file() -> None:
    with pytest.raises(ConfigError, match=r"--unlisted 'lvm': not a volume type of this file"):
        import_cinder(CONF, None, TYPES, VOLUMES, "lvm")


def test_attached_to__current_and_old_shapes() -> None:
    result = import_cinder(CONF, None, TYPES, VOLUMES, "__DEFAULT__")
    servers = {v.image: v.servers for v in result.volumes}
    assert servers[DB] == ("8e1b6d3f-2a4c-4e5f-b7a9-0c1d2e3f4a56",)
    assert servers[OLD] == ("3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f",)
    assert servers[CACHE] == ()


def test_volume_list_must_be_the_long_one(tmp_path: Path) -> None:
    short = tmp_path / "short.json"
    short.write_text(json.dumps([{"ID": LVM_ID, "Name": "", "Status": "available"}]))
    with pytest.raises(ConfigError, match='has no "Type": the list must be the --long one'):
        import_cinder(CONF, None, TYPES, short, "__DEFAULT__")


def test_seed_state__cinder_statuses_kept_for_failback(tmp_path: Path) -> None:
    result = import_cinder(CONF, None, TYPES, VOLUMES, "__DEFAULT__")
    done = seed_state(result, tmp_path)
    assert done[1] == f"{tmp_path}/cinder-attachments.json: the instances of 3 attached volume(s)"
    assert read_state(tmp_path, "ceph-gold").volume(WEB) == VolumeRecord("in-use")
    assert read_state(tmp_path, "ceph-fast").volume(CACHE) == VolumeRecord("available")
    # An in-use volume that cannot move becomes error, and failback gives back in-use.
    assert read_state(tmp_path, "ceph-gold").volume(WEB).as_error().restored() == VolumeRecord(
        "in-use"
    )
    attached = json.loads((tmp_path / "cinder-attachments.json").read_text())
    assert attached["volumes"][0] == {
        "image": DB,
        "id": DB.removeprefix("volume-"),
        "backend": "ceph-gold",
        "servers": ["8e1b6d3f-2a4c-4e5f-b7a9-0c1d2e3f4a56"],
        "hosts": ["compute-03"],
    }


def test_cli__exits_0_and_seeds(tmp_path: Path) -> None:
    out, state = tmp_path / "rbdfail.yaml", tmp_path / "state"
    argv = ["import-cinder", str(CONF), "--volume-types", str(TYPES), "--volume-list"]
    argv += [str(VOLUMES), "--unlisted", "__DEFAULT__", "--state-dir", str(state), "-o", str(out)]
    done = CliRunner().invoke(main, argv)
    assert done.exit_code == 0, done.output
    assert load_deployment(out).several
    assert read_state(state, "ceph-gold").volume(DB) == VolumeRecord("in-use")


def test_generated_deployment__thousands_of_volumes_import_and_load_fast(tmp_path: Path) -> None:
    listing = generated(5000)
    path = tmp_path / "volumes.json"
    path.write_text(json.dumps(listing))
    started = time.perf_counter()
    result = import_cinder(CONF, None, TYPES, path, "__DEFAULT__")
    deployment = loaded(tmp_path, result.text)
    assert time.perf_counter() - started < 10
    lvm = sum(1 for v in listing if v["Type"] == "lvm")
    assert len(result.volumes) == 5000 - lvm
    gold = deployment.backends[0]
    for volume in listing[:200]:
        if volume["Type"] != "lvm":
            assert gold.volume_type_for(f"volume-{volume['ID']}").name == volume["Type"]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"ID": LVM_ID}, "expected a list of volumes, got JSON an object"),
        (["x"], 'entry 0: expected an object with an "ID"'),
        ([{"ID": "12", "Type": None, "Status": "available"}], "ID '12' is not a volume's UUID"),
        (
            [{"ID": LVM_ID, "Type": "gold", "Status": "in-use"}] * 2,
            f"volume {LVM_ID} is listed twice",
        ),
        (
            [{"ID": LVM_ID, "Type": "gold", "Status": "in-use", "Attached to": [{"x": 1}]}],
            '"Attached to" holds an attachment without a server_id UUID',
        ),
        ([{"ID": LVM_ID, "Type": "gold", "Status": 3}], '"Status" 3 is not a status'),
    ],
)
def test_a_volume_list_not_as_openstack_prints_it__refused(
    tmp_path: Path, document: object, message: str
) -> None:
    path = tmp_path / "volumes.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ConfigError) as raised:
        import_cinder(CONF, None, TYPES, path, "__DEFAULT__")
    assert message in raised.value.message


def test_volume_name_template__names_the_images(tmp_path: Path) -> None:
    conf = tmp_path / "cinder.conf"
    conf.write_text(
        CONF.read_text().replace("[DEFAULT]\n", "[DEFAULT]\nvolume_name_template = vol-%s\n", 1)
    )
    result = import_cinder(conf, None, TYPES, VOLUMES, "__DEFAULT__")
    assert f"  - {{match: vol-{DB.removeprefix('volume-')}, type: gold-replicated}}" in (
        result.text.splitlines()
    )
    assert '  - match: "vol-*"' in result.text


def test_volume_list_needs_the_types_and_unlisted_needs_the_list() -> None:
    with pytest.raises(ConfigError, match="--volume-list needs --volume-types"):
        import_cinder(CONF, None, None, VOLUMES)
    with pytest.raises(ConfigError, match="--unlisted gives the type"):
        import_cinder(CONF, None, TYPES, None, "__DEFAULT__")
