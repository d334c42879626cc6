"""Failover: plan from both sites, then demote-then-force-promote, concurrently, journaled.

This module is also the engine failback runs on (failback.py plans, `execute` carries out):
moving volumes from a source site to a target site is the same work both ways.

The model is the Cinder RBD driver's: each replicated volume is demoted on the source and
promoted on the target; as soon as one demotion fails because the source does not answer, the
source is taken as lost, no more demotions are started and every volume not demoted yet is
force-promoted. Beyond Cinder:

- volumes are worked on concurrently, each within its own wall-clock budget, and a call that
  hangs past it is given up on (see workers.py), so the command always finishes;
- no volume is left primary nowhere: one demoted but not promotable on the target in time is
  promoted back on the source (or, with `force`, force-promoted on the target);
- every step is journaled before and after it happens (state.py), so that re-running the same
  failover after a crash finishes what is left: the plan is made from what both sites say now,
  so a finished volume is `already-primary` and a demoted one is only promoted;
- a RADOS lock on the target's pool refuses a second failover, from any host.

Nothing here prints: progress goes to an observer, the outcome is a `FailoverReport`.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol, cast

from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    stop_when_event_set,
    wait_exponential,
)

from rbdfail.cluster import Cluster, MirrorInfo, MirrorState, ReplayState
from rbdfail.config import Config, SiteConfig
from rbdfail.errors import (
    CephError,
    ConfigError,
    ImageBusy,
    ImageNotFound,
    InvalidState,
    LockHeld,
    OperationTimedOut,
    RbdfailError,
    SiteUnreachable,
)
from rbdfail.state import (
    Journal,
    State,
    VolumeRecord,
    journal_lines,
    read_inventory,
    remember_volumes,
    write_state,
)
from rbdfail.volumes import Volume, list_volumes
from rbdfail.workers import run_all

Connect = Callable[[SiteConfig, float], Cluster]

LOCK_NAME = "rbdfail.failover"
LOCK_DURATION = 30  # seconds; renewed every third of it while the run lives
UNREACHABLE = (SiteUnreachable, OperationTimedOut)


class Plan(StrEnum):
    """What failover will do to one volume, decided before anything is touched."""

    DEMOTE_PROMOTE = "demote+promote"
    PROMOTE = "promote"  # demoted already (an earlier run was cut off): promote only
    FORCE_PROMOTE = "force-promote"  # the source is unreachable
    NOTHING = "nothing"  # primary on the target already
    MARK_ERROR = "mark-error"  # not replicated: becomes `error`, its previous status kept
    RESTORE = "restore"  # failback of a volume that did not move: its status comes back
    RESYNC = "resync+switch"  # split brain after a forced failover: resync the stale copy first
    CANNOT = "cannot"  # replicated by type, but cannot be failed over (the reason says why)


class Action(StrEnum):
    """What was done to one volume (the `action` of the JSON report)."""

    DEMOTED_PROMOTED = "demoted+promoted"
    RESYNCED_PROMOTED = "resynced+promoted"
    FORCE_PROMOTED = "force-promoted"
    ALREADY_PRIMARY = "already-primary"
    NOT_REPLICATED = "not-replicated"
    RESTORED = "restored"  # failback: not replicated, its status restored
    FAILED = "failed"
    NOT_STARTED = "not-started"  # Ctrl-C before its turn: untouched

    @property
    def succeeded(self) -> bool:
        return self in (
            Action.DEMOTED_PROMOTED,
            Action.RESYNCED_PROMOTED,
            Action.FORCE_PROMOTED,
            Action.ALREADY_PRIMARY,
        )

    @property
    def moves(self) -> bool:
        """False for the volumes that are not replicated: they only change status."""
        return self not in (Action.NOT_REPLICATED, Action.RESTORED)


@dataclass(frozen=True)
class PlannedVolume:
    name: str
    volume_type: str
    plan: Plan
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "volume_type": self.volume_type,
            "plan": self.plan,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class VolumeOutcome:
    name: str
    action: Action
    status: str  # the volume's status afterwards, as state.json records it
    error: str | None
    duration_s: float
    detail: str = ""  # what happened, for an operator (e.g. "rolled back to default")

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "action": self.action,
            "status": self.status,
            "error": self.error,
            "detail": self.detail,
            "duration_s": round(self.duration_s, 3),
        }


@dataclass(frozen=True)
class FailoverPlan:
    source: str
    target: str
    source_reachable: bool
    source_error: str | None  # why the source is taken as lost from the start
    volumes: tuple[PlannedVolume, ...]
    resumes: str | None = None  # the id of the run this one finishes, if one was cut off
    inventory_taken_at: str | None = None  # when the lost source was last listed, if used
    operation: str = "failover"  # or "failback"

    @property
    def forced(self) -> bool:
        return any(v.plan == Plan.FORCE_PROMOTE for v in self.volumes)

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for volume in self.volumes:
            counts[volume.plan] = counts.get(volume.plan, 0) + 1
        return counts

    def to_json(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "source": self.source,
            "target": self.target,
            "source_reachable": self.source_reachable,
            "source_error": self.source_error,
            "resumes": self.resumes,
            "inventory_taken_at": self.inventory_taken_at,
            "counts": self.counts(),
            "volumes": [v.to_json() for v in self.volumes],
        }


@dataclass(frozen=True)
class FailoverReport:
    run_id: str
    plan: FailoverPlan
    volumes: tuple[VolumeOutcome, ...]
    duration_s: float
    primary_lost: str | None  # why the source was taken as lost, if it was
    interrupted: bool
    active_backend: str  # as state.json says now
    calls_left_running: int = 0  # given up on at their time limit, still inside librbd

    @property
    def forced(self) -> bool:
        return any(v.action == Action.FORCE_PROMOTED for v in self.volumes)

    @property
    def result(self) -> str:
        """complete: every replicated volume is primary on the target; failed: none is."""
        replicated = [v for v in self.volumes if v.action.moves]
        good = sum(v.action.succeeded for v in replicated)
        if good == len(replicated) and not self.interrupted:
            return "complete"
        return "failed" if good == 0 else "partial"

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for volume in self.volumes:
            counts[volume.action] = counts.get(volume.action, 0) + 1
        return counts

    def to_json(self) -> dict[str, Any]:
        return {
            "operation": self.plan.operation,
            "target": self.plan.target,
            "source": self.plan.source,
            "result": self.result,
            "forced": self.forced,
            "duration_s": round(self.duration_s, 3),
            "run_id": self.run_id,
            "resumes": self.plan.resumes,
            "primary_lost": self.primary_lost,
            "interrupted": self.interrupted,
            "active_backend": self.active_backend,
            "counts": self.counts(),
            "volumes": [v.to_json() for v in self.volumes],
        }


@dataclass(frozen=True)
class Options:
    connect_timeout: float
    volume_timeout: float
    concurrency: int
    force: bool = False  # a demoted volume not promotable in time is forced, not rolled back
    # What a forced promote may take: 9-10 s on the lab while the target's rbd-mirror held the
    # image's exclusive lock (ceph-facts.md). Part of the allowance after a volume's budget.
    forced_promote_s: float = 15.0
    resync_timeout: float = 900.0  # failback: a stale copy's re-copy, before its switch
    # Volumes in progress per call slot while the source answers: a clean switch spends most
    # of its time waiting for the demotion to reach the target (about 3 s, against about 1 s
    # a call), and that wait holds no slot. Measured, 200 volumes: one volume per slot took
    # 23.4 s against 13.3 s for `rbd mirror pool demote` + `promote` at the same concurrency.
    volumes_per_slot: int = 4

    @property
    def hard_limit(self) -> float:
        """When a volume's work is given up on: its budget, then room for what follows a
        budget spent waiting (a roll-back's two calls, or a forced promote). Time spent
        queued for a call slot is added on top (`CallSlots.queued`). Only a call that hangs
        despite the timeouts reaches it."""
        return self.volume_timeout + 2 * self.connect_timeout + self.forced_promote_s

    def limit_for(self, volume: PlannedVolume) -> float:
        return self.hard_limit + (self.resync_timeout if volume.plan == Plan.RESYNC else 0)


class Observer(Protocol):
    """Progress, called from worker threads."""

    def step(self, name: str, step: str) -> None: ...

    def finished(self, outcome: VolumeOutcome) -> None: ...

    def primary_lost(self, reason: str) -> None: ...


class _Silent:
    def step(self, name: str, step: str) -> None:
        pass

    def finished(self, outcome: VolumeOutcome) -> None:
        pass

    def primary_lost(self, reason: str) -> None:
        pass


# ---- connecting and planning ---------------------------------------------------------------
@dataclass
class Sites:
    """The two connections of a failover; `source` is None when it could not be reached."""

    source_id: str
    target: Cluster
    source: Cluster | None
    source_error: CephError | None

    def close(self) -> None:
        for cluster in (self.target, self.source):
            if cluster is not None:
                cluster.close()


def connect_sites(
    config: Config, state: State, target_id: str, connect: Connect, timeout: float
) -> Sites:
    """Connect to the target and probe the source at once: one connect timeout in all.

    An unreachable target is fatal (demoting with nowhere to promote would leave no primary);
    an unreachable source is what a forced failover is for.
    """
    target_site = config.site(target_id)
    source_site = config.backend
    if target_id == source_site.backend_id:
        raise RbdfailError(
            f"{target_id!r} is the backend itself, not a replication device",
            hint="to go back to the original site, use `rbdfail failback`",
        )
    if state.active_backend not in (source_site.backend_id, target_id):
        raise RbdfailError(
            f"the active backend is {state.active_backend!r}, not {source_site.backend_id!r}",
            hint="fail back first (`rbdfail failback`), then fail over to another device",
        )
    return connect_pair(source_site, target_site, connect, timeout, "fail over")


def connect_pair(
    source_site: SiteConfig, target_site: SiteConfig, connect: Connect, timeout: float, what: str
) -> Sites:
    """Connect to the target and probe the source at once: one connect timeout in all."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        target_future = pool.submit(connect, target_site, timeout)
        source_future = pool.submit(connect, source_site, timeout)
        source_error = source_future.exception()
        target_error = target_future.exception()
    if target_error is not None:
        if source_error is None:
            source_future.result().close()
        raise RbdfailError(
            f"cannot {what}: {target_error}",
            hint="nothing was changed on any site; the target must answer before any volume "
            "is demoted. Check it with `rbdfail status`",
        ) from target_error
    if source_error is not None and not isinstance(source_error, CephError):
        target_future.result().close()
        raise source_error
    return Sites(
        source_site.backend_id,
        target_future.result(),
        None if source_error else source_future.result(),
        source_error if isinstance(source_error, CephError) else None,
    )


def plan_failover(config: Config, sites: Sites, resumes: str | None = None) -> FailoverPlan:
    """Classify every volume from what both sites say now (three passes per site)."""
    with ThreadPoolExecutor(1) as reader:  # the two sites are read at once
        target_reading = reader.submit(sites.target.mirror_infos)
        if sites.source is not None:
            try:
                volumes = list_volumes(sites.source, config)
                remember_volumes(
                    config.state_dir, sites.source_id, {v.name: v.volume_type for v in volumes}
                )
            except UNREACHABLE as exc:  # answered the connect, then went away
                sites.source_error = exc
                sites.source = None
        target_infos = target_reading.result()
    remembered: dict[str, str] = {}
    inventory = None
    if sites.source is None:
        # Only the copies on the target can be listed; the volumes that exist only on the lost
        # site (not replicated) come from the last full listing of it, if there is one.
        copies = set(target_infos)
        volumes = [v for v in list_volumes(sites.target, config, target_infos) if v.name in copies]
        volumes = [replace(v, mirroring=None) for v in volumes]
        inventory = read_inventory(config.state_dir)
        if inventory is not None and inventory.site != sites.source_id:
            inventory = None
        if inventory is not None:
            for name, type_name in inventory.volume_types.items():
                if name not in copies:
                    volumes.append(_remembered_volume(config, name, type_name))
                    remembered[name] = (
                        f"listed {inventory.taken_at}, before {sites.source_id} was lost"
                    )
            volumes.sort(key=lambda v: v.name)
    planned = []
    for volume in volumes:
        one = _plan_one(
            volume,
            target_infos.get(volume.name),
            sites.source is not None,
            sites.target.site,
            sites.source_id,
        )
        if volume.name in remembered:
            one = replace(one, reason=f"{one.reason} ({remembered[volume.name]})")
        planned.append(one)
    return FailoverPlan(
        sites.source_id,
        sites.target.site,
        sites.source is not None,
        None if sites.source_error is None else str(sites.source_error.reason),
        tuple(planned),
        resumes,
        inventory.taken_at if sites.source is None and inventory is not None else None,
    )


def _remembered_volume(config: Config, name: str, type_name: str) -> Volume:
    try:
        volume_type = config.volume_type(type_name)
    except ConfigError:  # the type was renamed since: the rules decide
        volume_type = config.volume_type_for(name)
    return Volume(
        name,
        volume_type.name,
        volume_type.replicated,
        volume_type.mirror_mode if volume_type.replicated else None,
        None,
    )


def _plan_one(
    volume: Volume, copy: MirrorInfo | None, source_reachable: bool, target: str, source: str
) -> PlannedVolume:
    def planned(plan: Plan, reason: str) -> PlannedVolume:
        return PlannedVolume(volume.name, volume.volume_type, plan, reason)

    here = volume.mirroring  # on the source; None when not mirrored or the source is lost
    if volume.type_error:
        return planned(Plan.CANNOT, volume.type_error)
    if not volume.replicated:
        note = " (it is mirrored all the same; its copy is left as it is)" if here else ""
        return planned(Plan.MARK_ERROR, f"type {volume.volume_type!r} is not replicated{note}")
    if source_reachable and here is None:
        return planned(
            Plan.CANNOT,
            f"its type {volume.volume_type!r} is replicated but it is not mirrored "
            "(run `rbdfail enable-mirroring` when the source is back)",
        )
    if copy is None:
        return planned(Plan.CANNOT, f"no copy on {target} (rbd-mirror has not created one)")
    if copy.state != MirrorState.ENABLED:
        return planned(Plan.CANNOT, f"its copy on {target} is {copy.state}, not usable yet")
    if here is not None and here.global_id != copy.global_id:
        return planned(
            Plan.CANNOT,
            f"the image named so on {target} is another image (global id differs): "
            "check it by hand",
        )
    if copy.primary:
        if here is not None and here.primary:
            return planned(
                Plan.NOTHING,
                f"primary on {target} already, and still on {source} too (split brain: "
                "failback resyncs it)",
            )
        return planned(Plan.NOTHING, f"primary on {target} already")
    if not source_reachable:
        return planned(Plan.FORCE_PROMOTE, f"{source} is unreachable")
    assert here is not None
    if here.primary:
        return planned(Plan.DEMOTE_PROMOTE, f"primary on {source}")
    return planned(Plan.PROMOTE, f"demoted on {source} already, not primary anywhere")


def unfinished_run(config: Config, target: str) -> str | None:
    """The id of the last failover to `target` that started and never ended, if any."""
    started: dict[str, str] = {}
    for line in journal_lines(config.state_dir):
        if line.get("event") == "start" and line.get("target") == target:
            started.pop(line.get("resumes") or "", None)  # taken over by this run
            started[line["run"]] = target
        elif line.get("event") == "end":
            started.pop(line.get("run", ""), None)
    return next(reversed(started), None) if started else None


# ---- the lock ----------------------------------------------------------------------------
class FailoverLock:
    """rbdfail's RADOS lock on each site's pool, held while a run moves volumes between them.

    On both sites, so that two runs in opposite directions (a failover and a failback started
    at once) cannot both go on: whichever comes second is refused. Taken in a fixed order
    (by site name), so two such runs never hold one each. The target's is required; the
    source's is taken when the source answers, which a forced failover does without.

    Each lock is renewed in the background while held. A run killed without releasing leaves
    locks that lapse after LOCK_DURATION; when their holder was on this host and its process
    is gone, `acquire` waits for that.
    """

    def __init__(self, sites: Sites, run_id: str, what: str) -> None:
        self.sites = sites
        self.run_id = run_id
        self.holder = json.dumps(
            {
                "user": _user(),
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "since": datetime.now(UTC).isoformat(timespec="seconds"),
                "run": run_id,
                "what": what,
            }
        )
        self._held: list[Cluster] = []
        self._renewers: dict[str, threading.Thread] = {}  # site -> its renewing thread
        self._stop = threading.Event()

    def acquire(self, on_wait: Callable[[str], None] = lambda message: None) -> None:
        reachable = [c for c in (self.sites.target, self.sites.source) if c is not None]
        try:
            for cluster in sorted(reachable, key=lambda c: c.site):
                try:
                    self._acquire_on(cluster, on_wait)
                except CephError as exc:  # a lock held by another run is RbdfailError
                    if cluster is self.sites.target:
                        raise
                    on_wait(
                        f"{cluster.site}: its lock could not be taken ({exc.reason}); "
                        "going on with the target's only"
                    )
        except BaseException:
            self.release()
            raise
        for cluster in self._held:
            renewer = threading.Thread(target=self._renew, args=(cluster,), daemon=True)
            renewer.start()
            self._renewers[cluster.site] = renewer

    def _acquire_on(self, cluster: Cluster, on_wait: Callable[[str], None]) -> None:
        deadline = time.monotonic() + LOCK_DURATION + 10
        while True:
            try:
                cluster.lock(LOCK_NAME, self.run_id, self.holder, LOCK_DURATION)
                self._held.append(cluster)
                return
            except LockHeld as exc:
                who = _describe_holder(exc.holder)
                if not _dead_here(exc.holder) or time.monotonic() > deadline:
                    raise RbdfailError(
                        f"another failover is running: {who}",
                        hint=f"wait for it to end (`rbdfail status` shows its progress). A run "
                        f"that was killed leaves a lock on {cluster.site!r} that lapses "
                        f"within {LOCK_DURATION}s; then run the same command again to finish it",
                    ) from exc
                on_wait(f"waiting up to {LOCK_DURATION}s for the lock of a dead run ({who})")
                time.sleep(1)

    def _renew(self, cluster: Cluster) -> None:
        # One thread per site: a source that stops answering must not hold up the target's.
        while not self._stop.wait(LOCK_DURATION / 3):
            try:
                cluster.lock(LOCK_NAME, self.run_id, self.holder, LOCK_DURATION)
            except CephError:
                continue  # a slow site: try again; the lock outlives two misses

    def release(self, source_lost: bool = False) -> None:
        """Unlock every site held; a source the run took as lost is left to its lapse (an
        unlock there would only wait out its timeout)."""
        self._stop.set()
        for cluster in self._held:
            if source_lost and cluster is self.sites.source:
                continue
            if renewer := self._renewers.get(cluster.site):
                renewer.join()  # a renewal landing after the unlock would take the lock again
            with suppress(CephError):  # it lapses by itself
                cluster.unlock(LOCK_NAME, self.run_id)
        self._held.clear()


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def _describe_holder(holder: str) -> str:
    try:
        who = json.loads(holder)
        return (
            f"{who['what']} by {who['user']}@{who['host']} (pid {who['pid']}, "
            f"since {who['since']}, run {who['run']})"
        )
    except (ValueError, KeyError, TypeError):
        return holder or "holder unknown"


def _dead_here(holder: str) -> bool:
    """True when the holder ran on this host and its process is gone."""
    try:
        who = json.loads(holder)
        if who["host"] != socket.gethostname():
            return False
        os.kill(int(who["pid"]), 0)
    except ProcessLookupError:
        return True
    except (ValueError, KeyError, TypeError, PermissionError):
        return False
    return False


# ---- executing -----------------------------------------------------------------------------
class CallSlots:
    """At most `concurrency` Ceph calls at once across a run's volumes.

    A volume given up on while inside a call (it hangs) has its slot written off, so the
    calls of the others are never held up by it; the hung call, if it ever returns, does not
    give the slot back a second time.
    """

    def __init__(self, concurrency: int) -> None:
        self._free = threading.Semaphore(concurrency)
        self._lock = threading.Lock()
        self._written_off: dict[int, bool] = {}  # thread in a call -> its slot written off
        self._queued: dict[int, float] = {}  # thread -> seconds spent queued, finished waits
        self._queued_since: dict[int, float] = {}  # thread queued now -> since when

    def begin(self, thread: int) -> None:
        """A thread starts on a new volume (thread ids are reused): its queued time is 0."""
        with self._lock:
            self._queued.pop(thread, None)

    def queued(self, thread: int | None) -> float:
        """Seconds the thread has spent waiting for slots, the wait going on included."""
        with self._lock:
            since = self._queued_since.get(thread or 0)
            return self._queued.get(thread or 0, 0.0) + (
                time.monotonic() - since if since is not None else 0.0
            )

    def call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        me = threading.get_ident()
        with self._lock:
            self._queued_since[me] = time.monotonic()
        self._free.acquire()
        with self._lock:
            self._queued[me] = self._queued.get(me, 0.0) + (
                time.monotonic() - self._queued_since.pop(me)
            )
            self._written_off[me] = False
        try:
            return function(*args, **kwargs)
        finally:
            with self._lock:
                written_off = self._written_off.pop(me)
            if not written_off:
                self._free.release()

    def write_off(self, thread: int | None) -> None:
        with self._lock:
            if thread in self._written_off and not self._written_off[thread]:
                self._written_off[thread] = True
                self._free.release()


class _Throttled:
    """A site whose every call takes one of the run's call slots."""

    def __init__(self, cluster: Cluster, slots: CallSlots) -> None:
        self._cluster, self._slots = cluster, slots

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._cluster, name)
        if not callable(attribute):
            return attribute
        return lambda *args, **kwargs: self._slots.call(attribute, *args, **kwargs)


