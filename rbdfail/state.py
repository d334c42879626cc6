"""The state dir: which backend is active, each volume's status, and the failover journal.

`state.json` says which backend is active and, for each volume, its status and previous status
(a volume that is not replicated becomes `error` on failover, its previous status kept so that
failback can restore it). Until a failover has run, the file does not exist: the backend
`default` is active and every volume is `available`. It is replaced whole, atomically.

`inventory.json` is the active site's volumes and their types as last listed in full (by
`status`, `check`, `volumes` or a failover): when that site is lost, a failover lists only the
copies on the target, and this is how it still knows the volumes that exist only on the lost site
(not replicated), to mark them `error` as Cinder would.

`journal.jsonl` is append-only: a line per step per volume, flushed and fsynced before the
next step, so that after a crash or a kill it says exactly what was done, and a re-run of the
same failover can finish the rest. It never holds key material: nothing rbdfail handles does.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rbdfail.config import DEFAULT_BACKEND_ID
from rbdfail.errors import RbdfailError

STATE_FILE = "state.json"
JOURNAL_FILE = "journal.jsonl"
INVENTORY_FILE = "inventory.json"
AVAILABLE, ERROR = "available", "error"


@dataclass(frozen=True)
class VolumeRecord:
    status: str = AVAILABLE
    previous_status: str | None = None

    def as_error(self) -> VolumeRecord:
        """`error`, keeping the status to restore (not an `error` of an earlier run)."""
        if self.status == ERROR:
            return self
        return VolumeRecord(ERROR, self.status)

    def restored(self) -> VolumeRecord:
        """Back to the status it had before a failover marked it `error`."""
        if self.status != ERROR:
            return self
        return VolumeRecord(self.previous_status or AVAILABLE, None)


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
            hint=f"restore it from the journal {state_dir / JOURNAL_FILE}, "
            "or move it away if no failover ran",
        ) from exc
    return State(
        raw.get("active_backend", DEFAULT_BACKEND_ID),
        {name: VolumeRecord(**record) for name, record in raw.get("volumes", {}).items()},
    )


def write_state(state_dir: Path, state: State) -> None:
    """Replace state.json atomically: a crash leaves the old file or the new, never half."""
    document = {
        "active_backend": state.active_backend,
        "volumes": {name: asdict(record) for name, record in sorted(state.volumes.items())},
    }
    _write_atomically(state_dir, STATE_FILE, document)


def _write_atomically(state_dir: Path, name: str, document: object) -> None:
    _ensure_dir(state_dir)
    path = state_dir / name
    temporary = path.with_suffix(".tmp")
    with open(temporary, "w") as out:
        json.dump(document, out, indent=2)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
    _fsync_dir(state_dir)


@dataclass(frozen=True)
class Inventory:
    site: str
    taken_at: str  # ISO 8601, UTC
    volume_types: dict[str, str]  # volume name -> its type's name


def remember_volumes(state_dir: Path, site: str, volume_types: dict[str, str]) -> bool:
    """Record a site's full listing, replacing the last one; best effort (a read-only command
    run by a user who may not write the state dir must still work): False when not written."""
    document = {
        "site": site,
        "taken_at": _now(),
        "volume_types": dict(sorted(volume_types.items())),
    }
    try:
        _write_atomically(state_dir, INVENTORY_FILE, document)
    except (OSError, RbdfailError):
        return False
    return True


def read_inventory(state_dir: Path) -> Inventory | None:
    try:
        raw = json.loads((state_dir / INVENTORY_FILE).read_text())
        return Inventory(raw["site"], raw["taken_at"], dict(raw["volume_types"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # none yet, or unreadable: a cache, never a reason to stop


class Journal:
    """Appends one JSON line per event to journal.jsonl, each on disk before `write` returns.

    Thread-safe; lines of one run carry its id. Opened per line, so a worker that finishes
    after its run was reported (a call that outlived its deadline) can still record it.
    """

    def __init__(self, state_dir: Path, run_id: str) -> None:
        self.path = state_dir / JOURNAL_FILE
        self.run_id = run_id
        self._lock = threading.Lock()
        _ensure_dir(state_dir)
        self.path.touch(exist_ok=True)

    def write(self, event: str, **fields: Any) -> None:
        line = {"time": _now(), "run": self.run_id, "event": event, **fields}
        text = json.dumps(line, default=str) + "\n"
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, text.encode())
                os.fsync(fd)
            finally:
                os.close(fd)


def journal_lines(state_dir: Path) -> Iterator[dict[str, Any]]:
    """The journal's lines, oldest first; a torn last line (a crash mid-write) is skipped."""
    try:
        with open(state_dir / JOURNAL_FILE) as lines:
            for line in lines:
                try:
                    yield json.loads(line)
                except ValueError:
                    continue
    except FileNotFoundError:
        return


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ensure_dir(state_dir: Path) -> None:
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RbdfailError(
            f"cannot create the state dir {state_dir}: {exc.strerror}",
            hint="set `state_dir` in rbdfail.yaml to a folder this user may write",
        ) from exc


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
