"""`status --prometheus FILE`: the status figures for node_exporter's textfile collector.

prometheus_client writes the text format (escaping, HELP/TYPE lines) and replaces the file
atomically, so the collector never reads half a file. Every series is a gauge of the reading
just taken; a figure Ceph did not give (lag before the first sync, rbd-mirror health the user
may not read) is left out rather than written as 0, which would read as "fine".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

from rbdfail.config import Config
from rbdfail.rpo import Bound
from rbdfail.status import StatusReport


def write_textfile(
    reports: Sequence[tuple[Config, StatusReport]],
    path: Path,
    taken_at: float,
    drills: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Every backend read, in one file. In a file of several backends each series but the
    reading's time has a `volume_backend` label (Cinder's name for a backend; `backend` is
    taken by the site ids): two pools may hold volumes of the same name."""
    registry = CollectorRegistry()
    by = ("volume_backend",) if len(reports) > 1 else ()

    def gauge(name: str, documentation: str, *labels: str) -> Gauge:
        return Gauge(f"rbdfail_{name}", documentation, (*by, *labels), registry=registry)

    Gauge(
        "rbdfail_status_timestamp_seconds",
        "When this status was read (Unix time).",
        registry=registry,
    ).set(taken_at)
    series = _Series(gauge)
    for config, report in reports:
        series.add(report, (config.backend_name,) if by else ())

    # ---- drills (issue 16): from the state dir's drill.json, not from this reading ----------
    drilled = Gauge(
        "rbdfail_drill_last_success_timestamp_seconds",
        "When the volume's copy last passed `rbdfail drill` (Unix time); absent if never.",
        ("volume", "target"),
        registry=registry,
    )
    for name, record in sorted((drills or {}).items()):
        drilled.labels(name, record["target"]).set(record["last_success"])

    write_to_textfile(str(path), registry)


class _Series:
    """The gauges of one reading, filled backend by backend (`at`: the backend's label)."""

    def __init__(self, gauge: Callable[..., Gauge]) -> None:
        self.healthy = gauge("healthy", "1 when status found nothing that needs attention.")
        self.active = gauge(
            "active_backend", "The backend the state dir names as active.", "backend"
        )
        self.reachable = gauge("site_reachable", "1 when the site answered in time.", "site")
        self.daemon = gauge(
            "site_rbd_mirror_up",
            "1 when the site's rbd-mirror stamps its image statuses as up, 0 when as down; "
            "absent when unknown.",
            "site",
        )
        self.primary = gauge(
            "volume_primary_site",
            "Where the volume is primary: a backend id, none, split-brain or unknown.",
            "volume",
            "primary_site",
        )
        self.state = gauge(
            "volume_mirror_state",
            "The volume's mirror state on each site.",
            "volume",
            "site",
            "state",
        )
        self.error = gauge("volume_error", "1 when the volume's status is error.", "volume")
        self.lag = gauge(
            "volume_lag_seconds",
            "Snapshot mode: how far the copy's last synced snapshot is behind the primary's "
            "newest.",
            "volume",
        )
        self.behind = gauge(
            "volume_entries_behind", "Journal mode: entries the copy has not replayed.", "volume"
        )
        self.rpo = gauge(
            "volume_rpo_seconds",
            "How many seconds of writes a failover now would lose, at most (snapshot mode; "
            "journal mode caught up) or as estimated (journal mode behind); absent when unknown.",
            "volume",
        )
        self.last_sync = gauge(
            "volume_last_sync_timestamp_seconds",
            "Unix time of the newest point the copy holds; alert on time() - this > 3 * interval.",
            "volume",
        )
        self.schedule_ok = gauge(
            "volume_schedule_ok",
            "1 when the type's mirror-snapshot schedule is on the primary and fired within 3 "
            "intervals, 0 when not; absent when the type asks for none or it cannot be told.",
            "volume",
        )
        self.users = gauge(
            "volume_users",
            "Clients with the volume open on its primary, rbd-mirror aside.",
            "volume",
        )

    def add(self, report: StatusReport, at: tuple[str, ...]) -> None:
        healthy = self.healthy.labels(*at) if at else self.healthy  # no labels: no .labels()
        healthy.set(0 if report.problems else 1)
        self.active.labels(*at, report.active_backend).set(1)
        for site, view in report.sites.items():
            self.reachable.labels(*at, site).set(1 if view.reachable else 0)
            health = report.mirror_daemon(site)[0]
            if health != "unknown":
                self.daemon.labels(*at, site).set(1 if health == "up" else 0)
        for volume in report.volumes:
            name = (*at, volume.name)
            if volume.rpo.seconds is not None and volume.rpo.bound != Bound.AT_LEAST:
                self.rpo.labels(*name).set(volume.rpo.seconds)
            if volume.rpo.last_sync is not None:
                self.last_sync.labels(*name).set(volume.rpo.last_sync)
            if volume.schedule_ok is not None:
                self.schedule_ok.labels(*name).set(1 if volume.schedule_ok else 0)
            if volume.users is not None:
                self.users.labels(*name).set(len(volume.users))
            self.primary.labels(*name, volume.primary_site).set(1)
            self.error.labels(*name).set(1 if volume.status == "error" else 0)
            for site, image in volume.sites.items():
                self.state.labels(*name, site, str(image.state)).set(1)
            if volume.lag_seconds is not None:
                self.lag.labels(*name).set(volume.lag_seconds)
            if volume.entries_behind is not None:
                self.behind.labels(*name).set(volume.entries_behind)