def _throttled(sites: Sites, slots: CallSlots) -> Sites:
    def wrap(cluster: Cluster) -> Cluster:
        return cast(Cluster, _Throttled(cluster, slots))

    return Sites(
        sites.source_id,
        wrap(sites.target),
        None if sites.source is None else wrap(sites.source),
        sites.source_error,
    )


@dataclass
class _Run:
    """What the workers of one run share."""

    sites: Sites
    options: Options
    journal: Journal
    observer: Observer
    slots: CallSlots
    lost: threading.Event = field(default_factory=threading.Event)
    lost_reason: str | None = None
    steps: dict[str, str] = field(default_factory=dict)  # volume -> its step now
    threads: dict[str, int] = field(default_factory=dict)  # volume -> the thread working on it
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def step(self, name: str, step: str, **fields: Any) -> None:
        self.steps[name] = step
        self.journal.write("step", volume=name, step=step, **fields)
        self.observer.step(name, step)

    def lose_source(self, error: CephError) -> None:
        with self._lock:
            if self.lost.is_set():
                return
            self.lost_reason = f"{self.sites.source_id} stopped answering: {error.reason}"
            self.lost.set()
        self.journal.write("primary-lost", error=error.reason)
        self.observer.primary_lost(self.lost_reason)


def execute(
    plan: FailoverPlan,
    sites: Sites,
    state: State,
    options: Options,
    journal: Journal,
    config: Config,
    observer: Observer | None = None,
) -> FailoverReport:
    """Carry the plan out and record it; the caller holds the lock."""
    started = time.monotonic()
    slots = CallSlots(options.concurrency)
    run = _Run(_throttled(sites, slots), options, journal, observer or _Silent(), slots)
    if sites.source is None and sites.source_error is not None:
        run.lost.set()
        run.lost_reason = f"{sites.source_id} unreachable: {sites.source_error.reason}"
    journal.write(
        "start",
        operation=plan.operation,
        target=plan.target,
        source=plan.source,
        resumes=plan.resumes,
        source_reachable=plan.source_reachable,
        plan={v.name: v.plan for v in plan.volumes},
        host=socket.gethostname(),
        pid=os.getpid(),
    )
    todo = [v for v in plan.volumes if v.plan in _WORK]
    # Forced promotes wait on nothing but their own call: more volumes in progress than
    # slots only pays while demotions have to propagate.
    per_slot = options.volumes_per_slot if sites.source is not None else 1
    finished = run_all(
        todo,
        lambda v: _fail_over_one(run, v),
        options.concurrency * per_slot,
        run.observer.finished,
        # Waiting behind other volumes for call slots is not this volume's time.
        time_limit=lambda v: options.limit_for(v) + slots.queued(run.threads.get(v.name)),
        on_overrun=lambda v, seconds: _overrun(run, v, seconds),
    )
    outcomes = {o.name: o for o in finished.results if o is not None}
    report_volumes = []
    for volume in plan.volumes:
        if volume.plan in _WORK:
            outcome = outcomes.get(volume.name) or VolumeOutcome(
                volume.name, Action.NOT_STARTED, "", "interrupted before its turn", 0.0
            )
        else:
            outcome = _known_outcome(volume)
        report_volumes.append(outcome)
    report_volumes, new_state = _record(state, plan, report_volumes)
    if new_state is not state:
        write_state(config.state_dir, new_state)
    report = FailoverReport(
        journal.run_id,
        plan,
        tuple(report_volumes),
        time.monotonic() - started,
        run.lost_reason,
        finished.interrupted,
        new_state.active_backend,
        finished.overran,
    )
    journal.write(
        "end",
        operation=plan.operation,
        result=report.result,
        counts=report.counts(),
        interrupted=finished.interrupted,
    )
    return report


