"""Between disasters, on the real lab (issue 15): the RPO grows while no snapshot comes, the
mirror-snapshot schedule follows the primary through a failover and a failback (writes replicate
back with nobody taking a snapshot by hand), and a client still writing to a volume is named
before a failover demotes it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest
from click.testing import CliRunner

from rbdfail import ceph
from rbdfail.check import run_checks
from rbdfail.cli import main
from rbdfail.cluster import Cluster, MirrorMode, MirrorState
from rbdfail.config import load_config
from rbdfail.errors import ImageNotFound
from rbdfail.state import State
from rbdfail.status import StatusReport, gather
from tests.conftest import RunningLab
from tests.helpers import (
    CHUNK,
    check_exit,
    eventually,
    lab_config,
    mirrored_and_replaying,
    rbdfail,
    remove_everywhere,
)

pytestmark = pytest.mark.lab

MiB = 1 << 20
GiB = 1 << 30

# Ceph's shortest: its scheduler works in minutes, and rereads which images are primary
# every 60 s (rbd_support's REFRESH_DELAY_SECONDS): a newly promoted volume's first snapshot
# comes within about two minutes.
INTERVAL = "1m"
FIRST_SNAPSHOT_S = 240


@pytest.fixture
def lab_config_scheduled(lab: RunningLab, tmp_path: Path, image_name: str) -> Path:
    """The lab's config with a scheduled type for this test's images only."""
    scheduled = {"replication_enabled": "<is> True", "mirror_mode": "snapshot"}
    return lab_config(
        lab.lab.config_file,
        tmp_path,
        [
            {"match": f"{image_name}-s*", "type": "scheduled"},
            {"match": f"{image_name}-n*", "type": "replicated"},  # snapshot mode, no schedule
        ],
        types={"scheduled": scheduled | {"snapshot_interval": INTERVAL}},
    )


def volume_row(lab_config_scheduled: Path, name: str) -> dict[str, Any]:
    result = CliRunner().invoke(main, ["-c", str(lab_config_scheduled), "status", name, "--json"])
    [row] = json.loads(result.stdout)["volumes"]
    return dict(row)


def check(lab_config_scheduled: Path, *args: str) -> tuple[int, dict[str, dict[str, str]]]:
    result = CliRunner().invoke(
        main, ["-c", str(lab_config_scheduled), "check", "--to", "secondary", *args, "--json"]
    )
    items = {i["name"]: i for i in json.loads(result.stdout)["items"]}
    return result.exit_code, items


def test_rpo__a_copy_with_no_snapshot_coming_ages__check_max_rpo_fails_naming_it(
    lab_config_scheduled: Path, lab_sites: tuple[Cluster, Cluster], image_name: str
) -> None:
    """A stopped schedule read as 0 s lag for ever: the RPO counts from the primary's time of
    the newest snapshot the copy holds."""
    primary, secondary = lab_sites
    name = f"{image_name}-n1"
    try:
        mirrored_and_replaying(lab_config_scheduled, primary, secondary, [name])

        def known() -> dict[str, Any] | None:
            rpo = volume_row(lab_config_scheduled, name)["rpo"]
            return dict(rpo) if rpo["seconds"] is not None else None

        first = eventually(known, 60, interval=1)
        assert first is not None and first["bound"] == "at-most" and first["first_sync_done"]
        time.sleep(3)
        later = volume_row(lab_config_scheduled, name)["rpo"]
        assert later["seconds"] >= first["seconds"] + 2  # nothing new: it only grows
        assert later["last_sync"] == first["last_sync"]

        code, items = check(lab_config_scheduled, "--max-rpo", "1")
        assert code == 1 and items["RPO"]["verdict"] == "fail"
        assert name in items["RPO"]["reason"]
        code, items = check(lab_config_scheduled, "--max-lag", "3600")  # the old name still works
        assert items["RPO"]["verdict"] == "pass", items["RPO"]
    finally:
        remove_everywhere(lab_sites, [name])


def test_rpo__a_copy_in_its_first_sync_is_named_as_such__check_fails__then_known(
    lab: RunningLab, lab_config_scheduled: Path, lab_sites: tuple[Cluster, Cluster], image_name: str
) -> None:
    """Until a copy holds a whole snapshot it has nothing consistent to take over with; its
    status says nothing of it (measured: "status not found" through a 1 GiB first sync of
    about 5 s), so the copy's snapshot list tells."""
    primary, secondary = lab_sites
    name = f"{image_name}-n1"
    config = load_config(lab_config_scheduled)
    mirror = psutil.Process(lab.lab.sites()["secondary"].pids["rbd-mirror"])
    try:
        primary.create_image(name, GiB)
        chunk = os.urandom(4 * MiB)
        with ThreadPoolExecutor(8) as pool:  # data to copy: a first sync of seconds
            list(pool.map(lambda i: primary.write(name, i * 4 * MiB, chunk), range(256)))
        primary.enable_mirroring(name, MirrorMode.SNAPSHOT)

        def copy_made() -> bool:  # made and enabled: past rbd-mirror's CREATING
            info = secondary.mirror_info(name)
            return info.state == MirrorState.ENABLED and not info.primary

        eventually(copy_made, 60, (ImageNotFound,), interval=0.1)
        # Held mid-sync while it is looked at: once, in a full run, the sync ended before the
        # first status read that saw the copy (each opens its own connections).
        mirror.send_signal(signal.SIGSTOP)
        try:

            def copy_seen() -> StatusReport | None:
                report = gather(config, State(), ceph.connect, [name])
                return report if report.volumes[0].sites["secondary"].primary is False else None

            report = eventually(copy_seen, 60, (ImageNotFound,), interval=0.2)
        finally:
            mirror.send_signal(signal.SIGCONT)
        assert report is not None
        [volume] = report.volumes
        assert volume.rpo.first_sync and volume.rpo.seconds is None, volume.rpo
        assert "first sync not finished" in volume.rpo.how
        items = {i.name: i for i in run_checks(report, "secondary", 3600)}
        assert items["copies on secondary synced once"].verdict == "fail"
        assert name in items["copies on secondary synced once"].reason
        assert items["RPO"].verdict == "fail" and f"{name} unknown" in items["RPO"].reason

        def known() -> float | None:
            [done] = gather(config, State(), ceph.connect, [name]).volumes
            return done.rpo.seconds

        assert eventually(known, 120, interval=1) is not None
    finally:
        remove_everywhere(lab_sites, [name])


