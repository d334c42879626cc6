"""The lab's own rules that need no Ceph: ports, process identity, missing packages."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from rbdfail.errors import LabError
from rbdfail.lab.twosite import (
    PORT_FLOOR,
    Lab,
    SiteState,
    _free_ports,
    _running,
    _stop,
    _wait_exited,
)


def test_lab__down_of_a_dir_without_lab_is_a_no_op(tmp_path: Path) -> None:
    assert Lab(tmp_path / "none").down() == []


def test_lab__up_without_ceph_binaries_names_the_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no ceph-mon, rbd, ... on this PATH
    with pytest.raises(LabError) as caught:
        Lab(tmp_path / "lab").up()
    assert "apt-get install ceph-base ceph-common ceph-mgr ceph-mon ceph-osd rbd-mirror" in (
        caught.value.hint or ""
    )
    assert os.listdir(tmp_path) == []  # nothing was created


def test_lab__monitor_ports_are_distinct_and_outside_the_ephemeral_range() -> None:
    # Ports from the ephemeral range can be taken, between choosing and binding, as the
    # source port of any outgoing connection (a running lab makes many): the monitor dies.
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = _free_ports(4)
    assert len(set(ports)) == 4
    assert all(PORT_FLOOR <= p < low for p in ports)


def test_lab__a_daemon_is_known_by_pid_and_start_time(tmp_path: Path) -> None:
    """Not by command line: a live daemon's reads empty now and then (once an OSD starting up
    was taken for dead, and the lab refused to start)."""
    child = subprocess.Popen(["sleep", "60"])
    site = SiteState(
        "primary",
        str(tmp_path),
        "fsid",
        (1, 2),
        pids={"mon": child.pid},
        started={"mon": psutil.Process(child.pid).create_time()},
    )
    try:
        assert _running(site, "mon") is not None
        reused = SiteState(**{**vars(site), "started": {"mon": site.started["mon"] - 1}})
        assert _running(reused, "mon") is None, "the same pid started at another time is not it"
    finally:
        child.kill()
    while psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE:
        time.sleep(0.01)
    assert _running(site, "mon") is None, "a zombie has exited"
    child.wait()
    assert _running(site, "mon") is None


def test_lab__a_daemon_that_exits_while_starting_is_named_with_its_last_words(
    tmp_path: Path,
) -> None:
    lab = Lab(tmp_path)
    site = SiteState("secondary", str(tmp_path / "secondary"), "fsid", (1, 2))
    (tmp_path / "secondary" / "log").mkdir(parents=True)
    lab._save({site.name: site})
    lab._spawn(site, "osd", ["sh", "-c", "echo 'osd init failed: (98) Address in use' >&2"])
    with pytest.raises(LabError) as caught:
        lab._wait(site, "OSD", lambda: False)
    assert "secondary: osd exited while waiting for the OSD" in str(caught.value)
    assert "osd init failed: (98) Address in use" in str(caught.value)


def test_lab__restart_mirror_of_a_failed_site_is_refused_and_says_to_recover_it(
    tmp_path: Path,
) -> None:
    lab = Lab(tmp_path)
    lab._save(
        {"primary": SiteState("primary", str(tmp_path), "fsid", (1, 2), disaster="partition")}
    )
    with pytest.raises(LabError, match="'primary' is partition") as caught:
        lab.restart_rbd_mirror("primary")
    assert "rbdfail lab recover primary" in (caught.value.hint or "")


def test_lab__stopping_a_daemon_another_process_started_and_does_not_reap__returns() -> None:
    """Its zombie stays until that process reaps it: a `lab restart-mirror` run from a test
    whose session started the lab waited on it for ever."""
    # sh starts a child that exits at once, then becomes `sleep`, which never reaps it.
    parent = subprocess.Popen(
        ["sh", "-c", "sleep 0 & echo $!; exec sleep 60"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        orphan = psutil.Process(int(parent.stdout.readline()))
        while orphan.status() != psutil.STATUS_ZOMBIE:
            time.sleep(0.01)
        assert _wait_exited([orphan], 0) == []
        _stop([orphan])
        assert orphan.status() == psutil.STATUS_ZOMBIE, "still its parent's to reap"
    finally:
        parent.kill()
        parent.wait()
