"""`make bench`: rbdfail side by side with what operators use today, on the real lab.

Every figure is a whole command timed from outside (start-up included), the median of REPS
runs where the operation can be repeated, and every alternative runs in the same session on
the same lab, so ratios hold even when this shared 2-core machine drifts. Prints a table and
writes the same as JSON (bench/results/).

    python bench/bench.py [--n 200] [--reps 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_fixed

from rbdfail import ceph
from rbdfail.cluster import Cluster, ImageStatus, MirrorInfo
from rbdfail.config import Config, SiteConfig, load_config, load_deployment
from rbdfail.errors import CephError, ImageBusy, ImageNotFound, InvalidState
from rbdfail.lab.disasters import Disaster
from rbdfail.lab.twosite import Lab

RBDFAIL = [sys.executable, "-m", "rbdfail"]
SCENARIOS = {
    "help": "help_startup",
    "enable": "enable_mirroring",
    "status": "status",
    "clean": "clean_failover",
    "forced": "forced_failover",
    "mid-run": "source_lost_mid_run",
    "drill": "drill",
    "two-pools": "two_pools",
    "concurrency": "concurrency_sweep",
}
# Cases that need no lab: functions of (n, reps), run without bringing the lab up when only they
# are asked for (`make bench ONLY=rules`).
WITHOUT_LAB = {"rules": "rules_at_scale"}
RULES_N = 10_000
# Cinder's defaults for reaching a cluster: replication_connect_timeout (5 s, used here for the
# primary too, where Cinder's own rados_connect_timeout of -1 would wait out client_mount_timeout,
# 300 s), rados_connection_retries (3) and rados_connection_interval (5 s).
CINDER_CONNECT_TIMEOUT_S = 5
CINDER_CONNECT_RETRIES = 3
CINDER_CONNECT_INTERVAL_S = 5
# rbd's own rbd_concurrent_management_ops default, which `rbd mirror pool ...` uses.
RBD_DEFAULT_CONCURRENCY = 10
# Forced promotes one after another take ~10 s a volume (ceph-facts.md): this many are timed.
SERIAL_FORCED_N = 20
# Issue 25: a forced failover is also timed started this long into the disaster.
LATE_S = 60.0
# Issue 25: how far into a clean failover the source is lost (its storage stopped).
MID_RUN_LOSS_S = 1.0
# Issue 25 item 6: the levels of `concurrency` the sweep times (32 was the default).
CONCURRENCY_LEVELS = (16, 32, 64, 128, 256)
ISSUE_25_CONCURRENCY = 32  # clean failover is held against the pool commands at -j32
# `status` takes about a second: timed this many times per repetition.
STATUS_RUNS = 3


@dataclass
class Row:
    what: str
    rbdfail_s: float
    alternatives: dict[str, float]
    target: str = ""
    runs: dict[str, list[float]] = field(default_factory=dict)

    def ratios(self) -> dict[str, float]:
        return {name: self.rbdfail_s / alt for name, alt in self.alternatives.items()}


def timed(argv: list[str], ok: tuple[int, ...] = (0,)) -> float:
    started = time.monotonic()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode not in ok:
        raise RuntimeError(f"{' '.join(argv[:6])} ... exited {done.returncode}: {done.stderr}")
    return time.monotonic() - started


def median_of(reps: int, run: Callable[[int], float]) -> tuple[float, list[float]]:
    runs = [run(rep) for rep in range(reps)]
    return statistics.median(runs), runs


class Bench:
    def __init__(self, config: Config, config_file: Path, n: int, reps: int) -> None:
        self.config, self.config_file, self.n, self.reps = config, config_file, n, reps
        self.serial = True  # run the one-after-another baselines
        # Long timeouts: the bench waits out slow moments (a site just thawed) rather than fail.
        self.primary: Cluster = ceph.connect(config.backend, 60)
        self.pool = config.backend.pool

    def images(
        self, prefix: str, n: int | None = None, cluster: Cluster | None = None
    ) -> list[str]:
        """New images in the backend's pool (or `cluster`'s)."""
        names = [f"{prefix}-{i:04}" for i in range(self.n if n is None else n)]
        cluster = cluster or self.primary
        with ThreadPoolExecutor(64) as pool:
            list(pool.map(lambda name: cluster.create_image(name, 16 << 20), names))
        return names

    def forget(self, names: list[str]) -> None:
        """Disable mirroring again (the peer deletes its copies), so runs start alike."""
        with ThreadPoolExecutor(64) as pool:
            list(pool.map(self.primary.disable_mirroring, names))

    def rbdfail(self, *args: str) -> list[str]:
        return [*RBDFAIL, "-c", str(self.config_file), *args]

    # ---- scenarios -------------------------------------------------------------------------
    def enable_mirroring(self) -> Row:
        """N snapshot-mode volumes: rbdfail vs `rbd mirror image enable` one image at a time."""
        runs: dict[str, list[float]] = {"rbdfail": [], "rbd per image": [], "rbdfail -j1": []}
        rbd = ["rbd", "-c", str(self.config.backend.conf), "--id", self.config.backend.user]
        for rep in range(self.reps):
            # The lab's rules make db-* snapshot-mode replicated volumes.
            names = self.images(f"db-bench{rep}a")
            runs["rbdfail"].append(timed(self.rbdfail("enable-mirroring", *names)))
            self.forget(names)
            if rep > 0 or not self.serial:
                continue
            # The two one-after-another baselines take about a second per image: once each.
            names = self.images(f"db-bench{rep}b")
            runs["rbdfail -j1"].append(
                timed(self.rbdfail("enable-mirroring", "--concurrency", "1", *names))
            )
            self.forget(names)
            names = self.images(f"db-bench{rep}c")
            started = time.monotonic()
            for name in names:
                subprocess.run(
                    [*rbd, "mirror", "image", "enable", f"{self.pool}/{name}", "snapshot"],
                    check=True,
                    stdout=subprocess.DEVNULL,
                )
            runs["rbd per image"].append(time.monotonic() - started)
            self.forget(names)
        return Row(
            f"enable mirroring, {self.n} snapshot-mode volumes",
            statistics.median(runs["rbdfail"]),
            {k: statistics.median(v) for k, v in runs.items() if k != "rbdfail" and v},
            "<= 1/20 of rbd per image",
            runs,
        )

    def status(self) -> Row:
        """`rbdfail status --json` vs `rbd mirror pool status --verbose` on both sites."""
        names = self.images("db-status")
        timed(self.rbdfail("enable-mirroring", "--concurrency", "200", *names))
        secondary = ceph.connect(self.config.replication_devices[0], 10)
        deadline = time.monotonic() + 900
        while len(set(names) & set(secondary.list_images())) < len(names):
            if time.monotonic() > deadline:
                raise RuntimeError("the copies did not all appear on the secondary in 15 min")
            time.sleep(2)
        secondary.close()
        rbd_status = [
            [
                "rbd",
                "-c",
                str(site.conf),
                "--id",
                site.user,
                "mirror",
                "pool",
                "status",
                "--verbose",
                "--format",
                "json",
                site.pool,
            ]
            for site in self.config.sites
        ]
        runs: dict[str, list[float]] = {"rbdfail": [], "rbd pool status x2": []}
        for _ in range(self.reps):
            runs["rbdfail"].append(timed(self.rbdfail("status", "--json"), ok=(0, 3)))
            runs["rbd pool status x2"].append(sum(timed(argv) for argv in rbd_status))
        return Row(
            f"status of {self.n} mirrored volumes, both sites",
            statistics.median(runs["rbdfail"]),
            {"rbd pool status x2": statistics.median(runs["rbd pool status x2"])},
            "<= 0.3 (N=1000)",
            runs,
        )

    def mirrored(
        self, prefix: str, n: int | None = None, backend: Config | None = None
    ) -> list[str]:
        """N new snapshot-mode volumes, mirrored, each copy on the secondary through its first
        sync: a copy mid-sync cannot be force-promoted (it holds nothing consistent yet), and
        a bench that froze the primary then would time refusals (it did: 40 of 200).
        `backend`: in that backend's pool (of a file of several) instead of the bench's."""
        if backend is None:
            names = self.images(prefix, n)
            timed(self.rbdfail("enable-mirroring", "--concurrency", "200", *names))
        else:
            cluster = ceph.connect(backend.backend, 60)
            try:
                names = self.images(prefix, n, cluster)
            finally:
                cluster.close()
            scope = ["--backend", backend.backend_name] if backend.state_scope else []
            enable = ["enable-mirroring", "--concurrency", "200", *names]
            timed([*RBDFAIL, "-c", str(backend.path), *scope, *enable])
        self.wait_synced((backend or self.config).replication_devices[0], names)
        return names

    def wait_synced(self, site: SiteConfig, names: list[str]) -> None:
        """Until every copy on `site` replays, through a sync of its own (a snapshot-mode
        copy's description names its last synced snapshot)."""
        cluster = ceph.connect(site, 10)
        deadline = time.monotonic() + 900
        try:
            while True:
                statuses = cluster.mirror_statuses()
                ready = [n for n in names if n in statuses and _first_sync_done(statuses[n])]
                if len(ready) == len(names):
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"only {len(ready)} of {len(names)} copies synced on {site.where} of "
                        f"{site.backend_id} in 15 min"
                    )
                time.sleep(2)
        finally:
            cluster.close()

    def rbd(self, site: SiteConfig, *args: str) -> list[str]:
        return ["rbd", "-c", str(site.conf), "--id", site.user, *args]

    def reset(self, sites: Sequence[SiteConfig] = (), state_dirs: Sequence[Path] = ()) -> None:
        """Remove every image on both sites and forget rbdfail's state, so runs start alike
        (`sites`, `state_dirs`: those of other pools and configuration files too).

        Mirroring is disabled first (forced on copies, so the peer's rbd-mirror need not be
        waited for); the bench's images are all it has.
        """
        # A generous timeout: a site just thawed takes a while to answer again.
        clusters = [ceph.connect(site, 60) for site in (*self.config.sites, *sites)]
        try:
            images = [
                (cluster, name, infos.get(name))
                for cluster in clusters
                for infos in [cluster.mirror_infos()]
                for name in cluster.list_images()
            ]
            # Primaries first: their peers' rbd-mirror then deletes the copies by itself.
            images.sort(key=lambda image: image[2] is not None and not image[2].primary)
            with ThreadPoolExecutor(64) as pool:
                list(pool.map(lambda image: _drop(*image), images))
        finally:
            for cluster in clusters:
                cluster.close()
        for state_dir in (self.config.state_dir, *state_dirs):
            shutil.rmtree(state_dir, ignore_errors=True)

    def clean_failover(self) -> Row:
        """Both sites up: `rbdfail failover` vs Ceph's pool demote + promote (rbd's default
        concurrency, and rbdfail's) vs demoting each volume, then promoting each (Cinder)."""
        secondary = self.config.replication_devices[0]
        concurrency = self.config.concurrency
        pool_default = f"rbd pool cmds (default -j{RBD_DEFAULT_CONCURRENCY})"
        pool_equal = f"rbd pool cmds -j{concurrency}"
        pool_32 = f"rbd pool cmds -j{ISSUE_25_CONCURRENCY}"  # what issue 25 holds it against
        serial = "one after another"
        runs: dict[str, list[float]] = {
            "rbdfail": [],
            pool_default: [],
            pool_equal: [],
            pool_32: [],
            serial: [],
        }
        retries: dict[str, list[int]] = {name: [] for name in runs}
        timelines: dict[str, list[float]] = {}

        def pool_commands(names: list[str], *extra: str) -> tuple[float, int]:
            started = time.monotonic()
            _run(self.rbd(self.config.backend, *extra, "mirror", "pool", "demote", self.pool))
            # A promote before the demotion has reached the secondary is refused for that image
            # (the command says so and exits non-zero): an operator runs it again.
            failed = _until_ok(
                self.rbd(secondary, *extra, "mirror", "pool", "promote", self.pool), 600
            )
            return time.monotonic() - started, failed

        def one_after_another(names: list[str]) -> tuple[float, int]:
            started, failed = time.monotonic(), 0
            for name in names:
                _run(
                    self.rbd(
                        self.config.backend, "mirror", "image", "demote", f"{self.pool}/{name}"
                    )
                )
            for name in names:
                # Cinder promotes once and marks the volume in error when the demotion has not
                # arrived yet; retrying is kinder to it than what it does.
                failed += _until_ok(
                    self.rbd(secondary, "mirror", "image", "promote", f"{self.pool}/{name}"), 600
                )
            return time.monotonic() - started, failed

        def with_rbdfail(names: list[str]) -> tuple[float, int]:
            with tempfile.NamedTemporaryFile(suffix=".jsonl") as trace:
                seconds = timed(
                    self.rbdfail(
                        "failover", "--to", "secondary", "--yes", "--call-trace", trace.name
                    )
                )
                shape = timeline(Path(trace.name), concurrency)
            for key, value in shape.items():
                timelines.setdefault(f"rbdfail timeline: {key}", []).append(value)
            say("rbdfail call slots: " + ", ".join(f"{k} {v:g}" for k, v in shape.items()))
            return seconds, int(shape["promotes refused (not propagated yet)"])

        contenders: dict[str, Callable[[list[str]], tuple[float, int]]] = {
            "rbdfail": with_rbdfail,
            pool_default: pool_commands,
            pool_equal: lambda names: pool_commands(
                names, "--rbd-concurrent-management-ops", str(concurrency)
            ),
            pool_32: lambda names: pool_commands(
                names, "--rbd-concurrent-management-ops", str(ISSUE_25_CONCURRENCY)
            ),
            serial: one_after_another,
        }
        if concurrency == ISSUE_25_CONCURRENCY:
            del contenders[pool_32], runs[pool_32]
        self.reset()
        for rep in range(self.reps):
            for index, (name, run) in enumerate(contenders.items()):
                if name == serial and (rep > 0 or not self.serial):
                    continue  # minutes per run, and linear: once is enough
                names = self.mirrored(f"db-clean{rep}{index}")
                seconds, failed = run(names)
                say(f"clean failover, {name}: {seconds:.2f}s ({failed} refused promotes)")
                runs[name].append(seconds)
                retries[name].append(failed)
                self.check_primary(secondary, names)
                self.reset()
        return Row(
            f"clean failover, {self.n} volumes",
            statistics.median(runs["rbdfail"]),
            {name: statistics.median(v) for name, v in runs.items() if name != "rbdfail" and v},
            f"<= 0.5 of pool cmds at -j{ISSUE_25_CONCURRENCY}, <= 1.1 at -j{concurrency}, "
            "<= 1/10 of one after another",
            runs
            | {f"{name}: refused promotes": [float(r) for r in v] for name, v in retries.items()}
            | timelines,
        )

    def concurrency_sweep(self) -> list[Row]:
        """What `concurrency` should default to: enable-mirroring and a clean failover of N
        volumes at each level, REPS times. Watched, as the cost to the sites: the monitors' and
        OSDs' CPU seconds during each run (both sites) and the health checks either site
        raises just after it (slow ops would show there)."""
        lab = Lab(self.config_file.parent)
        daemons = [
            psutil.Process(pid)
            for site in lab.sites().values()
            for daemon, pid in site.pids.items()
            if daemon in ("mon", "osd")
        ]

        def cpu() -> float:
            return sum(sum(d.cpu_times()[:2]) for d in daemons)

        def health() -> list[str]:
            found = []
            for name, site in lab.sites().items():
                argv = ["ceph", "-c", str(site.conf), "--connect-timeout", "10", "health", "detail"]
                done = subprocess.run([*argv, "--format", "json"], capture_output=True, text=True)
                checks = json.loads(done.stdout or "{}").get("checks", {})
                found += [f"{name}: {check}" for check in checks]
            return found

        rows: list[Row] = []
        for what, command in (
            ("enable-mirroring", "enable"),
            ("clean failover", "failover"),
        ):
            runs: dict[str, list[float]] = {}
            for level in CONCURRENCY_LEVELS:
                for rep in range(self.reps):
                    prefix = f"db-j{level}r{rep}{command[0]}"
                    if command == "enable":
                        names = self.images(prefix)
                        argv = self.rbdfail("enable-mirroring", "--concurrency", str(level))
                        argv += names
                    else:
                        names = self.mirrored(prefix)
                        argv = self.rbdfail("failover", "--to", "secondary", "--yes")
                        argv += ["--concurrency", str(level)]
                    before = cpu()
                    seconds = timed(argv)
                    spent, raised = cpu() - before, health()
                    say(
                        f"{what}, --concurrency {level}: {seconds:.2f}s, mons and OSDs "
                        f"{spent:.1f} CPU s, health checks {raised or 'none'}"
                    )
                    runs.setdefault(f"-j{level}", []).append(seconds)
                    runs.setdefault(f"-j{level}: mon+osd CPU s", []).append(round(spent, 2))
                    runs.setdefault(f"-j{level}: health checks raised", []).append(
                        float(len(raised))
                    )
                    if command == "failover":
                        self.check_primary(self.config.replication_devices[0], names)
                    self.reset()
            medians = {level: statistics.median(runs[f"-j{level}"]) for level in CONCURRENCY_LEVELS}
            best = min(medians, key=lambda level: medians[level])
            rows.append(
                Row(
                    f"{what}, {self.n} volumes, fastest --concurrency {best}",
                    medians[best],
                    {f"--concurrency {level}": medians[level] for level in CONCURRENCY_LEVELS},
                    "the default: fastest that raises no health check",
                    runs,
                )
            )
        return rows

    def wait_writable(self, site: SiteConfig) -> None:
        """Until a new connection can create an image there: a thawed site has been seen to
        answer reads (what `lab thaw` waits for) and still time out creating images."""
        started = time.monotonic()
        while True:
            probe = f"bench-thaw-probe-{time.time_ns()}"  # one left behind goes with reset()
            try:
                cluster = ceph.connect(site, 10)
                try:
                    cluster.create_image(probe, 1 << 20)
                    cluster.remove_image(probe)
                finally:
                    cluster.close()
                break
            except CephError as exc:
                if time.monotonic() - started > 600:
                    raise RuntimeError(f"{site.backend_id} still not writable: {exc}") from exc
                say(f"{site.backend_id} not writable yet after the thaw: {exc}")
        say(f"{site.backend_id} writable {time.monotonic() - started:.1f}s after the thaw")

    def check_primary(self, site: SiteConfig, names: list[str]) -> None:
        """A contender that left a volume behind did not fail over: its time would be a lie."""
        cluster = ceph.connect(site, 10)
        try:
            infos = cluster.mirror_infos()
        finally:
            cluster.close()
        behind = [name for name in names if not (name in infos and infos[name].primary)]
        if behind:
            raise RuntimeError(
                f"{len(behind)} volumes not primary on {site.backend_id}: {behind[:3]}"
            )

    def forced_failover(self) -> list[Row]:
        """The primary frozen: `rbdfail failover` vs `rbd mirror pool promote --force` on the
        secondary vs Cinder (its connect retries on the primary, then a forced promote per
        volume). rbdfail and the pool command REPS times each, the lab reset in between (a
        forced failover leaves its volumes primary on both sites); Cinder's, minutes long and
        linear, once."""
        secondary = self.config.replication_devices[0]
        timed_n = min(self.n, SERIAL_FORCED_N)
        cinder = "Cinder one by one" + (f" ({timed_n} timed, scaled)" if timed_n < self.n else "")
        at_once = "rbdfail --break-locks-after 0"
        late, pool_late = (
            f"rbdfail {LATE_S:g} s after",
            f"rbd pool promote --force {LATE_S:g} s after",
        )
        runs: dict[str, list[float]] = {
            "rbdfail": [],
            at_once: [],
            "rbd pool promote --force": [],
            late: [],
            pool_late: [],
            cinder: [],
        }
        pool_promote = lambda names: timed(  # noqa: E731
            self.rbd(secondary, "mirror", "pool", "promote", "--force", self.pool)
        )
        failover = lambda names: timed(  # noqa: E731
            self.rbdfail("failover", "--to", "secondary", "--yes")
        )
        lab = Lab(self.config_file.parent)

        def frozen(
            prefix: str, run: Callable[[list[str]], float], n: int | None = None, after: float = 0
        ) -> float:
            names = self.mirrored(prefix, n)
            lab.freeze("primary")
            try:
                # Started `after` seconds into the disaster: the target's rbd-mirror has seen
                # its peer go by then, the shape of an operator paged first.
                time.sleep(after)
                seconds = run(names)
            finally:
                lab.thaw("primary")
                self.wait_writable(self.config.backend)
                # The bench's own connection lived through the freeze: twice after the Cinder
                # run's ~130 s freeze it timed out creating images while new connections
                # created them at once. A new one, as every rbdfail command makes.
                self.primary.close()
                self.primary = ceph.connect(self.config.backend, 60)
            say(f"forced failover, {prefix}: {seconds:.2f}s")
            self.check_primary(secondary, names)
            self.reset()
            return seconds

        def cinder_style(names: list[str]) -> float:
            # Cinder demotes until the first failure: one volume's connect retries, then it
            # force-promotes every volume, one after another, on the secondary.
            timeouts = [
                f"--{option}={CINDER_CONNECT_TIMEOUT_S}"
                for option in (
                    "client_mount_timeout",
                    "rados_mon_op_timeout",
                    "rados_osd_op_timeout",
                )
            ]
            started = time.monotonic()
            demote = self.rbd(
                self.config.backend,
                *timeouts,
                "mirror",
                "image",
                "demote",
                f"{self.pool}/{names[0]}",
            )
            for attempt in range(CINDER_CONNECT_RETRIES):
                if subprocess.run(demote, capture_output=True).returncode == 0:
                    raise RuntimeError("the frozen primary answered a demote")
                if attempt < CINDER_CONNECT_RETRIES - 1:
                    time.sleep(CINDER_CONNECT_INTERVAL_S)
            given_up = time.monotonic() - started
            say(f"Cinder gave up demoting after {given_up:.1f}s")
            for name in names:
                _run(
                    self.rbd(
                        secondary, "mirror", "image", "promote", "--force", f"{self.pool}/{name}"
                    )
                )
            per_volume = (time.monotonic() - started - given_up) / len(names)
            # Linear by construction, and ~10 s a volume: timed on a few, scaled to N.
            return given_up + per_volume * self.n

        self.reset()
        if self.serial:
            runs[cinder].append(frozen("db-forced-c", cinder_style, timed_n))
        for rep in range(self.reps):
            runs["rbd pool promote --force"].append(frozen(f"db-forced{rep}a", pool_promote))
            runs["rbdfail"].append(frozen(f"db-forced{rep}b", failover))
            runs[pool_late].append(frozen(f"db-forced{rep}d", pool_promote, after=LATE_S))
            runs[late].append(frozen(f"db-forced{rep}e", failover, after=LATE_S))
            runs[at_once].append(
                frozen(
                    f"db-forced{rep}c",
                    lambda names: timed(
                        self.rbdfail(
                            "failover", "--to", "secondary", "--yes", "--break-locks-after", "0"
                        )
                    ),
                )
            )
        alternatives = {
            name: statistics.median(v)
            for name, v in runs.items()
            if name not in ("rbdfail", at_once, late, pool_late) and v
        }
        return [
            Row(
                f"failover, primary frozen, {self.n} volumes",
                statistics.median(runs["rbdfail"]),
                alternatives,
                "<= 0.08 of pool promote --force (issue 25)",
                runs,
            ),
            Row(
                "  the same, every lock taken at once",
                statistics.median(runs[at_once]),
                {k: v for k, v in alternatives.items() if k == "rbd pool promote --force"},
                "<= 0.15 (stretch)",
            ),
            Row(
                f"  the same, started {LATE_S:g} s into the disaster",
                statistics.median(runs[late]),
                {pool_late: statistics.median(runs[pool_late])},
                "<= 0.08 (issue 25)",
                {late: runs[late], pool_late: runs[pool_late]},
            ),
        ]

    def source_lost_mid_run(self) -> Row:
        """The primary's storage stopped MID_RUN_LOSS_S into a clean failover (its rbd-mirror
        alive, Disaster.STORAGE_DEAD) against a forced failover started after the same loss,
        REPS times each: finding the loss while demotes hang must not cost more than the
        forced path itself (issue 25 item 4)."""
        secondary = self.config.replication_devices[0]
        lab = Lab(self.config_file.parent)
        mid, after = "primary lost 1 s in", "forced failover started after the loss"
        back = "failback once the primary is back"
        runs: dict[str, list[float]] = {mid: [], after: [], back: []}

        def lost(prefix: str, loss_at: float | None) -> float:
            """One failover of N fresh volumes; the primary lost `loss_at` s into it, or before
            it starts (None)."""
            names = self.mirrored(prefix)
            try:
                if loss_at is None:
                    lab.fail("primary", Disaster.STORAGE_DEAD)
                started = time.monotonic()
                proc = subprocess.Popen(
                    self.rbdfail("failover", "--to", "secondary", "--yes"),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                if loss_at is not None:
                    time.sleep(max(0.0, started + loss_at - time.monotonic()))
                    lab.fail("primary", Disaster.STORAGE_DEAD)
                _, stderr = proc.communicate(timeout=900)
                seconds = time.monotonic() - started
                if proc.returncode != 0:
                    raise RuntimeError(f"failover, {prefix}: exit {proc.returncode}: {stderr}")
            finally:
                lab.recover("primary")
                self.wait_writable(self.config.backend)
                self.primary.close()  # lived through the loss: a new one (forced_failover)
                self.primary = ceph.connect(self.config.backend, 60)
            say(f"failover, {prefix} ({mid if loss_at is not None else after}): {seconds:.2f}s")
            self.check_primary(secondary, names)
            # Back home the way an operator goes: demotes left running on the lost primary
            # completed after its thaw, so some of its copies are no longer primary, held by
            # its rbd-mirror (a plain reset cannot remove them: EROFS); the failback must
            # start from where each copy is (issue 28 item 2).
            started = time.monotonic()
            timed(self.rbdfail("failback", "--yes"))
            runs[back].append(time.monotonic() - started)
            say(f"failback, {prefix}: {runs[back][-1]:.2f}s")
            self.check_primary(self.config.backend, names)
            self.reset()
            # Each run took the secondary's rbd-mirror out of the way; one taken out twice in
            # two minutes can stay wedged on its blocklisted pool replayer and sync no new
            # copy. Restarted, as docs/guide/failover.md tells an operator, so that the next
            # run's volumes are synced first.
            lab.restart_rbd_mirror("secondary")
            return seconds

        self.reset()
        for rep in range(self.reps):
            runs[mid].append(lost(f"db-midrun{rep}a", MID_RUN_LOSS_S))
            runs[after].append(lost(f"db-midrun{rep}b", None))
        return Row(
            f"failover, primary lost {MID_RUN_LOSS_S:g} s in, {self.n} volumes",
            statistics.median(runs[mid]),
            {after: statistics.median(runs[after])},
            "<= 1.5 of the forced failover after the loss (issue 25)",
            runs,
        )

    # ---- drill (issue 16) ------------------------------------------------------------------
    def drill(self) -> list[Row]:
        """`rbdfail drill` (sampled, and --full) of N synced volumes vs reading each whole with
        `rbd export | sha256sum` on both sites, as many at once as rbdfail's concurrency."""
        self.reset()
        names = self.mirrored("db-drill")
        with ThreadPoolExecutor(64) as pool:  # 1 MiB of data each, then a mirror snapshot
            list(pool.map(lambda name: self.primary.write(name, 0, os.urandom(1 << 20)), names))
            taken = dict(
                zip(names, pool.map(self.primary.create_mirror_snapshot, names), strict=True)
            )
        secondary = ceph.connect(self.config.replication_devices[0], 10)
        deadline = time.monotonic() + 900
        try:
            while True:
                with ThreadPoolExecutor(32) as pool:
                    newest = list(pool.map(secondary.mirror_snapshots, names))
                synced = sum(
                    bool(s) and s[-1].complete and s[-1].primary_snap_id == taken[n]
                    for n, s in zip(names, newest, strict=True)
                )
                if synced == len(names):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {synced} of {len(names)} copies synced in 15 min")
                time.sleep(2)
        finally:
            secondary.close()
        concurrency = self.config.concurrency

        def export_all() -> float:
            # The primary's head: `rbd export` cannot name a mirror snapshot (nor can librbd,
            # measured), and nothing was written after it, so the head is that snapshot.
            exports = [
                " ".join(self.rbd(site, "export", f"{site.pool}/{name}", "-"))
                + " 2>/dev/null | sha256sum"
                for site in self.config.sites
                for name in names
            ]
            started = time.monotonic()
            with ThreadPoolExecutor(concurrency) as pool:
                list(pool.map(lambda line: _run(["bash", "-o", "pipefail", "-c", line]), exports))
            return time.monotonic() - started

        runs: dict[str, list[float]] = {"rbdfail": [], "rbdfail --full": [], "export": []}
        for _ in range(self.reps):
            runs["rbdfail"].append(timed(self.rbdfail("drill")))
            runs["rbdfail --full"].append(timed(self.rbdfail("drill", "--full")))
            runs["export"].append(export_all())
        export = f"rbd export | sha256sum, both sites, {concurrency} at once"
        return [
            Row(
                f"drill of {self.n} volumes (16 MiB, 1 MiB data), sampled",
                statistics.median(runs["rbdfail"]),
                {export: statistics.median(runs["export"])},
                "",
                runs,
            ),
            Row(
                "  the same, --full",
                statistics.median(runs["rbdfail --full"]),
                {export: statistics.median(runs["export"])},
                "",
            ),
        ]

    # ---- two pools (issue 18) ------------------------------------------------------------
    def two_pools(self) -> list[Row]:
        """N snapshot-mode volumes split half and half over the lab's pools `volumes` and
        `fast` (its two-backend file: backends `ceph` and `fast`) against all N in `volumes`
        (its one-backend file), in one run: `status --json`, a clean failover, and the
        failback after it once every copy on `default` replays again. The two layouts take
        turns (which goes first alternates by repetition), each from an emptied lab."""
        two_file = Lab(self.config_file.parent).two_pools_config_file
        deployment = load_deployment(two_file)
        [ceph_backend], [fast] = deployment.select("ceph"), deployment.select("fast")
        half = self.n // 2
        one, two = "all in 1 pool, 1 backend", f"2 pools {half}+{self.n - half}"
        layouts: dict[str, tuple[Path, list[tuple[Config | None, str, int]]]] = {
            one: (self.config_file, [(None, "one", self.n)]),
            two: (two_file, [(ceph_backend, "twov", half), (fast, "twof", self.n - half)]),
        }
        other_sites = fast.sites  # the bench's own config covers `volumes`
        state_dirs = [fast.state_dir]
        operations = ("status", "failover", "failback")
        runs: dict[str, list[float]] = {
            f"{layout}: {op}": [] for layout in layouts for op in operations
        }
        loads: list[float] = []
        self.reset(other_sites, state_dirs)
        for rep in range(self.reps):
            for layout in list(layouts)[:: 1 if rep % 2 == 0 else -1]:
                config_file, parts = layouts[layout]
                volumes = [
                    (backend or self.config, self.mirrored(f"db-{tag}{rep}", n, backend))
                    for backend, tag, n in parts
                ]
                rbdfail = [*RBDFAIL, "-c", str(config_file)]
                loads.append(os.getloadavg()[0])
                for _ in range(STATUS_RUNS):
                    runs[f"{layout}: status"].append(
                        timed([*rbdfail, "status", "--json"], ok=(0, 3))
                    )
                seconds = timed([*rbdfail, "failover", "--to", "secondary", "--yes"])
                runs[f"{layout}: failover"].append(seconds)
                for backend, names in volumes:
                    self.check_primary(backend.replication_devices[0], names)
                for backend, names in volumes:
                    self.wait_synced(backend.backend, names)
                back = timed([*rbdfail, "failback", "--yes"])
                runs[f"{layout}: failback"].append(back)
                for backend, names in volumes:
                    self.check_primary(backend.backend, names)
                say(
                    f"{layout}, rep {rep}: status "
                    f"{', '.join(f'{s:.2f}' for s in runs[f'{layout}: status'][-STATUS_RUNS:])}"
                    f" s, failover {seconds:.2f} s, failback {back:.2f} s "
                    f"(load {loads[-1]:.2f} before)"
                )
                self.reset(other_sites, state_dirs)
        titles = {
            "status": f"status --json, {self.n} volumes,",
            "failover": f"clean failover, {self.n} volumes,",
            "failback": "  failback after it,",
        }
        return [
            Row(
                f"{titles[op]} {two}",
                statistics.median(runs[f"{two}: {op}"]),
                {one: statistics.median(runs[f"{one}: {op}"])},
                "ratio 2 would be doubling",
                {name: v for name, v in runs.items() if name.endswith(f": {op}")}
                | ({"load average (1 min) before each layout": loads} if op == "status" else {}),
            )
            for op in operations
        ]

    def help_startup(self) -> Row:
        median, runs = median_of(max(self.reps, 5), lambda _: timed([*RBDFAIL, "--help"]))
        return Row("rbdfail --help start-up", median, {}, "< 0.3 s", {"rbdfail": runs})


def rules_at_scale(reps: int, n: int = RULES_N) -> list[Row]:
    """Loading a file of `n` exact rules (one per image, as import-cinder --volume-list writes
    it) and typing `n` images with it, against one catch-all rule typing the same images, and
    against the rules matched in turn (how every rule was tried before exact ones were indexed).
    No Ceph: the loader and Config.volume_type_for only."""
    import fnmatch

    folder = Path(tempfile.mkdtemp(prefix="rbdfail-bench-rules-"))
    try:
        names = [f"volume-{uuid.UUID(int=i + 1)}" for i in range(n)]
        head = (
            "backend: {name: ceph, pool: volumes}\n"
            "replication_device: [{backend_id: secondary}]\n"
            "volume_types:\n  gold: {replication_enabled: '<is> True'}\n  standard: {}\n"
        )
        exact_file = folder / "exact.yaml"
        exact_file.write_text(
            head
            + "volumes:\n"
            + "".join(
                f"  - {{match: {name}, type: {'gold' if i % 3 else 'standard'}}}\n"
                for i, name in enumerate(names)
            )
            + "  - {match: '*', type: standard}\n"
        )
        one_file = folder / "one.yaml"
        one_file.write_text(head + "volumes:\n  - {match: 'volume-*', type: standard}\n")

        def load(path: Path) -> Callable[[int], float]:
            def run(_: int) -> float:
                started = time.perf_counter()
                load_config(path)
                return time.perf_counter() - started

            return run

        def typing(config: Config) -> Callable[[int], float]:
            def run(_: int) -> float:
                started = time.perf_counter()  # the rule index is built as the file loads
                for name in names:
                    config.volume_type_for(name)
                return time.perf_counter() - started

            return run

        def in_turn(config: Config, images: list[str]) -> Callable[[int], float]:
            def run(_: int) -> float:
                started = time.perf_counter()
                for name in images:
                    for rule in config.volumes:
                        if fnmatch.fnmatchcase(name, rule.match):
                            config.volume_type(rule.type)
                            break
                return time.perf_counter() - started

            return run

        exact, one = load_config(exact_file), load_config(one_file)
        load_exact, load_runs = median_of(reps, load(exact_file))
        load_one, load_one_runs = median_of(reps, load(one_file))
        type_exact, exact_runs = median_of(reps, typing(exact))
        type_one, one_runs = median_of(reps, typing(one))
        # Rules in turn: n images against n rules is quadratic; a tenth of the images is timed
        # and scaled (the cost per image is what grows with the rules, not with the images).
        sample = names[::10]
        turn_s, turn_runs = median_of(1, in_turn(exact, sample))
        turn_s *= n / len(sample)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return [
        Row(
            f"load a file of {n:,} exact rules",
            load_exact,
            {"a file of one catch-all rule": load_one},
            "< 1 s",
            {"rbdfail": load_runs, "one rule": load_one_runs},
        ),
        Row(
            f"type {n:,} images, {n:,} exact rules",
            type_exact,
            {"one catch-all rule": type_one, "rules matched in turn (before)": turn_s},
            "ratio <= 1.5 to one rule",
            {"rbdfail": exact_runs, "one rule": one_runs, "in turn": turn_runs},
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="volumes per scenario")
    parser.add_argument("--reps", type=int, default=3, help="repetitions where repeatable")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--no-serial",
        action="store_true",
        help="skip the one-after-another baselines (linear, minutes each)",
    )
    parser.add_argument(
        "--only",
        nargs="*",
        choices=[*SCENARIOS, *WITHOUT_LAB],
        default=[*SCENARIOS, *WITHOUT_LAB],
        help="scenarios to run",
    )
    args = parser.parse_args()
    started = time.monotonic()
    rows: list[Row] = []
    out = args.out or Path("bench/results") / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    for name in [name for name in args.only if name in WITHOUT_LAB]:
        for row in globals()[WITHOUT_LAB[name]](max(args.reps, 5)):
            rows.append(row)
            say(f"{row.what}: rbdfail {row.rbdfail_s:.3f}s, {row.alternatives}")
        write_results(out, args, rows)
    if any(name in SCENARIOS for name in args.only):
        _with_lab(args, out, rows)
    _table(args, rows, out, started)


def _with_lab(args: argparse.Namespace, out: Path, rows: list[Row]) -> None:

    # SIGTERM would end Python without the `finally` below and leave the lab running.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    lab_dir = Path(tempfile.mkdtemp(prefix="rbdfail-bench-"))
    lab = Lab(lab_dir, progress=lambda m: print(f"  lab: {m}", file=sys.stderr))
    config_file = lab.up()
    keep = False
    try:
        bench = Bench(load_config(config_file), config_file, args.n, args.reps)
        bench.serial = not args.no_serial
        for name in [name for name in args.only if name in SCENARIOS]:
            result = getattr(bench, SCENARIOS[name])()
            for row in result if isinstance(result, list) else [result]:
                rows.append(row)
                say(f"{row.what}: rbdfail {row.rbdfail_s:.2f}s, {row.alternatives}")
            write_results(out, args, rows)  # a later scenario that fails loses nothing
    except Exception:
        # What the sites said when it failed, and their logs, are what explain it.
        _show_health(lab_dir)
        keep = True
        raise
    finally:
        lab.down(keep=keep)
        if keep:
            say(f"the lab's folder, daemon logs included, is kept: {lab_dir}")
        else:
            shutil.rmtree(lab_dir, ignore_errors=True)


def _table(args: argparse.Namespace, rows: list[Row], out: Path, started: float) -> None:
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"\nrbdfail benchmark: N={args.n}, median of {args.reps}, "
        f"{platform.node()} ({_cores()} cores, load average {load} at the end), "
        f"{time.monotonic() - started:.0f}s in all\n"
    )
    width = max([len(name) for row in rows for name in row.alternatives] + [11])
    print(f"{'what':<44} {'rbdfail':>9}  {'alternative':<{width}} {'time':>9} {'ratio':>7}  target")
    for row in rows:
        alternatives = list(row.alternatives.items()) or [("", 0.0)]
        for index, (name, seconds) in enumerate(alternatives):
            head = f"{row.what:<44} {row.rbdfail_s:>8.3f}s" if index == 0 else " " * 54
            alt = (
                f"{name:<{width}} {seconds:>8.3f}s {row.rbdfail_s / seconds:>7.3f}" if name else ""
            )
            print(f"{head}  {alt:<{width + 19}}  {row.target if index == 0 else ''}")
    print(f"\nwritten to {out}")


