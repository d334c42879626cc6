"""Make the pools ready for per-image mirroring, idempotently: `rbdfail setup`.

On the backend and every replication device: the pool's mirroring mode `image`, and the two
pools peered both ways (a bootstrap token created on the backend, imported rx-tx on the device)
where they are not yet. Creating a token creates a cephx user for the peer, which the rbd
profile may not do: peering needs an admin-capable user (`rbdfail setup --user admin`); the
rest works with the rbd profile.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from rbdfail.cluster import Cluster, PoolMirrorMode
from rbdfail.errors import CephError, PermissionDenied


class SetupAction(StrEnum):
    """What `setup` did to one item."""

    CHANGED = "changed"
    IN_PLACE = "in place"
    FAILED = "failed"


@dataclass(frozen=True)
class SetupItem:
    site: str
    item: str  # "pool mirroring mode" or "peer <backend_id>"
    action: SetupAction
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"site": self.site, "item": self.item, "action": self.action, "detail": self.detail}


def prepare(backend: Cluster, devices: Sequence[Cluster]) -> list[SetupItem]:
    """Ensure image mode everywhere, then peer the backend with each device."""
    items = [_ensure_image_mode(site) for site in (backend, *devices)]
    ready = {i.site for i in items if i.action != SetupAction.FAILED}
    for device in devices:
        if {backend.site, device.site} <= ready:
            items.append(_ensure_peered(backend, device))
    return items


def _ensure_image_mode(site: Cluster) -> SetupItem:
    item = "pool mirroring mode"
    try:
        mode = site.pool_mirror_mode()
        if mode == PoolMirrorMode.IMAGE:
            return SetupItem(
                site.site, item, SetupAction.IN_PLACE, f"pool {site.pool!r} in image mode"
            )
        if mode == PoolMirrorMode.POOL:
            # Every image is mirrored in pool mode; switching would change what is replicated.
            return SetupItem(
                site.site,
                item,
                SetupAction.FAILED,
                f"pool {site.pool!r} mirrors in pool mode; rbdfail needs image mode "
                "(volume types decide): change it by hand if that is intended",
            )
        if mode == PoolMirrorMode.UNKNOWN:  # a newer Ceph's: changing it blindly could stop it
            return SetupItem(
                site.site,
                item,
                SetupAction.FAILED,
                f"pool {site.pool!r} mirrors in a mode this rbdfail does not know: not changed "
                "(`rbd mirror pool info` says which; rbdfail needs image mode)",
            )
        site.set_pool_mirror_mode(PoolMirrorMode.IMAGE)
        return SetupItem(
            site.site, item, SetupAction.CHANGED, f"pool {site.pool!r} set to image mode"
        )
    except CephError as exc:
        return SetupItem(site.site, item, SetupAction.FAILED, exc.reason)


def _ensure_peered(backend: Cluster, device: Cluster) -> SetupItem:
    item = f"peer {device.site}"
    try:
        backend_peers, device_peers = backend.peers(), device.peers()
        if _peered(backend, backend_peers, device, device_peers):
            return SetupItem(
                backend.site,
                item,
                SetupAction.IN_PLACE,
                f"pools of {backend.site!r} and {device.site!r} are peered",
            )
        # A site with no peer yet is referenced by no one: naming it after its backend id
        # makes peers readable in `rbd mirror pool info` and in rbdfail's status.
        for site, peers in ((backend, backend_peers), (device, device_peers)):
            if not peers:
                site.set_site_name(site.site)
        device.import_peer_token(backend.create_peer_token())  # the token never leaves memory
        return SetupItem(
            backend.site,
            item,
            SetupAction.CHANGED,
            f"peered {backend.site!r} and {device.site!r} both ways (rx-tx)",
        )
    except PermissionDenied as exc:
        return SetupItem(
            backend.site,
            item,
            SetupAction.FAILED,
            f"{exc.reason}: peering needs a user that may create cephx users; run "
            "`rbdfail setup --user admin`",
        )
    except CephError as exc:
        return SetupItem(backend.site, item, SetupAction.FAILED, exc.reason)


def _peered(a: Cluster, a_peers: list[Any], b: Cluster, b_peers: list[Any]) -> bool:
    """Each pool lists the other as a peer. Site names are compared when this user can read
    them; the rbd profile cannot (it reads the fsid instead), then any two-way peering counts."""
    if not a_peers or not b_peers:
        return False
    a_name, b_name = a.site_name(), b.site_name()
    named = b_name in {p.site_name for p in a_peers} and a_name in {p.site_name for p in b_peers}
    return named or all(p.direction == "rx-tx" for p in (*a_peers, *b_peers))
