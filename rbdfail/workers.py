"""Run one piece of work per volume on a bounded number of threads.

python-rbd releases the GIL, so threads give real parallelism against Ceph (64 mirror enables
took 0.73 s from 64 threads against about 64 s one after another, ceph-facts.md).

A librbd call cannot be cancelled. So:
- a Ctrl-C stops new volumes from starting and lets the running ones finish (abandoning one
  would leave it in an unknown state); a second Ctrl-C gives up waiting;
- with a time limit, a volume whose work outlives it is given up on: its result is what
  `on_overrun` says, its thread (a daemon thread, which cannot keep the process alive) is left
  to finish on its own, and its slot goes to the next volume, so one hung call can never hang
  the command.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Finished(Generic[R]):
    results: list[R | None]  # in the order of the items; None for those never started
    interrupted: bool
    overran: int = 0  # work given up on at its time limit, its thread possibly still running


def run_all(
    items: Sequence[T],
    work: Callable[[T], R],
    concurrency: int,
    on_done: Callable[[R], None] = lambda result: None,
    time_limit: float | Callable[[T], float] | None = None,
    on_overrun: Callable[[T, float], R] | None = None,
) -> Finished[R]:
    """work(item) for every item, at most `concurrency` at once; on_done as each finishes.

    With `time_limit` (seconds, or seconds per item), work still running that long after it
    started gets the result on_overrun(item, seconds) instead. A per-item limit is asked
    again at every check, so it may grow while the work runs (never shrink).
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
        while not interrupted and next_item < len(items) and len(started) < concurrency:
            started[next_item] = time.monotonic()
            threading.Thread(target=run, args=(next_item,), daemon=True).start()
            next_item += 1
        if not started:
            break
        try:
            overran += _collect(finished, started, settle, on_overrun, items, limit_of)
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
) -> int:
    """Wait for the next result, or give up on work past its time limit; how many given up."""
    give_up_at = {
        index: began + (limit_of(items[index]) if limit_of else float("inf"))
        for index, began in started.items()
    }
    soonest = min(give_up_at.values())
    wait = None if soonest == float("inf") else max(0.0, soonest - time.monotonic())
    try:
        index, result, error = finished.get(timeout=wait)
    except queue.Empty:
        now, overran = time.monotonic(), 0
        for index, began in list(started.items()):
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
