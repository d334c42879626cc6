"""What a switch plans beside moving the volumes: the schedules that must follow the primary,
and the clients still using a volume about to be demoted. Pure, like the planners.

Schedules: Ceph's scheduler (the mgr's rbd_support) snapshots only the images that are primary
on its own site (it skips the others at every pass), and keeps each schedule by image id. So a
volume's schedule must be on whichever site is primary, or after a switch nothing more
replicates back. rbdfail adds it on the target once the volume is primary there and leaves the
source's in place: inert while that copy is not primary, ready for the way back. A copy that
was resynced is a new image to Ceph and has lost its schedule: it is added again.

Users: a demote under a client that has the volume open makes that client's writes fail (it
sees a read-only image). They are named in the plan; with `require_idle` the volume is not
switched at all. Reading them costs a call per volume (docs/performance.md), so a run
that nobody reads the plan of first (`--yes` without `--require-idle`) does without: `check`
names them before.
"""

from __future__ import annotations

from dataclasses import replace

from rbdfail.switch.model import Plan, PlannedVolume, SwitchPlan
from rbdfail.switch.sites import SitesSaid

# The plans after which the volume is primary on the target.
ENDS_PRIMARY_ON_TARGET = (
    Plan.DEMOTE_PROMOTE,
    Plan.PROMOTE,
    Plan.FORCE_PROMOTE,
    Plan.RESYNC,
    Plan.NOTHING,
)
DEMOTES = (Plan.DEMOTE_PROMOTE, Plan.RESYNC)


def with_upkeep(plan: SwitchPlan, said: SitesSaid, require_idle: bool) -> SwitchPlan:
    intervals = {v.name: v.snapshot_interval for v in said.volumes if v.replicated}
    volumes = [
        _one(volume, intervals.get(volume.name), said, require_idle) for volume in plan.volumes
    ]
    in_use = [v for v in volumes if v.users and v.plan in DEMOTES]
    warnings = plan.warnings
    if in_use:
        shown = ", ".join(f"{v.name} ({', '.join(v.users)})" for v in in_use[:5])
        more = f" and {len(in_use) - 5} more" if len(in_use) > 5 else ""
        warnings += (
            f"{len(in_use)} volumes are still open on {said.source}: {shown}{more}; the demote "
            "makes their clients' writes fail (stop them first, or --require-idle to leave "
            "such volumes where they are)",
        )
    return replace(
        plan,
        volumes=tuple(volumes),
        warnings=warnings,
        users_read=said.source_users is not None,
    )


def _one(
    volume: PlannedVolume, interval: str | None, said: SitesSaid, require_idle: bool
) -> PlannedVolume:
    users = tuple(
        f"{u.client}{' (holds its lock)' if u.holds_lock else ''}"
        for u in (said.source_users or {}).get(volume.name, [])
    )
    volume = replace(volume, users=users)
    if users and require_idle and volume.plan in DEMOTES:
        return replace(
            volume,
            plan=Plan.CANNOT,
            reason=f"still open on {said.source} by {', '.join(users)} (--require-idle): "
            "left as it is; stop its clients, then run again",
        )
    if interval is None or volume.plan not in ENDS_PRIMARY_ON_TARGET:
        return volume
    there = said.target_schedules
    if there is not None and interval in there.get(volume.name, []):
        return volume
    return replace(volume, schedule=interval)
