"""Forced failover in every disaster shape the lab plays, at every connect timeout operators use.

For each shape (the primary partitioned; its storage dead while its rbd-mirror runs on; the
same with the survivor slowed; the primary killed), 16 volumes are mirrored and fully synced,
four per `replication_connect_timeout` of 1, 3, 5 and 10 s (three snapshot-mode, one
journal-mode each); the disaster strikes; after DISASTER_AGE_S (the secondary's rbd-mirror has
noticed by then: that is when forced promotes hung, 12 of 12, before the locks were taken) one
`rbdfail failover` per timeout must make every volume primary on the secondary with the data
it had synced (checksums through librbd), `forced: true`, exit 0, each volume saying which
point in time its copy serves (`rpo.last_sync`), never newer than what it held whole.

Each test runs on a lab of its own: a killed site cannot come back (its OSD kept its data in
memory), the shapes leave split-brained images the shared lab's tests should not see, and a
forced failover that had to take rbd-mirror's locks can leave the survivor's daemon without its
pool replayer (seen twice after several such runs in a row: no leader, new copies never synced),
which would fail the next shape's setup rather than its failover.
"""

from __future__ import annotations

import json
import os
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from rbdfail import ceph
from rbdfail.cluster import Cluster
from rbdfail.config import SiteConfig, load_config
from rbdfail.errors import CephError
from rbdfail.lab.disasters import Disaster
from rbdfail.rpo import description_tail
from rbdfail.switch.model import Operation, Options, Silent, SwitchRequest
from rbdfail.switch.usecase import run_switch
from tests.helpers import (
    DISASTER_AGE_S,
    Case,
    DisasterLab,
    MiB,
    data_digest,
    eventually,
    make_cases,
    rbdfail,
    wait_synced,
)

pytestmark = pytest.mark.lab


def synced_points(dl: DisasterLab, cases: list[Case]) -> dict[str, float]:
    """Each volume's newest point the secondary holds whole, as the primary dates it: a
    snapshot-mode copy's newest complete mirror snapshot (waited for), the primary's own
    timestamp of that snapshot; a journal-mode copy's newest write, now."""
    points: dict[str, float] = {}

    def whole(name: str) -> bool:
        held = [s for s in dl.secondary.mirror_snapshots(name) if s.complete]
        newest = max(held, key=lambda s: s.id) if held else None
        mine = {s.id: s for s in dl.primary.mirror_snapshots(name)}
        if newest is None or newest.primary_snap_id not in mine:
            return False
        stamp = mine[newest.primary_snap_id].timestamp
        assert stamp is not None
        points[name] = stamp.timestamp()
        return max(mine) == newest.primary_snap_id

    def reported(name: str) -> bool:
        tail = description_tail(dl.secondary.mirror_status(name))
        if name.endswith("-j1"):
            return tail.get("entries_behind_primary") == 0
        return "local_snapshot_timestamp" in tail

    for case in cases:
        for name in case.names:
            if not name.endswith("-j1"):
                eventually(partial(whole, name), 120, interval=1)
    # What a copy's rbd-mirror reports lags its copy by a refresh (5 s in the lab): the steady
    # state of a pair, every copy reported as it is, before the disaster strikes. Before it, a
    # journal copy's last report may still count entries behind (seen: 3), and the report then
    # says `at-least` with no time, as it should (tests/test_forced_rpo.py).
    eventually(lambda: all(reported(n) for c in cases for n in c.names), 90, interval=1)
    # A journal copy replayed every write: it holds the volume as it was when the primary died.
    points.update({n: time.time() for case in cases for n in case.names if n.endswith("-j1")})
    return points


