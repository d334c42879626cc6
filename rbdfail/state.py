"""The state dir: which backend is active, each volume's status, and the failover journal.

`state.json` says which backend is active and, for each volume, its status and previous status
(a volume that is not replicated becomes `error` on failover, its previous status kept so that
failback can restore it). Until a failover has run, the file does not exist: the backend
`default` is active and every volume is `available`. It is replaced whole, atomically. A file
of several backends keeps one such record per backend under `backends` (each function's
`backend` names whose); a record of the one-backend shape, written before the file had
several, stands for each of them (the sites were where it says, whichever backend).

`inventory.json` is the active site's volumes and their types as last listed in full (by
`status`, `check`, `volumes` or a failover): when that site is lost, a failover lists only the
copies on the target, and this is how it still knows the volumes that exist only on the lost site
(not replicated), to mark them `error` as Cinder would.

`journal.jsonl` is append-only: a line per step per volume, flushed and fsynced before the
next step, so that after a crash or a kill it says exactly what was done, and a re-run of the
same failover can finish the rest. It never holds key material: nothing rbdfail handles does.

The state dir may fail under a run (disk full, read-only remount, removed): the journal is an
aid, not a reason to strand a volume half switched, so a failed journal write is remembered
and the run goes on; the report says what could not be recorded. A file found holding what
rbdfail did not write (a hand edit, a disk fault) is named with what to do, never a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rbdfail.config import DEFAULT_BACKEND_ID
from rbdfail.errors import RbdfailError, StateCorrupt

STATE_FILE = "state.json"
JOURNAL_FILE = "journal.jsonl"
INVENTORY_FILE = "inventory.json"
AVAILABLE, ERROR = "available", "error"
# In a state.json of several backends, the record of every backend without its own: the
# one-backend file that was there before (no backend is named "*").
EVERY_BACKEND = "*"


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


def read_state(state_dir: Path, backend: str | None = None) -> State:
    """state.json (the record of `backend` in a file of several), or the state before any
    failover when there is none; StateCorrupt when it holds what rbdfail does not write
    (exit 2: the commands that need it cannot guess)."""
    path = state_dir / STATE_FILE
    try:
        raw = json.loads(path.read_text(errors="replace"))
    except FileNotFoundError:
        return State()
    except (OSError, ValueError, RecursionError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else f"not JSON ({exc})"
        raise _corrupt_state(path, str(reason)) from None
    try:
        return _record_of(raw, backend)
    except (TypeError, ValueError) as exc:
        raise _corrupt_state(path, str(exc)) from None


def _record_of(raw: object, backend: str | None) -> State:
    if isinstance(raw, dict) and "backends" in raw:
        if set(raw) != {"backends"} or not isinstance(raw["backends"], dict):
            raise TypeError("expected {backends: {name: {active_backend, volumes}}}")
        records = {name: _state_from(record) for name, record in raw["backends"].items()}
        if backend is None:  # a file of several read for one backend: its own, or none
            names = ", ".join(sorted(set(records) - {EVERY_BACKEND}))
            raise ValueError(f"it holds the records of several backends ({names})")
        return records.get(backend) or records.get(EVERY_BACKEND) or State()
    return _state_from(raw)


def _state_from(raw: object) -> State:
    if not isinstance(raw, dict):
        raise TypeError(f"expected a JSON object, got {type(raw).__name__}")
    if unknown := set(raw) - {"active_backend", "volumes"}:
        raise ValueError(f"unknown key {sorted(unknown)[0]!r}")
    active = raw.get("active_backend", DEFAULT_BACKEND_ID)
    volumes = raw.get("volumes", {})
    if not isinstance(active, str) or not active:
        raise TypeError(f"active_backend: expected a backend id, got {active!r}")
    if not isinstance(volumes, dict):
        raise TypeError(f"volumes: expected an object, got {type(volumes).__name__}")
    records = {}
    for name, record in volumes.items():
        if not isinstance(record, dict) or set(record) - {"status", "previous_status"}:
            raise TypeError(f"volumes.{name}: expected {{status, previous_status}}, got {record!r}")
        status, previous = record.get("status", AVAILABLE), record.get("previous_status")
        if not isinstance(status, str) or not isinstance(previous, str | None):
            raise TypeError(f"volumes.{name}: status and previous_status must be strings")
        records[name] = VolumeRecord(status, previous)
    return State(active, records)


def _corrupt_state(path: Path, reason: str) -> StateCorrupt:
    return StateCorrupt(
        f"rbdfail's state {path} cannot be used: {reason}",
        hint=f"it says which backend is active and the statuses a failover set: rebuild it from "
        f"the journal {path.parent / JOURNAL_FILE}, or move it away if no failover ran "
        "(a failover still runs: it plans from the sites and rewrites it)",
    )


def write_state(state_dir: Path, state: State, backend: str | None = None) -> None:
    """Replace state.json atomically: a crash leaves the old file or the new, never half.
    `backend`'s record in a file of several; the others' are kept (the runs of two backends,
    in one process or two, take turns under a file lock)."""
    record = {
        "active_backend": state.active_backend,
        "volumes": {name: asdict(record) for name, record in sorted(state.volumes.items())},
    }
    if backend is None:
        _write_atomically(state_dir, STATE_FILE, record)
        return
    _ensure_dir(state_dir)
    with open(state_dir / ".state.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when closed
        try:
            raw = json.loads((state_dir / STATE_FILE).read_text(errors="replace"))
        except (OSError, ValueError, RecursionError):
            raw = {}  # none yet, or unusable: the caller was told when it read it
        records = raw.get("backends") if isinstance(raw, dict) else None
        if not isinstance(records, dict):
            # The one-backend shape stood for every backend: the others keep it, as EVERY.
            legacy = isinstance(raw, dict) and "active_backend" in raw
            records = {EVERY_BACKEND: raw} if legacy else {}
        records[backend] = record
        _write_atomically(state_dir, STATE_FILE, {"backends": dict(sorted(records.items()))})


def save_state(state_dir: Path, state: State, backend: str | None = None) -> str | None:
    """write_state for the end of a run, whose volumes have moved whatever the disk says: None,
    or what could not be recorded (the report says it rather than losing the run)."""
    try:
        write_state(state_dir, state, backend)
    except (OSError, RbdfailError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return f"cannot write {state_dir / STATE_FILE}: {reason}"
    return None


def set_aside(state_dir: Path, run_id: str) -> Path | None:
    """Keep an unusable state.json for a post-mortem before a run replaces it; None if it
    could not be moved (then the run replaces it)."""
    kept = state_dir / f"{STATE_FILE}.corrupt-{run_id}"
    try:
        os.replace(state_dir / STATE_FILE, kept)
    except OSError:
        return None
    return kept


def _write_atomically(state_dir: Path, name: str, document: object) -> None:
    """A temporary file of its own (two writers, e.g. `status --watch` and a failover, must
    not write into one), fsynced, then renamed over the old file."""
    _ensure_dir(state_dir)
    with tempfile.NamedTemporaryFile(
        "w", dir=state_dir, prefix=f".{name}.", suffix=".tmp", delete=False
    ) as out:
        try:
            json.dump(document, out, indent=2)
            out.flush()
            os.fsync(out.fileno())
            os.fchmod(out.fileno(), 0o644)  # no secrets; a user running `status` may read it
            os.replace(out.name, state_dir / name)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(out.name)
            raise
    _fsync_dir(state_dir)


@dataclass(frozen=True)
class Inventory:
    site: str
    taken_at: str  # ISO 8601, UTC
    volume_types: dict[str, str]  # volume name -> its type's name


def _inventory_file(backend: str | None) -> str:
    return INVENTORY_FILE if backend is None else f"inventory.{backend}.json"


def remember_volumes(
    state_dir: Path, site: str, volume_types: dict[str, str], backend: str | None = None
) -> bool:
    """Record a site's full listing, replacing the last one; best effort (a read-only command
    run by a user who may not write the state dir must still work): False when not written."""
    document = {
        "site": site,
        "taken_at": _now(),
        "volume_types": dict(sorted(volume_types.items())),
    }
    try:
        _write_atomically(state_dir, _inventory_file(backend), document)
    except (OSError, RbdfailError):
        return False
    return True


def read_inventory(state_dir: Path, backend: str | None = None) -> Inventory | None:
    """The last full listing, None when there is none yet; StateCorrupt when it cannot be
    read (a cache: the caller says so and goes on without it)."""
    path = state_dir / _inventory_file(backend)
    try:
        raw = json.loads(path.read_text(errors="replace"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else f"not JSON ({exc})"
        raise _corrupt_inventory(path, str(reason)) from None
    types = raw.get("volume_types") if isinstance(raw, dict) else None
    if not (
        isinstance(raw, dict)
        and set(raw) == {"site", "taken_at", "volume_types"}
        and isinstance(raw["site"], str)
        and isinstance(raw["taken_at"], str)
        and isinstance(types, dict)
        and all(isinstance(value, str) for value in types.values())
    ):
        raise _corrupt_inventory(path, "not {site, taken_at, volume_types} as rbdfail writes it")
    return Inventory(raw["site"], raw["taken_at"], dict(types))


def _corrupt_inventory(path: Path, reason: str) -> StateCorrupt:
    return StateCorrupt(
        f"the last listing {path} cannot be used: {reason}",
        hint="the next `rbdfail status` or `rbdfail check` while the backend answers rewrites it",
    )


class Journal:
    """Appends one JSON line per event to journal.jsonl, each on disk before `write` returns.

    Thread-safe; lines of one run carry its id (and, in a file of several backends, the
    backend's name: their volumes may share names). Opened per line, so a worker that finishes
    after its run was reported (a call that outlived its deadline) can still record it. The
    first write that fails (ENOSPC, EROFS, the dir removed) is remembered in `error` and every
    later one is only counted: a run half done must finish its volumes, not die on its record.
    """

    def __init__(self, state_dir: Path, run_id: str, backend: str | None = None) -> None:
        self.path = state_dir / JOURNAL_FILE
        self.run_id = run_id
        self.backend = {} if backend is None else {"backend": backend}
        self.error: str | None = None
        self.unrecorded = 0  # lines not written since `error`
        self._lock = threading.Lock()
        _ensure_dir(state_dir)
        try:
            # Created 0600 (the mode of os.open, not touch's 0644); an older one is narrowed.
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.fchmod(fd, 0o600)
                size = os.fstat(fd).st_size
                # A line torn by a crash would swallow the next one: end it first.
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    os.write(fd, b"\n")
            finally:
                os.close(fd)
        except OSError as exc:
            raise RbdfailError(
                f"cannot write the journal {self.path}: {exc.strerror or exc}",
                hint="set `state_dir` in rbdfail.yaml to a folder this user may write, "
                "with free space",
            ) from exc

    def write(self, event: str, **fields: Any) -> None:
        line = {"time": _now(), "run": self.run_id, **self.backend, "event": event, **fields}
        text = json.dumps(line, default=str) + "\n"
        with self._lock:
            if self.error is not None:
                self.unrecorded += 1
                return
            try:
                self._append(text.encode())
            except OSError as exc:
                self.error = f"cannot write the journal {self.path}: {exc.strerror or exc}"
                self.unrecorded += 1

    def _append(self, data: bytes) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            if os.write(fd, data) != len(data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            os.fsync(fd)
        finally:
            os.close(fd)

    def problem(self) -> str | None:
        """What the run could not record, for its report; None when every line was written."""
        if self.error is None:
            return None
        return (
            f"{self.error}; {self.unrecorded} line(s) of this run are not in it: the report "
            "(and `rbdfail status`) say what was done"
        )


# What the history reads of a line (switch/history.py): text when there, so that a line
# rbdfail did not write (a hand edit, a disk fault) is skipped rather than misread.
_JOURNAL_TEXT = ("run", "backend", "event", "target", "resumes", "step", "site", "volume")


def _journal_line(text: str) -> dict[str, Any] | None:
    """The line as rbdfail writes it, or None: torn, not JSON, or not shaped as its own."""
    try:
        line = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(line, dict) or not isinstance(line.get("run"), str):
        return None
    if not all(isinstance(line.get(key, ""), str | None) for key in _JOURNAL_TEXT):
        return None
    if line.get("event") == "step" and not isinstance(line.get("volume"), str):
        return None
    return line


def journal_lines(state_dir: Path, backend: str | None = None) -> Iterator[dict[str, Any]]:
    """The journal's lines, oldest first; a torn line (a crash mid-write) is skipped. With
    `backend`, that backend's and those written before the file had several backends (they
    may be any backend's: a re-run or a failback takes them into account, to be safe);
    without, every line."""
    try:
        with open(state_dir / JOURNAL_FILE, errors="replace") as lines:
            for text in lines:
                line = _journal_line(text)
                if line is not None and (backend is None or line.get("backend") in (None, backend)):
                    yield line
    except FileNotFoundError:
        return


def daemons_taken_out(
    state_dir: Path, backend: str | None = None
) -> dict[str, tuple[datetime, int]]:
    """Per site, when a forced failover last took its rbd-mirror out (blocklisted its
    addresses) and for how many seconds: status and check name it when the daemon has not
    come back after that."""
    found: dict[str, tuple[datetime, int]] = {}
    for line in journal_lines(state_dir, backend):
        if line.get("event") != "daemon-out":
            continue
        try:
            when = datetime.fromisoformat(str(line["time"]).replace("Z", "+00:00"))
            found[str(line["site"])] = (when, int(line["expires_s"]))
        except (KeyError, TypeError, ValueError):
            continue  # not as rbdfail writes it: the daemon's health is said without it
    return found


def journal_damage(state_dir: Path) -> str | None:
    """Which lines of the journal cannot be read (torn by a power cut, or not rbdfail's),
    so that a plan made without them says so; None when every line reads."""
    try:
        with open(state_dir / JOURNAL_FILE, errors="replace") as lines:
            bad = [n for n, text in enumerate(lines, 1) if text.strip() and not _journal_line(text)]
    except OSError:
        return None
    if not bad:
        return None
    shown = ", ".join(map(str, bad[:5])) + (" ..." if len(bad) > 5 else "")
    return (
        f"{state_dir / JOURNAL_FILE}: {len(bad)} line(s) cannot be read and were skipped "
        f"(line {shown}; a line cut by a crash or a power cut): the runs they belonged to "
        "may be missing from the history (cut-off runs, forced volumes)"
    )


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


# ---- drills (issue 16): when each volume last passed one -------------------------------------
DRILL_FILE = "drill.json"


def read_drill(state_dir: Path) -> dict[str, dict[str, Any]]:
    """Each volume's last successful drill: {"last_success": unix time, "target": site}; {} when
    none ran or the file cannot be used (a record for metrics, never a reason to fail)."""
    try:
        raw = json.loads((state_dir / DRILL_FILE).read_text(errors="replace"))
    except (OSError, ValueError, RecursionError):
        return {}
    volumes = raw.get("volumes") if isinstance(raw, dict) else None
    if not isinstance(volumes, dict):
        return {}
    return {
        name: record
        for name, record in volumes.items()
        if isinstance(record, dict)
        and isinstance(record.get("last_success"), int | float)
        and isinstance(record.get("target"), str)
    }


def record_drill(state_dir: Path, target: str, successes: dict[str, float]) -> str | None:
    """Add this drill's successes (volume -> unix time) to drill.json, keeping the others'
    last ones; None, or what could not be recorded."""
    volumes = read_drill(state_dir)
    volumes.update(
        {name: {"last_success": when, "target": target} for name, when in successes.items()}
    )
    try:
        _write_atomically(state_dir, DRILL_FILE, {"volumes": dict(sorted(volumes.items()))})
    except (OSError, RbdfailError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return f"cannot record the drill in {state_dir / DRILL_FILE}: {reason}"
    return None