_WORK = (Plan.DEMOTE_PROMOTE, Plan.PROMOTE, Plan.FORCE_PROMOTE, Plan.RESYNC)


def _known_outcome(volume: PlannedVolume) -> VolumeOutcome:
    action = {
        Plan.NOTHING: Action.ALREADY_PRIMARY,
        Plan.MARK_ERROR: Action.NOT_REPLICATED,
        Plan.RESTORE: Action.RESTORED,
        Plan.CANNOT: Action.FAILED,
    }[volume.plan]
    error = volume.reason if action == Action.FAILED else None
    return VolumeOutcome(volume.name, action, "", error, 0.0, volume.reason)


def _record(
    state: State, plan: FailoverPlan, outcomes: Sequence[VolumeOutcome]
) -> tuple[list[VolumeOutcome], State]:
    """Each volume's status afterwards, and the new state (the old one when nothing moved)."""
    moved = any(o.action.succeeded or o.action == Action.RESTORED for o in outcomes)
    records = dict(state.volumes)
    final = []
    for outcome in outcomes:
        before = state.volume(outcome.name)
        if not moved or outcome.action == Action.NOT_STARTED:
            after = before
        elif outcome.action.succeeded or outcome.action == Action.RESTORED:
            after = before.restored()
        else:
            after = before.as_error()
        if after != VolumeRecord() or outcome.name in records:
            records[outcome.name] = after
        final.append(replace(outcome, status=after.status))
    if not moved:
        return final, state
    return final, State(plan.target, records)