def check_rpo(report: dict[str, Any], names: list[str], points: dict[str, float]) -> str:
    """Every force-promoted volume says the point its copy serves (rpo.last_sync), read before
    the promote: never newer than what the copy held whole (a snapshot-mode copy's newest
    complete mirror snapshot, as the primary dates it; a journal copy's last write), and with
    a bound that says how far to trust it."""
    worst = 0.0
    for volume in report["volumes"]:
        if volume["name"] not in names:
            continue
        rpo = volume["rpo"]
        assert rpo["last_sync"] is not None, (volume["name"], rpo)
        point = points[volume["name"]]
        if volume["name"].endswith("-j1"):
            # Journal mode: caught up at rbd-mirror's last report, before the disaster struck.
            assert rpo["bound"] == "at-most" and rpo["last_sync"] <= point + 1, (volume, point)
        elif rpo["bound"] == "at-most":  # the primary's own time of it: never later
            assert point - 1 <= rpo["last_sync"] <= point + 1, (volume, point)
        else:  # the copy's time of it: when it began copying it, a little later
            assert rpo["bound"] == "estimate", volume
            assert point - 1 <= rpo["last_sync"] <= point + 30, (volume, point)
        worst = max(worst, rpo["seconds"])
    return f"worst rpo {worst:.0f}s"


def fail_over_each(
    dl: DisasterLab, cases: list[Case], points: dict[str, float] | None = None
) -> list[str]:
    """One forced failover per case; every volume primary on the secondary with its data, and
    serving: it takes a write there, the primary still lost (a journal-mode copy whose lock
    the secondary's stuck rbd-mirror kept refused every write: forced.py free_from_daemon)."""
    figures = []
    for case in cases:
        started = time.monotonic()
        code, report = rbdfail(case.config_file, "failover", "--to", "secondary", "--yes")
        took = time.monotonic() - started
        ours = {v["name"]: v for v in report["volumes"] if v["name"] in case.names}
        assert code == 0 and report["result"] == "complete", (case.timeout, ours)
        assert report["forced"] is True
        assert {v["action"] for v in ours.values()} == {"force-promoted"}, ours
        rpo = check_rpo(report, case.names, points) if points is not None else ""
        for name in case.names:
            assert dl.secondary.mirror_info(name).primary, name
            assert data_digest(dl.secondary.read(name, MiB, MiB)) == case.digests[name], name
            try:
                dl.secondary.write(name, 0, os.urandom(4096))  # not the MiB checked above
            except CephError as exc:
                raise AssertionError(f"{name} refuses writes on the secondary: {exc}") from exc
        figures.append(f"t={case.timeout}s: {took:.1f}s {rpo}")
    return figures


