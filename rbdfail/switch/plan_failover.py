"""Plan a failover: what each volume will get, from what both sites said.

A pure function of the sites' answers (sites.py read them), the last inventory of the source
and the run it resumes: it changes nothing anywhere, so `--dry-run` and the real run plan alike.

With several replication devices, a volume primary on a device other than the target (a
failback cut short left it there) is not moved: the target's copy, which only `default`
replays, would be promoted without force, primary on two devices (issue 13 item 6).
"""

from __future__ import annotations

from dataclasses import replace

from rbdfail.cluster import MirrorInfo, MirrorState, not_understood
from rbdfail.config import Config
from rbdfail.errors import ConfigError
from rbdfail.state import Inventory
from rbdfail.switch.model import Plan, PlannedVolume, SwitchPlan
from rbdfail.switch.sites import Elsewhere, SitesSaid, split_between
from rbdfail.volumes import Volume


def plan_failover(
    config: Config,
    said: SitesSaid,
    inventory: Inventory | None = None,
    resumes: str | None = None,
) -> SwitchPlan:
    """Classify every volume. With the source lost, the volumes that exist only there (not
    replicated) come from its last full listing, `inventory`, if there is one."""
    volumes = list(said.volumes)
    remembered: dict[str, str] = {}
    if said.source_reachable or (inventory is not None and inventory.site != said.source):
        inventory = None
    if inventory is not None:
        copies = set(said.other_side)
        for name, type_name in inventory.volume_types.items():
            if name not in copies:
                volumes.append(_remembered_volume(config, name, type_name))
                remembered[name] = f"listed {inventory.taken_at}, before {said.source} was lost"
        volumes.sort(key=lambda v: v.name)
    planned = []
    for volume in volumes:
        one = _plan_one(
            volume,
            said.other_side.get(volume.name),
            said.source_reachable,
            said.target,
            said.source,
            Elsewhere.of(said, volume.name),
        )
        if volume.name in remembered:
            one = replace(one, reason=f"{one.reason} ({remembered[volume.name]})")
        planned.append(one)
    return SwitchPlan(
        said.source,
        said.target,
        said.source_reachable,
        said.source_error,
        tuple(planned),
        resumes,
        inventory.taken_at if inventory is not None else None,
    )


def _remembered_volume(config: Config, name: str, type_name: str) -> Volume:
    try:
        volume_type = config.volume_type(type_name)
    except ConfigError:  # the type was renamed since: the rules decide
        volume_type = config.volume_type_for(name)
    return Volume(
        name,
        volume_type.name,
        volume_type.replicated,
        volume_type.mirror_mode if volume_type.replicated else None,
        None,
    )


def _plan_one(
    volume: Volume,
    copy: MirrorInfo | None,
    source_reachable: bool,
    target: str,
    source: str,
    elsewhere: Elsewhere | None = None,
) -> PlannedVolume:
    def planned(plan: Plan, reason: str) -> PlannedVolume:
        return PlannedVolume(volume.name, volume.volume_type, plan, reason)

    where = elsewhere or Elsewhere()

    here = volume.mirroring  # on the source; None when not mirrored or the source is lost
    if volume.type_error:
        return planned(Plan.CANNOT, volume.type_error)
    if strange := not_understood(here, copy):
        return planned(Plan.CANNOT, strange)
    if not volume.replicated:
        note = " (it is mirrored all the same; its copy is left as it is)" if here else ""
        return planned(Plan.MARK_ERROR, f"type {volume.volume_type!r} is not replicated{note}")
    if where.primary_on:
        return planned(Plan.CANNOT, _primary_elsewhere(where, copy, target))
    if (maybe := where.maybe_primary_unread(f"failover --to {target}")) is not None:
        return planned(Plan.CANNOT, maybe)
    if source_reachable and here is None:
        return planned(
            Plan.CANNOT,
            f"its type {volume.volume_type!r} is replicated but it is not mirrored "
            "(run `rbdfail enable-mirroring` when the source is back)",
        )
    if copy is None:
        return planned(Plan.CANNOT, f"no copy on {target} (rbd-mirror has not created one)")
    if copy.state != MirrorState.ENABLED:
        return planned(Plan.CANNOT, f"its copy on {target} is {copy.state}, not usable yet")
    if here is not None and here.global_id != copy.global_id:
        return planned(
            Plan.CANNOT,
            f"the image named so on {target} is another image (global id differs): "
            "check it by hand",
        )
    if copy.primary:
        if here is not None and here.primary:
            # Not a success to report: both copies take writes, and one side's will be lost.
            return planned(
                Plan.CANNOT,
                f"split brain: primary on {target} and on {source} too (forced while "
                f"{source} was lost); left as it is: `rbdfail failback` resyncs {source}'s "
                f"copy from {target}, throwing away what was written on {source} since",
            )
        return planned(Plan.NOTHING, f"primary on {target} already")
    if not source_reachable:
        return planned(Plan.FORCE_PROMOTE, f"{source} is unreachable")
    assert here is not None
    if here.primary:
        return planned(Plan.DEMOTE_PROMOTE, f"primary on {source}")
    return planned(Plan.PROMOTE, f"demoted on {source} already, not primary anywhere")


def _primary_elsewhere(where: Elsewhere, copy: MirrorInfo | None, target: str) -> str:
    devices = [*where.primary_on, *([target] if copy is not None and copy.primary else [])]
    if len(devices) > 1:
        return split_between(devices)
    (device,) = devices
    return (
        f"primary on {device} (a failback from {device} that did not finish?): its copy on "
        f"{target} replays only the backend and would be promoted as well, primary on two "
        f"devices. Left as it is: fail it back first (`rbdfail failback`), then fail over again"
    )
