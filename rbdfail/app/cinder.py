"""The cinder-steps use case: what Cinder and Nova need after a past switch, from the journal."""

from __future__ import annotations

from dataclasses import dataclass

from rbdfail.cinder.steps import CinderSteps, PastRun, past_run, steps_from
from rbdfail.config import Config, Deployment
from rbdfail.fanout import over_backends


@dataclass(frozen=True)
class PastRuns:
    runs: list[tuple[Config, PastRun]]  # the backends whose journal holds the run
    steps: CinderSteps


def past_runs(deployment: Deployment, run_id: str | None) -> PastRuns:
    """Each backend's last switch (or the run whose id starts with `run_id`); no site is read."""
    found = over_backends(deployment.backends, lambda config: past_run(config, run_id)).results()
    runs = [(config, run) for config, run in found if run is not None]
    return PastRuns(runs, steps_from([(config, run.target, run.moved) for config, run in runs]))
