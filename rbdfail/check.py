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


def run_checks(report: StatusReport, target: str, max_lag: float | None) -> list[CheckItem]:
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
    items.append(_lag(copies, max_lag))
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
    return CheckItem(name, FAIL, "down: the image statuses say its daemon is not running")


def _listed(
    name: str, bad: list[str], problem: str, fine: str, severity: Verdict = FAIL
) -> CheckItem:
    if not bad:
        return CheckItem(name, PASS, fine)
    shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
    return CheckItem(name, severity, f"{len(bad)} {problem}: {shown}")


def _verdict(name: str, ok: bool, problem: str, fine: str) -> CheckItem:
    return CheckItem(name, PASS if ok else FAIL, fine if ok else problem)


def _lag(copies: list[VolumeStatus], max_lag: float | None) -> CheckItem:
    lags = [(v.lag_seconds, v.name) for v in copies if v.lag_seconds is not None]
    behind = [(v.entries_behind, v.name) for v in copies if v.entries_behind]
    worst = max(lags, default=None)
    summary = (f"worst {worst[0]:.0f}s ({worst[1]})" if worst else "no snapshot-mode lag") + (
        f"; {len(behind)} journal copies behind" if behind else ""
    )
    if max_lag is None:
        return CheckItem("replication lag", PASS, summary + " (no --max-lag given)")
    over = [name for lag, name in lags if lag > max_lag]
    if over:
        return CheckItem(
            "replication lag",
            FAIL,
            f"{len(over)} over {max_lag:g}s: {', '.join(over[:5])}; {summary}",
        )
    return CheckItem("replication lag", PASS, f"all under {max_lag:g}s; {summary}")
