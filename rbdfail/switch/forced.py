"""Forced promotes: the copy made primary without its source, and the lock rbd-mirror holds.

Once the source is lost, a forced promote of a snapshot-mode copy waits for the target's own
rbd-mirror to let go of the copy. So the daemon is taken out of the way first, once for the
whole run (`take_daemon_out`: its addresses blocklisted, one monitor command each), and the
promotes then go through without any hand-off (docs/design/taking-locks.md). Where
that cannot be done (the blocklist refused, say), `LockTaker` takes each copy's lock when its
hand-off stalls (see its docstring for what librbd does; docs/design/taking-locks.md for the
evidence).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace

from tenacity import (
    Retrying,
    retry_if_exception_type,
    retry_if_result,
    stop_after_attempt,
    stop_after_delay,
    wait_fixed,
)

from rbdfail.cluster import Cluster, ImageStatus
from rbdfail.errors import CephError, ImageBusy, InvalidState, OperationTimedOut
from rbdfail.rpo import Bound, Rpo, forced_rpo, says_enough
from rbdfail.switch.model import Action, DaemonOut, VolumeOutcome
from rbdfail.switch.run import Run


def take_daemon_out(run: Run) -> DaemonOut:
    """Blocklist the target's rbd-mirror once for the run (the first forced promote does it,
    the others wait for it), then have librbd break its dead locks without a blocklist entry
    per image. Only the connections that hold the run's copies' locks and watch the pool's
    `rbd_mirroring` object are blocklisted: never a client of the volumes."""
    with run.daemon_out_lock:
        if run.daemon_out is not None:
            return run.daemon_out
        target, begun = run.raw_target, time.monotonic()
        seconds = run.options.daemon_out_s
        run.journal.write("take-daemon-out", site=target.site, images=len(run.copies))
        clients: dict[str, str] = {}
        try:
            run.lock_held()
            clients = target.mirror_daemon_addresses(run.copies)
            for address in sorted(set(clients.values())):
                run.lock_held()
                target.blocklist(address, seconds)
            target.blocklist_on_break_lock(False)
        except CephError as exc:
            run.daemon_out = DaemonOut(
                target.site, clients, seconds, time.monotonic() - begun, exc.reason
            )
            run.journal.write("daemon-not-out", site=target.site, error=exc.reason)
            return run.daemon_out
        run.daemon_out = DaemonOut(target.site, clients, seconds, time.monotonic() - begun)
        run.journal.write(
            "daemon-out",
            site=target.site,
            clients=sorted(clients),
            addresses=run.daemon_out.addresses,
            expires_s=seconds,
        )
        # Its locks are a dead holder's now: journal copies' are taken at once (free_from_daemon).
        run.taking_locks.set()
        return run.daemon_out


def _promote_forced(run: Run, name: str) -> None:
    """One forced promote, outside the call slots (it waits on latency, not on Ceph's work),
    at most Options.forced_in_flight at once."""
    with run.forced_gate:
        run.lock_held()
        run.raw_target.promote(name, force=True)


def read_point(run: Run, name: str) -> Rpo:
    """The point in time the copy will serve once forced (its RPO), read on the target just
    before its promote, in the volume's own worker: after the promote the copy's mirror
    snapshots and its rbd-mirror status no longer say it. Its status comes from one listing
    of the pool's, made once for the run (`copy_statuses`); the copy's mirror snapshots are
    listed only where that status does not say enough. Outside the call slots like the
    promote, each call bounded by the connection's timeouts; a read that fails leaves the
    figure unknown, never the promote undone."""
    target, begun = run.raw_target, time.monotonic()
    statuses, error = copy_statuses(run)
    status, snapshots = statuses.get(name), None
    try:
        if error is not None:
            status = target.mirror_status(name)
        if not says_enough(status):
            snapshots = target.mirror_snapshots(name)
    except CephError as exc:
        rpo = Rpo(None, Bound.UNKNOWN, f"not read before the promote: {exc.reason}")
    else:
        rpo = forced_rpo(status, snapshots, time.time())
    run.journal.write(
        "copy-point",
        volume=name,
        site=target.site,
        last_sync=rpo.last_sync,
        bound=rpo.bound,
        how=rpo.how,
        listed=snapshots is not None,
        read_s=round(time.monotonic() - begun, 3),
    )
    return rpo


def copy_statuses(run: Run) -> tuple[dict[str, ImageStatus], str | None]:
    """The target's rbd-mirror status of every copy, listed once for the run by the first
    forced promote (one call, 0.03 s for 1000 images on the lab), the others waiting for it;
    and why it could not be, if so (each copy's is then read apart)."""
    with run.copy_statuses_lock:
        if run.copy_statuses is None:
            try:
                run.copy_statuses = run.raw_target.mirror_statuses()
            except CephError as exc:
                run.copy_statuses, run.copy_statuses_error = {}, exc.reason
        return run.copy_statuses, run.copy_statuses_error


def force_promote(run: Run, name: str, outcome: Callable[..., VolumeOutcome]) -> VolumeOutcome:
    rpo = read_point(run, name)
    return replace(_force_promote(run, name, outcome), rpo=rpo)


def _force_promote(run: Run, name: str, outcome: Callable[..., VolumeOutcome]) -> VolumeOutcome:
    target = run.sites.target
    if run.lost.is_set() and run.options.break_locks_after is not None:
        out = take_daemon_out(run)
        if out.error is None:
            return _force_promote_daemon_out(run, name, outcome, out)
    grace = run.options.break_locks_after if run.lost.is_set() else None
    taker = LockTaker(run, name, grace) if grace is not None else None
    run.step(name, "force-promote", site=target.site)
    try:
        if taker is not None:
            taker.start()
        try:
            _promote_forced(run, name)
        except (ImageBusy, OperationTimedOut) as exc:
            if taker is None:
                raise
            taker.cancel()  # a take under way ends first
            if isinstance(exc, OperationTimedOut) and not taker.holders:
                # No lock taken: the target may not be answering. One more try: a target
                # just back from an outage can time out one promote among many, while one
                # that does not answer fails the second try the same way
                # (docs/design/taking-locks.md).
                _promote_forced(run, name)
            else:
                # EROFS: the lock holder refuses to let go: take it now. ETIMEDOUT after the
                # timer took it: librbd's own request to the old, blocklisted holder.
                taker.take_now()
                # Right after a take, a promote may still answer EROFS or ETIMEDOUT while the
                # lock changes hands: a few more tries (docs/design/taking-locks.md).
                for attempt in Retrying(
                    retry=retry_if_exception_type((ImageBusy, OperationTimedOut)),
                    stop=stop_after_attempt(3),
                    wait=wait_fixed(1),
                    reraise=True,
                ):
                    with attempt:
                        _promote_forced(run, name)
    except InvalidState:
        if not target.mirror_info(name).primary:
            raise
    finally:
        if taker is not None:
            taker.cancel()
    run.step(name, "force-promoted", site=target.site)
    holders = taker.holders if taker is not None else []
    kept = free_from_daemon(run, name) if run.lost.is_set() else None
    taken = f" (its lock taken from {', '.join(holders)})" if holders else ""
    return outcome(
        Action.FORCE_PROMOTED,
        detail=f"primary on {target.site}{taken}; {run.sites.source_id} may still hold it "
        f"as primary{kept or ''}",
    )


def _force_promote_daemon_out(
    run: Run, name: str, outcome: Callable[..., VolumeOutcome], out: DaemonOut
) -> VolumeOutcome:
    target = run.sites.target
    run.step(name, "force-promote", site=target.site, daemon_out=bool(out.clients))
    try:
        # Right after a lock changes hands a promote may answer EROFS or ETIMEDOUT, and the
        # next try goes through: the same few tries as after a take.
        for attempt in Retrying(
            retry=retry_if_exception_type((ImageBusy, OperationTimedOut)),
            stop=stop_after_attempt(3),
            wait=wait_fixed(1),
            reraise=True,
        ):
            with attempt:
                _promote_forced(run, name)
    except InvalidState:
        if not target.mirror_info(name).primary:
            raise
    run.step(name, "force-promoted", site=target.site)
    kept = free_from_daemon(run, name)
    taken = (
        f" ({target.site}'s rbd-mirror blocklisted for {out.expires_s}s first)"
        if out.clients
        else ""
    )
    return outcome(
        Action.FORCE_PROMOTED,
        detail=f"primary on {target.site}{taken}; {run.sites.source_id} may still hold it "
        f"as primary{kept or ''}",
    )


def free_from_daemon(run: Run, name: str) -> str | None:
    """Make sure the target's rbd-mirror let go of a copy forced while the source is lost (by
    this run or one before it); what the report must add, if anything.

    A forced promote of a journal-mode copy needs no lock: it goes through at once while the
    daemon, its replayer stuck on the lost source, keeps the copy's exclusive lock and refuses
    it to every writer until the source comes back; left alone, the stuck replayer may also
    undo the promotion once the source is back. A daemon that is not stuck lets go at once, but
    it still gets the whole grace: a take blocklists it for every image, and an early one cuts
    other copies' hand-offs short (EINVAL). Only the daemon's connections and dead holders are
    taken from, never a live client of the new primary. The measurements are in
    docs/design/taking-locks.md.
    """
    target = run.raw_target  # promotes stalled on other copies may hold every call slot
    grace = run.options.break_locks_after
    try:
        held = target.mirror_daemon_lock_holders(name)
        if held and grace is None:
            return (
                f"; writes are refused there while {target.site}'s rbd-mirror holds its lock "
                f"({', '.join(held)}): --break-locks takes it"
            )
        if held and grace is not None and not run.taking_locks.is_set():
            held = _still_held(target, name, grace)
        if not held:
            return None
        run.lock_held()
        run.step(name, "take-lock", site=target.site)
        taken = target.break_image_lock(name, only=held)
    except CephError as exc:
        run.journal.write("lock-not-taken", volume=name, site=target.site, error=exc.reason)
        return (
            f"; {target.site}'s rbd-mirror may still hold its lock, refusing writes there "
            f"until {run.sites.source_id} answers again ({exc.reason}): `rbd lock ls` shows it"
        )
    run.step(name, "lock-taken", site=target.site, holders=taken)
    run.taking_locks.set()
    return (
        f"; its lock taken from {target.site}'s rbd-mirror ({', '.join(taken)})" if taken else None
    )


def _still_held(target: Cluster, name: str, grace: float) -> list[str]:
    """The daemon's connections that still hold the copy's lock after the grace; [] as soon as
    none does."""
    held: list[str] = Retrying(
        retry=retry_if_result(bool),
        stop=stop_after_delay(grace),
        wait=wait_fixed(1),
        retry_error_callback=lambda state: state.outcome.result() if state.outcome else [],
    )(target.mirror_daemon_lock_holders, name)
    return held


class LockTaker:
    """Takes a copy's exclusive lock from the target's rbd-mirror if a forced promote has not
    got it within the grace (Options.break_locks_after).

    librbd's forced promote of a snapshot-mode copy has the lock holder (this site's
    rbd-mirror) create an orphan snapshot, then polls the image's watchers every 5 s until the
    daemon has closed the image, with no time limit (`mirror::snapshot::PromoteRequest`,
    `list_watchers` and `wait_update_notify`). With the source lost, the daemon can be wedged
    on the dead peer (a replayer inside a call to it, which Pacific's rbd-mirror never times
    out; upstream ceph PRs 51540 and 52632) and never close it, so the promote hangs. Taking
    the lock has Ceph blocklist the holder (ceph.BLOCKLIST_S), which removes its watch, and the
    promote already waiting goes on (docs/design/taking-locks.md has the measurements).

    Taken only when the hand-off stalls, because the blocklist pauses the daemon for every
    image and restarts its pool replayer, which may not come back by itself. Once one was
    needed in a run, later promotes of that run take it at once: the daemon is stuck.
    The call bypasses the call slots (stalled promotes may hold them all), not the lock check.
    """

    def __init__(self, run: Run, name: str, grace: float) -> None:
        self.holders: list[str] = []
        self._run, self._name = run, name
        delay = 0.0 if run.taking_locks.is_set() else grace
        self._timer = threading.Timer(delay, self._take)
        self._timer.daemon = True

    def start(self) -> None:
        self._timer.start()

    def cancel(self) -> None:
        self._timer.cancel()
        if self._timer.is_alive():  # a take under way: let it end
            self._timer.join()

    def take_now(self) -> None:
        """Take it in this thread, unless the timer already has."""
        self.cancel()
        if not self.holders:
            self._take()

    def _take(self) -> None:
        run, name, target = self._run, self._name, self._run.raw_target
        try:
            run.lock_held()
            if target.mirror_info(name).primary:
                return  # promoted meanwhile: nothing to take
            run.step(name, "take-lock", site=target.site)
            self.holders = target.break_image_lock(name)
        except CephError as exc:  # Ceph's own hand-off is left to work, within the limits
            run.journal.write("lock-not-taken", volume=name, site=target.site, error=exc.reason)
            return
        run.step(name, "lock-taken", site=target.site, holders=self.holders)
        if self.holders:
            run.taking_locks.set()
