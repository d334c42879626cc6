"""The lab's second mirrored pool, `fast` (issue 18: a file of several backends, one per pool):
mirrored both ways as `volumes` is, reachable as client.cinder, and written into the lab's
two-backend file beside its one-backend rbdfail.yaml."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from rbdfail import ceph
from rbdfail.cluster import Cluster, MirrorInfo, MirrorMode, MirrorState
from rbdfail.config import Config, load_config, load_deployment
from rbdfail.errors import ImageNotFound
from rbdfail.lab.twosite import FAST_POOL, POOL, TWO_POOL_BACKENDS
from tests.conftest import RunningLab
from tests.helpers import eventually, lab_config_two_pools, remove_everywhere

pytestmark = pytest.mark.lab

MiB = 1 << 20


@pytest.fixture
def two_pools(lab: RunningLab, tmp_path: Path, image_name: str) -> Path:
    return lab_config_two_pools(
        lab.lab.two_pools_config_file,
        tmp_path,
        [{"match": f"{image_name}-*", "type": "replicated"}],
    )


def backend_named(config_file: Path, name: str) -> Config:
    [backend] = load_deployment(config_file).select(name)
    return backend


@pytest.fixture
def fast_sites(two_pools: Path) -> Iterator[tuple[Cluster, Cluster]]:
    """The `fast` backend's two sites, (default, secondary), as rbdfail reaches them."""
    fast = backend_named(two_pools, "fast")
    default = ceph.connect(fast.backend, 5)
    secondary = ceph.connect(fast.replication_devices[0], 5)
    yield default, secondary
    default.close()
    secondary.close()


def test_two_pools__the_lab_writes_a_file_of_two_backends_beside_its_one_backend_file(
    lab: RunningLab,
) -> None:
    one = load_config(lab.lab.config_file)  # still one backend: load_config refuses several
    deployment = load_deployment(lab.lab.two_pools_config_file)
    assert [(b.backend_name, b.backend.pool) for b in deployment.backends] == list(
        TWO_POOL_BACKENDS.items()
    )
    assert TWO_POOL_BACKENDS == {"ceph": POOL, "fast": FAST_POOL}
    for backend in deployment.backends:
        assert [(s.backend_id, s.conf, s.user) for s in backend.sites] == [
            (s.backend_id, s.conf, s.user) for s in one.sites
        ]
        assert [s.pool for s in backend.sites] == [backend.backend.pool] * 2
        assert (backend.volume_types, backend.volumes) == (one.volume_types, one.volumes)
        assert backend.concurrency == one.concurrency
        assert backend.state_scope == backend.backend_name
        # A state.json of several backends is not one the one-backend file can read.
        assert backend.state_dir != one.state_dir


def test_two_pools__client_cinder_may_use_both_pools_and_no_other(lab: RunningLab) -> None:
    caps = subprocess.run(
        ["ceph", "-c", str(lab.config.backend.conf), "auth", "get", "client.cinder"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    both = f'"profile rbd pool={POOL}, profile rbd pool={FAST_POOL}"'
    assert f"caps osd = {both}" in caps
    assert f"caps mgr = {both}" in caps


@pytest.mark.parametrize("source_site", ["default", "secondary"])
def test_two_pools__an_image_mirrored_in_fast_shows_up_on_the_peer_as_a_non_primary_copy(
    fast_sites: tuple[Cluster, Cluster],
    lab_sites: tuple[Cluster, Cluster],
    image_name: str,
    source_site: str,
) -> None:
    """Both ways, as in `volumes`; in `fast` only: never in the other pool of either site."""
    source, target = fast_sites if source_site == "default" else fast_sites[::-1]
    assert (source.pool, target.pool) == (FAST_POOL, FAST_POOL)
    name = f"{image_name}-f"
    try:
        source.create_image(name, 4 * MiB)
        source.write(name, 0, b"fast" * 1024)
        source.enable_mirroring(name, MirrorMode.SNAPSHOT)
        mine = source.mirror_info(name)
        assert mine.primary and mine.state == MirrorState.ENABLED

        def bootstrapped() -> MirrorInfo | None:  # `creating` while rbd-mirror makes it
            info = target.mirror_info(name)
            return info if info.state == MirrorState.ENABLED else None

        copy = eventually(bootstrapped, 120, (ImageNotFound,), interval=1)
        assert copy is not None
        assert copy.mode == MirrorMode.SNAPSHOT
        assert not copy.primary
        assert copy.global_id == mine.global_id
        for volumes_site in lab_sites:
            assert volumes_site.pool == POOL
            assert name not in volumes_site.list_images()
    finally:
        remove_everywhere((source, target), [name])
