"""The bounded runner: concurrency, a time limit that gives up on hung work, Ctrl-C."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from rbdfail.workers import CallSlots, Finished, all_at_once, run_all
from tests.helpers import eventually


def test_run_all__results_in_order_and_never_more_at_once_than_asked() -> None:
    running, most = 0, 0
    lock = threading.Lock()
    gate = threading.Semaphore(0)

    def work(item: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        gate.acquire(timeout=0.05)  # overlap: hold the slot for a moment
        with lock:
            running -= 1
        return item * 2

    finished = run_all(list(range(20)), work, concurrency=3)
    assert finished.results == [i * 2 for i in range(20)]
    assert 1 < most <= 3 and not finished.interrupted


def test_run_all__work_past_its_time_limit_is_given_up_on_and_its_slot_reused() -> None:
    release = threading.Event()

    def work(item: str) -> str:
        if item == "hangs":
            release.wait()
        return f"{item} done"

    try:
        finished = run_all(
            ["hangs", "a", "b"],
            work,
            concurrency=1,
            time_limit=0.2,
            on_overrun=lambda item, seconds: f"{item} given up after {seconds:.1f}s",
        )
    finally:
        release.set()
    assert finished.results[0] is not None and finished.results[0].startswith("hangs given up")
    assert finished.results[1:] == ["a done", "b done"]
    assert finished.overran == 1


def test_run_all__ctrl_c_starts_nothing_new_and_lets_the_running_finish() -> None:
    seen: list[str] = []

    def on_done(result: str) -> None:
        seen.append(result)
        if len(seen) == 1:
            raise KeyboardInterrupt

    finished = run_all([str(i) for i in range(10)], lambda item: item, 2, on_done)
    assert finished.interrupted
    started = [r for r in finished.results if r is not None]
    assert 1 <= len(started) <= 2  # the one that finished, and the one running beside it
    assert finished.results[2:] == [None] * 8


def test_run_all__a_stop_set_by_another_thread_starts_nothing_new_as_ctrl_c() -> None:
    stop, release = threading.Event(), threading.Event()

    def work(item: str) -> str:
        if item == "0":
            stop.set()  # another thread got the Ctrl-C while the first item runs
        release.wait(5)
        return item

    ran: list[Finished[str]] = []
    runner = threading.Thread(
        target=lambda: ran.append(run_all([str(i) for i in range(10)], work, 1, stop=stop))
    )
    runner.start()
    eventually(lambda: stop.is_set(), 2)
    release.set()
    runner.join(5)
    assert ran and ran[0].interrupted
    assert ran[0].results[0] == "0" and ran[0].results[1:] == [None] * 9


def test_run_all__an_unexpected_error_in_work_reaches_the_caller() -> None:
    def work(item: int) -> int:
        raise ValueError(f"bug on {item}")

    with pytest.raises(ValueError, match="bug on"):
        run_all([1], work, 1)


def test_call_slots__a_freed_slot_goes_to_an_urgent_call_before_those_waiting_longer() -> None:
    """Demotes are the critical path of a switch: they must not queue behind promotes."""
    slots = CallSlots(1, trace=[])
    order: list[str] = []
    holding = threading.Event()
    release = threading.Event()

    def hold() -> None:
        holding.set()
        release.wait(5)

    def call(name: str, urgent: bool) -> threading.Thread:
        thread = threading.Thread(
            target=lambda: slots.call(order.append, name, urgent=urgent), daemon=True
        )
        thread.start()
        return thread

    holder = threading.Thread(target=lambda: slots.call(hold), daemon=True)
    holder.start()
    assert holding.wait(5)
    waiting = [call("promote-1", False), call("promote-2", False)]
    eventually(lambda: slots.waiting == 2, 5)  # both queued first
    waiting.append(call("demote", True))
    eventually(lambda: slots.waiting == 3, 5)
    release.set()
    for thread in [holder, *waiting]:
        thread.join(5)
    assert order[0] == "demote" and sorted(order[1:]) == ["promote-1", "promote-2"]
    assert slots.trace is not None
    assert [t.call for t in slots.trace].count("append") == 3
    assert all(t.outcome == "ok" and t.started >= t.asked for t in slots.trace)


def test_all_at_once__ctrl_c_while_under_way__each_work_undone_as_it_ends() -> None:
    """A switch of several backends interrupted while it connects: the locks its threads go on
    taking are given back, not left to lapse (a re-run would be refused until they did)."""
    undone: list[int] = []

    def slow(item: int) -> int:
        time.sleep(0.3)
        return item

    ctrl_c = threading.Timer(0.05, lambda: os.kill(os.getpid(), signal.SIGINT))
    ctrl_c.start()
    with pytest.raises(KeyboardInterrupt):
        all_at_once(slow, [1, 2, 3], undo=undone.append)
    assert undone == []  # still under way when interrupted
    eventually(lambda: sorted(undone) == [1, 2, 3], 5)


def test_all_at_once__one_fails__the_others_undone__the_first_error_raised() -> None:
    undone: list[int] = []

    def work(item: int) -> int:
        if item == 2:
            raise ValueError("two")
        return item

    with pytest.raises(ValueError, match="two"):
        all_at_once(work, [1, 2, 3], undo=undone.append)
    assert sorted(undone) == [1, 3]
