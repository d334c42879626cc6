"""A real two-site Ceph on this machine, for trying rbdfail, drills and tests.

Each site is a monitor, a manager, one memstore OSD and an rbd-mirror daemon from Debian's
packages, all on 127.0.0.1 with ports chosen free at start, every file under the site's own
folder. The two sites' `volumes` pools (and its namespace `volumes/tenants`) and their `fast`
pools mirror in `image` mode and are peered both ways. `up` writes two configurations: one
backend on `volumes` (rbdfail.yaml), and two backends, `ceph` on `volumes` and `fast` on
`fast` (rbdfail-two-pools.yaml).

A site can be failed in the shapes operators meet (`Disaster`): partitioned (every daemon
stopped with SIGSTOP: calls hang rather than get refused), its storage dead while its rbd-mirror
still runs and still reaches the peer, its daemons killed (connections refused), or slow (its
OSD stopped most of the time). `recover` brings a failed site back, except a killed one.
Everything the lab started is recorded in `lab.json` by pid and start time (together, a
process's identity: a pid alone can be reused), and `down` stops exactly those processes.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from rbdfail.errors import LabError
from rbdfail.lab.disasters import Disaster

SITES = ("primary", "secondary")
SITE_ALIASES = {"default": "primary"}  # the backend's Cinder id names the primary site too
POOL = "volumes"
# An RBD namespace of the pool, mirrored like the pool, for configs that name one.
NAMESPACE = "tenants"
# A second pool, mirrored like the first, for configs of two backends (one per pool).
FAST_POOL = "fast"
POOLS = (POOL, FAST_POOL)
# In the two-backend configuration: each backend's name (its cinder.conf section) and pool.
TWO_POOL_BACKENDS = {"ceph": POOL, "fast": FAST_POOL}
USER = "cinder"

# The binaries the lab runs, and the Debian package that ships each.
REQUIRED_BINARIES = {
    "ceph-mon": "ceph-mon",
    "ceph-mgr": "ceph-mgr",
    "ceph-osd": "ceph-osd",
    "rbd-mirror": "rbd-mirror",
    "monmaptool": "ceph-base",
    "ceph": "ceph-common",
    "ceph-authtool": "ceph-common",
    "rbd": "ceph-common",
    "rados": "ceph-common",
}

CLI_TIMEOUT = 60  # seconds for one ceph/rbd command while the lab is set up
READY_TIMEOUT = 120  # seconds for a daemon or the mirroring to come up
READ_LEASE_S = 10  # a freeze longer than this may leave PGs laggy (the lease is 16 s)
# Monitor ports are drawn from here up to the ephemeral range; OSDs and mgrs bind 6800-7568.
PORT_FLOOR = 10000

Progress = Callable[[str], None]


# SLOW: the OSD is stopped this long, then runs this long, over and over.
SLOW_STOPPED_S, SLOW_RUNNING_S = 0.3, 0.1


def default_lab_dir() -> Path:
    """$RBDFAIL_LAB_DIR, else the XDG state dir (~/.local/state/rbdfail/lab)."""
    if explicit := os.environ.get("RBDFAIL_LAB_DIR"):
        return Path(explicit)
    state_home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state_home) / "rbdfail" / "lab"


def missing_packages() -> list[str]:
    """The Debian packages whose binaries the lab needs and cannot find."""
    return sorted({pkg for binary, pkg in REQUIRED_BINARIES.items() if not shutil.which(binary)})


@dataclass
class SiteState:
    """What the lab knows of one site; saved in lab.json."""

    name: str
    dir: str
    fsid: str
    mon_ports: tuple[int, int]  # msgr2, msgr1
    pids: dict[str, int] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)  # each daemon's process start time
    frozen: bool = False  # some of its daemons are stopped (a disaster other than KILLED)
    frozen_at: float = 0.0  # time.time() of the last freeze
    disaster: str = ""  # the Disaster it is in, "" when healthy

    @property
    def conf(self) -> Path:
        return Path(self.dir) / "ceph.conf"

    @property
    def mon_host(self) -> str:
        v2, v1 = self.mon_ports
        return f"[v2:127.0.0.1:{v2},v1:127.0.0.1:{v1}]"


@dataclass(frozen=True)
class DaemonStatus:
    site: str
    daemon: str
    pid: int
    running: bool
    frozen: bool


class Lab:
    """The lab in one folder: `up`, `down`, `freeze`, `thaw`, `status`."""

    def __init__(self, root: Path, progress: Progress | None = None) -> None:
        self.root = root.absolute()
        self._progress = progress or (lambda message: None)

    @property
    def state_file(self) -> Path:
        return self.root / "lab.json"

    @property
    def config_file(self) -> Path:
        """One backend, on the `volumes` pool."""
        return self.root / "rbdfail.yaml"

    @property
    def two_pools_config_file(self) -> Path:
        """Two backends: `ceph` on the `volumes` pool, `fast` on the `fast` pool."""
        return self.root / "rbdfail-two-pools.yaml"

    # ---- state ------------------------------------------------------------------------
    def sites(self) -> dict[str, SiteState]:
        """The recorded sites; empty when the lab was never started here."""
        try:
            raw = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise LabError(
                f"cannot read the lab state {self.state_file}: {exc}",
                hint=f"stop stray daemons by hand and remove {self.root}",
            ) from exc
        return {
            name: SiteState(**{**site, "mon_ports": tuple(site["mon_ports"])})
            for name, site in raw["sites"].items()
        }

    def _save(self, sites: dict[str, SiteState]) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"sites": {n: asdict(s) for n, s in sites.items()}}, indent=2))
        tmp.replace(self.state_file)

    def status(self) -> list[DaemonStatus]:
        return [
            DaemonStatus(
                site.name,
                daemon,
                pid,
                _running(site, daemon) is not None,
                bool(site.disaster) and daemon in Disaster(site.disaster).stopped,
            )
            for site in self.sites().values()
            for daemon, pid in site.pids.items()
        ]

    def is_running(self) -> bool:
        return any(d.running for d in self.status())

    # ---- up ---------------------------------------------------------------------------
    def up(self) -> Path:
        """Start both sites, peer them, check that mirroring flows; return the rbdfail.yaml."""
        if missing := missing_packages():
            raise LabError(
                "the lab needs Ceph's daemons, which are not installed",
                hint=f"apt-get install {' '.join(missing)} (or run `make test`/`make demo`)",
            )
        if self.is_running():
            raise LabError(
                f"a lab is already running in {self.root}",
                hint=f"use it, or stop it first with `rbdfail lab down --dir {self.root}`",
            )
        if self.root.exists():
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True)
        ports = _free_ports(2 * len(SITES))
        sites = {
            name: SiteState(
                name=name,
                dir=str(self.root / name),
                fsid=str(uuid.uuid4()),
                mon_ports=(ports[2 * i], ports[2 * i + 1]),
            )
            for i, name in enumerate(SITES)
        }
        self._save(sites)
        started = time.monotonic()
        try:
            with ThreadPoolExecutor(len(sites)) as pool:
                list(pool.map(self._bootstrap_site, sites.values()))
            self._peer(sites["primary"], sites["secondary"])
            with ThreadPoolExecutor(len(sites)) as pool:
                list(pool.map(self._start_rbd_mirror, sites.values()))
            self._check_mirroring(sites)
        except BaseException:
            self._progress("start-up failed; stopping what was started")
            self.down(keep=True)
            raise
        self._write_config(sites)
        self._progress(f"lab up in {time.monotonic() - started:.0f}s")
        return self.config_file

    def _bootstrap_site(self, site: SiteState) -> None:
        base = Path(site.dir)
        for sub in ("run", "log", "mon", "mgr", "osd"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        site.conf.write_text(_ceph_conf(site))
        say = self._progress
        say(f"{site.name}: monitor on {site.mon_host}")
        mon_keyring = base / "mon.keyring"
        admin_keyring = base / "ceph.client.admin.keyring"
        _run(
            [
                "ceph-authtool",
                "--create-keyring",
                mon_keyring,
                "--gen-key",
                "-n",
                "mon.",
                "--cap",
                "mon",
                "allow *",
            ]
        )
        _run(
            [
                "ceph-authtool",
                "--create-keyring",
                admin_keyring,
                "--gen-key",
                "-n",
                "client.admin",
                "--cap",
                "mon",
                "allow *",
                "--cap",
                "osd",
                "allow *",
                "--cap",
                "mgr",
                "allow *",
                "--cap",
                "mds",
                "allow *",
            ]
        )
        _run(["ceph-authtool", mon_keyring, "--import-keyring", admin_keyring])
        _run(
            [
                "monmaptool",
                "--create",
                "--fsid",
                site.fsid,
                "--addv",
                "a",
                site.mon_host,
                base / "monmap",
            ]
        )
        _run(
            [
                "ceph-mon",
                "-c",
                site.conf,
                "--mkfs",
                "-i",
                "a",
                "--monmap",
                base / "monmap",
                "--keyring",
                mon_keyring,
            ]
        )
        self._spawn(site, "mon", ["ceph-mon", "-c", site.conf, "-i", "a", "-f"])
        self._wait(site, "monitor", lambda: _ceph(site, "mon", "stat") is not None)

        say(f"{site.name}: manager and OSD")
        _ceph(
            site,
            "auth",
            "get-or-create",
            "mgr.x",
            "mon",
            "allow profile mgr",
            "osd",
            "allow *",
            "mds",
            "allow *",
            "-o",
            str(base / "ceph.mgr.x.keyring"),
            check=True,
        )
        self._spawn(site, "mgr", ["ceph-mgr", "-c", site.conf, "-i", "x", "-f"])
        osd_uuid = str(uuid.uuid4())
        osd_id = (_ceph(site, "osd", "new", osd_uuid, check=True) or "").strip()
        # --osd-uuid must be the uuid given to `osd new`, or the monitor refuses the OSD's boot.
        _run(
            [
                "ceph-osd",
                "-c",
                site.conf,
                "-i",
                osd_id,
                "--mkfs",
                "--mkkey",
                "--no-mon-config",
                "--osd-uuid",
                osd_uuid,
            ]
        )
        _ceph(
            site,
            "auth",
            "add",
            f"osd.{osd_id}",
            "osd",
            "allow *",
            "mon",
            "allow profile osd",
            "mgr",
            "allow profile osd",
            "-i",
            str(base / f"ceph.osd.{osd_id}.keyring"),
            check=True,
        )
        self._spawn(site, "osd", ["ceph-osd", "-c", site.conf, "-i", osd_id, "-f"])
        self._wait(site, "OSD", lambda: _osds_up(site) >= 1)

        pools = ", ".join(repr(pool) for pool in POOLS)
        say(f"{site.name}: pools {pools}, users client.{USER} and client.rbd-mirror.{site.name}")

        def create(pool: str) -> None:
            _ceph(site, "osd", "pool", "create", pool, "8", "8", check=True)
            _rbd(site, "pool", "init", pool)

        # Both pools at once: a create takes a monitor round (about 1 s here), `pool init`
        # waits about 3 s for the new PGs, and the second pool's wait overlaps the first's.
        with ThreadPoolExecutor(len(POOLS)) as threads:
            list(threads.map(create, POOLS))
        _rbd(site, "namespace", "create", f"{POOL}/{NAMESPACE}")
        rbd_pools = ", ".join(f"profile rbd pool={pool}" for pool in POOLS)
        _ceph(
            site,
            "auth",
            "get-or-create",
            f"client.{USER}",
            "mon",
            "profile rbd",
            "osd",
            rbd_pools,
            "mgr",
            rbd_pools,
            "-o",
            str(base / f"ceph.client.{USER}.keyring"),
            check=True,
        )
        _ceph(
            site,
            "auth",
            "get-or-create",
            f"client.rbd-mirror.{site.name}",
            "mon",
            "profile rbd-mirror",
            "osd",
            "profile rbd",
            "-o",
            str(base / f"ceph.client.rbd-mirror.{site.name}.keyring"),
            check=True,
        )

    def _peer(self, a: SiteState, b: SiteState) -> None:
        """Image mode and peering through `rbdfail setup`'s own code, as admin."""
        from rbdfail import ceph, pools
        from rbdfail.config import SiteConfig

        self._progress(f"rbdfail setup: image mode, peering {a.name} <-> {b.name}")
        items = []
        # Each pool, and after `volumes` its namespace (whose peers are the pool's).
        for pool, namespace in ((POOL, ""), (POOL, NAMESPACE), (FAST_POOL, "")):
            sites = [
                SiteConfig(
                    backend_id=backend_id,
                    conf=site.conf,
                    user="admin",
                    pool=pool,
                    namespace=namespace,
                )
                for backend_id, site in (("default", a), ("secondary", b))
            ]
            backend, device = ceph.connect_all(sites, 10)
            try:
                items += pools.prepare(backend, [device])
            finally:
                backend.close()
                device.close()
        if failed := [i for i in items if i.action == "failed"]:
            raise LabError("; ".join(f"{i.site}: {i.item}: {i.detail}" for i in failed))

    def _start_rbd_mirror(self, site: SiteState) -> None:
        # rbd-mirror ignores -c for its local cluster connection: it needs CEPH_CONF (the -c
        # is there so that its command line names the site, as the other daemons' do).
        self._spawn(
            site,
            "rbd-mirror",
            ["rbd-mirror", "-c", site.conf, "-f", "--id", f"rbd-mirror.{site.name}"],
            env={**os.environ, "CEPH_CONF": str(site.conf)},
        )

    def _check_mirroring(self, sites: dict[str, SiteState]) -> None:
        """Mirror one probe image each way in each pool and wait until each shows up on the
        other site (the probes made and removed at once: each `rbd` call takes about 1 s)."""
        self._progress(f"checking that images mirror both ways in {', '.join(POOLS)}")
        pairs = [(sites["primary"], sites["secondary"]), (sites["secondary"], sites["primary"])]
        probes = [
            (source, target, f"{pool}/lab-probe-{source.name}")
            for source, target in pairs
            for pool in POOLS
        ]

        def create(source: SiteState, spec: str) -> None:
            _rbd(source, "create", spec, "--size", "4M")
            _rbd(source, "mirror", "image", "enable", spec, "snapshot")

        with ThreadPoolExecutor(len(probes)) as threads:
            list(threads.map(lambda probe: create(probe[0], probe[2]), probes))
        for _, target, spec in probes:
            pool, _, probe = spec.partition("/")

            def arrived(target: SiteState = target, pool: str = pool, probe: str = probe) -> bool:
                return probe in _rbd(target, "ls", pool).split()

            self._wait(target, f"mirrored image {spec}", arrived)
        with ThreadPoolExecutor(len(probes)) as threads:
            list(threads.map(lambda probe: _rbd(probe[0], "rm", "--no-progress", probe[2]), probes))

    def _write_config(self, sites: dict[str, SiteState]) -> None:
        primary, secondary = sites["primary"], sites["secondary"]
        self.config_file.write_text(
            f"""\
# rbdfail configuration for the lab in {self.root} (written by `rbdfail lab up`).
backend:
  name: lab
  conf: {primary.conf}
  user: {USER}
  pool: {POOL}
replication_device:
  - backend_id: secondary
    conf: {secondary.conf}
    user: {USER}
{_shared_settings(self.root / "state")}"""
        )
        backends = "".join(
            f"""\
  {name}:
    conf: {primary.conf}
    user: {USER}
    pool: {pool}
    replication_device:
      - backend_id: secondary
        conf: {secondary.conf}
        user: {USER}
"""
            for name, pool in TWO_POOL_BACKENDS.items()
        )
        # A state dir of its own: a state.json of several backends is not one rbdfail.yaml
        # can read (it would refuse it), and the lab's two files must not get in each other's way.
        self.two_pools_config_file.write_text(
            f"""\
# rbdfail configuration of two backends for the lab in {self.root}, one per mirrored pool
# (written by `rbdfail lab up`; rbdfail.yaml beside it is the one-backend file).
backends:
{backends}{_shared_settings(self.root / "state-two-pools")}"""
        )

    # ---- processes --------------------------------------------------------------------
    def _spawn(
        self,
        site: SiteState,
        daemon: str,
        argv: list[str | Path],
        env: dict[str, str] | None = None,
    ) -> None:
        log = open(Path(site.dir) / "log" / f"{daemon}.out", "ab")  # noqa: SIM115 - child owns it
        with log:
            proc = subprocess.Popen(
                [str(a) for a in argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # a Ctrl-C in the terminal must not reach the daemons
            )
        # Until it is reaped (proc is still referenced) the child's start time stays readable.
        started = psutil.Process(proc.pid).create_time()
        with self._locked_state() as sites:
            sites[site.name].pids[daemon] = proc.pid
            sites[site.name].started[daemon] = started
        site.pids[daemon] = proc.pid
        site.started[daemon] = started

    @contextmanager
    def _locked_state(self) -> Iterator[dict[str, SiteState]]:
        # Both sites start in parallel threads; lab.json is rewritten whole each time.
        with _STATE_LOCK:
            sites = self.sites()
            yield sites
            self._save(sites)

    def _wait(self, site: SiteState, what: str, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            dead = [d for d in site.pids if _running(site, d) is None]
            if dead:
                last_words = "".join(
                    f"\n{d}.out, last lines:\n{_tail(Path(site.dir) / 'log' / f'{d}.out')}"
                    for d in dead
                )
                raise LabError(
                    f"{site.name}: {', '.join(dead)} exited while waiting for the {what}"
                    + last_words,
                    hint=f"see the logs in {Path(site.dir) / 'log'}",
                )
            if ready():
                return
            time.sleep(0.5)
        raise LabError(
            f"{site.name}: the {what} was not ready after {READY_TIMEOUT}s",
            hint=f"see the logs in {Path(site.dir) / 'log'}",
        )

    # ---- down, freeze, thaw -------------------------------------------------------------
    def down(self, keep: bool = False) -> list[DaemonStatus]:
        """Stop every daemon the lab started (by pid, only if it is still ours)."""
        running = [
            (DaemonStatus(site.name, daemon, proc.pid, False, False), proc)
            for site in self.sites().values()
            for daemon in site.pids
            if (proc := _running(site, daemon))
        ]
        self._progress(f"stopping {len(running)} daemon(s)")
        _stop([proc for _, proc in running])
        stopped = [status for status, _ in running]
        if not keep and self.root.exists():
            shutil.rmtree(self.root)
        elif self.state_file.exists():
            with self._locked_state() as sites:
                for site in sites.values():
                    site.pids.clear()
                    site.frozen, site.disaster = False, ""
        return stopped

    def freeze(self, site_name: str) -> None:
        """Make a site hang like a partitioned one: SIGSTOP on all its daemons."""
        self.fail(site_name, Disaster.PARTITION)

    def thaw(self, site_name: str) -> None:
        """Bring a failed site back (`recover`)."""
        self.recover(site_name)

    def fail(self, site_name: str, disaster: Disaster) -> None:
        """Put a healthy site in `disaster`."""
        with self._locked_state() as sites:
            site = self._healthy_site(sites, site_name)
            running = {d: proc for d in site.pids if (proc := _running(site, d))}
            if not running:
                raise LabError(
                    f"site {site.name!r} has no running daemons",
                    hint=f"start the lab with `rbdfail lab up --dir {self.root}`",
                )
            victims = [proc for daemon, proc in running.items() if daemon in disaster.stopped]
            for proc in victims:
                proc.send_signal(signal.SIGKILL if disaster == Disaster.KILLED else signal.SIGSTOP)
            if disaster == Disaster.KILLED:
                psutil.wait_procs(victims, timeout=5)
            site.disaster = disaster
            site.frozen = disaster in (Disaster.PARTITION, Disaster.STORAGE_DEAD)
            site.frozen_at = time.time()
        if disaster == Disaster.SLOW:
            osd = running["osd"].pid
            # A shell loop, recorded like a daemon: `recover` and `down` stop it (and SIGCONT
            # the OSD, which it may leave stopped).
            loop = (
                f"while kill -STOP {osd} && sleep {SLOW_STOPPED_S} && kill -CONT {osd} "
                f"&& sleep {SLOW_RUNNING_S}; do :; done"
            )
            self._spawn(site, "slow-osd", ["sh", "-c", loop])

    def recover(self, site_name: str) -> None:
        """Bring a failed site back: SIGCONT, and after a long stop make sure it serves reads.

        Measured on the lab: after a freeze longer than the PGs' read lease (16 s by default),
        some of the lone OSD's PGs can stay `active+clean+laggy` and hold every read for
        minutes (a one-replica PG has no peer to renew its read lease; ceph/ceph-container#1682).
        A real partition heals with the OSD marked down and re-peered: do the same.
        """
        with self._locked_state() as sites:
            site = self._site(sites, site_name)
            if site.disaster == Disaster.KILLED:
                raise LabError(
                    f"site {site.name!r} was killed: its OSD kept its data in memory, so it "
                    "cannot come back",
                    hint=f"start a new lab: `rbdfail lab down --dir {self.root}`, then `lab up`",
                )
            if "slow-osd" in site.pids and (throttle := _running(site, "slow-osd")):
                _stop([throttle])
            site.pids.pop("slow-osd", None)
            site.started.pop("slow-osd", None)
            for daemon in site.pids:
                if proc := _running(site, daemon):
                    proc.send_signal(signal.SIGCONT)
            stopped_for = time.time() - site.frozen_at if site.disaster else 0.0
            long_stop = site.disaster != Disaster.SLOW and stopped_for > READ_LEASE_S
            site.disaster, site.frozen = "", False
        if long_stop:
            self._progress(f"{site.name}: re-peering its OSD after a {stopped_for:.0f}s stop")
            _ceph(site, "osd", "down", "0", check=True)
            self._wait(site, "pool to answer reads again after the thaw", lambda: _serves(site))

    def restart_rbd_mirror(self, site_name: str) -> None:
        """Stop a site's rbd-mirror and start a new one, as an operator does when `check` says
        the daemon did not come back after a forced failover took it out."""
        with self._locked_state() as sites:
            site = self._healthy_site(sites, site_name)
            daemon = _running(site, "rbd-mirror")
        if daemon:
            _stop([daemon])
        self._start_rbd_mirror(site)

    def _healthy_site(self, sites: dict[str, SiteState], site_name: str) -> SiteState:
        site = self._site(sites, site_name)
        if site.disaster:
            raise LabError(
                f"site {site.name!r} is {site.disaster} already",
                hint=f"bring it back first with `rbdfail lab recover {site.name}`",
            )
        return site

    def _site(self, sites: dict[str, SiteState], site_name: str) -> SiteState:
        name = SITE_ALIASES.get(site_name, site_name)
        if name not in sites:
            known = ", ".join(sites) or "none: the lab is not up"
            raise LabError(f"no lab site named {site_name!r} (sites: {known})")
        return sites[name]


def _shared_settings(state_dir: Path) -> str:
    """The top-level settings of both configurations the lab writes: volume types, rules, ..."""
    return f"""\
replication_connect_timeout: 5
volume_timeout: 60
concurrency: 256
volume_types:
  replicated:
    replication_enabled: "<is> True"
    mirror_mode: snapshot
  replicated-journal:
    replication_enabled: "<is> True"
    mirror_mode: journal
  standard: {{}}
volumes:
  - match: "db-*"
    type: replicated
  - match: "journal-*"
    type: replicated-journal
  - match: "*"
    type: standard
state_dir: {state_dir}
"""


_STATE_LOCK = threading.Lock()


def _ceph_conf(site: SiteState) -> str:
    d = Path(site.dir)
    return f"""\
[global]
fsid = {site.fsid}
mon host = {site.mon_host}
public addr = 127.0.0.1
ms bind ipv6 = false
run dir = {d}/run
admin socket = {d}/run/$name.asok
pid file = {d}/run/$name.pid
log file = {d}/log/$name.log
keyring = {d}/$cluster.$name.keyring
auth allow insecure global id reclaim = false
mon warn on pool no redundancy = false
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon allow pool delete = true
osd crush chooseleaf type = 0
# Mirroring state changes show up in seconds, not the default 30 s.
rbd mirror image state check interval = 5
rbd mirror pool replayers refresh interval = 5

[mon]
mon data = {d}/mon

[mgr]
mgr data = {d}/mgr

[osd]
osd data = {d}/osd
osd objectstore = memstore
memstore device bytes = 2147483648
# `thaw` marks the OSD down after each long freeze; by default an OSD marked down more than 5
# times in 10 minutes shuts itself down (seen: the 6th thaw of a bench-like run ended the lab).
osd max markdown count = 1000

[client]
# rbdfail, rbd and ceph run as clients: no admin socket each, so parallel runs do not clash.
admin socket =

[client.rbd-mirror-peer]
# rbd-mirror's connection to the peer site. When rbdfail takes a copy's lock from the daemon
# (a forced failover), Ceph blocklists it and it restarts its pool replayer; with the peer
# still lost, that restart waits out this before trying again (Ceph's default: 300 s).
client mount timeout = 15
"""


def _free_ports(count: int) -> list[int]:
    """Distinct ports free on 127.0.0.1 now, chosen below the kernel's ephemeral range.

    A port the kernel handed out for bind(0) comes from the ephemeral range, which every
    outgoing connection draws its source port from: between choosing it and the monitor
    binding it, another lab's daemons (always connecting) can take it, and the monitor dies.
    """
    low = _ephemeral_port_low()
    candidates = random.sample(range(PORT_FLOOR, low), k=min(200, low - PORT_FLOOR))
    chosen: list[socket.socket] = []
    try:
        for port in candidates:
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            chosen.append(s)
            if len(chosen) == count:
                return [c.getsockname()[1] for c in chosen]
        raise LabError(
            f"no {count} free ports between {PORT_FLOOR} and {low} on 127.0.0.1",
            hint="stop other labs (`rbdfail lab down --dir ...`) or free some ports",
        )
    finally:
        for c in chosen:
            c.close()


def _ephemeral_port_low() -> int:
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768  # Linux's default
    return max(low, PORT_FLOOR + 100)


def _run(argv: list[str | Path], timeout: float = CLI_TIMEOUT) -> str:
    try:
        done = subprocess.run(
            [str(a) for a in argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"`{argv[0]} {argv[1]}` did not finish within {timeout:.0f}s") from exc
    if done.returncode != 0:
        raise LabError(
            f"`{' '.join(str(a) for a in argv[:4])} ...` failed ({done.returncode}): "
            f"{done.stderr.strip()[-500:]}"
        )
    return done.stdout


def _ceph(site: SiteState, *args: str, check: bool = False) -> str | None:
    """`ceph` against the site as admin; None on failure unless check."""
    argv: list[str | Path] = ["ceph", "-c", site.conf, "--connect-timeout", "10", *args]
    try:
        return _run(argv)
    except LabError:
        if check:
            raise
        return None


def _rbd(site: SiteState, *args: str) -> str:
    return _run(["rbd", "-c", site.conf, *args])


def _serves(site: SiteState) -> bool:
    """The OSD is up and every PG of each pool answers a read: listing a pool visits each one
    (the mgr's PG states lag behind the OSD, so they cannot tell)."""
    if _osds_up(site) < 1:
        return False
    try:
        for pool in POOLS:
            _run(["rados", "-c", site.conf, "--rados-osd-op-timeout", "5", "-p", pool, "ls"], 15)
    except LabError:
        return False
    return True


def _osds_up(site: SiteState) -> int:
    out = _ceph(site, "osd", "stat", "--format", "json")
    return int(json.loads(out).get("num_up_osds", 0)) if out else 0


def _running(site: SiteState, daemon: str) -> psutil.Process | None:
    """The daemon's process while it runs; None once it exited or its pid is another process's.

    Identity is pid and start time. Not the command line: /proc/PID/cmdline of a busy, live
    daemon now and then reads empty (9 times in 2 lab starts, polled every 5 ms), and a check
    on it once took a starting OSD for dead.
    """
    try:
        proc = psutil.Process(site.pids[daemon])
        if proc.create_time() != site.started.get(daemon):
            return None
        return None if proc.status() == psutil.STATUS_ZOMBIE else proc
    except psutil.NoSuchProcess:
        return None


def _stop(procs: list[psutil.Process], grace: float = 5.0) -> None:
    """SIGCONT (a frozen daemon cannot act on SIGTERM) and SIGTERM to all, SIGKILL to those
    still there after grace; all at once, so a lab stops in one grace period at most."""
    for proc in procs:
        with suppress(psutil.NoSuchProcess):
            proc.resume()
            proc.terminate()
    left = _wait_exited(procs, grace)
    for proc in left:
        with suppress(psutil.NoSuchProcess):
            proc.kill()
    _wait_exited(left, grace)


def _wait_exited(procs: list[psutil.Process], within_s: float) -> list[psutil.Process]:
    """Those of procs still running after within_s. A zombie has exited: a daemon another
    process started stays one until that process reaps it, which may be never while it waits
    on this one (psutil.wait_procs waits for the pid to vanish, which a zombie's never does)."""
    deadline = time.monotonic() + within_s
    while True:
        running = []
        for proc in procs:
            try:
                if proc.status() != psutil.STATUS_ZOMBIE:
                    running.append(proc)
                    continue
                with suppress(psutil.TimeoutExpired):
                    proc.wait(0)  # reaps it when it is this process's child
            except psutil.NoSuchProcess:
                pass
        if not running or time.monotonic() >= deadline:
            return running
        procs = running
        time.sleep(0.05)


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"  (cannot read: {exc.strerror})"
    kept = [line for line in text.splitlines() if line.strip()][-lines:]
    return "\n".join(f"  {line}" for line in kept) or "  (empty)"
