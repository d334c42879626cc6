"""Failback on the real lab: the whole cycle twice in a row, through the command line.

Failover with the primary frozen (forced), thaw (both sites primary: split brain), write on
the secondary, failback (resync of the stale copies, then the switch), and again; at the end
the data on `default` is what was last written on the secondary, and status is healthy with
every replicated volume primary on `default`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from rbdfail.cli import main
from rbdfail.cluster import Cluster
from tests.conftest import RunningLab
from tests.helpers import eventually
from tests.test_failover_lab import (  # noqa: F401 - fixtures
    check_exit,
    config_file,
    digest,
    mirrored_and_replaying,
    rbdfail,
    remove_everywhere,
    sites,
    write_chunk,
)

pytestmark = pytest.mark.lab


def our_rows(config_file: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    result = CliRunner().invoke(main, ["-c", str(config_file), "status", "--json", *names])
    return {row["name"]: row for row in json.loads(result.stdout)["volumes"]}


def test_failback__forced_failover_and_failback_twice__data_and_health_at_the_end(
    lab: RunningLab, config_file: Path, sites: tuple[Cluster, Cluster], image_name: str
) -> None:
    primary, secondary = sites
    names = [f"{image_name}-s1", f"{image_name}-s2"]
    try:
        mirrored_and_replaying(config_file, primary, secondary, names)
        for round_ in range(2):
            lab.lab.freeze("primary")
            try:
                # Forced promotes take ~10 s; once in the full suite two took over the default
                # 81 s limit (rbdfail reported them failed, as it should): room for that here.
                code, report = rbdfail(
                    config_file,
                    "failover",
                    "--to",
                    "secondary",
                    "--yes",
                    "--connect-timeout",
                    "3",
                    "--timeout",
                    "120",
                )
            finally:
                lab.lab.thaw("primary")
            actions = check_exit(code, report, image_name)
            assert {actions[n] for n in names} == {"force-promoted"}, round_
            for name in names:
                write_chunk(secondary, name, 2)  # made while failed over: must come home
                write_chunk(primary, name, 3)  # made on the stale primary: thrown away
            expected = {name: digest(secondary, name) for name in names}

            code, report = rbdfail(config_file, "failback", "--yes")

            actions = check_exit(code, report, image_name)
            assert {actions[n] for n in names} == {"resynced+promoted"}, (round_, report)
            for name in names:
                assert primary.mirror_info(name).primary, (round_, name)
                assert not secondary.mirror_info(name).primary, (round_, name)
                assert digest(primary, name) == expected[name], (round_, name)

            # Healthy again: primary on default, the secondary's copies replaying (about 30 s).
            def healthy() -> bool:
                rows = our_rows(config_file, names)
                return all(
                    rows[n]["primary_site"] == "default"
                    and not rows[n]["problems"]
                    and rows[n]["sites"]["secondary"]["state"] == "replaying"
                    for n in names
                )

            eventually(healthy, 120, interval=2)
    finally:
        remove_everywhere(sites, names)