def _overrun(run: _Run, volume: PlannedVolume, seconds: float) -> VolumeOutcome:
    run.slots.write_off(run.threads.get(volume.name))
    step = run.steps.get(volume.name, "starting")
    run.journal.write("given-up", volume=volume.name, last_step=step, after_s=round(seconds, 1))
    return VolumeOutcome(
        volume.name,
        Action.FAILED,
        "",
        f"timed out after {seconds:.0f}s, a call still running at step {step!r}: check it "
        f"with `rbdfail status {volume.name}`",
        seconds,
    )


def _fail_over_one(run: _Run, volume: PlannedVolume) -> VolumeOutcome:
    run.threads[volume.name] = threading.get_ident()
    run.slots.begin(threading.get_ident())
    begun = time.monotonic()
    deadline = begun + run.options.volume_timeout

    def outcome(action: Action, error: str | None = None, detail: str = "") -> VolumeOutcome:
        if error is not None:
            run.journal.write("failed", volume=volume.name, error=error)
        return VolumeOutcome(volume.name, action, "", error, time.monotonic() - begun, detail)

    try:
        return _steps(run, volume, deadline, outcome)
    except CephError as exc:
        return outcome(Action.FAILED, str(exc))


def _steps(
    run: _Run,
    volume: PlannedVolume,
    deadline: float,
    outcome: Callable[..., VolumeOutcome],
) -> VolumeOutcome:
    name, source, target = volume.name, run.sites.source, run.sites.target
    demoted = volume.plan == Plan.PROMOTE
    resynced = False
    if volume.plan == Plan.RESYNC and not run.lost.is_set():
        stale = _resync_stale_copy(run, name)
        if stale is not None:
            return outcome(Action.FAILED, stale)
        resynced = True
        deadline = time.monotonic() + run.options.volume_timeout  # the switch's own budget
    if volume.plan in (Plan.DEMOTE_PROMOTE, Plan.RESYNC) and not run.lost.is_set():
        assert source is not None
        run.step(name, "demote", site=source.site)
        try:
            source.demote(name)
            demoted = True
            run.step(name, "demoted", site=source.site)
        except UNREACHABLE as exc:
            run.lose_source(exc)
        except InvalidState:
            demoted = True  # not primary there any more: someone demoted it meanwhile
            run.step(name, "demoted", site=source.site, note="was not primary any more")
        except ImageNotFound:
            return outcome(
                Action.FAILED,
                f"vanished from {source.site} during the failover; its copy on "
                f"{target.site} was left as it is",
            )
    if not demoted:
        return _force_promote(run, name, outcome)
    try:
        _promote_when_propagated(run, name, deadline)
    except ImageBusy as exc:
        if run.lost.is_set():
            # Demoted, but the source died before its demotion reached the target: it never
            # will now. The source's copy is not primary, so forcing splits no brain.
            forced = _force_promote(run, name, outcome)
            return replace(
                forced,
                detail=f"demoted, then {run.sites.source_id} was lost "
                "before the demotion reached the target: forced",
            )
        waited = f"not promotable on {target.site} within its {run.options.volume_timeout:g}s"
        if run.options.force:
            forced = _force_promote(run, name, outcome)
            return replace(forced, detail=f"{waited} ({exc.reason}): forced")
        return _roll_back(run, name, f"{waited} ({exc.reason})", outcome)
    except CephError as exc:
        return _roll_back(run, name, f"promote on {target.site} failed: {exc.reason}", outcome)
    if resynced:
        return outcome(Action.RESYNCED_PROMOTED, detail=f"resynced, primary on {target.site}")
    return outcome(Action.DEMOTED_PROMOTED, detail=f"primary on {target.site}")


