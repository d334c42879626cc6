"""Shared fixtures: the two-site lab (one per test session), the fake two-site Ceph, and the
configuration every unit test on the fake starts from."""

from __future__ import annotations

import re
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from rbdfail.cluster import Cluster
from rbdfail.config import Config, SiteConfig, load_config
from rbdfail.errors import LabError
from rbdfail.lab.twosite import Lab
from tests.fakeceph import FakeCeph, FakeCluster
from tests.helpers import CONNECT_TIMEOUT, DisasterLab, lab_config

# Two fake sites: `s-*` replicate in snapshot mode, `j-*` in journal mode, the rest do not.
TWO_SITES = f"""\
backend: {{pool: volumes, conf: /fake/default.conf}}
replication_device: [{{backend_id: secondary, conf: /fake/secondary.conf}}]
replication_connect_timeout: {CONNECT_TIMEOUT}
volume_timeout: 5
volume_types:
  snap: {{replication_enabled: true, mirror_mode: snapshot}}
  jour: {{replication_enabled: true, mirror_mode: journal}}
  plain: {{}}
volumes:
  - {{match: "s-*", type: snap}}
  - {{match: "j-*", type: jour}}
  - {{match: "*", type: plain}}
"""


@dataclass
class RunningLab:
    lab: Lab
    config: Config

    def connect(self, site: SiteConfig, timeout: float) -> Cluster:
        from rbdfail import ceph

        return ceph.connect(site, timeout)


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    """The real two-site lab. A lab that cannot start fails the tests that need it: never a skip."""
    # A CI time-out or a kill sends SIGTERM, which would end Python without teardown and leave
    # the daemons running: turn it into the interrupt pytest tears down after.
    signal.signal(signal.SIGTERM, interrupt)
    log: list[str] = []
    the_lab = Lab(tmp_path_factory.mktemp("lab"), progress=log.append)
    started = time.monotonic()
    try:
        config_file = the_lab.up()
    except LabError as exc:
        pytest.fail(f"the two-site Ceph lab could not start: {exc}\n" + "\n".join(log))
    print(f"\nlab up in {time.monotonic() - started:.1f}s at {the_lab.root}")
    try:
        yield RunningLab(the_lab, load_config(config_file))
    finally:
        # Keep the logs in pytest's tmp dir for a post-mortem; no daemon is left running.
        the_lab.down(keep=True)


@pytest.fixture
def lab_config_file(lab: RunningLab, tmp_path: Path, image_name: str) -> Path:
    """The lab's config, replicating only this test's images, with its own state dir."""
    return lab_config(
        lab.lab.config_file,
        tmp_path,
        [
            {"match": f"{image_name}-j*", "type": "replicated-journal"},
            {"match": f"{image_name}-s*", "type": "replicated"},
        ],
    )


@pytest.fixture
def lab_sites(lab: RunningLab) -> Iterator[tuple[Cluster, Cluster]]:
    """A connection to each of the lab's sites: (default, secondary)."""
    from rbdfail import ceph

    primary = ceph.connect(lab.config.backend, 5)
    secondary = ceph.connect(lab.config.replication_devices[0], 5)
    yield primary, secondary
    primary.close()
    secondary.close()


def interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture
def disaster_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DisasterLab]:
    """A two-site lab of its own for one test: a disaster leaves it unfit for any other."""
    from rbdfail import ceph

    signal.signal(signal.SIGTERM, interrupt)  # a kill still tears the lab down (as `lab`)
    log: list[str] = []
    the_lab = Lab(tmp_path_factory.mktemp("disaster-lab"), progress=log.append)
    try:
        config_file = the_lab.up()
    except LabError as exc:
        pytest.fail(f"the disaster lab could not start: {exc}\n" + "\n".join(log))
    loaded = load_config(config_file)
    primary = ceph.connect(loaded.backend, 10)
    secondary = ceph.connect(loaded.replication_devices[0], 10)
    try:
        yield DisasterLab(the_lab, yaml.safe_load(config_file.read_text()), primary, secondary)
    finally:
        # Closing returns at once even to a frozen or killed site (measured); a connection
        # left to the interpreter's exit was seen to abort it (boost::bad_get, exit 134).
        primary.close()
        secondary.close()
        the_lab.down(keep=True)


@pytest.fixture
def image_name(request: pytest.FixtureRequest) -> str:
    """A name no other test uses, readable in the lab's logs."""
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[-24:]
    return f"t-{stem}-{uuid.uuid4().hex[:6]}"


def fake_site(backend_id: str) -> SiteConfig:
    return SiteConfig(
        backend_id=backend_id, conf=Path(f"/fake/{backend_id}.conf"), user="cinder", pool="volumes"
    )


@pytest.fixture
def fake_ceph() -> Iterator[FakeCeph]:
    world = FakeCeph(replication_delay=0.05)
    world.peer("default", "secondary")
    yield world
    world.release_hangs()  # let threads left in a hung call end


@pytest.fixture
def primary(fake_ceph: FakeCeph) -> FakeCluster:
    return fake_ceph.connect(fake_site("default"), 1)


@pytest.fixture
def secondary(fake_ceph: FakeCeph) -> FakeCluster:
    return fake_ceph.connect(fake_site("secondary"), 1)


def write_config(tmp_path: Path, text: str = TWO_SITES) -> Path:
    """rbdfail.yaml in tmp_path, with its own state dir there."""
    path = tmp_path / "rbdfail.yaml"
    path.write_text(text + f"state_dir: {tmp_path / 'state'}\n")
    return path


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return write_config(tmp_path)


@pytest.fixture
def config(config_file: Path) -> Config:
    return load_config(config_file)


LAB_TESTS = pytest.StashKey[set[str]]()


def _ceph_bindings_present() -> bool:
    try:
        import rados  # noqa: F401
        import rbd  # noqa: F401
    except ImportError:
        return False
    return True


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Without the Ceph bindings, `-m 'not lab'` leaves out the modules that are lab tests only.

    Those modules (`*_lab.py`) import rbdfail.ceph, which needs python3-rados.
    Only when lab tests are deselected: a run that selects them must fail, never skip them.
    """
    name = collection_path.name
    if not name.endswith("_lab.py"):
        return None
    if "not lab" not in (config.getoption("markexpr", "") or ""):
        return None
    return True if not _ceph_bindings_present() else None


def pytest_itemcollected(item: pytest.Item) -> None:
    # A test that takes the lab is a lab test, declared or not (before `-m` selects).
    if "lab" in getattr(item, "fixturenames", ()):
        item.add_marker(pytest.mark.lab)


@pytest.hookimpl(trylast=True)  # after -k/-m have deselected
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    config.stash[LAB_TESTS] = {item.nodeid for item in items if item.get_closest_marker("lab")}


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    """Say how many tests really ran against the lab: a skipped lab test proves nothing."""
    lab_tests = config.stash.get(LAB_TESTS, set())
    outcomes: dict[str, str] = {}
    for outcome in ("passed", "failed", "error", "skipped"):
        for report in terminalreporter.stats.get(outcome, []):
            nodeid = getattr(report, "nodeid", "")
            if nodeid in lab_tests and outcomes.get(nodeid) in (None, "passed"):
                outcomes[nodeid] = "failed" if outcome == "error" else outcome
    if lab_tests:
        counts = {o: list(outcomes.values()).count(o) for o in ("passed", "failed", "skipped")}
        terminalreporter.write_line(
            f"real two-site Ceph lab: {counts['passed']} tests passed on it, "
            f"{counts['failed']} failed, {counts['skipped']} skipped"
        )
