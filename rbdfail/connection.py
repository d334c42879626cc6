"""What a client needs to attach a volume where it is primary now: `rbdfail connection-info`.

The shape follows what the Cinder RBD driver hands out for the active backend
(`driver_volume_type: rbd` and its `data`); it never carries key material, only the cephx user
whose key the client must already have.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rbdfail.cluster import Cluster, MirrorInfo
from rbdfail.config import Config, Connect, SiteConfig
from rbdfail.errors import CephError, ImageNotFound, RbdfailError


def connection_info(config: Config, connect: Connect, volume: str) -> dict[str, Any]:
    """Find where the volume is primary (every site at once), then describe attaching it there."""
    with ThreadPoolExecutor(max_workers=len(config.sites)) as pool:
        found = list(pool.map(lambda site: _look(config, connect, site, volume), config.sites))
    unreachable = [site.backend_id for site, outcome in found if isinstance(outcome, CephError)]
    present = [(site, info) for site, info in found if isinstance(info, MirrorInfo)]
    writable = [site for site, info in present if info.primary or info.state == "disabled"]
    if not present and not unreachable:
        raise RbdfailError(
            f"volume {volume!r} exists on no site", hint="check the name with `rbdfail status`"
        )
    if len(writable) > 1:
        raise RbdfailError(
            f"volume {volume!r} is primary on {' and '.join(s.backend_id for s in writable)} "
            "(split brain): attaching either could lose writes",
            hint="fence the old primary, then resolve it with `rbdfail failback`",
        )
    if not writable:
        why = (
            f"site(s) {', '.join(unreachable)} unreachable" if unreachable else "demoted everywhere"
        )
        raise RbdfailError(
            f"volume {volume!r} is primary nowhere that can be seen ({why})",
            hint="promote it first (`rbdfail failover`), or retry when the site answers",
        )
    site = writable[0]
    cluster = connect(site, config.replication_connect_timeout)
    try:
        monitors = cluster.monitors()
    finally:
        cluster.close()
    legacy = [a.removeprefix("v1:") for m in monitors for a in m.addresses if a.startswith("v1:")]
    return {
        "driver_volume_type": "rbd",
        "site": site.backend_id,
        "data": {
            # librbd's image spec: "pool/image", or "pool/namespace/image" in a namespace
            # (a key of its own then; Cinder's shape has none).
            "name": f"{site.where}/{volume}",
            "pool": site.pool,
            **({"namespace": site.namespace} if site.namespace else {}),
            "volume": volume,
            "cluster_name": site.cluster_name,
            "hosts": [address.rsplit(":", 1)[0] for address in legacy],
            "ports": [address.rsplit(":", 1)[1] for address in legacy],
            "monitors": [{"name": m.name, "addresses": list(m.addresses)} for m in monitors],
            "auth_enabled": True,
            "auth_username": site.user,
            "secret_type": "ceph",
        },
    }


def _look(
    config: Config, connect: Connect, site: SiteConfig, volume: str
) -> tuple[SiteConfig, MirrorInfo | CephError | None]:
    cluster: Cluster | None = None
    try:
        cluster = connect(site, config.replication_connect_timeout)
        return site, cluster.mirror_info(volume)
    except ImageNotFound:
        return site, None
    except CephError as exc:
        return site, exc
    finally:
        if cluster is not None:
            cluster.close()
