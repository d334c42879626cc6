"""The fan-out over a deployment's backends, written once for every command and the switch."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar, cast

from rbdfail.config import Config
from rbdfail.workers import all_at_once

R = TypeVar("R")


class Run(Protocol):
    """A backend's report of work on its volumes that Ctrl-C may cut short."""

    @property
    def interrupted(self) -> bool: ...

    @property
    def result(self) -> str: ...


RunT = TypeVar("RunT", bound=Run)


@dataclass(frozen=True)
class BackendOutcome(Generic[R]):
    """One backend's result, or the error that stopped its work."""

    config: Config
    result: R | None = None
    error: Exception | None = None


@dataclass(frozen=True)
class ByBackend(Generic[R]):
    """Each backend's outcome, in the deployment's order (those not reached are left out)."""

    outcomes: tuple[BackendOutcome[R], ...]

    def results(self, undo: Callable[[R], None] = lambda result: None) -> list[tuple[Config, R]]:
        """Each backend's result. On an error, undo(result) of each backend that succeeded, then
        the first error in the backends' order is raised: a command says what failed rather
        than show half a report, and a switch gives back the locks it took."""
        if errors := [outcome.error for outcome in self.outcomes if outcome.error is not None]:
            for outcome in self.outcomes:
                if outcome.error is None:
                    undo(cast(R, outcome.result))
            raise errors[0]
        return [(outcome.config, cast(R, outcome.result)) for outcome in self.outcomes]


def over_backends(
    backends: Sequence[Config],
    work: Callable[[Config], R],
    *,
    at_once: bool = False,
    stop_after: Callable[[R], bool] = lambda result: False,
    undo: Callable[[R], None] = lambda result: None,
) -> ByBackend[R]:
    """work(backend) over every backend, collecting each one's result or error.

    at_once: a thread each, so that dead sites cost one timeout in all (reads); Ctrl-C is
    raised at once, and each work still under way is undone as it ends (workers.all_at_once).
    Otherwise one after the other (changes, and a
    drill, which is no race), stopping at the first error or once stop_after(result) says so
    (Ctrl-C stopped that backend's work: not the next backend either).
    """
    if at_once:

        def undo_done(outcome: BackendOutcome[R]) -> None:
            if outcome.error is None:
                undo(cast(R, outcome.result))

        return ByBackend(tuple(all_at_once(lambda c: _one(c, work), backends, undo_done)))
    outcomes: list[BackendOutcome[R]] = []
    for config in backends:
        outcomes.append(outcome := _one(config, work))
        if outcome.error is not None or stop_after(cast(R, outcome.result)):
            break
    return ByBackend(tuple(outcomes))


def _one(config: Config, work: Callable[[Config], R]) -> BackendOutcome[R]:
    try:
        return BackendOutcome(config, work(config))
    except Exception as exc:  # kept for the report: ByBackend.results raises it
        return BackendOutcome(config, error=exc)


@dataclass(frozen=True)
class RunsByBackend(Generic[RunT]):
    """The reports of work run backend after backend: those done, up to one interrupted."""

    several: bool  # the file's backends selected: the shape of the output
    parts: list[tuple[Config, RunT]]

    @property
    def interrupted(self) -> bool:
        return any(report.interrupted for _, report in self.parts)

    @property
    def complete(self) -> bool:
        return all(report.result == "complete" for _, report in self.parts)
