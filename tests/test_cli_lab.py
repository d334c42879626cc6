"""`volumes` on the real lab."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

from rbdfail.cli import main
from tests.conftest import RunningLab


def rbdfail(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.lab
def test_volumes__on_the_lab__json_names_each_volume_with_its_type(
    lab: RunningLab, image_name: str
) -> None:
    from rbdfail import ceph
    from rbdfail.cluster import MirrorMode

    cluster = ceph.connect(lab.config.backend, 5)
    try:
        cluster.create_image(f"db-{image_name}", 1 << 20)
        cluster.enable_mirroring(f"db-{image_name}", MirrorMode.SNAPSHOT)
        cluster.create_image(f"vm-{image_name}", 1 << 20)
    finally:
        cluster.close()
    code, out, _ = rbdfail("-c", str(lab.lab.config_file), "volumes", "--json")
    assert code == 0
    by_name = {v["name"]: v for v in json.loads(out)}
    assert by_name[f"db-{image_name}"] | {"global_id": None} == {
        "name": f"db-{image_name}",
        "volume_type": "replicated",
        "replicated": True,
        "mirror_mode": "snapshot",
        "mirrored": True,
        "mirrored_mode": "snapshot",
        "primary": True,
        "global_id": None,
        "type_error": None,
    }
    assert by_name[f"vm-{image_name}"]["volume_type"] == "standard"
    assert by_name[f"vm-{image_name}"]["mirrored"] is False


@pytest.mark.lab
def test_volumes__primary_frozen__fails_in_bounded_time_naming_the_site(lab: RunningLab) -> None:
    config = lab.lab.config_file.read_text().replace(
        "replication_connect_timeout: 5", "replication_connect_timeout: 2"
    )
    short = lab.lab.root / "short-timeout.yaml"
    short.write_text(config)
    lab.lab.freeze("primary")
    try:
        started = time.monotonic()
        code, _out, err = rbdfail("-c", str(short), "volumes")
        elapsed = time.monotonic() - started
    finally:
        lab.lab.thaw("primary")
    assert code == 1
    assert "site 'default': no answer from the monitors within 2s" in err
    assert elapsed < 2 + 3  # the connect timeout, not a hang
