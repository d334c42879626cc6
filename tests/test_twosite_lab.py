"""The lab itself: real daemons, started and stopped exactly, frozen and thawed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from rbdfail.cluster import Cluster
from rbdfail.errors import LabError
from rbdfail.lab.disasters import DAEMONS
from rbdfail.lab.twosite import (
    READ_LEASE_S,
    SITES,
    DaemonStatus,
    Lab,
)
from tests.conftest import RunningLab
from tests.helpers import mirrored_and_replaying, remove_everywhere


def processes_under(root: Path) -> list[int]:
    """Pids of live processes whose output goes to a file under root: every lab daemon's does.

    By their open stdout, not their command line, which now and then reads empty for a live
    daemon."""
    found = []
    for proc in psutil.process_iter():
        try:
            stdout = os.readlink(f"/proc/{proc.pid}/fd/1")
            if stdout.startswith(f"{root}/") and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
        except (OSError, psutil.NoSuchProcess):
            continue
    return found


def test_lab__every_daemon_of_both_sites_runs(lab: RunningLab) -> None:
    daemons = lab.lab.status()
    assert {(d.site, d.daemon) for d in daemons} == {(s, d) for s in SITES for d in DAEMONS}
    assert all(d.running and not d.frozen for d in daemons)


def test_lab__rbdfail_connects_as_a_restricted_user_not_admin(lab: RunningLab) -> None:
    assert lab.config.backend.user == "cinder"
    caps = subprocess.run(
        ["ceph", "-c", str(lab.config.backend.conf), "auth", "get", "client.cinder"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert 'caps mon = "profile rbd"' in caps
    assert "allow *" not in caps


def test_lab__the_osd_does_not_quit_after_being_marked_down_by_many_thaws(
    lab: RunningLab,
) -> None:
    """Ceph's default (5 in 10 minutes) stopped a lab's OSD at the 6th long freeze and thaw."""
    for site in lab.lab.sites().values():
        asok = Path(site.dir) / "run" / "osd.0.asok"
        shown = subprocess.run(
            ["ceph", "--admin-daemon", str(asok), "config", "get", "osd_max_markdown_count"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert json.loads(shown.stdout) == {"osd_max_markdown_count": "1000"}


def test_lab__second_up_in_the_same_dir_is_refused(lab: RunningLab) -> None:
    with pytest.raises(LabError, match="already running") as caught:
        Lab(lab.lab.root).up()
    assert "rbdfail lab down" in (caught.value.hint or "")


def test_lab__runs_beside_another_and_down_leaves_nothing_even_when_frozen(
    lab: RunningLab, tmp_path: Path
) -> None:
    second = Lab(tmp_path / "second")
    second.up()
    try:
        ports = {s.mon_ports for s in second.sites().values()}
        assert ports.isdisjoint({s.mon_ports for s in lab.lab.sites().values()})
        assert len(processes_under(second.root)) == len(SITES) * len(DAEMONS)
        second.freeze("primary")
        assert {d.frozen for d in second.status() if d.site == "primary"} == {True}
    finally:
        second.down()
    assert processes_under(second.root) == []
    assert not second.root.exists()
    assert all(d.running for d in lab.lab.status()), "the other lab must be untouched"


def test_lab__a_site_thawed_after_a_freeze_longer_than_the_read_lease_serves_at_once(
    lab: RunningLab,
) -> None:
    """Without the re-peering in thaw, reads of some PGs hung for minutes (2 runs in 3)."""
    lab.lab.freeze("primary")
    try:
        time.sleep(READ_LEASE_S + 8)  # past the 16 s lease
    finally:
        lab.lab.thaw("primary")
    from rbdfail import ceph  # the bindings: this module's other tests collect without them

    cluster = ceph.connect(lab.config.backend, 5)
    try:
        cluster.mirror_infos()  # the pool's directory and every image's header: many PGs
        cluster.list_images()
    finally:
        cluster.close()


def test_lab__freeze_of_an_unknown_site_names_the_known_ones(lab: RunningLab) -> None:
    with pytest.raises(LabError, match="primary, secondary"):
        lab.lab.freeze("tertiary")


def test_lab__restart_mirror__a_new_daemon_replays_the_copies_made_after_it(
    lab: RunningLab, lab_config_file: Path, lab_sites: tuple[Cluster, Cluster], image_name: str
) -> None:
    """What an operator does when `check` says a site's rbd-mirror did not come back."""

    def daemon() -> DaemonStatus:
        return next(
            d for d in lab.lab.status() if (d.site, d.daemon) == ("secondary", "rbd-mirror")
        )

    before = daemon()
    argv = [sys.executable, "-m", "rbdfail", "lab", "restart-mirror", "--dir", str(lab.lab.root)]
    shown = subprocess.run([*argv, "secondary"], capture_output=True, text=True, check=True)
    assert "secondary's rbd-mirror restarted" in shown.stdout
    after = daemon()
    assert after.running and after.pid != before.pid
    assert (
        not psutil.pid_exists(before.pid)
        or psutil.Process(before.pid).status() == psutil.STATUS_ZOMBIE
    )
    name = f"{image_name}-s0"
    try:
        mirrored_and_replaying(lab_config_file, *lab_sites, [name])
    finally:
        remove_everywhere(lab_sites, [name])
