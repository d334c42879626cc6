"""`rbdfail drill`: prove that a site's copies could take over, without disturbing either site.

For each replicated volume, the copy on the target and the primary are read at one point in
time, the copy's newest complete mirror snapshot (journal mode: the drill's own snapshot,
below), and compared: every extent (`full`), or a sample. Nothing is demoted, promoted,
resynced, cloned or locked, and nothing is snapshotted but a journal-mode primary, for the
drill's reads only: every other call is a read-only open of an image, so production keeps
mirroring while the drill runs.

What "at one point in time" means, measured on the lab (Ceph 16.2.15):
- a copy's mirror snapshot names the primary's snapshot it copies (`primary_snap_id`), and
  the primary keeps that snapshot while it is the base of the copy's next sync;
- a copy's own snapshot holds the copy as it was BEFORE that sync (rbd-mirror creates the
  snapshot, then writes the primary's changes into the copy's head), so the copy synced to the
  primary's snapshot N is its head, not its snapshot: read at its snapshot it showed N-1. The
  head moves only in a sync, and every sync starts by creating a newer snapshot: so the copy's
  head is read while its newest snapshot is complete, and the read counts only if the newest
  snapshot is still the same afterwards (else the copy moved under it: read again);
- the primary is read at its snapshot N, by id (a mirror snapshot cannot be named: ENOENT).
- Journal mode keeps no mirror snapshots, and the copy replays a journal while the primary
  takes writes: the one point both sites can be read at is a user snapshot of the primary,
  which the copy's rbd-mirror replays in order with the writes. So for a journal-mode volume
  the drill takes one (`rbdfail-drill-RUN`: its only write, on the primary), waits for the copy
  to hold it, reads both at it, and removes it on the primary in every outcome (the copy
  replays the removal); a drill's snapshot left by a run that was killed is removed by the
  next drill of that volume (docs/design/journal-drill.md).

The default sample: fixed offsets (start, middle, end), random ones, and the extents that hold
data at the snapshot (diff_iterate from the image's creation, capped). The issue asked for the
extents changed between the last two mirror snapshots: python-rbd 16.2's diff_iterate takes
the older snapshot by name only, and a mirror snapshot has none it accepts (ENOENT, measured),
so the extents holding data, which include every extent ever changed, stand in for them.

A switch always wins: the drill never takes the switch lock (it asks the OSD whether someone
holds it, see `Cluster.lock_holder`), watches it on both sites while it runs, and stops as soon
as a failover or failback takes it: volumes not yet drilled are named `unknown` with the reason,
a command running under --exec is ended. Nothing here prints.
"""

from __future__ import annotations

import bisect
import os
import random
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from rbdfail.cluster import Cluster, MirrorMode, MirrorSnapshot, MirrorState, UserSnapshot
from rbdfail.config import Config, Connect, SiteConfig
from rbdfail.errors import CephError, ConfigError, ImageNotFound, LockedByAnotherRun
from rbdfail.state import read_state, record_drill
from rbdfail.switch.lock import LOCK_NAME, _describe_holder
from rbdfail.volumes import list_volumes
from rbdfail.workers import RunResult, all_at_once, run_all

BLOCK = 64 * 1024  # one sampled extent
FULL_EXTENT = 4 << 20  # --full hashes the volume in extents of one RBD object
DEFAULT_SAMPLES = 32  # random blocks; and up to 8 times as many holding data (16 MiB in all)
ALLOCATED_PER_SAMPLE = 8
MAX_EXTENTS = 100_000  # extents holding data looked at per volume (memory, not time)
FULL_TIMEOUT = 3600.0  # default time for one volume with --full
READ_TRIES = 3  # a copy that moved under the read (a sync started) is read again
SYNC_WAIT_S = 2.0  # between tries, for a sync in progress to finish
WATCH_INTERVAL_S = 1.0  # how often the switch lock is looked at on each site
SHOWN_OFFSETS = 20  # differing offsets named in a report


class Verdict(StrEnum):
    IDENTICAL = "identical"
    DIFFERS = "differs"
    UNKNOWN = "unknown"  # cannot tell; the detail says why

    @property
    def needs_attention(self) -> bool:
        return self != Verdict.IDENTICAL