def _resync_stale_copy(run: _Run, name: str) -> str | None:
    """Split brain: demote the target's stale primary, have it re-copied from the source, wait
    until it replays. None when done; else why not (the source stays primary: not nowhere)."""
    target = run.sites.target
    if target.mirror_info(name).primary:
        run.step(name, "demote-stale", site=target.site)
        target.demote(name)
    run.step(name, "resync", site=target.site)
    target.resync(name)
    deadline = time.monotonic() + run.options.resync_timeout
    state = "not reported yet"
    while time.monotonic() < deadline:
        try:
            status = target.mirror_status(name)
            state = status.state
            if status.state == ReplayState.REPLAYING:
                run.step(name, "resynced", site=target.site)
                return None
        except ImageNotFound:
            state = "being re-copied"  # the daemon deletes the copy, then copies it anew
        time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
    return (
        f"the resync on {target.site} did not finish within {run.options.resync_timeout:g}s "
        f"(last: {state}); it is still primary on {run.sites.source_id}: run failback again "
        "later, or raise --resync-timeout"
    )


def _promote_when_propagated(run: _Run, name: str, deadline: float) -> None:
    """Non-forced promote, retried while the target says the demotion has not reached it."""
    target = run.sites.target
    run.step(name, "promote", site=target.site)
    # Propagation takes seconds (the target's rbd-mirror replays the demotion); retries are a
    # cheap open+promote each, so a short cap keeps the overshoot after it arrives small.
    backoff = wait_exponential(multiplier=0.1, max=0.5)
    for attempt in Retrying(
        retry=retry_if_exception_type(ImageBusy),
        # Stop early once the source is lost: its demotion will not arrive any more.
        stop=stop_after_delay(max(0.0, deadline - time.monotonic()))
        | stop_when_event_set(run.lost),
        # Never sleep past the deadline.
        wait=lambda state: min(backoff(state), max(0.0, deadline - time.monotonic())),
        reraise=True,
    ):
        with attempt:
            target.promote(name)
    run.step(name, "promoted", site=target.site)


