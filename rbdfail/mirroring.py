"""Per-image mirroring: plan from the inventory, then enable or disable concurrently.

Planning is a pure function of the volumes (see volumes.py), so `--dry-run` shows exactly
what would be done. Applying never prints: it reports each volume through a callback and
returns a report.

Journal mode needs the exclusive-lock and journaling features. rbdfail adds the missing ones
itself before enabling, as Cinder does, and records which in the image's metadata (Cinder kept
`had_exclusive_lock`/`had_journaling`), so that disabling removes only what it added. (librbd
would also add them on its own, and on disable it removes journaling but leaves exclusive-lock:
measured on Ceph 16.2.15.)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from rbdfail.cluster import Cluster, Feature, MirrorMode
from rbdfail.errors import CephError
from rbdfail.volumes import Volume
from rbdfail.workers import run_all

ADDED_FEATURES_KEY = "rbdfail.added_features"
JOURNAL_FEATURES = (Feature.EXCLUSIVE_LOCK, Feature.JOURNALING)  # in the order they can be added


class Outcome(StrEnum):
    ENABLED = "enabled"
    ALREADY_ENABLED = "already-enabled"
    DISABLED = "disabled"
    ALREADY_DISABLED = "already-disabled"
    MISMATCH = "mismatch"  # mirrored otherwise than its type says: reported, not changed
    FAILED = "failed"
    NOT_STARTED = "not-started"  # interrupted before its turn

    @property
    def needs_attention(self) -> bool:
        return self in (Outcome.MISMATCH, Outcome.FAILED, Outcome.NOT_STARTED)


@dataclass(frozen=True)
class Step:
    """What will be done to one volume, and why."""

    name: str
    volume_type: str
    mode: MirrorMode | None
    outcome: Outcome  # the outcome if nothing goes wrong
    reason: str
    todo: bool  # False: nothing to change, the outcome is already known
    schedule: str | None = None  # snapshot-mode schedule interval to ensure


@dataclass(frozen=True)
class VolumeResult:
    name: str
    volume_type: str
    mode: MirrorMode | None
    outcome: Outcome
    detail: str
    features_changed: tuple[Feature, ...] = ()
    duration_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "volume_type": self.volume_type,
            "mirror_mode": self.mode,
            "action": self.outcome,
            "detail": self.detail,
            "features_changed": list(self.features_changed),
            "duration_s": round(self.duration_s, 3),
        }


@dataclass(frozen=True)
class Report:
    operation: str
    site: str
    dry_run: bool
    volumes: tuple[VolumeResult, ...]
    duration_s: float
    interrupted: bool = False
    counts: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        counts: dict[str, int] = {}
        for volume in self.volumes:
            counts[volume.outcome] = counts.get(volume.outcome, 0) + 1
        object.__setattr__(self, "counts", counts)

    @property
    def result(self) -> str:
        attention = sum(v.outcome.needs_attention for v in self.volumes)
        if attention == 0 and not self.interrupted:
            return "complete"
        return "failed" if attention == len(self.volumes) else "partial"

    def to_json(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "site": self.site,
            "dry_run": self.dry_run,
            "result": self.result,
            "interrupted": self.interrupted,
            "counts": self.counts,
            "duration_s": round(self.duration_s, 3),
            "volumes": [v.to_json() for v in self.volumes],
        }


# ---- planning ------------------------------------------------------------------------------
def plan_enable(volumes: Sequence[Volume], names: Sequence[str] = ()) -> list[Step]:
    """Every replicated volume (or those named), and every mirrored one whose type disagrees."""
    steps: list[Step] = []
    for volume, named in _select(volumes, names, steps):
        info, wanted = volume.mirroring, volume.mirror_mode

        def step(outcome: Outcome, reason: str, todo: bool = False, v: Volume = volume) -> Step:
            return Step(
                v.name,
                v.volume_type,
                v.mirror_mode,
                outcome,
                reason,
                todo,
                v.snapshot_interval if todo else None,
            )

        if volume.type_error:  # someone labelled it to type it: never skip it silently
            steps.append(step(Outcome.FAILED, volume.type_error))
        elif not volume.replicated:
            if info is not None:
                steps.append(
                    step(
                        Outcome.MISMATCH,
                        f"mirrored in {info.mode} mode, but its type "
                        f"{volume.volume_type!r} is not replicated",
                    )
                )
            elif named:
                steps.append(
                    step(
                        Outcome.MISMATCH,
                        f"its type {volume.volume_type!r} is not "
                        "replicated: change the rules or its rbdfail.volume_type",
                    )
                )
        elif info is None:
            steps.append(step(Outcome.ENABLED, f"enable in {wanted} mode", todo=True))
        elif info.mode != wanted:
            steps.append(
                step(
                    Outcome.MISMATCH,
                    f"mirrored in {info.mode} mode, its type asks for "
                    f"{wanted}: disable-mirroring, then enable-mirroring",
                )
            )
        elif volume.snapshot_interval and info.primary:
            steps.append(
                step(
                    Outcome.ALREADY_ENABLED,
                    f"already mirrored in {wanted} mode; ensure its snapshot schedule",
                    todo=True,
                )
            )
        else:
            steps.append(step(Outcome.ALREADY_ENABLED, f"already mirrored in {wanted} mode"))
    return steps


def plan_disable(volumes: Sequence[Volume], names: Sequence[str]) -> list[Step]:
    steps: list[Step] = []
    for volume, _ in _select(volumes, names, steps):
        info = volume.mirroring
        if info is None:
            outcome, reason, todo = Outcome.ALREADY_DISABLED, "not mirrored", False
        elif not info.primary:
            outcome, reason, todo = (
                Outcome.FAILED,
                "not primary on this site: disable mirroring where it is primary",
                False,
            )
        else:
            outcome, reason, todo = Outcome.DISABLED, f"disable {info.mode} mirroring", True
        steps.append(
            Step(
                volume.name, volume.volume_type, info.mode if info else None, outcome, reason, todo
            )
        )
    return steps


def _select(
    volumes: Sequence[Volume], names: Sequence[str], steps: list[Step]
) -> list[tuple[Volume, bool]]:
    """The volumes to consider, each with whether it was named; unknown names become failed
    steps right away."""
    if not names:
        return [(v, False) for v in volumes]
    by_name = {v.name: v for v in volumes}
    for name in dict.fromkeys(names):
        if name not in by_name:
            steps.append(Step(name, "", None, Outcome.FAILED, "image not found", False))
    return [(by_name[n], True) for n in dict.fromkeys(names) if n in by_name]


# ---- applying --------------------------------------------------------------------------------
def enable(
    cluster: Cluster,
    steps: Sequence[Step],
    concurrency: int,
    on_result: Callable[[VolumeResult], None] = lambda r: None,
) -> Report:
    return _apply("enable-mirroring", cluster, steps, concurrency, on_result, _enable_one)


def disable(
    cluster: Cluster,
    steps: Sequence[Step],
    concurrency: int,
    on_result: Callable[[VolumeResult], None] = lambda r: None,
) -> Report:
    return _apply("disable-mirroring", cluster, steps, concurrency, on_result, _disable_one)


def dry_run_report(operation: str, site: str, steps: Sequence[Step]) -> Report:
    return Report(operation, site, True, tuple(_known(s) for s in steps), 0.0)


def _apply(
    operation: str,
    cluster: Cluster,
    steps: Sequence[Step],
    concurrency: int,
    on_result: Callable[[VolumeResult], None],
    one: Callable[[Cluster, Step], tuple[tuple[Feature, ...], str]],
) -> Report:
    started = time.monotonic()

    def work(step: Step) -> VolumeResult:
        begun = time.monotonic()
        try:
            changed, detail = one(cluster, step)
        except CephError as exc:
            return VolumeResult(
                step.name,
                step.volume_type,
                step.mode,
                Outcome.FAILED,
                exc.reason,
                duration_s=time.monotonic() - begun,
            )
        return VolumeResult(
            step.name,
            step.volume_type,
            step.mode,
            step.outcome,
            detail,
            changed,
            time.monotonic() - begun,
        )

    todo = [s for s in steps if s.todo]
    finished = run_all(todo, work, concurrency, on_result)
    done = {r.name: r for r in finished.results if r is not None}
    results = []
    for step in steps:
        if step.todo and step.name not in done:
            results.append(
                VolumeResult(
                    step.name,
                    step.volume_type,
                    step.mode,
                    Outcome.NOT_STARTED,
                    "interrupted before its turn",
                )
            )
        else:
            results.append(done.get(step.name) or _known(step))
    return Report(
        operation,
        cluster.site,
        False,
        tuple(results),
        time.monotonic() - started,
        finished.interrupted,
    )


def _known(step: Step) -> VolumeResult:
    return VolumeResult(step.name, step.volume_type, step.mode, step.outcome, step.reason)


def _enable_one(cluster: Cluster, step: Step) -> tuple[tuple[Feature, ...], str]:
    assert step.mode is not None
    added: list[Feature] = []
    if step.outcome == Outcome.ENABLED:
        if step.mode == MirrorMode.JOURNAL:
            present = cluster.image_features(step.name)
            for feature in JOURNAL_FEATURES:
                if feature not in present:
                    cluster.update_features(step.name, [feature], True)
                    added.append(feature)
            if added:
                recorded = _recorded_features(cluster, step.name)
                cluster.set_metadata(
                    step.name, ADDED_FEATURES_KEY, ",".join(sorted({*recorded, *added}))
                )
        cluster.enable_mirroring(step.name, step.mode)
    if step.schedule:
        cluster.add_snapshot_schedule(step.name, step.schedule)
    detail = f"mirrored in {step.mode} mode" if step.outcome == Outcome.ENABLED else step.reason
    if added:
        detail += f"; added {', '.join(added)}"
    if step.schedule:
        detail += f"; snapshot every {step.schedule}"
    return tuple(added), detail


def _disable_one(cluster: Cluster, step: Step) -> tuple[tuple[Feature, ...], str]:
    if step.mode == MirrorMode.SNAPSHOT:
        for interval in cluster.snapshot_schedules(step.name):
            cluster.remove_snapshot_schedule(step.name, interval)
    cluster.disable_mirroring(step.name)
    # Only what rbdfail added and is still there (librbd drops journaling itself), newest first.
    present = cluster.image_features(step.name)
    recorded = _recorded_features(cluster, step.name)
    removed = tuple(f for f in reversed(JOURNAL_FEATURES) if f in recorded and f in present)
    for feature in removed:
        cluster.update_features(step.name, [feature], False)
    if recorded:
        cluster.remove_metadata(step.name, ADDED_FEATURES_KEY)
    detail = "mirroring disabled" + (f"; removed {', '.join(removed)}" if removed else "")
    return removed, detail


def _recorded_features(cluster: Cluster, name: str) -> set[Feature]:
    value = cluster.get_metadata(name, ADDED_FEATURES_KEY) or ""
    return {Feature(f) for f in value.split(",") if f in Feature._value2member_map_}