def test_schedule_follows_the_primary__writes_replicate_back_after_failover_and_failback(
    lab_config_scheduled: Path, lab_sites: tuple[Cluster, Cluster], image_name: str
) -> None:
    primary, secondary = lab_sites
    name = f"{image_name}-s1"
    try:
        mirrored_and_replaying(lab_config_scheduled, primary, secondary, [name])
        assert primary.pool_snapshot_schedules().get(name) == [INTERVAL]
        assert name not in secondary.pool_snapshot_schedules()

        code, report = rbdfail(lab_config_scheduled, "failover", "--to", "secondary", "--yes")
        [ours] = [v for v in report["volumes"] if v["name"] == name]
        check_exit(code, report, image_name)
        assert ours["action"] == "demoted+promoted"
        assert f"snapshot schedule {INTERVAL} added" in ours["detail"]
        assert secondary.pool_snapshot_schedules().get(name) == [INTERVAL]
        assert primary.pool_snapshot_schedules().get(name) == [INTERVAL]  # kept, inert

        # Written on the new primary; nobody takes a snapshot: only the schedule brings it.
        data = os.urandom(CHUNK)
        secondary.write(name, 2 * CHUNK, data)
        started = time.monotonic()
        eventually(
            lambda: primary.read(name, 2 * CHUNK, CHUNK) == data, FIRST_SNAPSHOT_S, interval=2
        )
        print(f"\nfailover: the write reached default's copy in {time.monotonic() - started:.0f}s")
        row = volume_row(lab_config_scheduled, name)
        assert row["schedule"] == {"interval": INTERVAL, "ok": True, "note": f"every {INTERVAL}"}

        code, report = rbdfail(lab_config_scheduled, "failback", "--yes")
        [ours] = [v for v in report["volumes"] if v["name"] == name]
        assert ours["action"] == "demoted+promoted", ours
        assert "schedule" not in ours["detail"]  # default had it all along

        data = os.urandom(CHUNK)
        primary.write(name, 3 * CHUNK, data)
        started = time.monotonic()
        eventually(
            lambda: secondary.read(name, 3 * CHUNK, CHUNK) == data, FIRST_SNAPSHOT_S, interval=2
        )
        print(
            f"failback: the write reached the secondary's copy in {time.monotonic() - started:.0f}s"
        )
    finally:
        remove_everywhere(lab_sites, [name])


def test_users__a_writer_is_named_in_status_check_and_plan__require_idle_leaves_it_primary(
    lab: RunningLab, lab_config_scheduled: Path, lab_sites: tuple[Cluster, Cluster], image_name: str
) -> None:
    primary, secondary = lab_sites
    name = f"{image_name}-n1"
    writer = None
    try:
        mirrored_and_replaying(lab_config_scheduled, primary, secondary, [name])
        assert (
            volume_row(lab_config_scheduled, name)["users"] == []
        )  # rbd-mirror's watch is not a user
        conf, pool = lab.config.backend.conf, lab.config.backend.pool
        writer = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import rados, rbd, sys\n"
                f"c = rados.Rados(conffile={str(conf)!r}, rados_id='cinder'); c.connect()\n"
                f"image = rbd.Image(c.open_ioctx({pool!r}), {name!r})\n"
                "image.write(b'x' * 4096, 0)\n"
                "print('writing', flush=True)\n"
                "sys.stdin.read()\n"
                "image.close(); c.shutdown()\n",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert writer.stdout is not None and writer.stdout.readline().strip() == "writing"

        [user] = volume_row(lab_config_scheduled, name)["users"]
        assert user["client"].startswith("client.") and user["holds_lock"] is True
        code, items = check(lab_config_scheduled)
        assert items["sources idle"]["verdict"] == "warn"
        assert f"{name} ({user['client']})" in items["sources idle"]["reason"]
        code, plan = rbdfail(lab_config_scheduled, "failover", "--to", "secondary", "--dry-run")
        [planned] = [v for v in plan["volumes"] if v["name"] == name]
        assert planned["users"] == [f"{user['client']} (holds its lock)"]

        code, report = rbdfail(
            lab_config_scheduled, "failover", "--to", "secondary", "--yes", "--require-idle"
        )
        [ours] = [v for v in report["volumes"] if v["name"] == name]
        assert code == 1 and ours["action"] == "failed"  # its only replicated volume
        assert f"still open on default by {user['client']}" in ours["error"]
        assert primary.mirror_info(name).primary and not secondary.mirror_info(name).primary
    finally:
        if writer is not None and writer.stdin is not None:
            writer.stdin.close()  # it closes the image: its watch and lock go with it
            writer.wait(30)
        remove_everywhere(lab_sites, [name])
