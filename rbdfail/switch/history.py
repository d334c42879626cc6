"""What the journal says of earlier switches: a run that was cut off, volumes forced away,
where each volume was last made primary.

Read before planning, so that a re-run resumes the run it finishes and a failback resyncs only
what a forced failover split.
"""

from __future__ import annotations

from pathlib import Path

from rbdfail.state import journal_lines


def unfinished_run(state_dir: Path, target: str, backend: str | None = None) -> str | None:
    """The id of the last failover to `target` that started and never ended, if any."""
    started: dict[str, str] = {}
    for line in journal_lines(state_dir, backend):
        if line.get("event") == "start" and line.get("target") == target:
            started.pop(line.get("resumes") or "", None)  # taken over by this run
            started[line["run"]] = target
        elif line.get("event") == "end":
            started.pop(line.get("run", ""), None)
    return next(reversed(started), None) if started else None


def forced_on(state_dir: Path, site: str, home: str, backend: str | None = None) -> dict[str, bool]:
    """Volumes the journal says were force-promoted on `site` and not brought `home` since,
    each with whether its copy at home has been resynced since it was forced (only then is
    that copy the forced one's history, safe to switch to)."""
    forced: dict[str, bool] = {}
    for line in journal_lines(state_dir, backend):
        # A step after its volume was given up on (`late-step`) happened all the same: a
        # forced promote that ended after the run's report still split the volume's history.
        if line.get("event") not in ("step", "late-step"):
            continue
        name, step, where = line.get("volume"), line.get("step"), line.get("site")
        if not isinstance(name, str):
            continue
        if step == "force-promoted" and where == site:
            forced[name] = False
        elif step == "resynced" and where == home and name in forced:
            forced[name] = True
        elif step == "promoted" and where == home:
            forced.pop(name, None)
    return forced


# The steps after which a volume is primary on the site they name.
_MADE_PRIMARY = ("promoted", "force-promoted", "rolled-back")


def last_made_primary(state_dir: Path, backend: str | None = None) -> dict[str, str]:
    """Volume -> the site the journal last says it was made primary on (promoted, forced, or
    rolled back there): with several replication devices, where a volume may still be when
    that device does not answer."""
    last: dict[str, str] = {}
    for line in journal_lines(state_dir, backend):
        if line.get("event") not in ("step", "late-step"):
            continue
        name, site = line.get("volume"), line.get("site")
        if isinstance(name, str) and isinstance(site, str) and line.get("step") in _MADE_PRIMARY:
            last[name] = site
    return last
