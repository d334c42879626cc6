"""How much of a volume's writes a failover now would lose (its RPO), and whether its
mirror-snapshot schedule is doing its job, judged from what the copy's site says. Pure: status.py
reads Ceph, this judges.

What each mirror mode gives (measured on the lab, Ceph 16.2):
- snapshot mode: the copy's rbd-mirror writes `local_snapshot_timestamp`, the time the primary
  took the newest snapshot the copy holds whole (rbd-mirror's snapshot Replayer looks it up on
  the primary: the consistency point, not when it was copied), and `remote_snapshot_timestamp`,
  the primary's newest snapshot. RPO = now - the first; it only grows while no snapshot comes,
  so a stopped schedule shows. The status is refreshed about every 30 s: the copy may hold a
  newer snapshot than it says, so the figure is an upper bound.
- journal mode: `entries_behind_primary` as of the status's last update (every 30 s), and no
  time at all. Caught up then: RPO <= now - then. Behind: only "at least now - then" (an
  estimate from the replay rate was tried and was wrong by minutes under a replay delay).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from rbdfail.cluster import ImageStatus, MirrorMode, MirrorSnapshot

_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400}
STALE_INTERVALS = 3  # a schedule silent for this many of its intervals has stopped


def interval_seconds(interval: str) -> int:
    """Ceph's schedule interval ("15m", "1h", "1d") in seconds."""
    return int(interval[:-1]) * _UNIT_SECONDS[interval[-1]]


class Bound(StrEnum):
    """How far the figure can be trusted."""

    AT_MOST = "at-most"  # the copy holds a point at least this recent
    ESTIMATE = "estimate"
    AT_LEAST = "at-least"  # it is behind by this much or more, how much more is not known
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Rpo:
    seconds: float | None
    bound: Bound
    how: str  # how it was found, or why it is unknown
    last_sync: float | None = None  # Unix time of the newest point the copy holds
    primary_snapshot: float | None = None  # snapshot mode: the primary's newest, Unix time
    first_sync: bool = False  # the copy has not finished copying the volume once

    def within(self, limit: float) -> bool:
        """Provably no more than `limit` seconds of writes would be lost."""
        trusted = self.bound in (Bound.AT_MOST, Bound.ESTIMATE)
        return trusted and self.seconds is not None and self.seconds <= limit

    def __str__(self) -> str:
        if self.seconds is None:
            return "unknown"
        prefix = {Bound.AT_MOST: "≤", Bound.ESTIMATE: "~", Bound.AT_LEAST: "≥"}.get(self.bound, "")
        return f"{prefix}{self.seconds:.0f}s"

    def to_json(self) -> dict[str, Any]:
        return {
            "seconds": self.seconds,
            "bound": self.bound,
            "how": self.how,
            "last_sync": self.last_sync,
            "first_sync_done": not self.first_sync,
        }


UNKNOWN = Rpo(None, Bound.UNKNOWN, "no copy to measure")


def copy_rpo(
    mode: MirrorMode | None,
    status: ImageStatus | None,
    now: float,
    synced_at: datetime | None = None,
    listed: bool = False,
) -> Rpo:
    """The RPO a copy gives, from its site's status; `synced_at` is the copy's newest whole
    mirror snapshot from its listing (`listed`), read when the status does not say."""
    tail = description_tail(status)
    if mode == MirrorMode.JOURNAL:
        return _journal(status, tail, now)
    remote = _number(tail, "remote_snapshot_timestamp")
    local = _number(tail, "local_snapshot_timestamp")
    if local:
        return Rpo(
            max(0.0, now - local),
            Bound.AT_MOST,
            "the primary's snapshot the copy holds",
            last_sync=local,
            primary_snapshot=remote,
        )
    if listed and synced_at is None:
        return Rpo(
            None,
            Bound.UNKNOWN,
            "first sync not finished: the copy holds no whole snapshot yet",
            primary_snapshot=remote,
            first_sync=True,
        )
    if synced_at is not None:
        # Taken on the copy when it started copying: later than the primary's, so a bit short.
        taken = synced_at.timestamp()
        return Rpo(
            max(0.0, now - taken),
            Bound.ESTIMATE,
            "rbd-mirror does not say; from the copy's newest whole snapshot",
            last_sync=taken,
            primary_snapshot=remote,
        )
    state = f"{status.state}: {status.description}" if status else "no status"
    return Rpo(None, Bound.UNKNOWN, f"rbd-mirror does not say ({state})", primary_snapshot=remote)


