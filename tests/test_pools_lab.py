"""`setup` on the real lab."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from rbdfail.cli import main
from tests.conftest import RunningLab


@pytest.mark.lab
@pytest.mark.parametrize("user", [[], ["--user", "admin"]], ids=["rbd-profile", "admin"])
def test_setup__on_the_lab_everything_is_in_place(lab: RunningLab, user: list[str]) -> None:
    result = CliRunner().invoke(main, ["-c", str(lab.lab.config_file), "setup", *user, "--json"])
    assert result.exit_code == 0, result.output
    items = json.loads(result.stdout)["items"]
    assert [(i["site"], i["item"], i["action"]) for i in items] == [
        ("default", "pool mirroring mode", "in place"),
        ("secondary", "pool mirroring mode", "in place"),
        ("default", "peer secondary", "in place"),
    ]
