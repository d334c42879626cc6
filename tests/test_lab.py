"""The lab itself: real daemons, started and stopped exactly, frozen and thawed."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from rbdfail import ceph
from rbdfail.errors import LabError
from rbdfail.lab import DAEMONS, PORT_FLOOR, READ_LEASE_S, SITES, Lab, _free_ports
from tests.conftest import RunningLab

pytestmark = pytest.mark.lab


def processes_under(root: Path) -> list[int]:
    """Pids of live processes whose command line mentions root (zombies excluded)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(root) in cmdline and state != "Z":
            found.append(int(entry.name))
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


def test_lab__second_up_in_the_same_dir_is_refused(lab: RunningLab) -> None:
    with pytest.raises(LabError, match="already running") as caught:
        Lab(lab.lab.root).up()
    assert "rbdfail lab down" in str(caught.value)


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
    cluster = ceph.connect(lab.config.backend, 5)
    try:
        cluster.mirror_infos()  # the pool's directory and every image's header: many PGs
        cluster.list_images()
    finally:
        cluster.close()


def test_lab__freeze_of_an_unknown_site_names_the_known_ones(lab: RunningLab) -> None:
    with pytest.raises(LabError, match="primary, secondary"):
        lab.lab.freeze("tertiary")


def test_lab__down_of_a_dir_without_lab_is_a_no_op(tmp_path: Path) -> None:
    assert Lab(tmp_path / "none").down() == []


def test_lab__up_without_ceph_binaries_names_the_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no ceph-mon, rbd, ... on this PATH
    with pytest.raises(LabError) as caught:
        Lab(tmp_path / "lab").up()
    assert "apt-get install ceph-base ceph-common ceph-mgr ceph-mon ceph-osd rbd-mirror" in str(
        caught.value
    )
    assert os.listdir(tmp_path) == []  # nothing was created


def test_lab__monitor_ports_are_distinct_and_outside_the_ephemeral_range() -> None:
    # Ports from the ephemeral range can be taken, between choosing and binding, as the
    # source port of any outgoing connection (a running lab makes many): the monitor dies.
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = _free_ports(4)
    assert len(set(ports)) == 4
    assert all(PORT_FLOOR <= p < low for p in ports)
