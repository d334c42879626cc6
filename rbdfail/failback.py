"""Failback: every replicated volume back to the original backend (`default`).

The Cinder RBD driver could not fail back ("requires admin intervention"); rbdfail plans it
from what the two sites and the journal say, and carries it out with the failover engine
(failover.py): the same concurrency, budgets, roll-back, journal, lock and records.

After a clean failover, a volume is switched back: demoted on the active site, promoted on
`default` once the demotion has arrived. After a forced one, `default` still holds its image as
primary (split brain): that stale copy is demoted, resynced from the active site (rbd-mirror
throws it away and copies it anew) and, once it replays, switched as above. Only what the
journal records as force-promoted there is resynced, or what the operator names with
`--resync`: an unneeded resync re-copies a whole image, and a wrong one throws away writes.
"""

from __future__ import annotations

from collections.abc import Collection

from rbdfail.cluster import MirrorInfo, MirrorState
from rbdfail.config import Config
from rbdfail.errors import RbdfailError
from rbdfail.failover import (
    UNREACHABLE,
    Connect,
    FailoverPlan,
    Plan,
    PlannedVolume,
    Sites,
    connect_pair,
)
from rbdfail.state import State, journal_lines, remember_volumes
from rbdfail.volumes import Volume, list_volumes


def connect_failback_sites(config: Config, state: State, connect: Connect, timeout: float) -> Sites:
    """The active site as the source, `default` as the target (which must answer)."""
    default = config.backend.backend_id
    source_id = state.active_backend
    if source_id == default:  # a re-run of a finished failback: everything is home already
        if not config.replication_devices:
            raise RbdfailError("no replication_device is configured: nothing to fail back from")
        source_id = config.replication_devices[0].backend_id
    return connect_pair(config.site(source_id), config.backend, connect, timeout, "fail back")


def forced_on(config: Config, site: str) -> set[str]:
    """Volumes the journal says were force-promoted on `site` and not brought home since."""
    forced: set[str] = set()
    for line in journal_lines(config.state_dir):
        if line.get("event") != "step":
            continue
        if line.get("step") == "force-promoted" and line.get("site") == site:
            forced.add(line["volume"])
        elif line.get("step") == "promoted" and line.get("site") == config.backend.backend_id:
            forced.discard(line["volume"])
    return forced


def plan_failback(
    config: Config,
    sites: Sites,
    resync: Collection[str] = (),
    resumes: str | None = None,
) -> FailoverPlan:
    """Classify every volume of the backend from both sites and the journal."""
    home = sites.target
    volumes = list_volumes(home, config)  # the backend's pool: every volume, typed
    remember_volumes(config.state_dir, home.site, {v.name: v.volume_type for v in volumes})
    away: dict[str, MirrorInfo] = {}
    if sites.source is not None:
        try:
            away = sites.source.mirror_infos()
        except UNREACHABLE as exc:
            sites.source_error, sites.source = exc, None
    unknown = set(resync) - {v.name for v in volumes}
    if unknown:
        raise RbdfailError(
            f"--resync names volumes {home.site!r} does not have: {', '.join(sorted(unknown))}",
            hint="name volumes as `rbdfail status` lists them",
        )
    forced = forced_on(config, sites.source_id) | set(resync)
    planned = tuple(
        _plan_back(v, away.get(v.name), sites.source is not None, forced, sites.source_id)
        for v in volumes
    )
    return FailoverPlan(
        sites.source_id,
        home.site,
        sites.source is not None,
        None if sites.source_error is None else str(sites.source_error.reason),
        planned,
        resumes,
        operation="failback",
    )


def _plan_back(
    volume: Volume,
    away: MirrorInfo | None,
    source_reachable: bool,
    forced: set[str],
    source: str,
) -> PlannedVolume:
    def planned(plan: Plan, reason: str) -> PlannedVolume:
        return PlannedVolume(volume.name, volume.volume_type, plan, reason)

    home = volume.mirroring  # on default
    if volume.type_error:
        return planned(Plan.CANNOT, volume.type_error)
    if not volume.replicated:
        return planned(Plan.RESTORE, f"type {volume.volume_type!r} is not replicated")
    if home is None:
        return planned(
            Plan.RESTORE,
            "never left: it is not mirrored (run `rbdfail enable-mirroring` to protect it)",
        )
    if home.state != MirrorState.ENABLED:
        return planned(Plan.CANNOT, f"its image here is {home.state}, not usable yet")
    if source_reachable and away is None:
        if home.primary:
            return planned(Plan.NOTHING, f"primary here, no copy on {source}")
        return planned(Plan.CANNOT, f"primary nowhere: no copy on {source}; check it by hand")
    if away is not None and away.global_id != home.global_id:
        return planned(Plan.CANNOT, f"the image named so on {source} is another image")
    away_primary = away is not None and away.primary
    if home.primary and not away_primary:
        return planned(Plan.NOTHING, "primary here already")
    if home.primary:
        if volume.name in forced:
            return planned(
                Plan.RESYNC, f"primary on both sites after a forced failover: resync from {source}"
            )
        return planned(
            Plan.CANNOT,
            "primary on both sites, and no forced promote of it is journaled: if its writes "
            "here since the failover may be thrown away, name it with --resync",
        )
    if not source_reachable:
        return planned(Plan.FORCE_PROMOTE, f"{source} is unreachable")
    if away_primary:
        return planned(Plan.DEMOTE_PROMOTE, f"primary on {source}")
    return planned(Plan.PROMOTE, f"demoted on {source} already, not primary anywhere")
