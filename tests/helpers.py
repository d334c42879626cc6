"""Small test helpers."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from tenacity import (
    RetryError,
    Retrying,
    retry_base,
    retry_if_exception_type,
    retry_if_result,
    stop_after_delay,
    wait_fixed,
)

T = TypeVar("T")


def eventually(
    check: Callable[[], T],
    timeout: float,
    retry_on: tuple[type[BaseException], ...] = (),
    interval: float = 0.1,
) -> T:
    """Call check until it returns something truthy (or stops raising retry_on) within timeout."""
    retry: retry_base = retry_if_result(lambda result: not result)
    if retry_on:
        retry = retry | retry_if_exception_type(retry_on)
    try:
        return Retrying(
            stop=stop_after_delay(timeout), wait=wait_fixed(interval), retry=retry, reraise=True
        )(check)
    except RetryError as exc:
        last = exc.last_attempt.result()
        raise AssertionError(f"not true within {timeout}s (last answer: {last!r})") from None