# In `make disasters`, not `make test`: 2.5 min of two disasters in a row on a lab of its own.
@pytest.mark.disasters
def test_forced_failover__a_volume_given_up_on_mid_call_says_what_next__a_rerun_finishes(
    disaster_lab: DisasterLab, tmp_path: Path
) -> None:
    """The secondary's storage stops while a forced promote is in its call: the volume is
    given up on at its hard limit, named with what to run next; once the secondary is back,
    running the same failover again finishes it."""
    dl = disaster_lab
    (case,) = make_cases(dl, "given-up", tmp_path, timeouts=(1,))
    wait_synced(dl, [case])
    config = load_config(case.config_file)
    dl.lab.fail("primary", Disaster.STORAGE_DEAD)
    stalled = False

    class StallTheTarget(Silent):
        def step(self, name: str, step: str) -> None:
            nonlocal stalled
            if step == "force-promote" and not stalled:
                stalled = True
                dl.lab.fail("secondary", Disaster.STORAGE_DEAD)

    # The call that hangs is the target's forced promote, not a dead source's: the allowance
    # for one (the OSD op timeout, 30 s) is not what this is about, so its limit stays 18 s
    # (budget 1 s + 2 connect timeouts + a forced promote's 3 s + the lock grace, 12 s), short
    # of the 20 s after which the run's lock on the dead target is no longer provably held:
    # with the defaults (48 s) the volumes failed on that instead ("lock not renewed", the same
    # hint to run it again), as they should, but this test is about the give-up.
    options = Options(
        connect_timeout=1,
        volume_timeout=1,
        concurrency=8,
        op_timeout_s=1,
        forced_promote_s=3,
        break_locks_after=12,
    )
    request = SwitchRequest(Operation.FAILOVER, options, "secondary")
    made: list[Cluster] = []  # left open by the run, under its calls still running

    def connect(site: SiteConfig, timeout: float) -> Cluster:
        made.append(ceph.connect(site, timeout))
        return made[-1]

    try:
        first = run_switch(config, request, connect=connect, observer=StallTheTarget())
        report = first.report
        assert report is not None and report.result != "complete"
        given_up = [v for v in report.volumes if v.error and "given up" in v.error]
        assert given_up, report.to_json()
        for outcome in given_up:
            assert outcome.hint and "rbdfail failover --to secondary" in outcome.hint
        assert report.calls_left_running >= 1
    finally:
        dl.lab.recover("secondary")

    code, again = rbdfail(case.config_file, "failover", "--to", "secondary", "--yes")
    try:
        ours = {v["name"]: v["action"] for v in again["volumes"] if v["name"] in case.names}
        assert code == 0 and again["result"] == "complete", ours
        assert set(ours.values()) <= {"force-promoted", "already-primary"}, ours
        for name in case.names:
            assert dl.secondary.mirror_info(name).primary, name
            assert data_digest(dl.secondary.read(name, MiB, MiB)) == case.digests[name], name
    finally:
        dl.lab.recover("primary")
    # Their calls end once the secondary answers (journaled as late); only then may their
    # connections be shut down, rather than at the interpreter's exit (seen to abort it).
    journal = case.config_file.parent / "state-1" / "journal.jsonl"

    def ended() -> set[str]:
        lines = [json.loads(line) for line in journal.read_text().splitlines()]
        return {
            line["volume"]
            for line in lines
            if line["event"] == "late-failed"
            or (line["event"] == "late-step" and line["step"] == "force-promoted")
        }

    eventually(lambda: {v.name for v in given_up} <= ended(), 120, interval=1)
    for cluster in made:
        cluster.close()


# `make test` runs one shape (the one whose hang made the hard limit allow for the OSD op
# timeout); `make disasters` runs every shape (marker `disasters`, deselected by addopts).
SWEEP = pytest.mark.disasters


@pytest.mark.parametrize(
    ("shape", "primary_disaster", "secondary_disaster"),
    [
        pytest.param("partition", Disaster.PARTITION, None, marks=SWEEP),
        ("storage-dead", Disaster.STORAGE_DEAD, None),
        pytest.param("slow-survivor", Disaster.STORAGE_DEAD, Disaster.SLOW, marks=SWEEP),
    ],
)
def test_forced_failover__completes_in_every_disaster_shape_at_every_connect_timeout(
    disaster_lab: DisasterLab,
    tmp_path: Path,
    shape: str,
    primary_disaster: Disaster,
    secondary_disaster: Disaster | None,
) -> None:
    forced_failovers_in(disaster_lab, tmp_path, shape, primary_disaster, secondary_disaster)


@SWEEP
def test_forced_failover__completes_with_the_primary_killed_at_every_connect_timeout(
    disaster_lab: DisasterLab, tmp_path: Path
) -> None:
    """A killed site has no way back: its lab goes with it."""
    forced_failovers_in(disaster_lab, tmp_path, "killed", Disaster.KILLED, None)


def forced_failovers_in(
    dl: DisasterLab,
    tmp_path: Path,
    shape: str,
    primary_disaster: Disaster,
    secondary_disaster: Disaster | None,
) -> None:
    cases = make_cases(dl, shape, tmp_path)
    wait_synced(dl, cases)
    points = synced_points(dl, cases)
    dl.lab.fail("primary", primary_disaster)
    if secondary_disaster is not None:
        dl.lab.fail("secondary", secondary_disaster)
    try:
        time.sleep(DISASTER_AGE_S)
        figures = fail_over_each(dl, cases, points)
        print(f"\n{shape}: forced failover of 4 volumes, " + ", ".join(figures))
    finally:
        if secondary_disaster is not None:
            dl.lab.recover("secondary")
        if primary_disaster != Disaster.KILLED:
            dl.lab.recover("primary")
