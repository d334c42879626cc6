"""import-cinder with a volume list, on the real lab: `volume-<uuid>` images as Cinder names
them, the matching `openstack volume list`, and `rbdfail status` showing each volume's type and
status exactly as Cinder has them."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from rbdfail import ceph
from rbdfail.cli import main
from rbdfail.cluster import MirrorMode
from tests.conftest import RunningLab

pytestmark = pytest.mark.lab


def test_import_with_volume_list__status_shows_cinders_types(
    lab: RunningLab, tmp_path: Path
) -> None:
    backend, device = lab.config.backend, lab.config.replication_devices[0]
    ids = {kind: str(uuid.uuid4()) for kind in ("replicated", "plain", "untyped")}
    cluster = ceph.connect(backend, 5)
    try:
        for volume_id in ids.values():
            cluster.create_image(f"volume-{volume_id}", 4 << 20)
        cluster.enable_mirroring(f"volume-{ids['replicated']}", MirrorMode.JOURNAL)
    finally:
        cluster.close()
    conf = tmp_path / "cinder.conf"
    conf.write_text(
        "[DEFAULT]\nenabled_backends = lab, lvm-1\nhost = controller-1\n\n"
        f"[lab]\nvolume_driver = cinder.volume.drivers.rbd.RBDDriver\n"
        f"volume_backend_name = lab\nrbd_pool = {backend.pool}\nrbd_ceph_conf = {backend.conf}\n"
        f"rbd_user = {backend.user}\nrbd_secret_uuid = 457eb676-33da-42ec-9a8c-9293d545c337\n"
        f"replication_device = backend_id:secondary, conf:{device.conf}, user:{device.user}\n\n"
        "[lvm-1]\nvolume_driver = cinder.volume.drivers.lvm.LVMVolumeDriver\n"
    )
    types = tmp_path / "types.json"
    types.write_text(
        json.dumps(
            [
                {"ID": str(uuid.uuid4()), "Name": "__DEFAULT__", "Properties": {}},
                {
                    "ID": str(uuid.uuid4()),
                    "Name": "gold",
                    "Properties": {
                        "replication_enabled": "<is> True",
                        "volume_backend_name": "lab",
                    },
                },
            ]
        )
    )
    volumes = tmp_path / "volumes.json"
    volumes.write_text(
        json.dumps(
            [
                {"ID": ids["replicated"], "Status": "in-use", "Type": "gold", "Attached to": []},
                {
                    "ID": ids["plain"],
                    "Status": "available",
                    "Type": "__DEFAULT__",
                    "Attached to": [],
                },
                {"ID": ids["untyped"], "Status": "in-use", "Type": None, "Attached to": []},
            ]
        )
    )
    out, state = tmp_path / "rbdfail.yaml", tmp_path / "state"
    imported = CliRunner().invoke(
        main,
        [
            "import-cinder",
            str(conf),
            "--volume-types",
            str(types),
            "--volume-list",
            str(volumes),
            "--unlisted",
            "__DEFAULT__",
            "--state-dir",
            str(state),
            "-o",
            str(out),
        ],
    )
    assert imported.exit_code == 0, imported.output
    out.write_text(out.read_text() + f"state_dir: {state}\n")
    # Cinder names a replication target's cluster by its backend_id (the import says so), so
    # librados looks for $cluster.client.USER.keyring: the lab's is named for cluster `ceph`.
    keyring = Path(device.conf).parent / f"ceph.client.{device.user}.keyring"
    named = keyring.with_name(f"secondary.client.{device.user}.keyring")
    if keyring.exists() and not named.exists():
        os.symlink(keyring, named)
    names = [f"volume-{ids[kind]}" for kind in ("replicated", "plain", "untyped")]
    done = CliRunner().invoke(main, ["-c", str(out), "status", *names, "--json"])
    assert done.exit_code in (0, 3), done.output  # 3 until the journal copy replays
    rows = {row["name"]: row for row in json.loads(done.stdout)["volumes"]}
    assert {name: rows[name]["volume_type"] for name in names} == {
        names[0]: "gold",
        names[1]: "__DEFAULT__",
        names[2]: "__DEFAULT__",
    }
    assert rows[names[0]]["replicated"] and not rows[names[1]]["replicated"]
    assert {name: rows[name]["status"] for name in names} == {
        names[0]: "in-use",
        names[1]: "available",
        names[2]: "in-use",
    }