# The drill's own user snapshots of journal-mode primaries: this prefix, then the run's id.
DRILL_SNAPSHOT = "rbdfail-drill-"
# Of a volume's time limit (at most the seconds after it): waiting for the copy to replay the
# drill's snapshot, then for it to replay its removal. The rest is for the reads, and the
# removal must come before the limit: a worker given up on would leave the snapshot behind.
REPLAY_SHARE, REPLAY_MOST_S = 0.4, 120.0
REMOVAL_SHARE, REMOVAL_MOST_S = 0.2, 60.0
REPLAY_POLL_S = 0.5


@dataclass(frozen=True)
class DrillRequest:
    target: str | None = None  # default: the replication device, or `default` after a failover
    names: tuple[str, ...] = ()  # default: every replicated volume
    full: bool = False
    samples: int = DEFAULT_SAMPLES
    exec_command: str | None = None
    exec_timeout: float = 600.0
    concurrency: int = 32
    connect_timeout: float = 5.0
    volume_timeout: float = 60.0


@dataclass(frozen=True)
class ExecResult:
    command: str
    exit_code: int | None  # None: it did not end by itself (timed out, or the drill stopped)
    duration_s: float
    output: str  # the last lines of its stdout and stderr
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "exit_code": self.exit_code,
            "duration_s": round(self.duration_s, 3),
            "output": self.output,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class SnapshotPair:
    """The point in time a volume was drilled at: the primary's snapshot and the copy's."""

    primary_id: int
    copy_id: int
    taken_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {
            "primary_id": self.primary_id,
            "copy_id": self.copy_id,
            "taken_at": self.taken_at.isoformat() if self.taken_at else None,
        }


@dataclass(frozen=True)
class VolumeDrill:
    name: str
    verdict: Verdict
    detail: str
    snapshot: SnapshotPair | None = None
    rpo_seconds: float | None = None  # how old the snapshot was: what a failover now loses
    checked_bytes: int = 0  # read on each site
    differing_offsets: tuple[int, ...] = ()
    exec: ExecResult | None = None
    duration_s: float = 0.0

    @property
    def outcome(self) -> Verdict:  # as progress shows it
        return (
            self.verdict if self.verified or self.verdict != Verdict.IDENTICAL else Verdict.UNKNOWN
        )

    @property
    def verified(self) -> bool:
        """Identical, and the command of --exec (if any) exited 0."""
        return self.verdict == Verdict.IDENTICAL and (self.exec is None or self.exec.exit_code == 0)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "verdict": self.verdict,
            "snapshot": self.snapshot.to_json() if self.snapshot else None,
            "rpo_seconds": None if self.rpo_seconds is None else round(self.rpo_seconds, 3),
            "checked_bytes": self.checked_bytes,
            "detail": self.detail,
            "differing_offsets": list(self.differing_offsets),
            "exec": self.exec.to_json() if self.exec else None,
            "verified": self.verified,
            "duration_s": round(self.duration_s, 3),
        }


@dataclass(frozen=True)
class DrillReport:
    target: str
    source: str
    full: bool
    volumes: tuple[VolumeDrill, ...]
    duration_s: float
    stopped: str | None = None  # why the drill stopped early (a switch started)
    interrupted: bool = False
    warnings: tuple[str, ...] = ()
    calls_left_running: int = 0  # reads given up on, still inside librbd

    @property
    def result(self) -> RunResult:
        verified = sum(v.verified for v in self.volumes)
        if self.volumes and verified == len(self.volumes) and not self.stopped:
            return RunResult.COMPLETE
        return RunResult.PARTIAL if verified else RunResult.FAILED

    @property
    def counts(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for volume in self.volumes:
            found[volume.verdict] = found.get(volume.verdict, 0) + 1
        return found

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "source": self.source,
            "result": self.result,
            "mode": "full" if self.full else "sampled",
            "duration_s": round(self.duration_s, 3),
            "stopped": self.stopped,
            "interrupted": self.interrupted,
            "warnings": list(self.warnings),
            "volumes": [v.to_json() for v in self.volumes],
        }


class DrillObserver(Protocol):
    def note(self, message: str) -> None: ...

    def started(self, total: int) -> None: ...

    def finished(self, volume: VolumeDrill) -> None:
        """Called from worker threads."""

    def stopped(self, reason: str) -> None: ...