def write_results(out: Path, args: argparse.Namespace, rows: list[Row]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "n": args.n,
        "reps": args.reps,
        "cores": _cores(),
        "load_average": os.getloadavg(),
        "rows": [asdict(r) | {"ratios": r.ratios()} for r in rows],
    }
    out.write_text(json.dumps(document, indent=2))


def timeline(trace: Path, concurrency: int) -> dict[str, float]:
    """Where a run's call slots went, from its `--call-trace` (seconds from the engine's
    start): the phases of the critical path and how busy the slots were."""
    calls = [json.loads(line) for line in trace.read_text().splitlines()]
    if not calls:
        return {"promotes refused (not propagated yet)": 0.0}
    demotes = [c for c in calls if c["call"] == "demote"]
    promoted = [c for c in calls if c["call"] == "promote" and c["outcome"] == "ok"]
    refused = [c for c in calls if c["call"] == "promote" and c["outcome"] == "ImageBusy"]
    end = max(c["ended"] for c in calls)
    busy = sum(c["ended"] - c["started"] for c in calls)

    def mean(found: list[dict[str, Any]]) -> float:
        return statistics.mean(c["ended"] - c["started"] for c in found) if found else 0.0

    return {
        "engine s": round(end, 2),
        "last demote ends s": round(max((c["ended"] for c in demotes), default=0.0), 2),
        "first promote ends s": round(min((c["ended"] for c in promoted), default=0.0), 2),
        "demote mean s": round(mean(demotes), 3),
        "promote mean s": round(mean(promoted), 3),
        "promotes refused (not propagated yet)": float(len(refused)),
        "slot-seconds refused promotes": round(sum(c["ended"] - c["started"] for c in refused), 2),
        "slots busy %": round(100 * busy / (end * concurrency), 1),
    }


