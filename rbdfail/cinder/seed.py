"""What an import with --volume-list --state-dir keeps in the state dir, never in the YAML:
each volume's Cinder status (state.json) and which instances each attached volume is attached
to (cinder-attachments.json, read by steps.py after a switch)."""

from __future__ import annotations

import json
from pathlib import Path

from rbdfail import state as states
from rbdfail.cinder.model import CinderImport
from rbdfail.cinder.steps import ATTACHMENTS_FILE
from rbdfail.cinder.writer import write_new_file
from rbdfail.config import DEFAULT_BACKEND_ID
from rbdfail.errors import ConfigError


def attachments_document(result: CinderImport) -> dict[str, object]:
    """What import-cinder keeps next to the YAML (never in it): which volume is attached to
    which instance, for the `nova-manage volume_attachment refresh` lines after a switch."""
    return {
        "written_by": "rbdfail import-cinder",
        "volumes": [
            {
                "image": v.image,
                "id": v.id,
                "backend": v.backend,
                "servers": list(v.servers),
                "hosts": list(v.hosts or (None,) * len(v.servers)),
            }
            for v in result.volumes
            if v.servers
        ],
    }


def seed_state(result: CinderImport, state_dir: Path) -> list[str]:
    """Cinder's status of each imported volume into the state dir's state.json (so that a
    volume a failover cannot move becomes `error` with Cinder's status kept, `in-use` restored
    on failback), and the attachments into cinder-attachments.json there (for the nova-manage
    lines after a switch). Refused while a failover is in effect: the statuses are then
    rbdfail's. Returns what was done, one line each."""
    several = len(result.backends) > 1
    scopes: list[str | None] = list(result.backends) if several else [None]
    seeded = 0
    for scope in scopes:
        current = states.read_state(state_dir, scope)
        if current.active_backend != DEFAULT_BACKEND_ID:
            raise ConfigError(
                f"{state_dir}: backend {scope or result.backend} is failed over to "
                f"{current.active_backend!r}: its statuses are rbdfail's now, not seeded",
                hint="seed the state dir before a failover, or after the failback",
            )
        records = dict(current.volumes)
        for volume in result.volumes:
            if scope is not None and volume.backend not in (None, scope):
                continue
            if records.get(volume.image, states.VolumeRecord()) == states.VolumeRecord():
                # Cinder's `error` kept as the status to restore too: a failback restores an
                # `error` record to its previous status, which must not become `available`.
                previous = volume.status if volume.status == states.ERROR else None
                records[volume.image] = states.VolumeRecord(volume.status, previous)
                seeded += 1
        states.write_state(state_dir, states.State(current.active_backend, records), scope)
    attached = attachments_document(result)
    path = Path(state_dir) / ATTACHMENTS_FILE
    write_new_file(path, json.dumps(attached, indent=1) + "\n", force=True)
    count = len(attached["volumes"])  # type: ignore[arg-type]
    return [
        f"{state_dir}/state.json: Cinder's status of {len(result.volumes)} volume(s) "
        f"({seeded} record(s) written)",
        f"{path}: the instances of {count} attached volume(s)",
    ]
