"""Failover on the real lab, through the command line: clean, and with the primary frozen.

Data is written before, and read back on the target after: a clean failover carries every
write (the demotion carries what was not mirrored yet); a forced one carries what had been
mirrored when the primary stopped answering.

No newest write lost (issue 13): a client holding a volume's exclusive lock (an explicit
lock_acquire) makes Ceph refuse the demote with EROFS at once, the image still primary, and the
failover must leave it there; a failover right after a failback finds the target's copy
demoted by the failback itself, which Ceph promotes without force before it has replayed the
peer (measured in both modes): in snapshot mode rbdfail waits for it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from rbdfail.cli import main
from rbdfail.cluster import Cluster, MirrorMode, MirrorSnapshotState, MirrorState
from rbdfail.errors import ImageNotFound
from tests.conftest import RunningLab
from tests.helpers import (
    MiB,
    check_exit,
    digest,
    eventually,
    mirrored_and_replaying,
    rbdfail,
    remove_everywhere,
    write_chunk,
)

pytestmark = pytest.mark.lab


@pytest.fixture
def sites(lab_sites: tuple[Cluster, Cluster]) -> tuple[Cluster, Cluster]:
    return lab_sites


def test_failover__clean__every_write_arrives_and_the_volumes_are_primary_on_the_target(
    lab_config_file: Path, sites: tuple[Cluster, Cluster], image_name: str
) -> None:
    primary, secondary = sites
    names = [f"{image_name}-s1", f"{image_name}-s2", f"{image_name}-j1"]
    plain = f"{image_name}-plain"
    primary.create_image(plain, MiB)
    try:
        mirrored_and_replaying(lab_config_file, primary, secondary, names)
        for name in names:
            write_chunk(primary, name, 1)  # after the last mirror snapshot: the demotion carries it
        before = {name: digest(primary, name) for name in names}

        code, report = rbdfail(lab_config_file, "failover", "--to", "secondary", "--yes")

        actions = check_exit(code, report, image_name)
        assert all(actions[n] == "demoted+promoted" for n in names), actions
        assert actions[plain] == "not-replicated"
        assert report["forced"] is False
        for name in names:
            assert secondary.mirror_info(name).primary
            assert not primary.mirror_info(name).primary
            assert digest(secondary, name) == before[name], name
        state = json.loads((lab_config_file.parent / "state" / "state.json").read_text())
        assert state["active_backend"] == "secondary"
        assert state["volumes"][plain] == {"status": "error", "previous_status": "available"}

        code, again = rbdfail(lab_config_file, "failover", "--to", "secondary", "--yes")
        actions = check_exit(code, again, image_name)
        assert {actions[n] for n in names} == {"already-primary"}
    finally:
        remove_everywhere(sites, [*names, plain])


def test_failover__primary_frozen__forced_with_what_was_mirrored_before_the_freeze(
    lab: RunningLab, lab_config_file: Path, sites: tuple[Cluster, Cluster], image_name: str
) -> None:
    primary, secondary = sites
    snap, journal = f"{image_name}-s1", f"{image_name}-j1"
    try:
        mirrored_and_replaying(lab_config_file, primary, secondary, [snap, journal])
        # Journal mode mirrors every write; snapshot mode only what a mirror snapshot took.
        write_chunk(primary, journal, 1)
        expected_journal = digest(primary, journal)
        eventually(lambda: digest(secondary, journal) == expected_journal, 60, interval=1)
        expected_snap = digest(primary, snap)  # as enabled: the initial snapshot's content
        write_chunk(primary, snap, 1)  # never mirrored: no snapshot after it

        frozen_at = time.time()
        lab.lab.freeze("primary")
        try:
            code, report = rbdfail(
                lab_config_file, "failover", "--to", "secondary", "--yes", "--connect-timeout", "3"
            )
        finally:
            lab.lab.thaw("primary")

        actions = check_exit(code, report, image_name)
        assert report["forced"] is True and report["primary_lost"]
        assert actions[snap] == actions[journal] == "force-promoted"
        # Each says the point its copy serves, read before the promote: the snapshot-mode
        # copy its initial snapshot, before the freeze (the journal copy's figure depends on
        # how fresh rbd-mirror's last report was: any honest bound).
        rpos = {v["name"]: v["rpo"] for v in report["volumes"] if v["name"] in (snap, journal)}
        print(f"\nforced, partition: {rpos}")
        assert rpos[snap]["last_sync"] is not None and rpos[snap]["last_sync"] <= frozen_at
        assert rpos[journal]["bound"] in ("at-most", "at-least", "unknown"), rpos
        assert secondary.mirror_info(snap).primary and secondary.mirror_info(journal).primary
        assert digest(secondary, journal) == expected_journal
        assert digest(secondary, snap) == expected_snap
    finally:
        remove_everywhere(sites, [snap, journal])


def test_failover__cli_dry_run_changes_nothing_and_a_lock_held_on_either_site_refuses(
    lab_config_file: Path, sites: tuple[Cluster, Cluster], image_name: str
) -> None:
    primary, secondary = sites
    name = f"{image_name}-s1"
    primary.create_image(name, MiB)
    primary.enable_mirroring(name, MirrorMode.SNAPSHOT)
    try:
        eventually(
            lambda: secondary.mirror_info(name).state == MirrorState.ENABLED,
            60,
            (ImageNotFound,),
            interval=1,
        )
        code, plan = rbdfail(lab_config_file, "failover", "--to", "secondary", "--dry-run")
        assert code == 0
        assert {v["name"]: v["plan"] for v in plan["volumes"]}[name] == "demote+promote"
        assert primary.mirror_info(name).primary

        # Held on the target by another failover, or on the source by a failback under way.
        for site, what in ((secondary, "failover to secondary"), (primary, "failback to default")):
            holder = json.dumps(
                {
                    "user": "bob",
                    "host": "elsewhere",
                    "pid": 1,
                    "since": "now",
                    "run": "r-x",
                    "what": what,
                }
            )
            site.lock("rbdfail.failover", "r-x", holder, 30)
            try:
                result = CliRunner().invoke(
                    main, ["-c", str(lab_config_file), "failover", "--to", "secondary", "--yes"]
                )
            finally:
                site.unlock("rbdfail.failover", "r-x")
            assert result.exit_code == 4  # someone else is running, not "the target is down"
            assert f"another failover is running: {what} by bob@elsewhere" in result.stderr
            assert primary.mirror_info(name).primary
        assert primary.mirror_info(name).primary
    finally:
        remove_everywhere(sites, [name])


# ---- no newest write lost (issue 13) ----------------------------------------------------
def test_demote_refused_by_a_client_holding_the_lock__failed_named_still_primary_not_forced(
    lab: RunningLab, lab_config_file: Path, sites: tuple[Cluster, Cluster], image_name: str
) -> None:
    primary, secondary = sites
    name = f"{image_name}-s1"
    holder = None
    try:
        mirrored_and_replaying(lab_config_file, primary, secondary, [name])
        conf, pool = lab.config.backend.conf, lab.config.backend.pool
        holder = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import rados, rbd, sys, time\n"
                f"c = rados.Rados(conffile={str(conf)!r}, rados_id='cinder'); c.connect()\n"
                f"image = rbd.Image(c.open_ioctx({pool!r}), {name!r})\n"
                "image.lock_acquire(rbd.RBD_LOCK_MODE_EXCLUSIVE)\n"
                "print('held', flush=True)\n"
                "time.sleep(300)\n",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"

        code, report = rbdfail(
            lab_config_file, "failover", "--to", "secondary", "--yes", "--force", "--timeout", "5"
        )

        ours = {v["name"]: v for v in report["volumes"] if v["name"] == name}
        # Its only replicated volume: nothing moved, exit 1.
        assert code == 1 and ours[name]["action"] == "failed", ours
        assert "refused" in ours[name]["error"] and "lock" in ours[name]["error"]
        assert primary.mirror_info(name).primary
        assert not secondary.mirror_info(name).primary
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
        remove_everywhere(sites, [name])


def test_failover_right_after_a_failback__snapshot_mode__no_write_in_between_is_lost(
    lab_config_file: Path, sites: tuple[Cluster, Cluster], image_name: str
) -> None:
    """Right after a failback, the secondary's copy is demoted by the failback itself and Ceph
    would promote it at once. rbdfail waits until it has replayed default's promotion; if
    default is demoted before that (both demoted: the secondary's rbd-mirror then never
    replays it, measured), the volume is rolled back to default. Either way the write made on
    default in between survives where the volume ends up primary."""
    primary, secondary = sites
    name = f"{image_name}-s1"

    def newest(cluster: Cluster) -> MirrorSnapshotState | None:
        last = cluster.last_mirror_snapshot(name)
        return None if last is None else last[0]

    try:
        mirrored_and_replaying(lab_config_file, primary, secondary, [name])
        code, report = rbdfail(lab_config_file, "failover", "--to", "secondary", "--yes")
        check_exit(code, report, image_name)
        # As an operator would check with `rbdfail status`: default replays the secondary.
        eventually(lambda: newest(primary) == MirrorSnapshotState.NON_PRIMARY, 120, interval=1)
        code, report = rbdfail(lab_config_file, "failback", "--yes")
        check_exit(code, report, image_name)
        # Usually still its own demotion here, which Ceph would promote at once; once (CI) the
        # copy had already replayed default's promotion. Either way the write must survive.
        print(f"\nsecondary's newest mirror snapshot after the failback: {newest(secondary)}")
        write_chunk(primary, name, 2)
        expected = digest(primary, name)

        code, report = rbdfail(lab_config_file, "failover", "--to", "secondary", "--yes")

        outcome = next(v for v in report["volumes"] if v["name"] == name)
        if outcome["action"] == "demoted+promoted":
            assert secondary.mirror_info(name).primary and not primary.mirror_info(name).primary
            assert digest(secondary, name) == expected
        else:
            assert outcome["action"] == "failed" and "rolled back" in outcome["error"], outcome
            assert primary.mirror_info(name).primary and not secondary.mirror_info(name).primary
            assert digest(primary, name) == expected
        print(f"\nfailover right after the failback: {outcome['action']} ({outcome['detail']})")
    finally:
        remove_everywhere(sites, [name])
