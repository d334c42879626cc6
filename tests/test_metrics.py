"""`rbdfail status --prometheus FILE` on the fake: the file node_exporter's textfile collector
reads, parsed back with prometheus_client's own parser."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from rbdfail import ceph
from rbdfail.cli import main
from rbdfail.cluster import MirrorMode
from rbdfail.config import load_config
from rbdfail.metrics import write_textfile
from rbdfail.state import State
from rbdfail.status import gather
from tests.conftest import fake_site
from tests.fakeceph import FakeCeph, FakeCluster
from tests.helpers import eventually

CONFIG = """\
backend: {{pool: volumes, conf: /fake/default.conf}}
replication_device: [{{backend_id: secondary, conf: /fake/secondary.conf}}]
replication_connect_timeout: 0.2
volume_types:
  snap: {{replication_enabled: true, mirror_mode: snapshot}}
  jour: {{replication_enabled: true, mirror_mode: journal}}
  plain: {{}}
volumes:
  - {{match: "s-*", type: snap}}
  - {{match: "j-*", type: jour}}
  - {{match: "*", type: plain}}
state_dir: {state}
"""

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def config_file(tmp_path: Path, fake_ceph: FakeCeph, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(ceph, "connect", fake_ceph.connect)
    path = tmp_path / "rbdfail.yaml"
    path.write_text(CONFIG.format(state=tmp_path / "state"))
    return path


@pytest.fixture
def sites(fake_ceph: FakeCeph) -> tuple[FakeCluster, FakeCluster]:
    return fake_ceph.connect(fake_site("default"), 1), fake_ceph.connect(fake_site("secondary"), 1)


def mirrored(primary: FakeCluster, secondary: FakeCluster, name: str, mode: MirrorMode) -> None:
    primary.create_image(name, 1 << 20)
    primary.enable_mirroring(name, mode)
    eventually(lambda: name in secondary.list_images(), 2)


def samples(path: Path) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(path.read_text())
        for s in family.samples
    }


def test_metrics__lag_split_brain_and_errors_are_series(
    config_file: Path, fake_ceph: FakeCeph, sites, tmp_path: Path
) -> None:
    primary, secondary = sites
    mirrored(primary, secondary, "s-lag", MirrorMode.SNAPSHOT)
    mirrored(primary, secondary, "j-lag", MirrorMode.JOURNAL)
    mirrored(primary, secondary, "s-split", MirrorMode.SNAPSHOT)
    fake_ceph.replication_delay = 60
    time.sleep(1.1)  # the snapshot timestamps count whole seconds
    primary.write("s-lag", 0, b"x")
    for _ in range(2):
        primary.write("j-lag", 0, b"x")
    secondary.promote("s-split", force=True)
    out = tmp_path / "rbdfail.prom"

    write_textfile(gather(load_config(config_file), State(), fake_ceph.connect), out, 1700.0)

    got = samples(out)
    assert got[("rbdfail_healthy", frozenset())] == 0
    assert got[("rbdfail_status_timestamp_seconds", frozenset())] == 1700.0
    assert got[("rbdfail_volume_lag_seconds", frozenset({("volume", "s-lag")}))] >= 1
    assert got[("rbdfail_volume_entries_behind", frozenset({("volume", "j-lag")}))] == 2
    split = {("volume", "s-split"), ("primary_site", "split-brain")}
    assert got[("rbdfail_volume_primary_site", frozenset(split))] == 1
    replaying = {("volume", "s-lag"), ("site", "secondary"), ("state", "replaying")}
    assert got[("rbdfail_volume_mirror_state", frozenset(replaying))] == 1
    for site in ("default", "secondary"):
        assert got[("rbdfail_site_reachable", frozenset({("site", site)}))] == 1


def test_metrics__unreachable_site_is_0_and_unknown_figures_are_left_out(
    config_file: Path, fake_ceph: FakeCeph, sites, tmp_path: Path
) -> None:
    primary, secondary = sites
    mirrored(primary, secondary, "s-1", MirrorMode.SNAPSHOT)
    fake_ceph.freeze("default")
    out = tmp_path / "rbdfail.prom"

    write_textfile(gather(load_config(config_file), State(), fake_ceph.connect), out, 0.0)

    got = samples(out)
    assert got[("rbdfail_site_reachable", frozenset({("site", "default")}))] == 0
    assert got[("rbdfail_site_reachable", frozenset({("site", "secondary")}))] == 1
    primary_unknown = {("volume", "s-1"), ("primary_site", "unknown")}
    assert got[("rbdfail_volume_primary_site", frozenset(primary_unknown))] == 1
    assert ("rbdfail_site_rbd_mirror_up", frozenset({("site", "default")})) not in got


def test_cli__status_prometheus_writes_the_file_beside_the_json(
    config_file: Path, fake_ceph: FakeCeph, sites, tmp_path: Path
) -> None:
    primary, secondary = sites
    mirrored(primary, secondary, "s-1", MirrorMode.SNAPSHOT)
    out = tmp_path / "rbdfail.prom"

    result = CliRunner().invoke(
        main, ["-c", str(config_file), "status", "--json", "--prometheus", str(out)]
    )

    assert result.exit_code == 0, result.output
    got = samples(out)
    assert got[("rbdfail_healthy", frozenset())] == 1
    assert got[("rbdfail_active_backend", frozenset({("backend", "default")}))] == 1
    assert not list(tmp_path.glob("rbdfail.prom.*"))  # no temporary file left beside it


def test_cli__status_prometheus_into_a_missing_directory__exit_2_before_any_site_is_read(
    config_file: Path, fake_ceph: FakeCeph, tmp_path: Path
) -> None:
    calls_before = len(fake_ceph.sites["default"].calls)

    result = CliRunner().invoke(
        main, ["-c", str(config_file), "status", "--prometheus", str(tmp_path / "no" / "x.prom")]
    )

    assert result.exit_code == 2
    assert "--prometheus" in result.stderr and str(tmp_path / "no") in result.stderr
    assert len(fake_ceph.sites["default"].calls) == calls_before
