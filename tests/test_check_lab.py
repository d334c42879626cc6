"""`check` on the real lab."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from rbdfail.cli import main
from tests.conftest import RunningLab


@pytest.mark.lab
def test_check__on_the_lab_a_frozen_target_is_not_ready_exit_1(
    lab: RunningLab, tmp_path: Path
) -> None:
    config = yaml.safe_load(lab.lab.config_file.read_text())
    config["replication_connect_timeout"] = 2
    short = tmp_path / "rbdfail.yaml"
    short.write_text(yaml.safe_dump(config))
    lab.lab.freeze("secondary")
    try:
        started = time.monotonic()
        result = CliRunner().invoke(main, ["-c", str(short), "check", "--json"])
        elapsed = time.monotonic() - started
    finally:
        lab.lab.thaw("secondary")
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert (document["target"], document["ready"]) == ("secondary", False)
    assert document["items"][0]["verdict"] == "fail"
    assert elapsed < 2 + 3
