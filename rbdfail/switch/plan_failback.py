"""Plan a failback: every volume of the backend back home (`default`), from what both sites said.

After a clean failover, a volume is switched back: demoted on the active site, promoted on
`default` once the demotion has arrived. After a forced one, `default` still holds its image as
primary (split brain): that stale copy is demoted, resynced from the active site (rbd-mirror
throws it away and copies it anew) and, once it replays, switched as above. Only what the
journal records as force-promoted there is resynced, or what the operator names with
`--resync`: an unneeded resync re-copies a whole image, and a wrong one throws away writes.

Ceph's own word counts too: a copy here that `default`'s rbd-mirror reports split-brain (it
was demoted here, then forced on the source before the demotion reached it: measured on the
lab, both modes, issue 13 item 9) is resynced as well; a demote+promote would promote it
without the source's writes (journal mode: at once) or never (snapshot mode).

With several replication devices a run moves the volumes of one device, its source (sites.py
chose it from where the volumes are): a volume primary on another device is never promoted
here by this run. It is named, for the next run to move, or, primary on two devices, as a split
brain rbdfail leaves alone. So is a volume the journal last made primary on a device that does
not answer: it may still be primary there.

The Cinder RBD driver could not fail back ("requires admin intervention"). Like the failover
planner, this is a pure function: the engine (engine.py) carries its plan out.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from rbdfail.cluster import MirrorInfo, MirrorState, not_understood
from rbdfail.errors import RbdfailError
from rbdfail.switch.model import Operation, Plan, PlannedVolume, SwitchPlan
from rbdfail.switch.sites import Elsewhere, SitesSaid, split_between
from rbdfail.volumes import Volume


def plan_failback(
    said: SitesSaid,
    forced: Mapping[str, bool] | None = None,
    resync: Collection[str] = (),
    resumes: str | None = None,
) -> SwitchPlan:
    """Classify every volume of the backend; `forced` are those the journal says were
    force-promoted on the source (each with whether its copy here was resynced since),
    `resync` those the operator names."""
    forced = forced or {}
    unknown = set(resync) - {v.name for v in said.volumes}
    if unknown:
        raise RbdfailError(
            f"--resync names volumes {said.target!r} does not have: {', '.join(sorted(unknown))}",
            hint="name volumes as `rbdfail status` lists them",
        )
    stale = {name for name, resynced in forced.items() if not resynced}
    planned = tuple(
        _plan_back(
            v,
            said.other_side.get(v.name),
            said.source_reachable,
            set(forced) | set(resync),
            stale,
            said.source,
            Elsewhere.of(said, v.name),
        )
        for v in said.volumes
    )
    home = {v.name for v in said.volumes}
    planned += tuple(_away_only(name, said) for name in said.away_only)
    planned += tuple(
        _only_elsewhere(name, devices, said)
        for name, devices in sorted(said.elsewhere.items())
        if name not in home and name not in said.away_only
    )
    return SwitchPlan(
        said.source,
        said.target,
        said.source_reachable,
        said.source_error,
        planned,
        resumes,
        operation=Operation.FAILBACK,
    )


def _away_only(name: str, said: SitesSaid) -> PlannedVolume:
    """An image only the source has: nothing here to promote, and leaving it out would let
    the run say `complete` while it stays behind."""
    info = said.other_side.get(name)
    why = (
        f"mirrored on {said.source}, but {said.target} has no copy of it yet (rbd-mirror is "
        "creating it, e.g. after a resync): run failback again once `rbdfail status` shows it"
        if info is not None and info.state == MirrorState.ENABLED
        else f"exists only on {said.source} (created there after the failover?) and is not "
        f"mirrored: mirror it there (`rbdfail enable-mirroring --site {said.source}`), let "
        "it sync, then run failback again"
    )
    return PlannedVolume(name, "-", Plan.CANNOT, why)


def _only_elsewhere(name: str, devices: tuple[str, ...], said: SitesSaid) -> PlannedVolume:
    """An image primary on another device than the source, which `default` does not have."""
    return PlannedVolume(
        name,
        "-",
        Plan.CANNOT,
        f"primary on {' and '.join(devices)}, and {said.target} has no copy of it yet: not "
        f"moved by this run, which fails back from {said.source}; run failback again once "
        "`rbdfail status` shows a copy here",
    )


def _primary_elsewhere(where: Elsewhere, on_source: bool, source: str) -> str:
    devices = [*where.primary_on, *([source] if on_source else [])]
    if len(devices) > 1:
        return split_between(devices)
    (device,) = devices
    return (
        f"primary on {device}, not on {source}, which this run fails back from (a failback "
        f"moves the volumes of one device per run): left as it is; run failback again once "
        f"this run has ended: it moves it from {device}"
    )


def _plan_back(
    volume: Volume,
    away: MirrorInfo | None,
    source_reachable: bool,
    forced: set[str],
    stale: set[str],
    source: str,
    elsewhere: Elsewhere | None = None,
) -> PlannedVolume:
    """`stale`: forced on the source and not resynced here since: the copy here, primary or
    demoted, does not hold the source's writes, and must never be promoted without a resync.
    `elsewhere`: what the other devices (and Ceph's status here) say of it."""
    where = elsewhere or Elsewhere()

    def planned(plan: Plan, reason: str) -> PlannedVolume:
        return PlannedVolume(volume.name, volume.volume_type, plan, reason)

    home = volume.mirroring  # on default
    if volume.type_error:
        return planned(Plan.CANNOT, volume.type_error)
    if strange := not_understood(home, away):
        return planned(Plan.CANNOT, strange)
    if not volume.replicated:
        return planned(Plan.RESTORE, f"type {volume.volume_type!r} is not replicated")
    if home is None:
        return planned(
            Plan.RESTORE,
            "never left: it is not mirrored (run `rbdfail enable-mirroring` to protect it)",
        )
    if home.state != MirrorState.ENABLED:
        return planned(Plan.CANNOT, f"its image here is {home.state}, not usable yet")
    away_primary = away is not None and away.primary
    if where.primary_on:
        return planned(Plan.CANNOT, _primary_elsewhere(where, away_primary, source))
    if (maybe := where.maybe_primary_unread("failback")) is not None:
        return planned(Plan.CANNOT, maybe)
    if source_reachable and away is None:
        if home.primary:
            return planned(Plan.NOTHING, f"primary here, no copy on {source}")
        return planned(Plan.CANNOT, f"primary nowhere: no copy on {source}; check it by hand")
    if away is not None and away.global_id != home.global_id:
        return planned(Plan.CANNOT, f"the image named so on {source} is another image")
    split_here = where.split_here and not home.primary
    why_stale = (
        f"force-promoted on {source} (journal)"
        if volume.name in stale
        else f"split-brain here (Ceph says: forced on {source} after it was demoted here)"
    )
    lost_writes = (
        f"{why_stale}: this copy lacks the newest writes of {source}, and {source} does not "
        f"answer: failing back now would throw them away. Bring {source} back, then run "
        "failback again: it resyncs this copy first"
    )
    if (volume.name in stale or split_here) and not source_reachable:
        return planned(Plan.CANNOT, lost_writes)
    if home.primary and not away_primary:
        if not source_reachable:
            return planned(
                Plan.NOTHING, f"primary here (the journal records no forced promote on {source})"
            )
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
    if volume.name in stale:
        # Demoted here by a run whose resync failed or was cut off: Ceph would promote it
        # without force (this site demoted it itself), over the source's newer writes.
        return planned(
            Plan.RESYNC,
            f"force-promoted on {source} (journal) and not resynced here since: resync first",
        )
    if split_here:
        # Promoting it would take it without the source's writes (journal mode, measured: at
        # once) or never (snapshot mode: its newest mirror snapshot is its own demotion).
        if away_primary:
            return planned(Plan.RESYNC, f"{why_stale}: resync from {source} first")
        return planned(
            Plan.CANNOT,
            f"{why_stale}, and primary on no site: promote it by hand where its newest writes "
            f"are (on {source}, unless they are here), then run failback again",
        )
    if not source_reachable:
        return planned(Plan.FORCE_PROMOTE, f"{source} is unreachable")
    if away_primary:
        return planned(Plan.DEMOTE_PROMOTE, f"primary on {source}")
    return planned(Plan.PROMOTE, f"demoted on {source} already, not primary anywhere")
