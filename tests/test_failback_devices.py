"""Failback with several replication devices (issue 13 item 6), on a fake three-site Ceph.

`default` is peered with `secondary` and with `tertiary`, as a real deployment of two
replication devices is: each device's rbd-mirror replays `default` only, so a device knows
nothing of the other's promotions. A failback must find where each volume really is (every
reachable device read at once) and move each from the device where it is primary; a volume
primary on two devices is a split brain: named, left, exit 3.

The lab has two sites only: what is proven here is proven on the fake.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from rbdfail.cluster import MirrorMode
from rbdfail.config import Config, load_config
from rbdfail.errors import CephError
from rbdfail.state import read_state
from rbdfail.switch.model import Action, FailoverReport, Operation, Plan, SwitchRequest
from rbdfail.switch.usecase import run_switch
from tests.conftest import TWO_SITES, fake_site, write_config
from tests.fakeceph import FakeCeph, FakeCluster
from tests.helpers import eventually
from tests.test_failover import OPTIONS, by_name, calls

SITES = ("default", "secondary", "tertiary")

THREE_SITES = TWO_SITES.replace(
    "replication_device: [{backend_id: secondary, conf: /fake/secondary.conf}]",
    "replication_device:\n"
    "  - {backend_id: secondary, conf: /fake/secondary.conf}\n"
    "  - {backend_id: tertiary, conf: /fake/tertiary.conf}",
)


@pytest.fixture
def world() -> Iterator[FakeCeph]:
    """Peered as a real deployment of two replication devices is: each device with `default`."""
    world = FakeCeph(sites=SITES, replication_delay=0.05)
    world.peer("default", "secondary")
    world.peer("default", "tertiary")
    yield world
    world.release_hangs()


@pytest.fixture
def three(tmp_path: Path) -> Config:
    return load_config(write_config(tmp_path, THREE_SITES))


@pytest.fixture
def site(world: FakeCeph) -> dict[str, FakeCluster]:
    return {name: world.connect(fake_site(name), 1) for name in SITES}


def mirrored(site: dict[str, FakeCluster], names: list[str]) -> None:
    """Created on default, mirrored, each copy on both devices."""
    for name in names:
        site["default"].create_image(name, 1 << 20)
        site["default"].write(name, 0, f"{name} on default".encode())
        mode = MirrorMode.JOURNAL if name[0] == "j" else MirrorMode.SNAPSHOT
        site["default"].enable_mirroring(name, mode)
    for device in ("secondary", "tertiary"):
        eventually(lambda d=device: set(names) <= set(site[d].list_images()), 2)


def switch(
    config: Config, world: FakeCeph, operation: Operation, to: str | None = None, **options: Any
) -> FailoverReport:
    request = SwitchRequest(operation, replace(OPTIONS, **options), to)
    result = run_switch(config, request, connect=world.connect)
    assert result.report is not None
    return result.report


def failover(config: Config, world: FakeCeph, to: str, **options: Any) -> FailoverReport:
    return switch(config, world, Operation.FAILOVER, to, **options)


def failback(config: Config, world: FakeCeph, **options: Any) -> FailoverReport:
    return switch(config, world, Operation.FAILBACK, resync_timeout=5.0, **options)


def primaries(site: dict[str, FakeCluster], name: str) -> list[str]:
    return [s for s, cluster in site.items() if cluster.mirror_info(name).primary]


def settled(world: FakeCeph) -> None:
    """Let what rbd-mirror replays arrive, as an operator waits for `status` between runs."""
    world.advance(1)
    world.run_replication()


@pytest.mark.xfail(strict=True, reason="issue 13 item 6: the re-run takes the first device")
def test_rerun_of_a_partial_failback_from_the_second_device__moves_from_where_it_is(
    three: Config, world: FakeCeph, site: dict[str, FakeCluster]
) -> None:
    """Item 6: failed over to `tertiary`, failed back in part (one volume rolled back to
    tertiary), then failback again. It took the first device, `secondary`, as its source: the
    volume, primary nowhere it looked, was promoted on default (refused: default knows
    tertiary's promotion), then 'rolled back' on secondary, whose copy had seen default's
    demotion and never tertiary's promotion: primary on secondary and tertiary (seen, before
    the fix: plan `promote`, reported "rolled back: primary on secondary again")."""
    names = ["s-1", "s-2", "j-1"]
    mirrored(site, names)
    assert failover(three, world, "tertiary").result == "complete"
    settled(world)
    world.faults[("default", "promote", "s-2")] = CephError("refused", site="default")
    first = failback(three, world)
    assert first.result == "partial" and by_name(first)["s-2"].action == Action.FAILED
    assert primaries(site, "s-2") == ["tertiary"]  # rolled back there
    assert read_state(three.state_dir).active_backend == "default"  # volumes moved home
    del world.faults[("default", "promote", "s-2")]
    settled(world)

    again = failback(three, world, volume_timeout=1.0)

    assert again.plan.source == "tertiary", again.plan
    assert {v.name: v.plan for v in again.plan.volumes} == {
        "s-1": Plan.NOTHING,
        "s-2": Plan.DEMOTE_PROMOTE,
        "j-1": Plan.NOTHING,
    }
    assert again.result == "complete", again.volumes
    assert by_name(again)["s-2"].action == Action.DEMOTED_PROMOTED
    for name in names:
        assert primaries(site, name) == ["default"], name
    assert calls(world, "secondary", "promote") == []  # never primary on two devices
    assert site["default"].read("s-2", 0, 13) == b"s-2 on defaul"