def _show_health(lab_dir: Path) -> None:
    for site_dir in sorted(path.parent for path in lab_dir.glob("*/ceph.conf")):
        for args in (["-s"], ["health", "detail"]):
            argv = ["ceph", "-c", str(site_dir / "ceph.conf"), "--connect-timeout", "10", *args]
            done = subprocess.run(argv, capture_output=True, text=True)
            say(f"{site_dir.name}: ceph {' '.join(args)}:\n{done.stdout}{done.stderr}")


def say(message: str) -> None:
    print(f"  {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr}")


def _until_ok(argv: list[str], within_s: float) -> int:
    """Run `argv` until it succeeds; how many runs failed first."""
    deadline = time.monotonic() + within_s
    failed = 0
    while subprocess.run(argv, capture_output=True).returncode != 0:
        failed += 1
        if time.monotonic() > deadline:
            raise RuntimeError(f"{' '.join(argv)} still failing after {within_s:.0f}s")
        time.sleep(0.5)
    return failed


def _first_sync_done(status: ImageStatus) -> bool:
    """rbd-mirror describes a snapshot-mode copy as `replaying, {json}`, the JSON naming the
    last snapshot synced once there is one (it refreshes the description about every 30 s)."""
    _, _, tail = status.description.partition(", ")
    try:
        return bool(json.loads(tail).get("local_snapshot_timestamp"))
    except ValueError:
        return False


@retry(
    # Busy while rbd-mirror holds it; a demoted copy may refuse even a forced disable (EROFS)
    # until its peer's rbd-mirror deletes it.
    retry=retry_if_exception_type((ImageBusy, InvalidState)),
    stop=stop_after_delay(120),
    wait=wait_fixed(1),
    reraise=True,
)
def _drop(cluster: Cluster, name: str, info: MirrorInfo | None) -> None:
    """Disable mirroring of `name` (forced on a copy) and remove it; gone already is fine.
    Busy while rbd-mirror still holds it: tried again."""
    with suppress(ImageNotFound):
        if info is not None:
            try:
                cluster.disable_mirroring(name, force=not info.primary)
            except InvalidState:
                # Read as primary, not primary by now: a demote left running on a source lost
                # mid-run can complete after its thaw.
                cluster.disable_mirroring(name, force=True)
        cluster.remove_image(name)


def _cores() -> int:
    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
