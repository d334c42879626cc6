"""Which images of the backend are volumes of which type, and how each is mirrored."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from rbdfail.cluster import Cluster, MirrorInfo, MirrorMode
from rbdfail.config import Config
from rbdfail.errors import ImageNotFound

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
        }


def list_volumes(
    cluster: Cluster, config: Config, infos: dict[str, MirrorInfo] | None = None
) -> list[Volume]:
    """Every image of the site's pool as a volume, sorted by name.

    Three round trips for the pool (list, mirror infos, then each image's type metadata read
    concurrently); an image removed while this runs is left out rather than failing the list.
    """
    names = cluster.list_images()
    infos = cluster.mirror_infos() if infos is None else infos

    def type_override(name: str) -> tuple[str, str | None] | None:
        try:
            return name, cluster.get_metadata(name, VOLUME_TYPE_KEY)
        except ImageNotFound:
            return None

    with ThreadPoolExecutor(max_workers=max(1, min(config.concurrency, len(names)))) as pool:
        found = [r for r in pool.map(type_override, names) if r is not None]
    volumes = []
    for name, override in sorted(found):
        volume_type = config.volume_type_for(name, override)
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
