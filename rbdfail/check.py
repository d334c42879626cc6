"""May a failover (or failback) to a site start now, and would it be clean? `rbdfail check`.

Verdicts over one status report (status.py), so check sees exactly what status shows. `fail`
means not ready; `warn` means it can start but not cleanly (e.g. the source is unreachable: a
forced failover is still possible).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from rbdfail.cluster import ReplayState
from rbdfail.status import StatusReport, VolumeStatus


class Verdict(StrEnum):
    """One check item's answer: `fail` means not ready, `warn` ready but not clean."""

    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"


PASS, WARN, FAIL = Verdict.PASS, Verdict.WARN, Verdict.FAIL


@dataclass(frozen=True)
class CheckItem:
    name: str
    verdict: Verdict
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "verdict": self.verdict, "reason": self.reason}


def ready(items: list[CheckItem]) -> bool:
    return all(item.verdict != FAIL for item in items)


def run_checks(
    report: StatusReport,
    target: str,
    max_rpo: float | None,
    require_idle: bool = False,
) -> list[CheckItem]:
    target_view = report.sites[target]
    sources = [view for site, view in report.sites.items() if site != target]
    items = [
        _reachable(
            target, target_view.reachable, [v.backend_id for v in sources if not v.reachable]
        )
    ]
    if not target_view.reachable:
        return items  # nothing more can be known of the target
    for site, view in report.sites.items():
        if view.reachable:
            items.append(
                _verdict(
                    f"pool mirroring mode on {site}",
                    view.pool_mode == "image",
                    f"{view.pool_mode}",
                    "image mode",
                )
            )
            items.append(
                _verdict(
                    f"peers on {site}",
                    bool(view.peers),
                    "no mirroring peer",
                    ", ".join(p.site_name for p in view.peers),
                )
            )
    replicated = [v for v in report.volumes if v.replicated]
    items.append(_daemon(report, target))
    mirrored = [v for v in replicated if any(i.primary is not None for i in v.sites.values())]
    items.append(
        _listed(
            "replicated volumes mirrored",
            [v.name for v in replicated if v not in mirrored and v.primary_site != "unknown"],
            "typed replicated but not mirrored",
            f"{len(mirrored)} replicated volumes mirrored",
        )
    )
    items.append(
        _listed(
            f"copies on {target}",
            [
                f"{v.name} ({v.sites[target].state})"
                for v in mirrored
                if v.sites[target].primary is None
            ],
            "without a mirrored copy yet",
            f"every mirrored volume has a copy on {target}",
        )
    )
    items.append(
        _listed(
            "no split-brain",
            [v.name for v in report.volumes if v.primary_site == "split-brain"],
            "primary on more than one site",
            "no volume is primary on two sites",
        )
    )
    # With a source down its copies cannot replay: errors are expected, not a reason to refuse.
    source_down = any(not view.reachable for view in sources)
    items.append(
        _listed(
            "no image in error",
            [
                f"{v.name} ({site})"
                for v in report.volumes
                for site, image in v.sites.items()
                if image.state == ReplayState.ERROR
            ],
            "in error",
            "no image in error",
            severity=WARN if source_down else FAIL,
        )
    )
    copies = [v for v in replicated if v.sites[target].primary is False]
    items.append(
        _listed(
            f"copies on {target} replaying",
            [
                f"{v.name} ({v.sites[target].state})"
                for v in copies
                if v.sites[target].state != ReplayState.REPLAYING
            ],
            "not replaying",
            f"{len(copies)} copies replaying",
            severity=WARN,
        )
    )
    items.append(
        _listed(
            f"copies on {target} replayed the source since their demotion",
            [v.name for v in copies if v.sites[target].replayed_since_demotion is False],
            "replayed nothing of the source since their own demotion (a failover waits for "
            "them, then rolls them back)",
            f"no copy on {target} waits on its own demotion",
            severity=WARN,
        )
    )
    items.append(
        _listed(
            f"copies on {target} synced once",
            [v.name for v in copies if v.rpo.first_sync],
            "still in their first sync (no whole snapshot to take over with)",
            "every copy holds a whole snapshot",
        )
    )
    items.append(_rpo(copies, max_rpo))
    items.append(
        _listed(
            "snapshot schedules",
            [f"{v.name} ({v.schedule_note})" for v in replicated if v.schedule_ok is False],
            "without a working schedule",
            f"{sum(v.schedule_ok is True for v in replicated)} schedules on their primary "
            "and firing",
        )
    )
    in_use = [
        f"{v.name} ({', '.join(u.client for u in v.users)})"
        for v in replicated
        if v.primary_site != target and v.users
    ]
    items.append(
        _listed(
            "sources idle",
            in_use,
            "still open on their primary: a demote makes their writers fail",
            "no client has a source volume open",
            severity=FAIL if require_idle else WARN,
        )
    )
    return items


def _reachable(target: str, target_ok: bool, sources_down: list[str]) -> CheckItem:
    if not target_ok:
        return CheckItem(
            "sites reachable",
            FAIL,
            f"{target} (the target) is unreachable: there is nowhere to fail over to",
        )
    if sources_down:
        return CheckItem(
            "sites reachable",
            WARN,
            f"{', '.join(sources_down)} unreachable: only a forced failover is "
            "possible (volumes force-promoted, split brain until failback)",
        )
    return CheckItem("sites reachable", PASS, "every site answered")


def _daemon(report: StatusReport, target: str) -> CheckItem:
    health, count = report.mirror_daemon(target)
    name = f"rbd-mirror on {target}"
    if health == "unknown":
        return CheckItem(name, WARN, "unknown: no image status reported on this site yet")
    if health == "up":
        return CheckItem(name, PASS, f"up (it reported {count} image statuses)")
    return CheckItem(name, FAIL, f"down: {report.daemon_down_why(target)}")


def _listed(
    name: str, bad: list[str], problem: str, fine: str, severity: Verdict = FAIL
) -> CheckItem:
    if not bad:
        return CheckItem(name, PASS, fine)
    shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
    return CheckItem(name, severity, f"{len(bad)} {problem}: {shown}")


def _verdict(name: str, ok: bool, problem: str, fine: str) -> CheckItem:
    return CheckItem(name, PASS if ok else FAIL, fine if ok else problem)


def _rpo(copies: list[VolumeStatus], max_rpo: float | None) -> CheckItem:
    """The worst RPO over the copies; with a limit, each copy must provably be within it."""
    known = [v for v in copies if v.rpo.seconds is not None]
    worst = max(known, key=lambda v: v.rpo.seconds or 0.0, default=None)
    unknown = len(copies) - len(known)
    summary = (f"worst {worst.rpo} ({worst.name})" if worst else "none known") + (
        f"; {unknown} unknown" if unknown else ""
    )
    if max_rpo is None:
        return CheckItem("RPO", PASS, summary + " (no --max-rpo given)")
    over = [f"{v.name} {v.rpo} ({v.rpo.how})" for v in copies if not v.rpo.within(max_rpo)]
    if over:
        shown = "; ".join(over[:5]) + (f" and {len(over) - 5} more" if len(over) > 5 else "")
        return CheckItem("RPO", FAIL, f"{len(over)} not provably within {max_rpo:g}s: {shown}")
    return CheckItem("RPO", PASS, f"all within {max_rpo:g}s; {summary}")
