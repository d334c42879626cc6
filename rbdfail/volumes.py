"""Which images of the backend are volumes of which type, and how each is mirrored."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rbdfail.cluster import Cluster, MirrorInfo, MirrorMode
from rbdfail.config import Config
from rbdfail.errors import ConfigError
from rbdfail.state import remember_volumes

# Image metadata key that sets a volume's type, overriding the config's `volumes` rules.
VOLUME_TYPE_KEY = "rbdfail.volume_type"


@dataclass(frozen=True)
class Volume:
    name: str
    volume_type: str
    replicated: bool
    mirror_mode: MirrorMode | None  # what the type asks for; None when not replicated
    mirroring: MirrorInfo | None  # what the site has; None when not mirrored
    snapshot_interval: str | None = None  # the type's mirror-snapshot schedule, if any
    type_error: str | None = None  # its metadata names a type the config does not know

    def to_json(self) -> dict[str, Any]:
        mirroring = self.mirroring
        return {
            "name": self.name,
            "volume_type": self.volume_type,
            "replicated": self.replicated,
            "mirror_mode": self.mirror_mode,
            "mirrored": mirroring is not None,
            "mirrored_mode": mirroring.mode if mirroring else None,
            "primary": mirroring.primary if mirroring else None,
            "global_id": mirroring.global_id if mirroring else None,
            "type_error": self.type_error,
        }


def list_volumes(
    cluster: Cluster, config: Config, infos: dict[str, MirrorInfo] | None = None
) -> list[Volume]:
    """Every image of the site's pool as a volume, sorted by name, in three passes over the
    pool (names, mirror infos, type overrides): no call per image."""
    names = cluster.list_images()
    infos = cluster.mirror_infos() if infos is None else infos
    overrides = cluster.metadata_values(VOLUME_TYPE_KEY)
    volumes = []
    for name in sorted(names):
        try:
            volume_type = config.volume_type_for(name, overrides.get(name))
        except ConfigError as exc:
            # One mislabelled image must not hide the others: it is listed, untyped, with why.
            hint = f" ({exc.hint})" if exc.hint else ""
            volumes.append(
                Volume(
                    name,
                    f"{overrides[name]}?",
                    False,
                    None,
                    infos.get(name),
                    type_error=f"{VOLUME_TYPE_KEY} names unknown type {overrides[name]!r}{hint}",
                )
            )
            continue
        volumes.append(
            Volume(
                name=name,
                volume_type=volume_type.name,
                replicated=volume_type.replicated,
                mirror_mode=volume_type.mirror_mode if volume_type.replicated else None,
                mirroring=infos.get(name),
                snapshot_interval=volume_type.snapshot_interval,
            )
        )
    return volumes


def remember_listing(config: Config, site: str, volumes: Sequence[Volume]) -> None:
    """Keep a site's full listing as the inventory a failover needs when that site is lost
    (state.py); best effort: a read-only command must work for a user who cannot write."""
    types = {v.name: v.volume_type for v in volumes}
    remember_volumes(config.state_dir, site, types, config.state_scope)
