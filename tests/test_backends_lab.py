"""A file of several backends on the real lab (issue 18): two pools and a namespace. One
failover and one failback move every backend's volumes, same-named images in each backend stay
volumes of their own, the data of each arrives, and state.json keeps a record per backend."""

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
from rbdfail.lab.twosite import NAMESPACE
from rbdfail.state import read_state
from tests.conftest import RunningLab
from tests.helpers import eventually, lab_config_two_pools, remove_everywhere

pytestmark = pytest.mark.lab

MiB = 1 << 20


def several_backends(lab: RunningLab, tmp_path: Path, image_name: str) -> Path:
    """The lab's two-pool file (backends `ceph` on pool volumes, `fast` on pool fast) and a
    third backend in the namespace volumes/tenants (tenants kept apart in one pool); only
    this test's images are replicated."""
    path = lab_config_two_pools(
        lab.lab.two_pools_config_file,
        tmp_path,
        [{"match": f"{image_name}-*", "type": "replicated"}],
    )
    config = yaml.safe_load(path.read_text())
    config["backends"]["tenants"] = {**config["backends"]["ceph"], "namespace": NAMESPACE}
    path.write_text(yaml.safe_dump(config))
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
    name = f"{image_name}-s1"  # the same name in every backend: a volume each
    try:
        for primary, _ in clusters.values():
            primary.create_image(name, 4 * MiB)
            primary.write(name, 0, os.urandom(MiB))
        code, report = rbdfail(config_file, "enable-mirroring", name)
        assert code == 0, report
        assert [part["backend"] for part in report["backends"]] == ["ceph", "fast", "tenants"]

        def replaying_everywhere(site: str) -> bool:
            _, status = rbdfail(config_file, "status", name)
            rows = [row for part in status["backends"] for row in part["volumes"]]
            return len(rows) == 3 and all(
                row["sites"][site]["state"] == ReplayState.REPLAYING for row in rows
            )

        assert eventually(lambda: replaying_everywhere("secondary"), 120, interval=2)
        before = {backend: digest(primary, name) for backend, (primary, _) in clusters.items()}
        assert len(set(before.values())) == 3

        code, report = rbdfail(config_file, "failover", "--to", "secondary", "--yes")
        assert set(ours(report, name).values()) == {"demoted+promoted"}, report
        assert code in (0, 3) and report["left_out"] == []
        for backend, (primary, secondary) in clusters.items():
            assert secondary.mirror_info(name).primary and not primary.mirror_info(name).primary
            assert digest(secondary, name) == before[backend]
        state_dir = config_file.parent / "state"
        for backend in clusters:
            assert read_state(state_dir, backend).active_backend == "secondary"

        # As a runbook does: back once `default`'s copies replay the new primaries.
        assert eventually(lambda: replaying_everywhere("default"), 120, interval=2)
        code, report = rbdfail(config_file, "failback", "--yes")
        assert set(ours(report, name).values()) == {"demoted+promoted"}, report
        for backend, (primary, _) in clusters.items():
            assert primary.mirror_info(name).primary and digest(primary, name) == before[backend]
        assert read_state(state_dir, "tenants").active_backend == "default"
    finally:
        for sites in clusters.values():
            remove_everywhere(sites, [name])