def _force_promote(run: _Run, name: str, outcome: Callable[..., VolumeOutcome]) -> VolumeOutcome:
    target = run.sites.target
    run.step(name, "force-promote", site=target.site)
    try:
        target.promote(name, force=True)
    except InvalidState:
        if not target.mirror_info(name).primary:
            raise
    run.step(name, "force-promoted", site=target.site)
    return outcome(
        Action.FORCE_PROMOTED,
        detail=f"primary on {target.site}; {run.sites.source_id} may still hold it as primary",
    )


def _roll_back(
    run: _Run, name: str, why: str, outcome: Callable[..., VolumeOutcome]
) -> VolumeOutcome:
    """Promote back on the source: the volume was demoted there and is primary nowhere."""
    source, target = run.sites.source, run.sites.target
    assert source is not None
    run.step(name, "roll-back", site=source.site)
    try:
        try:
            source.promote(name)
        except ImageBusy:
            # The target never became primary, so forcing here cannot split the brain.
            source.promote(name, force=True)
    except UNREACHABLE as exc:
        # The source went away after the demotion: the target is the only place left to
        # make it primary, and it is safe there (the source's copy is demoted).
        run.lose_source(exc)
        forced = _force_promote(run, name, outcome)
        return replace(forced, detail=f"{why}; {source.site} lost before the roll-back: forced")
    except CephError as exc:
        return outcome(
            Action.FAILED,
            f"{why}; promoting it back on {source.site} failed too ({exc.reason}): it is "
            f"primary nowhere. Promote it by hand: `rbd mirror image promote --force` on "
            f"{target.site} or {source.site}",
        )
    run.step(name, "rolled-back", site=source.site)
    return outcome(
        Action.FAILED,
        f"{why}; rolled back: primary on {source.site} again",
        detail=f"rolled back to {source.site}",
    )


def new_run_id() -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
