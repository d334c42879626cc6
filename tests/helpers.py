"""What the test modules share (fixtures are in conftest.py): waiting for a condition, lab
configs for one test, switches on the fake, the lab through the command line, and the
disaster labs. A test module imports from here, never from another test module."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import yaml
from click.testing import CliRunner
from tenacity import (
    RetryError,
    Retrying,
    retry_base,
    retry_if_exception_type,
    retry_if_result,
    stop_after_delay,
    wait_fixed,
)

from rbdfail.cli import main
from rbdfail.cluster import Cluster, MirrorMode, MirrorState, ReplayState
from rbdfail.config import Config
from rbdfail.errors import CephError, ImageNotFound
from rbdfail.lab.twosite import Lab
from rbdfail.switch.model import (
    Observer,
    Operation,
    Options,
    Silent,
    SwitchReport,
    SwitchRequest,
    VolumeOutcome,
)
from rbdfail.switch.usecase import run_switch
from tests.fakeceph import FakeCeph, FakeCluster

T = TypeVar("T")

# The fake sites' connect timeout (conftest's TWO_SITES), short: a frozen call takes it.
CONNECT_TIMEOUT = 0.3


def eventually(
    check: Callable[[], T],
    timeout: float,
    retry_on: tuple[type[BaseException], ...] = (),
    interval: float = 0.1,
) -> T:
    """Call check until it returns something truthy (or stops raising retry_on) within timeout."""
    retry: retry_base = retry_if_result(lambda result: not result)
    if retry_on:
        retry = retry | retry_if_exception_type(retry_on)
    try:
        return Retrying(
            stop=stop_after_delay(timeout), wait=wait_fixed(interval), retry=retry, reraise=True
        )(check)
    except RetryError as exc:
        last = exc.last_attempt.result()
        raise AssertionError(f"not true within {timeout}s (last answer: {last!r})") from None


def lab_config(
    lab_file: Path,
    tmp_path: Path,
    volumes: list[dict[str, str]],
    types: dict[str, dict[str, Any]] | None = None,
    backend: dict[str, Any] | None = None,
) -> Path:
    """The lab's rbdfail.yaml for one test: its volume rules first (every other image is
    `standard`: other tests' images are never touched), extra volume types and backend keys,
    and a state dir of its own in tmp_path."""
    config = yaml.safe_load(lab_file.read_text())
    config["volume_types"].update(types or {})
    config["backend"].update(backend or {})
    config["volumes"] = [*volumes, {"match": "*", "type": "standard"}]
    config["state_dir"] = str(tmp_path / "state")
    path = tmp_path / "rbdfail.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def lab_config_two_pools(
    lab_file: Path,
    tmp_path: Path,
    volumes: list[dict[str, str]],
    types: dict[str, dict[str, Any]] | None = None,
    backends: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """The lab's rbdfail-two-pools.yaml (backends `ceph` on pool `volumes`, `fast` on pool
    `fast`) for one test, as `lab_config` does the one-backend file: its volume rules first
    (every other image is `standard`), extra volume types, extra keys per backend name, and a
    state dir of its own in tmp_path.

    The rules are the file's, shared by both backends (as every top-level setting is): a rule
    types the images of its name in either pool, so a test names its images for their pool
    (`{image_name}-v*` in volumes, `{image_name}-f*` in fast, say) where that matters."""
    config = yaml.safe_load(lab_file.read_text())
    config["volume_types"].update(types or {})
    for name, keys in (backends or {}).items():
        config["backends"][name].update(keys)
    config["volumes"] = [*volumes, {"match": "*", "type": "standard"}]
    config["state_dir"] = str(tmp_path / "state")
    path = tmp_path / "rbdfail-two-pools.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


# ---- switches on the fake: what the switch tests share -------------------------------------
# Short budgets: a forced promote on the fake takes no time at all.
OPTIONS = Options(
    connect_timeout=CONNECT_TIMEOUT,
    volume_timeout=5.0,
    concurrency=8,
    forced_promote_s=0.5,
    op_timeout_s=CONNECT_TIMEOUT,  # the fake's frozen calls take the connect timeout
)


def replicated(
    primary: FakeCluster, secondary: FakeCluster, names: list[str], data: bool = False
) -> None:
    for name in names:
        primary.create_image(name, 1 << 20)
        if data:
            primary.write(name, 0, name.encode())
        primary.enable_mirroring(
            name, MirrorMode.JOURNAL if name[0] == "j" else MirrorMode.SNAPSHOT
        )
    eventually(lambda: set(names) <= set(secondary.list_images()), 2)


def volumes(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{i:02d}" for i in range(count)]


def switch(
    config: Config,
    world: FakeCeph,
    operation: Operation,
    observer: Observer | None = None,
    resync: tuple[str, ...] = (),
    **overrides: Any,
) -> SwitchReport:
    """One switch through the use case the CLI calls: connect, lock, plan, execute, release."""
    options = replace(OPTIONS, **overrides)
    target = "secondary" if operation == Operation.FAILOVER else None
    request = SwitchRequest(operation, options, target, resync=resync)
    result = run_switch(config, request, connect=world.connect, observer=observer)
    assert result.report is not None
    return result.report


def run(
    config: Config, world: FakeCeph, observer: Observer | None = None, **overrides: Any
) -> SwitchReport:
    """One failover to the secondary."""
    return switch(config, world, Operation.FAILOVER, observer, **overrides)


def by_name(report: SwitchReport) -> dict[str, VolumeOutcome]:
    return {v.name: v for v in report.volumes}


def primary_on(cluster: FakeCluster, name: str) -> bool:
    return cluster.mirror_info(name).primary


def calls(world: FakeCeph, site: str, operation: str) -> list[str]:
    return [image for op, image in world.sites[site].calls if op == operation]


class Recorder(Silent):
    """An observer that remembers, and can act at a given step (e.g. freeze a site)."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, str]] = []
        self.finished_names: list[str] = []
        self.lost: list[str] = []
        self.on_step: Callable[[str, str], None] = lambda name, step: None
        self.on_finished: Callable[[VolumeOutcome], None] = lambda outcome: None

    def step(self, name: str, step: str) -> None:
        self.steps.append((name, step))
        self.on_step(name, step)

    def finished(self, outcome: VolumeOutcome) -> None:
        self.finished_names.append(outcome.name)
        self.on_finished(outcome)

    def primary_lost(self, reason: str) -> None:
        self.lost.append(reason)


