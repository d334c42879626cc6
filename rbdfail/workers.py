"""Run one piece of work per volume on a bounded number of threads.

python-rbd releases the GIL, so threads give real parallelism against Ceph
(docs/performance.md has the measurement).

A librbd call cannot be cancelled. So:
- a Ctrl-C stops new volumes from starting and lets the running ones finish (abandoning one
  would leave it in an unknown state); a second Ctrl-C gives up waiting;
- with a time limit, a volume whose work outlives it is given up on: its result is what
  `on_overrun` says, its thread (a daemon thread, which cannot keep the process alive) is left
  to finish on its own, and its slot goes to the next volume, so one hung call can never hang
  the command.

Beside the pool, `CallSlots` bound the calls in flight rather than the items: an item that
waits (for a demotion to propagate, say) holds no slot.
"""

from __future__ import annotations

import copy
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class RunResult(StrEnum):
    """What a run over many volumes came to, as its report and exit code say it."""

    COMPLETE = "complete"  # every volume as asked
    PARTIAL = "partial"  # some need attention, each named
    FAILED = "failed"  # none could be done


@dataclass(frozen=True)
class Finished(Generic[R]):
    results: list[R | None]  # in the order of the items; None for those never started
    interrupted: bool
    overran: int = 0  # work given up on at its time limit, its thread possibly still running


def run_all(
    items: Sequence[T],
    work: Callable[[T], R],
    concurrency: int | Callable[[], int],
    on_done: Callable[[R], None] = lambda result: None,
    time_limit: float | Callable[[T], float] | None = None,
    on_overrun: Callable[[T, float], R] | None = None,
    stop: threading.Event | None = None,
) -> Finished[R]:
    """work(item) for every item, at most `concurrency` at once; on_done as each finishes.
    A callable `concurrency` is asked again before each start, so it may grow under the run.

    With `time_limit` (seconds, or seconds per item), work still running that long after it
    started gets the result on_overrun(item, seconds) instead. A per-item limit is asked
    again at every check, so it may grow while the work runs (never shrink). Ctrl-C, or
    `stop` set by another thread (which got the Ctrl-C), starts no more items: the result
    says `interrupted`.
    """
    limit_of: Callable[[T], float] | None = (
        None
        if time_limit is None
        else time_limit
        if callable(time_limit)
        else lambda item: time_limit
    )
    results: list[R | None] = [None] * len(items)
    finished: queue.Queue[tuple[int, R | None, BaseException | None]] = queue.Queue()
    started: dict[int, float] = {}  # running, not yet given up on: index -> when it started
    next_item, interrupted, overran = 0, False, 0

    def run(index: int) -> None:
        try:
            finished.put((index, work(items[index]), None))
        except BaseException as exc:  # handed to the caller's thread, raised there
            finished.put((index, None, exc))

    def settle(index: int, result: R) -> None:
        results[index] = result
        on_done(result)

    while True:
        interrupted = interrupted or (stop is not None and stop.is_set())
        limit = concurrency() if callable(concurrency) else concurrency
        while not interrupted and next_item < len(items) and len(started) < limit:
            started[next_item] = time.monotonic()
            threading.Thread(target=run, args=(next_item,), daemon=True).start()
            next_item += 1
        if not started:
            break
        try:
            overran += _collect(
                finished, started, settle, on_overrun, items, limit_of, None if stop else 0.25
            )
        except KeyboardInterrupt:
            if interrupted:
                raise  # the second Ctrl-C: stop waiting
            interrupted = True
    return Finished(results, interrupted, overran)


def _collect(
    finished: queue.Queue[tuple[int, R | None, BaseException | None]],
    started: dict[int, float],
    settle: Callable[[int, R], None],
    on_overrun: Callable[[T, float], R] | None,
    items: Sequence[T],
    limit_of: Callable[[T], float] | None,
    poll: float | None,
) -> int:
    """Wait for the next result, or give up on work past its time limit; how many given up.
    `poll`: wait no longer than that (to look at a stop event)."""
    give_up_at = {
        index: began + (limit_of(items[index]) if limit_of else float("inf"))
        for index, began in started.items()
    }
    soonest = min(give_up_at.values())
    wait = None if soonest == float("inf") else max(0.0, soonest - time.monotonic())
    if poll is not None:
        wait = poll if wait is None else min(wait, poll)
    try:
        index, result, error = finished.get(timeout=wait)
    except queue.Empty:
        now, overran = time.monotonic(), 0
        for index, began in list(started.items()) if limit_of else ():
            assert on_overrun is not None and limit_of is not None, "limit needs on_overrun"
            if now >= began + limit_of(items[index]):  # asked again: it may have grown
                del started[index]
                overran += 1
                settle(index, on_overrun(items[index], now - began))
        return overran
    if index not in started:
        return 0  # given up on already; its result came too late to count
    del started[index]
    if error is not None:
        raise error
    assert result is not None
    settle(index, result)
    return 0


@dataclass(frozen=True)
class CallTrace:
    """One Ceph call of a run, for `--call-trace`: where the call slots went."""

    call: str  # the Cluster method
    image: str
    asked: float  # monotonic seconds: when it asked for a slot
    started: float  # when it got one
    ended: float
    outcome: str  # "ok" or the exception's class

    def to_json(self, origin: float) -> dict[str, Any]:
        return {
            "call": self.call,
            "image": self.image,
            "asked": round(self.asked - origin, 4),
            "started": round(self.started - origin, 4),
            "ended": round(self.ended - origin, 4),
            "outcome": self.outcome,
        }


