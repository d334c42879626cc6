"""The state dir: which backend is active, and each volume's status and previous status.

Failover writes it (a volume that is not replicated becomes `error`, its previous status kept so
that failback can restore it); status and failback read it. Until a failover has run, the file
does not exist: the backend `default` is active and every volume is `available`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from rbdfail.config import DEFAULT_BACKEND_ID
from rbdfail.errors import RbdfailError

STATE_FILE = "state.json"


@dataclass(frozen=True)
class VolumeRecord:
    status: str = "available"
    previous_status: str | None = None


@dataclass(frozen=True)
class State:
    active_backend: str = DEFAULT_BACKEND_ID
    volumes: dict[str, VolumeRecord] = field(default_factory=dict)

    def volume(self, name: str) -> VolumeRecord:
        return self.volumes.get(name, VolumeRecord())


def read_state(state_dir: Path) -> State:
    path = state_dir / STATE_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return State()
    except (OSError, ValueError) as exc:
        raise RbdfailError(
            f"cannot read rbdfail's state {path}: {exc}",
            hint="restore it from the journal next to it, or move it away if no failover ran",
        ) from exc
    return State(
        raw.get("active_backend", DEFAULT_BACKEND_ID),
        {name: VolumeRecord(**record) for name, record in raw.get("volumes", {}).items()},
    )