def forced_rpo(
    status: ImageStatus | None, snapshots: list[MirrorSnapshot] | None, now: float
) -> Rpo:
    """The point a copy serves once force-promoted, from its own site, read just before the
    promote: the same figure `status` gives of the copy. `snapshots`: the copy's mirror
    snapshots when they were listed (None: its status said enough, see `says_enough`).

    A snapshot-mode copy is rolled back to its newest complete mirror snapshot (its head may
    hold more, half-synced), so the point is that snapshot's: the primary's time of it as
    rbd-mirror last reported (never newer than the snapshot the copy holds), else the copy's
    own time of it (when it began copying: an estimate, a little late). A copy with mirror
    snapshots, or whose status dates one, is in snapshot mode; one without is in journal mode,
    or holds nothing a forced promote could serve (the promote then fails, named)."""
    if snapshots or _SNAPSHOT_KEY in description_tail(status):
        synced = whole_snapshot_time(snapshots) if snapshots else None
        return copy_rpo(MirrorMode.SNAPSHOT, status, now, synced, listed=snapshots is not None)
    return copy_rpo(MirrorMode.JOURNAL, status, now)


def says_enough(status: ImageStatus | None) -> bool:
    """Whether a copy's status alone gives its point in time: snapshot mode, the primary's
    time of the snapshot it holds whole; journal mode, how far behind it was. Otherwise its
    mirror snapshots are listed (first sync, or rbd-mirror silent)."""
    tail = description_tail(status)
    return _SNAPSHOT_KEY in tail or _JOURNAL_KEY in tail


_SNAPSHOT_KEY, _JOURNAL_KEY = "local_snapshot_timestamp", "entries_behind_primary"


def whole_snapshot_time(snapshots: list[MirrorSnapshot]) -> datetime | None:
    """When this site took its newest complete mirror snapshot (on a copy: when it began
    copying it); None while it has none, e.g. a copy whose first sync has not finished."""
    whole = [s for s in snapshots if s.complete]
    return max(whole, key=lambda s: s.id).timestamp if whole else None


def _journal(status: ImageStatus | None, tail: dict[str, Any], now: float) -> Rpo:
    behind = _number(tail, "entries_behind_primary")
    if status is None or status.last_update is None or behind is None:
        state = f"{status.state}: {status.description}" if status else "no status"
        return Rpo(None, Bound.UNKNOWN, f"rbd-mirror does not say ({state})")
    then = status.last_update.timestamp()
    age = max(0.0, now - then)
    if behind == 0:
        return Rpo(age, Bound.AT_MOST, "caught up at rbd-mirror's last report", last_sync=then)
    # No time can be put on the missing entries: a replay rate does not date them (measured:
    # with `rbd_mirroring_replay_delay` 600 the copy lacked 10 minutes of writes while
    # behind / entries_per_second came to seconds).
    return Rpo(
        age,
        Bound.AT_LEAST,
        f"{behind:.0f} entries behind at rbd-mirror's last report, how old Ceph does not say",
    )


def schedule_verdict(
    wanted: str | None, on_primary: list[str] | None, rpo: Rpo, now: float
) -> tuple[bool | None, str]:
    """Whether the volume's mirror-snapshot schedule is there on its primary site and firing:
    (None, "") when its type asks for none, (None, why) when it cannot be told."""
    if wanted is None:
        return None, ""
    if on_primary is None:
        return None, "the primary site's schedules could not be read"
    if wanted not in on_primary:
        return False, f"no {wanted} snapshot schedule on the primary site"
    newest = rpo.primary_snapshot
    if newest is not None and now - newest > STALE_INTERVALS * interval_seconds(wanted):
        return False, (
            f"no mirror snapshot for {now - newest:.0f}s: the {wanted} schedule has not "
            f"fired in {STALE_INTERVALS} of its intervals"
        )
    return True, f"every {wanted}"


def description_tail(status: ImageStatus | None) -> dict[str, Any]:
    """The JSON Ceph appends to a replaying copy's description: `replaying, {...}`."""
    if status is None or ", {" not in status.description:
        return {}
    try:
        found = json.loads(status.description.split(", ", 1)[1])
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def _number(tail: dict[str, Any], key: str) -> float | None:
    value = tail.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
