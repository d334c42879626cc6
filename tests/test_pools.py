"""rbdfail setup: image mode and peering, idempotent, on the fake and on the lab."""

from __future__ import annotations

import pytest

from rbdfail.cluster import PoolMirrorMode
from rbdfail.errors import PermissionDenied
from rbdfail.pools import prepare
from tests.conftest import fake_site
from tests.fakeceph import FakeCeph, FakeCluster


@pytest.fixture
def fresh() -> tuple[FakeCeph, FakeCluster, FakeCluster]:
    """Two sites whose pools have never been set up for mirroring."""
    world = FakeCeph()
    for site in world.sites.values():
        site.pool_mode = PoolMirrorMode.DISABLED
    return world, world.connect(fake_site("default"), 1), world.connect(fake_site("secondary"), 1)


def actions(items) -> list[tuple[str, str, str]]:
    return [(i.site, i.item, i.action) for i in items]


def test_prepare__fresh_sites_get_image_mode_names_and_two_way_peers(fresh) -> None:
    _, backend, device = fresh
    assert actions(prepare(backend, [device])) == [
        ("default", "pool mirroring mode", "changed"),
        ("secondary", "pool mirroring mode", "changed"),
        ("default", "peer secondary", "changed"),
    ]
    assert [p.site_name for p in backend.peers()] == ["secondary"]
    assert [p.site_name for p in device.peers()] == ["default"]
    assert backend.pool_mirror_mode() == device.pool_mirror_mode() == PoolMirrorMode.IMAGE


def test_prepare__second_run_changes_nothing(fresh) -> None:
    world, backend, device = fresh
    prepare(backend, [device])
    world.sites["default"].calls.clear()
    assert {i.action for i in prepare(backend, [device])} == {"in place"}
    assert "create_peer_token" not in {op for op, _ in world.sites["default"].calls}


def test_prepare__pool_mode_pool_is_reported_not_changed(fresh) -> None:
    world, backend, device = fresh
    world.sites["secondary"].pool_mode = PoolMirrorMode.POOL
    items = prepare(backend, [device])
    assert actions(items) == [
        ("default", "pool mirroring mode", "changed"),
        ("secondary", "pool mirroring mode", "failed"),
    ]
    assert "needs image mode" in items[1].detail
    assert device.pool_mirror_mode() == PoolMirrorMode.POOL


def test_prepare__peering_refused_says_which_user_to_use(fresh) -> None:
    world, backend, device = fresh
    world.faults[("default", "create_peer_token", "")] = PermissionDenied(
        "[errno 13] error creating bootstrap token", site="default"
    )
    items = prepare(backend, [device])
    assert actions(items)[-1] == ("default", "peer secondary", "failed")
    assert items[-1].detail.endswith("run `rbdfail setup --user admin`")
    assert backend.peers() == []
