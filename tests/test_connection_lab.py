"""`connection-info` on the real lab."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from rbdfail.cli import main
from tests.conftest import RunningLab


@pytest.mark.lab
def test_connection_info__on_the_lab_monitors_from_the_map_and_no_key(
    lab: RunningLab, image_name: str
) -> None:
    from rbdfail import ceph  # the bindings: the fake-only tests above collect without them

    cluster = ceph.connect(lab.config.backend, 5)
    try:
        cluster.create_image(image_name, 1 << 20)
    finally:
        cluster.close()
    result = CliRunner().invoke(
        main, ["-c", str(lab.lab.config_file), "connection-info", image_name, "--json"]
    )
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    v2, v1 = lab.lab.sites()["primary"].mon_ports
    assert info["data"]["ports"] == [str(v1)]
    assert info["data"]["monitors"] == [
        {"name": "a", "addresses": [f"v2:127.0.0.1:{v2}", f"v1:127.0.0.1:{v1}"]}
    ]
    keyring = Path(lab.config.backend.conf).parent / "ceph.client.cinder.keyring"
    key = keyring.read_text().split("key = ")[1].split()[0]
    assert key not in result.output
