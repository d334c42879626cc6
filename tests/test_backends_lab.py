"""A file of several backends on the real lab (issue 18): one failover and one failback move
every backend's volumes, same-named images in two backends stay two volumes, the data of each
arrives, and state.json keeps a record per backend."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from rbdfail import ceph
from rbdfail.cli import main
from rbdfail.cluster import Cluster, ReplayState
from rbdfail.config import Config, load_deployment
from rbdfail.lab import NAMESPACE
from rbdfail.state import read_state
from tests.conftest import RunningLab
from tests.helpers import eventually
from tests.test_failover_lab import remove_everywhere

pytestmark = pytest.mark.lab

MiB = 1 << 20


def several_backends(lab: RunningLab, tmp_path: Path, image_name: str) -> Path:
    """The lab's sites as backends of one file: the pool's default namespace and its
    namespace (two backends of one pool, as tenants are kept apart); only this test's images
    are replicated."""
    one = yaml.safe_load(lab.lab.config_file.read_text())
    backend = {k: v for k, v in one.pop("backend").items() if k != "name"}
    devices = one.pop("replication_device")
    one["backends"] = {
        "ceph": {**backend, "replication_device": devices},
        "tenants": {**backend, "namespace": NAMESPACE, "replication_device": devices},
    }
    one["volumes"] = [
        {"match": f"{image_name}-*", "type": "replicated"},
        {"match": "*", "type": "standard"},
    ]
    one["state_dir"] = str(tmp_path / "state")
    path = tmp_path / "rbdfail.yaml"
    path.write_text(yaml.safe_dump(one))
    return path


@pytest.fixture
def backends(
    lab: RunningLab, tmp_path: Path, image_name: str
) -> Iterator[tuple[Path, dict[str, tuple[Cluster, Cluster]]]]:
    config_file = several_backends(lab, tmp_path, image_name)
    clusters: dict[str, tuple[Cluster, Cluster]] = {}
    for config in load_deployment(config_file).backends:
        clusters[config.backend_name] = _sites(config)
    yield config_file, clusters
    for primary, secondary in clusters.values():
        primary.close()
        secondary.close()


def _sites(config: Config) -> tuple[Cluster, Cluster]:
    return ceph.connect(config.backend, 5), ceph.connect(config.replication_devices[0], 5)


def rbdfail(config_file: Path, *args: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(main, ["-c", str(config_file), *args, "--json"])
    assert result.stdout, result.stderr
    return result.exit_code, json.loads(result.stdout)


def digest(cluster: Cluster, name: str) -> str:
    return hashlib.sha256(cluster.read(name, 0, MiB)).hexdigest()


def ours(report: dict[str, Any], name: str) -> dict[str, str]:
    """Each backend's action on this test's volume (the pool holds other tests' images too)."""
    return {
        part["backend"]: next(v["action"] for v in part["volumes"] if v["name"] == name)
        for part in report["backends"]
    }


def test_several_backends__one_failover_one_failback__each_volume_its_own_data(
    backends: tuple[Path, dict[str, tuple[Cluster, Cluster]]], image_name: str
) -> None:
    config_file, clusters = backends
    name = f"{image_name}-s1"  # the same name in both backends: two volumes
    try:
        for primary, _ in clusters.values():
            primary.create_image(name, 4 * MiB)
            primary.write(name, 0, os.urandom(MiB))
        code, report = rbdfail(config_file, "enable-mirroring", name)
        assert code == 0, report
        assert [part["backend"] for part in report["backends"]] == ["ceph", "tenants"]

        def replaying_everywhere(site: str) -> bool:
            _, status = rbdfail(config_file, "status", name)
            rows = [row for part in status["backends"] for row in part["volumes"]]
            return len(rows) == 2 and all(
                row["sites"][site]["state"] == ReplayState.REPLAYING for row in rows
            )

        assert eventually(lambda: replaying_everywhere("secondary"), 120, interval=2)
        before = {backend: digest(primary, name) for backend, (primary, _) in clusters.items()}
        assert before["ceph"] != before["tenants"]

        code, report = rbdfail(config_file, "failover", "--to", "secondary", "--yes")
        assert ours(report, name) == {"ceph": "demoted+promoted", "tenants": "demoted+promoted"}
        assert code in (0, 3) and report["left_out"] == []
        for backend, (primary, secondary) in clusters.items():
            assert secondary.mirror_info(name).primary and not primary.mirror_info(name).primary
            assert digest(secondary, name) == before[backend]
        state_dir = config_file.parent / "state"
        assert read_state(state_dir, "ceph").active_backend == "secondary"
        assert read_state(state_dir, "tenants").active_backend == "secondary"

        # As a runbook does: back once `default`'s copies replay the new primaries.
        assert eventually(lambda: replaying_everywhere("default"), 120, interval=2)
        code, report = rbdfail(config_file, "failback", "--yes")
        assert ours(report, name) == {"ceph": "demoted+promoted", "tenants": "demoted+promoted"}
        for backend, (primary, _) in clusters.items():
            assert primary.mirror_info(name).primary and digest(primary, name) == before[backend]
        assert read_state(state_dir, "tenants").active_backend == "default"
    finally:
        for sites in clusters.values():
            remove_everywhere(sites, [name])