class QuietDrill:
    def note(self, message: str) -> None:
        pass

    def started(self, total: int) -> None:
        pass

    def finished(self, volume: VolumeDrill) -> None:
        pass

    def stopped(self, reason: str) -> None:
        pass


# ---- which extents -----------------------------------------------------------------------
def sample_extents(
    size: int, allocated: Sequence[tuple[int, int]], samples: int, rng: random.Random
) -> list[tuple[int, int]]:
    """Blocks to compare: the first, middle and last, `samples` random ones, and the blocks of
    the extents holding data: all of them up to `samples` x ALLOCATED_PER_SAMPLE blocks (a
    small or sparse volume is compared wherever it holds data), else that many spread evenly
    over them."""
    if size <= 0:
        return []
    last = max(0, (size - 1) // BLOCK)
    blocks = {0, last // 2, last}
    blocks |= {rng.randint(0, last) for _ in range(samples)}
    runs = sorted(
        {(o // BLOCK, min(last, (o + n - 1) // BLOCK)) for o, n in allocated if n > 0 and o < size}
    )
    starts, total = [], 0  # where each run begins in the blocks holding data, end to end
    for first, end in runs:
        starts.append(total)
        total += end - first + 1
    budget = samples * ALLOCATED_PER_SAMPLE
    picks = range(total) if total <= budget else (int(i * total / budget) for i in range(budget))
    for index in picks:
        run = bisect.bisect_right(starts, index) - 1
        blocks.add(runs[run][0] + index - starts[run])
    return [(b * BLOCK, min(BLOCK, size - b * BLOCK)) for b in sorted(blocks)]


def full_extents(size: int) -> list[tuple[int, int]]:
    return [(o, min(FULL_EXTENT, size - o)) for o in range(0, size, FULL_EXTENT)]


# ---- the switch, watched without its lock --------------------------------------------------
class SwitchWatch:
    """Looks at the switch lock on every site, one thread each, and says when a failover or
    failback holds it. Never takes it: a switch starting must find it free (a drill that took
    it, even for a moment, would have the switch refused, exit 4)."""

    def __init__(self, sites: Sequence[Cluster], interval: float = WATCH_INTERVAL_S) -> None:
        self.seen = threading.Event()
        self.reason: str | None = None
        self._sites, self._interval = sites, interval
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._watch, args=(site,), daemon=True) for site in sites
        ]

    def holder_now(self) -> str | None:
        """Look once on every site (before the drill starts)."""
        for site in self._sites:
            if self._look(site):
                return self.reason
        return None

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def close(self) -> int:
        """Stop looking, and wait (a little) for a look under way: the connections it uses are
        closed next, which must not happen under a running call. How many still run."""
        self._stop.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(self._interval * 5)
        return sum(thread.is_alive() for thread in self._threads)

    def _watch(self, site: Cluster) -> None:
        while not self._stop.wait(self._interval):
            if self._look(site):
                return

    def _look(self, site: Cluster) -> bool:
        try:
            holder = site.lock_holder(LOCK_NAME)
        except CephError:
            return False  # a slow site: look again; the drill's own reads time out there
        if holder is None:
            return False
        self.reason = (
            f"a failover or failback started: {_describe_holder(holder)}, lock on {site.site}"
        )
        self.seen.set()
        return True


# ---- one volume ----------------------------------------------------------------------------
@dataclass
class Drill:
    """What one drill's workers share."""

    source: Cluster
    target: Cluster
    target_site: SiteConfig
    request: DrillRequest
    watch: SwitchWatch
    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    rng: random.Random = field(default_factory=random.Random)
    run_id: str = field(default_factory=lambda: f"{int(time.time())}-{os.urandom(3).hex()}")
    _rng_lock: threading.Lock = field(default_factory=threading.Lock)

    def stopped(self, name: str) -> VolumeDrill | None:
        if self.watch.seen.is_set():
            return VolumeDrill(name, Verdict.UNKNOWN, f"not drilled: {self.watch.reason}")
        return None

    def volume(self, name: str) -> VolumeDrill:
        started = time.monotonic()
        try:
            result = self._volume(name)
        except CephError as exc:
            result = VolumeDrill(name, Verdict.UNKNOWN, f"cannot tell: {exc.reason}")
        return replace(result, duration_s=time.monotonic() - started)

    def _volume(self, name: str) -> VolumeDrill:
        if stopped := self.stopped(name):
            return stopped
        info = self.target.mirror_info(name)
        if info.state != MirrorState.ENABLED:
            return VolumeDrill(name, Verdict.UNKNOWN, f"no copy on {self.target.site} yet")
        if info.primary:
            return VolumeDrill(
                name, Verdict.UNKNOWN, f"primary on {self.target.site}: there is no copy to drill"
            )
        if info.mode == MirrorMode.JOURNAL:
            return self._journal(name)
        why = "no complete mirror snapshot on the copy yet"
        for attempt in range(READ_TRIES):
            if attempt:
                time.sleep(SYNC_WAIT_S)
            if stopped := self.stopped(name):
                return stopped
            outcome = self._compare(name)
            if isinstance(outcome, VolumeDrill):
                return self._exec(outcome) if outcome.snapshot else outcome
            why = outcome
        return VolumeDrill(name, Verdict.UNKNOWN, f"cannot tell after {READ_TRIES} tries: {why}")

    def _compare(self, name: str) -> VolumeDrill | str:
        """The verdict, or why this try could not give one (a sync under way)."""
        copy = _newest(self.target.mirror_snapshots(name))
        if copy is None or not copy.complete:
            return "a sync to the copy is under way" if copy else "the copy has no mirror snapshot"
        if copy.primary_snap_id is None:
            return f"the copy's newest mirror snapshot is its own ({copy.state}), not a copy"
        primary = next(
            (s for s in self.source.mirror_snapshots(name) if s.id == copy.primary_snap_id), None
        )
        if primary is None:
            return f"the primary no longer holds its snapshot {copy.primary_snap_id}"
        extents = self._extents(name, primary)
        try:
            on_copy = self.target.extent_digests(name, None, extents)
            on_primary = self.source.extent_digests(name, primary.id, extents)
        except ImageNotFound:
            return f"snapshot {primary.id} was removed while it was read"
        if _newest(self.target.mirror_snapshots(name)) != copy:
            return "a sync to the copy started while it was read"
        pair = SnapshotPair(primary.id, copy.id, primary.timestamp)
        return self._verdict(name, pair, extents, on_copy, on_primary)

    def _verdict(
        self,
        name: str,
        pair: SnapshotPair,
        extents: list[tuple[int, int]],
        on_copy: list[str],
        on_primary: list[str],
    ) -> VolumeDrill:
        # The primary site's clock against this host's: never below 0 for a skew.
        taken = pair.taken_at
        age = (self.now() - taken).total_seconds() if taken else None
        rpo = None if age is None else max(0.0, age)
        checked = sum(length for _, length in extents)
        differing = tuple(
            o for (o, _), a, b in zip(extents, on_copy, on_primary, strict=True) if a != b
        )
        what = f"{len(extents)} extents, {_size(checked)}"
        if differing:
            shown = ", ".join(str(o) for o in differing[:SHOWN_OFFSETS])
            more = (
                f" and {len(differing) - SHOWN_OFFSETS} more"
                if len(differing) > SHOWN_OFFSETS
                else ""
            )
            detail = f"{len(differing)} of {what} differ, at offsets {shown}{more}"
            return VolumeDrill(name, Verdict.DIFFERS, detail, pair, rpo, checked, differing)
        how = "every extent" if self.request.full else "sampled"
        return VolumeDrill(name, Verdict.IDENTICAL, f"{what} {how}, identical", pair, rpo, checked)

    def _extents(self, name: str, primary: MirrorSnapshot | UserSnapshot) -> list[tuple[int, int]]:
        if self.request.full:
            return full_extents(primary.size)
        samples = self.request.samples
        allocated = self.source.allocated_extents(name, primary.id, limit=MAX_EXTENTS)
        with self._rng_lock:
            seed = self.rng.getrandbits(64)
        return sample_extents(primary.size, allocated, samples, random.Random(seed))

    # journal mode ------------------------------------------------------------------------
    def _journal(self, name: str) -> VolumeDrill:
        """Both sites read at the drill's own user snapshot of the primary, which the copy
        replays in order with the writes; the snapshot removed on the primary whatever
        happens (the copy replays the removal), and any left by an earlier drill first."""
        limit = self.request.volume_timeout
        left = self._remove_leftovers(name)
        snapshot = f"{DRILL_SNAPSHOT}{self.run_id}"
        taken = self.source.create_snapshot(name, snapshot)
        try:
            wait = min(limit * REPLAY_SHARE, REPLAY_MOST_S)
            result = self._journal_compare(name, snapshot, taken, wait)
        except CephError as exc:
            result = VolumeDrill(name, Verdict.UNKNOWN, f"cannot tell: {exc.reason}")
        removing = time.monotonic()
        gone = self._remove(name, snapshot, min(limit * REMOVAL_SHARE, REMOVAL_MOST_S))
        removed = (
            f"the drill's snapshot removed from both sites in {time.monotonic() - removing:.1f}s"
            if result.snapshot is not None
            # Never seen on the copy: its rbd-mirror replays the creation, then the removal.
            else f"the drill's snapshot removed on {self.source.site}"
        )
        notes = [n for n in (left, gone or removed) if n]
        return replace(result, detail="; ".join([result.detail, *notes]))

    def _journal_compare(self, name: str, snapshot: str, taken: int, wait: float) -> VolumeDrill:
        begun = time.monotonic()
        copy = self._replayed(name, snapshot, wait)
        replayed = time.monotonic() - begun
        if copy is None and (stopped := self.stopped(name)):
            return stopped
        if copy is None:
            return VolumeDrill(
                name,
                Verdict.UNKNOWN,
                f"cannot tell: the copy on {self.target.site} had not replayed the drill's "
                f"snapshot after {wait:.0f}s (its rbd-mirror is behind or not replaying: "
                "`rbdfail status` shows it)",
            )
        primary = next((s for s in self.source.user_snapshots(name) if s.id == taken), None)
        if primary is None:
            return VolumeDrill(
                name, Verdict.UNKNOWN, f"cannot tell: the drill's snapshot {snapshot} vanished"
            )
        extents = self._extents(name, primary)
        on_copy = self.target.extent_digests(name, copy.id, extents)
        on_primary = self.source.extent_digests(name, primary.id, extents)
        pair = SnapshotPair(primary.id, copy.id, primary.timestamp)
        found = self._verdict(name, pair, extents, on_copy, on_primary)
        # How long the copy took to replay it: the drill's own wait, and the copy's lag.
        found = replace(
            found,
            detail=f"{found.detail}, at the drill's snapshot (on the copy {replayed:.1f}s later)",
        )
        return self._exec(found, snapshot) if found.snapshot else found

    def _replayed(self, name: str, snapshot: str, wait: float) -> UserSnapshot | None:
        """The copy's replay of the drill's snapshot, once it holds it; None after `wait`."""
        deadline = time.monotonic() + wait
        while True:
            held = [s for s in self.target.user_snapshots(name) if s.name == snapshot]
            if held or time.monotonic() >= deadline or self.watch.seen.is_set():
                return held[0] if held else None
            time.sleep(REPLAY_POLL_S)

    def _remove(self, name: str, snapshot: str, wait: float) -> str | None:
        """Remove the drill's snapshot on the primary, and wait (up to `wait`) for the copy
        to replay the removal; what is left behind, and where, if anything."""
        try:
            self.source.remove_snapshot(name, snapshot)
        except CephError as exc:
            return (
                f"the drill's snapshot {snapshot} could not be removed on {self.source.site} "
                f"({exc.reason}): the next drill of {name} removes it"
            )
        deadline = time.monotonic() + wait
        while True:
            try:
                held = any(s.name == snapshot for s in self.target.user_snapshots(name))
            except CephError:
                held = True
            if not held:
                return None
            if time.monotonic() >= deadline:
                return (
                    f"the drill's snapshot {snapshot}, removed on {self.source.site}, is still on "
                    f"{self.target.site} until its rbd-mirror replays the removal"
                )
            time.sleep(REPLAY_POLL_S)

    def _remove_leftovers(self, name: str) -> str | None:
        """Remove the drill's snapshots an earlier run left on the primary (killed before it
        removed its own); the copy replays their removal. Only those older than a volume's
        time limit: a drill running beside this one keeps its own."""
        oldest = datetime.now(UTC) - timedelta(seconds=self._limit())
        stale = [
            s.name
            for s in self.source.user_snapshots(name)
            if s.name.startswith(DRILL_SNAPSHOT)
            and s.timestamp is not None
            and s.timestamp < oldest
        ]
        for snapshot in stale:
            self.source.remove_snapshot(name, snapshot)
        return f"removed {len(stale)} snapshot(s) left by an earlier drill" if stale else None

    def _limit(self) -> float:
        """A volume's time limit: what no drill of it outlives."""
        request = self.request
        return request.volume_timeout + (request.exec_timeout if request.exec_command else 0)

    # --exec ------------------------------------------------------------------------------
    def _exec(self, volume: VolumeDrill, snapshot: str | None = None) -> VolumeDrill:
        """Run --exec's command for a compared volume; `snapshot`: journal mode, the drill's
        snapshot the command reads the copy at (it stays until the command ends)."""
        if self.request.exec_command is None or volume.snapshot is None:
            return volume
        if stopped := self.stopped(volume.name):
            return replace(stopped, snapshot=volume.snapshot, rpo_seconds=volume.rpo_seconds)
        compared = volume.snapshot.copy_id

        def moved() -> bool:  # the copy's head is the compared snapshot only until a sync
            if snapshot is not None:  # a snapshot does not move
                return False
            newest = _newest(self.target.mirror_snapshots(volume.name))
            return newest is None or newest.id != compared or not newest.complete

        moved_before = moved()
        result = run_command(
            self.request.exec_command,
            self._environment(volume, snapshot),
            self.request.exec_timeout,
            self.watch.seen,
        )
        if self.watch.seen.is_set() and result.exit_code is None:
            result = replace(result, detail=f"ended: {self.watch.reason}")
        elif moved_before or moved():
            result = replace(
                result,
                exit_code=None,
                detail="a sync to the copy started while it ran: what it read may mix two "
                "snapshots, so its exit code proves nothing",
            )
        return replace(volume, exec=result)

    def _environment(self, volume: VolumeDrill, named: str | None = None) -> dict[str, str]:
        """What --exec's command gets: where to open the copy read-only (journal mode: at the
        drill's snapshot, by name). Never a key: the keyring's path, when the config names
        one."""
        site, snapshot = self.target_site, volume.snapshot
        assert snapshot is not None
        env = {
            "RBDFAIL_DRILL_VOLUME": volume.name,
            "RBDFAIL_DRILL_SITE": site.backend_id,
            "RBDFAIL_DRILL_POOL": site.pool,
            "RBDFAIL_DRILL_NAMESPACE": site.namespace,
            "RBDFAIL_DRILL_IMAGE_SPEC": f"{site.where}/{volume.name}",
            "RBDFAIL_DRILL_CONF": str(site.conf),
            "RBDFAIL_DRILL_USER": site.user,
            "RBDFAIL_DRILL_CLUSTER": site.cluster_name,
            "RBDFAIL_DRILL_PRIMARY_SNAPSHOT_ID": str(snapshot.primary_id),
            "RBDFAIL_DRILL_COPY_SNAPSHOT_ID": str(snapshot.copy_id),
            "RBDFAIL_DRILL_VERDICT": str(volume.verdict),
        }
        if named is not None:
            env["RBDFAIL_DRILL_COPY_SNAPSHOT_NAME"] = named
        if site.keyring:
            env["RBDFAIL_DRILL_KEYRING"] = str(site.keyring)
        return env


def run_command(
    command: str, env: dict[str, str], timeout: float, stop: threading.Event
) -> ExecResult:
    """`sh -c command` in its own process group, its output kept (the tail), ended (TERM, then
    KILL) at `timeout` or when `stop` is set."""
    started = time.monotonic()
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(
            ["/bin/sh", "-c", command],
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        why = ""
        while process.poll() is None:
            if stop.is_set() or time.monotonic() - started > timeout:
                why = "stopped" if stop.is_set() else f"ended after {timeout:g}s (--exec-timeout)"
                _end(process)
                break
            time.sleep(0.1)
        code = None if why else process.returncode
        output.seek(max(0, output.seek(0, os.SEEK_END) - 2048))
        tail = output.read().decode(errors="replace")
    return ExecResult(command, code, time.monotonic() - started, tail, why)


def _end(process: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((15, 5.0), (9, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _newest(snapshots: list[MirrorSnapshot]) -> MirrorSnapshot | None:
    return snapshots[-1] if snapshots else None


def _size(count: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


# ---- the use case --------------------------------------------------------------------------
def drill_target(config: Config, target: str | None) -> tuple[str, str]:
    """(target, source): the copies' site and the primaries', as `check` picks them."""
    active = read_state(config.state_dir, config.state_scope).active_backend
    default = config.backend.backend_id
    target = target or (config.replication_devices[0].backend_id if active == default else default)
    config.site(target)  # an unknown id is a usage error, named
    if target == active:
        raise ConfigError(
            f"{target!r} is the active site: its volumes are the primaries, not copies",
            hint="drill the site a failover would go to: `rbdfail drill --to BACKEND_ID`",
        )
    return target, active


def run_drill(
    config: Config, request: DrillRequest, connect: Connect, observer: DrillObserver | None = None
) -> DrillReport:
    """Drill every replicated volume (or those named) on the target. Raises LockedByAnotherRun
    when a switch holds its lock now, and CephError when a site does not answer."""
    observer = observer or QuietDrill()
    started = time.monotonic()
    target_id, source_id = drill_target(config, request.target)
    target_site, source_site = config.site(target_id), config.site(source_id)
    observer.note(f"connecting to {source_id} and {target_id} (up to {request.connect_timeout:g}s)")
    source, target = all_at_once(
        lambda site: connect(site, request.connect_timeout), [source_site, target_site], _close
    )
    finished, still_looking = None, 0
    try:
        watch = SwitchWatch([source, target])
        if holder := watch.holder_now():
            raise LockedByAnotherRun(
                f"no drill now: {holder}",
                hint="a drill never delays a switch; run it again once the switch has ended",
            )
        names, refused = _volumes(config, source, request.names)
        warnings = []
        drill = Drill(source, target, target_site, request, watch)
        limit = request.volume_timeout + (request.exec_timeout if request.exec_command else 0)
        observer.started(len(names))
        watch.start()
        try:
            finished = run_all(
                names,
                drill.volume,
                request.concurrency,
                on_done=observer.finished,
                time_limit=limit,
                on_overrun=lambda name, seconds: VolumeDrill(
                    name,
                    Verdict.UNKNOWN,
                    f"cannot tell: given up after {seconds:.0f}s, a read still running",
                    duration_s=seconds,
                ),
            )
        finally:
            still_looking = watch.close()
        if watch.reason:
            observer.stopped(watch.reason)
        volumes = refused + [
            v or _not_started(n) for n, v in zip(names, finished.results, strict=True)
        ]
        successes = {config.shown(n): when for n, when in _successes(volumes).items()}
        if recorded := record_drill(config.state_dir, target_id, successes):
            warnings.append(recorded)
        return DrillReport(
            target_id,
            source_id,
            request.full,
            tuple(sorted(volumes, key=lambda v: v.name)),
            time.monotonic() - started,
            stopped=watch.reason,
            interrupted=finished.interrupted,
            warnings=tuple(warnings),
            calls_left_running=finished.overran + still_looking,
        )
    finally:
        if finished is None or finished.overran + still_looking == 0:  # never under a call
            source.close()
            target.close()


def _volumes(
    config: Config, source: Cluster, asked: Sequence[str]
) -> tuple[list[str], list[VolumeDrill]]:
    """The replicated volumes on the source (or those asked for), and the asked ones that
    cannot be drilled, with why."""
    volumes = {v.name: v for v in list_volumes(source, config, source.mirror_infos())}
    if not asked:
        return sorted(n for n, v in volumes.items() if v.replicated), []
    names, refused = [], []
    for name in dict.fromkeys(asked):
        volume = volumes.get(name)
        if volume is None:
            refused.append(VolumeDrill(name, Verdict.UNKNOWN, f"no such volume on {source.site}"))
        elif not volume.replicated and volume.mirroring is None:
            refused.append(VolumeDrill(name, Verdict.UNKNOWN, "not replicated: it has no copy"))
        else:
            names.append(name)
    return names, refused


def _close(cluster: Cluster) -> None:
    cluster.close()


def _not_started(name: str) -> VolumeDrill:
    return VolumeDrill(name, Verdict.UNKNOWN, "not drilled: interrupted before its turn")


def _successes(volumes: Sequence[VolumeDrill]) -> dict[str, float]:
    now = time.time()
    return {v.name: now for v in volumes if v.verified}
