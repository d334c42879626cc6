"""A backend inside an RBD namespace, on the real lab (issue 18): Ceph 16.2 mirrors a namespace
into the namespace of the same name on the peer (the lab mirrors `volumes/tenants` so), and
every command works inside it, never touching the pool's default namespace."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from rbdfail import ceph
from rbdfail.cli import main
from rbdfail.cluster import Cluster, ReplayState
from rbdfail.config import load_config
from rbdfail.errors import CephError, ImageNotFound
from rbdfail.lab.twosite import NAMESPACE
from tests.conftest import RunningLab
from tests.helpers import eventually, lab_config, rbdfail, remove_everywhere

pytestmark = pytest.mark.lab

MiB = 1 << 20


def namespaced(lab: RunningLab, tmp_path: Path, image_name: str, namespace: str) -> Path:
    return lab_config(
        lab.lab.config_file,
        tmp_path,
        [{"match": f"{image_name}-*", "type": "replicated"}],
        backend={"namespace": namespace},  # the device inherits it
    )


@pytest.fixture
def in_namespace(
    lab: RunningLab, tmp_path: Path, image_name: str
) -> Iterator[tuple[Path, Cluster, Cluster]]:
    config_file = namespaced(lab, tmp_path, image_name, NAMESPACE)
    config = load_config(config_file)
    primary = ceph.connect(config.backend, 5)
    secondary = ceph.connect(config.replication_devices[0], 5)
    yield config_file, primary, secondary
    primary.close()
    secondary.close()


def digest(cluster: Cluster, name: str) -> str:
    return hashlib.sha256(cluster.read(name, 0, MiB)).hexdigest()


def test_namespace__enable_status_failover_failback_inside_it__the_default_namespace_untouched(
    in_namespace: tuple[Path, Cluster, Cluster],
    lab_sites: tuple[Cluster, Cluster],
    image_name: str,
) -> None:
    config_file, primary, secondary = in_namespace
    name = f"{image_name}-s1"
    try:
        primary.create_image(name, 4 * MiB)
        primary.write(name, 0, os.urandom(MiB))
        lab_sites[0].create_image(name, MiB)  # the same name in the default namespace
        code, report = rbdfail(config_file, "enable-mirroring", name)
        assert code == 0, report

        def replaying(site: str) -> dict[str, Any] | None:
            result = CliRunner().invoke(main, ["-c", str(config_file), "status", name, "--json"])
            [row] = json.loads(result.stdout)["volumes"]
            return row if row["sites"][site]["state"] == ReplayState.REPLAYING else None

        row = eventually(lambda: replaying("secondary"), 120, interval=2)
        assert row is not None and row["primary_site"] == "default"
        assert (name in lab_sites[0].list_images() and lab_sites[0].mirror_infos() == {}) or (
            name not in lab_sites[0].mirror_infos()
        )
        before = digest(primary, name)

        code, report = rbdfail(config_file, "failover", "--to", "secondary", "--yes")
        [ours] = [v for v in report["volumes"] if v["name"] == name]
        assert ours["action"] == "demoted+promoted", ours
        assert secondary.mirror_info(name).primary and digest(secondary, name) == before
        with pytest.raises(ImageNotFound):  # never the default namespace's
            lab_sites[1].mirror_info(name)
        assert name not in lab_sites[0].mirror_infos()

        # As a runbook does: back only once `default`'s copy replays the new primary (its
        # namespace replayer took about 30 s to report, on the lab).
        assert eventually(lambda: replaying("default"), 120, interval=2) is not None
        code, report = rbdfail(config_file, "failback", "--yes")
        [ours] = [v for v in report["volumes"] if v["name"] == name]
        assert ours["action"] == "demoted+promoted", ours
        assert primary.mirror_info(name).primary
    finally:
        remove_everywhere((primary, secondary), [name])
        with suppress(CephError):
            lab_sites[0].remove_image(name)


def test_namespace__one_that_does_not_exist_is_named_not_read_as_an_empty_site(
    lab: RunningLab, tmp_path: Path, image_name: str
) -> None:
    config_file = namespaced(lab, tmp_path, image_name, "tenantz")
    result = CliRunner().invoke(main, ["-c", str(config_file), "volumes"])
    assert result.exit_code == 1, result.output
    assert "RBD namespace 'tenantz' does not exist in pool 'volumes'" in result.stderr
    assert "rbd namespace create volumes/tenantz" in result.stderr