# ---- the lab through the command line: what the lab tests share -----------------------------
MiB = 1 << 20
CHUNK = 256 * 1024


def rbdfail(config_file: Path, *args: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(main, ["-c", str(config_file), *args, "--json"])
    assert result.stdout, result.stderr
    return result.exit_code, json.loads(result.stdout)


def check_exit(code: int, report: dict[str, Any], ours: str) -> dict[str, str]:
    """Each volume's action; none of this test's failed, and the exit code says whether any
    volume did (the lab's pool also holds other tests' images, which may need attention)."""
    failed = [v for v in report["volumes"] if v["action"] == "failed"]
    assert not [v for v in failed if v["name"].startswith(ours)], failed
    assert code == (3 if failed else 0), (code, failed)
    return {v["name"]: v["action"] for v in report["volumes"]}


def write_chunk(cluster: Cluster, name: str, index: int) -> None:
    cluster.write(name, index * CHUNK, os.urandom(CHUNK))


def digest(cluster: Cluster, name: str) -> str:
    return hashlib.sha256(cluster.read(name, 0, 4 * CHUNK)).hexdigest()


def mirrored_and_replaying(
    config_file: Path, primary: Cluster, secondary: Cluster, names: list[str]
) -> None:
    for name in names:
        primary.create_image(name, 4 * MiB)
        write_chunk(primary, name, 0)
    code, report = rbdfail(config_file, "enable-mirroring", *names)  # others: not ours
    assert code == 0, report

    def replaying() -> bool:
        statuses = secondary.mirror_statuses()
        return all(n in statuses and statuses[n].state == ReplayState.REPLAYING for n in names)

    # The lab's rbd-mirror took about 30 s to report a new copy as replaying.
    eventually(replaying, 120, (ImageNotFound,), interval=1)


def remove_everywhere(sites: tuple[Cluster, Cluster], names: list[str]) -> None:
    """Leave no split brain behind for the tests that follow."""
    for cluster in sites:
        for name in names:
            try:
                if cluster.mirror_info(name).state != MirrorState.DISABLED:
                    cluster.disable_mirroring(name, force=True)
                cluster.remove_image(name)
            except CephError:
                pass  # a copy the other site's removal took with it


# ---- a lab of its own per disaster: what the disaster tests share ---------------------------
@dataclass
class DisasterLab:
    lab: Lab
    config: dict[str, Any]  # the lab's rbdfail.yaml
    primary: Cluster
    secondary: Cluster


TIMEOUTS = (1, 3, 5, 10)
DISASTER_AGE_S = 20


@dataclass
class Case:
    """The volumes of one connect timeout, with their own config and state dir."""

    timeout: int
    config_file: Path
    names: list[str]
    digests: dict[str, str]


def make_cases(
    dl: DisasterLab, shape: str, tmp_path: Path, timeouts: tuple[int, ...] = TIMEOUTS
) -> list[Case]:
    cases = []
    for timeout in timeouts:
        stem = f"{shape}-t{timeout}"
        names = [f"{stem}-s1", f"{stem}-s2", f"{stem}-s3", f"{stem}-j1"]
        config = {
            **dl.config,
            "replication_connect_timeout": timeout,
            "volumes": [
                {"match": f"{stem}-s*", "type": "replicated"},
                {"match": f"{stem}-j*", "type": "replicated-journal"},
                {"match": "*", "type": "standard"},  # the other cases' volumes
            ],
            "state_dir": str(tmp_path / f"state-{timeout}"),
        }
        config_file = tmp_path / f"rbdfail-{timeout}.yaml"
        config_file.write_text(yaml.safe_dump(config))
        digests = {}
        for name in names:
            dl.primary.create_image(name, 4 * MiB)
            data = os.urandom(MiB)
            dl.primary.write(name, MiB, data)
            digests[name] = data_digest(data)
        code, report = rbdfail(config_file, "enable-mirroring", *names)
        assert code == 0, report
        cases.append(Case(timeout, config_file, names, digests))
    return cases


def data_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def wait_synced(dl: DisasterLab, cases: list[Case]) -> None:
    """Every copy holds its volume's data (read through librbd on the secondary)."""
    pending = {name: case.digests[name] for case in cases for name in case.names}

    def synced() -> bool:
        for name, expected in list(pending.items()):
            try:
                if data_digest(dl.secondary.read(name, MiB, MiB)) == expected:
                    del pending[name]
            except CephError:
                pass  # not created yet
        return not pending

    started = time.monotonic()
    eventually(synced, 180, interval=2)
    print(f"\n{len(cases) * 4} copies synced in {time.monotonic() - started:.0f}s")
