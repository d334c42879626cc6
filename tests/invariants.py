"""The invariants of a switch (issue 13), as one check the chaos suite runs after every step.

1. Each replicated volume is primary on exactly one site, or the report names it and why.
2. Its data on that site is the newest writer's data (checksums read through librbd).
3. What rbdfail reports (JSON, exit code, state.json) matches what Ceph says.

"The newest writer's data", by the rules of docs/guide/failover.md and failback.md:
- a clean switch (demote, then promote) carries every write: the demotion takes a mirror
  snapshot of what was not mirrored yet. So does a roll-back, and a volume left where it was;
- a forced promote ("Failover", step 2: the source is lost) keeps what the copy held whole when
  the source stopped answering: the source's writes after its last mirror snapshot that
  reached the copy are lost, legitimately. A failback after it resyncs the old source's copy
  from the forced one ("Failback": "the writes made on `default` after the failover are lost"),
  so from then on the forced copy's data is the volume's data.
So a volume's data must be `Written.newest`, or `Written.kept` once the journal of its state
dir records a forced promote of it (`force-promoted`, on any site). Nothing else is accepted.

`check_invariants` returns every violation it finds, each naming the volume and the site; it
never stops at the first, and never raises for what a site answers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rbdfail.cluster import Cluster
from rbdfail.errors import CephError
from rbdfail.state import journal_lines

SUCCEEDED = {"demoted+promoted", "resynced+promoted", "force-promoted", "already-primary"}
# The exit code each `result` gives (docs/reference/exit-codes.md); 3 also when all moved
# but the state dir could not record it.
EXIT_FOR_RESULT = {"complete": 0, "partial": 3, "failed": 1}


@dataclass(frozen=True)
class Written:
    """What the test wrote to one volume: sha256 of its first `length` bytes as its newest
    writer left them, and as the copy held them whole before any write after that (what a
    forced promote keeps)."""

    newest: str
    kept: str
    length: int


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def forced_volumes(state_dir: Path) -> dict[str, str]:
    """Volume -> the site the journal says it was last force-promoted on (also after the run
    had given up on it: `late-step`)."""
    return {
        line["volume"]: line.get("site", "?")
        for line in journal_lines(state_dir)
        if line.get("event") in ("step", "late-step") and line.get("step") == "force-promoted"
    }


def read_state_json(state_dir: Path) -> dict[str, Any] | None:
    try:
        document: dict[str, Any] = json.loads((state_dir / "state.json").read_text())
    except FileNotFoundError:
        return None
    return document


def check_invariants(
    sites: Mapping[str, Cluster | None],
    written: Mapping[str, Written],
    report: Mapping[str, Any] | None,
    exit_code: int,
    state_dir: Path,
) -> list[str]:
    """Every violation of the three invariants, as `volume on site: what`; [] when none.

    `sites`: a connection per backend id, None for a site that cannot be read (killed);
    `written`: the replicated volumes the test wrote; `report`: the last run's JSON (None when
    it printed none: refused, or killed); `exit_code`, `state_dir`: that run's.
    """
    violations: list[str] = []
    outcomes = {v["name"]: v for v in (report or {}).get("volumes", [])}
    forced = forced_volumes(state_dir)
    for name, wrote in sorted(written.items()):
        primary_on, unreadable = _primaries(sites, name)
        outcome = outcomes.get(name)
        named = outcome is not None and (
            bool(outcome.get("error")) or outcome.get("action") == "force-promoted"
        )
        # 1. Primary on exactly one site, or named. A site that cannot be read is not counted.
        if len(primary_on) != 1 and not named:
            where = ", ".join(primary_on) or "no site"
            violations.append(
                f"{name}: primary on {where} ({len(primary_on)} sites; unreadable: "
                f"{', '.join(unreadable) or 'none'}), and the report does not name it"
            )
        # 2. The newest writer's data where it is primary (or, primary nowhere, somewhere).
        accepted = {wrote.newest} | ({wrote.kept} if name in forced else set())
        holders = primary_on
        if len(primary_on) > 1 and forced.get(name) in primary_on:
            holders = [forced[name]]  # split brain: the forced copy is the volume's history
        if not holders:
            holders = [s for s, c in sites.items() if c is not None and s not in unreadable]
            found = {s: _digest(sites[s], name, wrote.length) for s in holders}
            # A site lost for good (killed) may be the one that held it: that cannot be read.
            if not accepted & set(found.values()) and not unreadable:
                violations.append(
                    f"{name}: primary nowhere, and no site holds the newest data ({_show(found)})"
                )
        else:
            for site in holders:
                got = _digest(sites[site], name, wrote.length)
                if got not in accepted:
                    why = " (forced: the kept data is accepted too)" if name in forced else ""
                    violations.append(
                        f"{name} on {site}: data {got[:12]} is not the newest writer's "
                        f"{wrote.newest[:12]}{why}"
                    )
        # 3. The report says what Ceph says, volume by volume.
        if report is not None:
            violations += _report_matches_ceph(name, outcome, report, primary_on, unreadable)
    if report is not None:
        violations += _report_matches_itself(report, exit_code, state_dir, set(written))
    elif exit_code == 0:
        violations.append("exit code 0 without a JSON report")
    return violations


def _primaries(sites: Mapping[str, Cluster | None], name: str) -> tuple[list[str], list[str]]:
    primary_on, unreadable = [], []
    for site, cluster in sorted(sites.items()):
        try:
            if cluster is None:
                raise CephError("not reachable", site=site)
            if cluster.mirror_info(name).primary:
                primary_on.append(site)
        except CephError:
            unreadable.append(site)
    return primary_on, unreadable


def _digest(cluster: Cluster | None, name: str, length: int) -> str:
    if cluster is None:
        return "unreadable"
    try:
        return sha256(cluster.read(name, 0, length))
    except CephError as exc:
        return f"unreadable ({exc.reason})"


def _show(found: Mapping[str, str]) -> str:
    return ", ".join(f"{site}: {digest[:12]}" for site, digest in found.items()) or "none read"


def _report_matches_ceph(
    name: str,
    outcome: Mapping[str, Any] | None,
    report: Mapping[str, Any],
    primary_on: list[str],
    unreadable: list[str],
) -> list[str]:
    target = report.get("target")
    if outcome is None:
        return [f"{name}: not in the report"]
    action = outcome.get("action")
    if action in SUCCEEDED and target not in primary_on and target not in unreadable:
        return [
            f"{name} on {target}: the report says {action}, Ceph says primary on "
            f"{', '.join(primary_on) or 'no site'}"
        ]
    if action == "failed" and not outcome.get("error"):
        return [f"{name}: failed without an error saying why"]
    return []


def _report_matches_itself(
    report: Mapping[str, Any], exit_code: int, state_dir: Path, ours: set[str]
) -> list[str]:
    """The exit code follows the result, and state.json what the report says was recorded."""
    violations = []
    result = report.get("result")
    unrecorded = bool(report.get("journal_error") or report.get("state_error"))
    expected = 130 if report.get("interrupted") else EXIT_FOR_RESULT.get(str(result))
    if expected == 0 and unrecorded:
        expected = 3
    if exit_code != expected:
        violations.append(f"exit code {exit_code} for result {result!r} (expected {expected})")
    if report.get("state_error"):
        return violations  # the report says state.json could not be written
    state = read_state_json(state_dir)
    active = (state or {}).get("active_backend", "default")
    if active != report.get("active_backend"):
        violations.append(
            f"state.json: active backend {active!r}, the report says "
            f"{report.get('active_backend')!r}"
        )
    moved = any(
        v["action"] in SUCCEEDED - {"already-primary"} or v["action"] == "restored"
        for v in report.get("volumes", [])
    )
    if moved and active != report.get("target"):
        violations.append(f"state.json: active backend {active!r} after volumes moved")
    records = (state or {}).get("volumes", {})
    for volume in report.get("volumes", []):
        if volume["name"] not in ours or volume["action"] == "not-started":
            continue
        recorded = records.get(volume["name"], {}).get("status", "available")
        if volume.get("status") != recorded:
            violations.append(
                f"{volume['name']}: state.json says {recorded!r}, the report "
                f"{volume.get('status')!r}"
            )
    return violations