class CallSlots:
    """At most `concurrency` Ceph calls at once across a run's volumes.

    A volume given up on while inside a call (it hangs) has its slot written off, so the
    calls of the others are never held up by it; the hung call, if it ever returns, does not
    give the slot back a second time. `before_call` runs as each call gets its slot, right
    before it starts, and may refuse it by raising.
    """

    def __init__(
        self,
        concurrency: int,
        before_call: Callable[[], None] = lambda: None,
        trace: list[CallTrace] | None = None,
    ) -> None:
        self._before_call = before_call
        self.trace = trace  # when a list: every call's times are appended to it
        self._free = _PriorityGate(concurrency)
        self._lock = threading.Lock()
        self._written_off: dict[int, bool] = {}  # thread in a call -> its slot written off
        self._queued: dict[int, float] = {}  # thread -> seconds spent queued, finished waits
        self._queued_since: dict[int, float] = {}  # thread queued now -> since when

    @property
    def waiting(self) -> int:
        """Calls waiting for a slot now."""
        return self._free.waiting

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

    def call(
        self, function: Callable[..., Any], *args: Any, urgent: bool = False, **kwargs: Any
    ) -> Any:
        """function(*args, **kwargs) in a slot; an `urgent` call gets the next free slot
        before any other waiting call does."""
        me = threading.get_ident()
        asked = time.monotonic()
        with self._lock:
            self._queued_since[me] = asked
        self._free.acquire(urgent)
        started = time.monotonic()
        with self._lock:
            self._queued[me] = self._queued.get(me, 0.0) + (started - self._queued_since.pop(me))
            self._written_off[me] = False
        outcome = "ok"
        try:
            self._before_call()
            return function(*args, **kwargs)
        except BaseException as exc:
            outcome = type(exc).__name__
            raise
        finally:
            with self._lock:
                written_off = self._written_off.pop(me)
                if self.trace is not None:
                    name = getattr(function, "__name__", "?")
                    image = str(args[0]) if args else ""
                    self.trace.append(
                        CallTrace(name, image, asked, started, time.monotonic(), outcome)
                    )
            if not written_off:
                self._free.release()

    def checked_by(self, before_call: Callable[[], None]) -> CallSlots:
        """The same slots (shared, not copied), each call checked by `before_call`: the runs
        of several backends share one budget of calls, and each checks its own lock."""
        view = copy.copy(self)
        view._before_call = before_call
        return view

    def write_off(self, thread: int | None) -> None:
        with self._lock:
            if thread in self._written_off and not self._written_off[thread]:
                self._written_off[thread] = True
                self._free.release()


class _PriorityGate:
    """A semaphore whose urgent waiters go first: a free slot goes to an urgent call while
    one waits, else to any waiting call."""

    def __init__(self, capacity: int) -> None:
        self._free = capacity
        self._urgent_waiting = 0
        self.waiting = 0
        self._changed = threading.Condition()

    def acquire(self, urgent: bool) -> None:
        with self._changed:
            self._urgent_waiting += urgent
            self.waiting += 1
            while self._free == 0 or (not urgent and self._urgent_waiting):
                self._changed.wait()
            self._urgent_waiting -= urgent
            self.waiting -= 1
            self._free -= 1

    def release(self) -> None:
        with self._changed:
            self._free += 1
            self._changed.notify_all()


class Throttled:
    """An object (a site) whose every method call takes one of the run's call slots; the
    methods named `urgent` go before the others when slots are short."""

    def __init__(self, inner: object, slots: CallSlots, urgent: frozenset[str] = frozenset()):
        self._inner, self._slots, self._urgent = inner, slots, urgent

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if not callable(attribute):
            return attribute
        urgent = name in self._urgent
        return lambda *args, **kwargs: self._slots.call(attribute, *args, urgent=urgent, **kwargs)


def all_at_once(
    work: Callable[[T], R], items: Sequence[T], undo: Callable[[R], None] = lambda result: None
) -> list[R]:
    """work(item) for every item at once, one thread each (connecting to every site, so that
    dead ones cost one timeout in all); if any fails, undo() what succeeded and raise the first
    error, in the items' order. Interrupted (Ctrl-C reaches only this thread), each work still
    under way is undone as it ends, in its own thread, before the process exits: a switch of
    several backends interrupted while connecting gives back the locks it goes on taking."""
    pool = ThreadPoolExecutor(max_workers=max(1, len(items)))
    futures = [pool.submit(work, item) for item in items]
    try:
        wait(futures)
    except BaseException:

        def undo_when_done(future: Future[R]) -> None:
            if not future.cancelled() and future.exception() is None:
                undo(future.result())

        for future in futures:
            future.add_done_callback(undo_when_done)
        pool.shutdown(wait=False)
        raise
    pool.shutdown()
    errors = [error for f in futures if (error := f.exception()) is not None]
    if errors:
        for future in futures:
            if future.exception() is None:
                undo(future.result())
        raise errors[0]
    return [f.result() for f in futures]


def read_each(
    read: Callable[[str], R],
    names: Sequence[str],
    skip: tuple[type[BaseException], ...],
    threads: int = 16,
) -> dict[str, R]:
    """read(name) for each image, `threads` at once (one call each: they wait on the OSDs,
    not the CPU); an image whose read raises one of `skip` (it vanished meanwhile, say) is left
    out."""
    if not names:
        return {}

    def one(name: str) -> tuple[str, R] | None:
        try:
            return name, read(name)
        except skip:
            return None

    with ThreadPoolExecutor(max_workers=min(threads, len(names))) as pool:
        return dict(found for found in pool.map(one, names) if found is not None)
