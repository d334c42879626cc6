"""Failback with several replication devices (issue 13 item 6), on a fake three-site Ceph.

`default` is peered with `secondary` and with `tertiary`, as a real deployment of two
replication devices is: each device's rbd-mirror replays `default` only, so a device knows
nothing of the other's promotions. A failback must find where each volume really is (every
reachable device read at once) and move each from the device where it is primary; a volume
primary on two devices is a split brain: named, left, exit 3.

The lab has two sites only: what is proven here is proven on the fake.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from rbdfail.cluster import MirrorMode
from rbdfail.config import Config, load_config
from rbdfail.errors import CephError
from rbdfail.state import State, read_state
from rbdfail.switch.model import Action, Operation, Plan, SwitchReport, SwitchRequest
from rbdfail.switch.sites import choose_source, connect_failback_sites
from rbdfail.switch.usecase import run_switch
from tests.conftest import TWO_SITES, fake_site, write_config
from tests.fakeceph import FakeCeph, FakeCluster
from tests.helpers import OPTIONS, by_name, calls, eventually

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
        copies = site[device]
        eventually(lambda: set(names) <= set(copies.list_images()), 2)  # noqa: B023


def switch(
    config: Config, world: FakeCeph, operation: Operation, to: str | None = None, **options: Any
) -> SwitchReport:
    request = SwitchRequest(operation, replace(OPTIONS, **options), to)
    result = run_switch(config, request, connect=world.connect)
    assert result.report is not None
    return result.report


def failover(config: Config, world: FakeCeph, to: str, **options: Any) -> SwitchReport:
    return switch(config, world, Operation.FAILOVER, to, **options)


def failback(config: Config, world: FakeCeph, **options: Any) -> SwitchReport:
    return switch(config, world, Operation.FAILBACK, resync_timeout=5.0, **options)


def primaries(site: dict[str, FakeCluster], name: str) -> list[str]:
    return [s for s, cluster in site.items() if cluster.mirror_info(name).primary]


def settled(world: FakeCeph) -> None:
    """Let what rbd-mirror replays arrive, as an operator waits for `status` between runs."""
    world.advance(1)
    world.run_replication()


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


def left_on_secondary(three: Config, world: FakeCeph, site: dict[str, FakeCluster]) -> None:
    """Failed over to secondary, then back in part: s-2 rolled back there, default active."""
    assert failover(three, world, "secondary").result == "complete"
    settled(world)
    world.faults[("default", "promote", "s-2")] = CephError("refused", site="default")
    assert failback(three, world).result == "partial"
    del world.faults[("default", "promote", "s-2")]
    assert primaries(site, "s-2") == ["secondary"]
    assert read_state(three.state_dir).active_backend == "default"
    settled(world)


def test_failover_to_another_device__a_volume_left_on_the_first_is_not_promoted_there_too(
    three: Config, world: FakeCeph, site: dict[str, FakeCluster]
) -> None:
    """The same defect, failing over: tertiary's copy of s-2 saw default's demotion (the first
    failover) and never secondary's promotion (it replays default only), so Ceph promotes it
    without force: primary on secondary and tertiary. Then two failbacks bring every volume
    home, one device each: the first names the volume of the other device."""
    names = ["s-1", "s-2", "j-1"]
    mirrored(site, names)
    left_on_secondary(three, world, site)

    away = failover(three, world, "tertiary")

    assert away.result == "partial"
    outcomes = by_name(away)
    assert outcomes["s-2"].action == Action.FAILED
    assert "primary on secondary" in str(outcomes["s-2"].error)
    assert "fail it back first" in str(outcomes["s-2"].error)
    assert primaries(site, "s-2") == ["secondary"]
    assert set(calls(world, "tertiary", "promote")) == {"j-1", "s-1"}
    settled(world)

    first = failback(three, world)  # from tertiary, the active device: s-2 named

    assert first.plan.source == "tertiary"
    assert first.result == "partial"
    assert by_name(first)["s-2"].action == Action.FAILED
    assert "run failback again" in str(by_name(first)["s-2"].error)
    assert {n: primaries(site, n) for n in names} == {
        "s-1": ["default"],
        "s-2": ["secondary"],
        "j-1": ["default"],
    }
    settled(world)

    second = failback(three, world)  # default active now: from secondary, where s-2 is

    assert second.plan.source == "secondary"
    assert second.result == "complete", second.volumes
    assert by_name(second)["s-2"].action == Action.DEMOTED_PROMOTED
    assert all(primaries(site, n) == ["default"] for n in names)
    assert read_state(three.state_dir).volume("s-2").status == "available"  # error restored


def test_failback__a_volume_primary_on_two_devices__named_split_brain_and_left(
    three: Config, world: FakeCeph, site: dict[str, FakeCluster]
) -> None:
    names = ["s-1", "s-2"]
    mirrored(site, names)
    assert failover(three, world, "tertiary").result == "complete"
    settled(world)
    site["secondary"].promote("s-1", force=True)  # by hand: a split brain between devices

    report = failback(three, world)

    assert report.plan.source == "tertiary"
    outcome = by_name(report)["s-1"]
    assert outcome.action == Action.FAILED
    assert "split brain: primary on secondary and tertiary" in str(outcome.error)
    assert by_name(report)["s-2"].action == Action.DEMOTED_PROMOTED
    assert report.result == "partial"  # exit 3
    assert sorted(primaries(site, "s-1")) == ["secondary", "tertiary"]  # left as it is
    assert calls(world, "tertiary", "demote") == ["s-2"]


def test_failback__a_device_that_does_not_answer__what_the_journal_put_there_is_left(
    three: Config, world: FakeCeph, site: dict[str, FakeCluster]
) -> None:
    """s-2 was left on secondary (journal: rolled back there), the rest failed over to
    tertiary; secondary then stops answering. Secondary cannot say whether s-2 is still
    primary there: it is named, the rest comes home from tertiary."""
    names = ["s-1", "s-2", "j-1"]
    mirrored(site, names)
    left_on_secondary(three, world, site)
    assert failover(three, world, "tertiary").result == "partial"  # s-2 left on secondary
    settled(world)
    world.freeze("secondary")

    report = failback(three, world)

    assert report.plan.source == "tertiary"
    outcome = by_name(report)["s-2"]
    assert outcome.action == Action.FAILED
    assert "last made primary on secondary, which does not answer" in str(outcome.error)
    assert {by_name(report)[n].action for n in ("s-1", "j-1")} == {Action.DEMOTED_PROMOTED}
    world.thaw("secondary")
    assert primaries(site, "s-2") == ["secondary"]


def test_failback__every_device_connected_at_once__one_connect_timeout_for_two_lost(
    three: Config, world: FakeCeph, site: dict[str, FakeCluster]
) -> None:
    mirrored(site, ["s-1"])
    world.freeze("secondary")
    world.freeze("tertiary")

    started = time.monotonic()
    sites = connect_failback_sites(three, State(), world.connect, 1.0)
    took = time.monotonic() - started

    assert 1.0 <= took < 1.8, took  # one after the other: 2 s
    assert sites.source is None and sites.source_id == "secondary"  # the first one lost
    assert set(sites.unread) == {"tertiary"} and sites.source_error is not None
    sites.close()


@pytest.mark.parametrize(
    ("active", "held", "unread", "source"),
    [
        ("tertiary", {"secondary": 0, "tertiary": 3}, (), "tertiary"),
        ("default", {"secondary": 0, "tertiary": 1}, (), "tertiary"),  # item 6's re-run
        ("tertiary", {"secondary": 2, "tertiary": 1}, (), "tertiary"),  # the active first
        ("default", {"secondary": 2, "tertiary": 1}, (), "secondary"),  # then as configured
        ("tertiary", {"secondary": 2}, ("tertiary",), "secondary"),  # what answers first
        ("tertiary", {"secondary": 0}, ("tertiary",), "tertiary"),  # lost: forced home
        ("default", {"secondary": 0}, ("tertiary",), "tertiary"),  # its volumes may be there
        ("default", {"secondary": 0, "tertiary": 0}, (), "secondary"),  # all home already
    ],
)
def test_choose_source(
    active: str, held: dict[str, int], unread: tuple[str, ...], source: str
) -> None:
    assert choose_source(active, ["secondary", "tertiary"], held, unread) == source
