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
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rbdfail import ceph
from rbdfail.cluster import Cluster
from rbdfail.config import Config, load_config
from rbdfail.lab import Lab

RBDFAIL = [sys.executable, "-m", "rbdfail"]
SCENARIOS = {
    "help": "help_startup",
    "enable": "enable_mirroring",
    "status": "status",
    "forced": "forced_failover",
}


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
        self.primary: Cluster = ceph.connect(config.backend, 10)
        self.pool = config.backend.pool

    def images(self, prefix: str) -> list[str]:
        names = [f"{prefix}-{i:04}" for i in range(self.n)]
        with ThreadPoolExecutor(64) as pool:
            list(pool.map(lambda name: self.primary.create_image(name, 16 << 20), names))
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
            if rep > 0:
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
            {k: statistics.median(v) for k, v in runs.items() if k != "rbdfail"},
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

    def mirrored(self, prefix: str) -> list[str]:
        """N new snapshot-mode volumes, mirrored, each with a usable copy on the secondary."""
        names = self.images(prefix)
        timed(self.rbdfail("enable-mirroring", "--concurrency", "200", *names))
        secondary = ceph.connect(self.config.replication_devices[0], 10)
        deadline = time.monotonic() + 900
        try:
            while True:
                infos = secondary.mirror_infos()
                ready = [n for n in names if n in infos and infos[n].state == "enabled"]
                if len(ready) == len(names):
                    return names
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {len(ready)} of {len(names)} copies in 15 min")
                time.sleep(2)
        finally:
            secondary.close()

    def forced_failover(self) -> Row:
        """The primary frozen: `rbdfail failover` vs `rbd mirror pool promote --force` on the
        secondary. Once each: a forced failover leaves its volumes primary on both sites."""
        secondary = self.config.replication_devices[0]
        runs: dict[str, list[float]] = {"rbdfail": [], "rbd pool promote --force": []}
        lab = Lab(self.config_file.parent)
        # Earlier scenarios' mirrored volumes would be promoted too: both sides must move N.
        earlier = [n for n, info in self.primary.mirror_infos().items() if info.primary]
        self.forget(earlier)
        copies = ceph.connect(secondary, 10)
        try:
            deadline = time.monotonic() + 300
            while set(earlier) & set(copies.mirror_infos()) and time.monotonic() < deadline:
                time.sleep(2)
        finally:
            copies.close()
        self.mirrored("db-forced-a")
        lab.freeze("primary")
        try:
            runs["rbd pool promote --force"].append(
                timed(
                    [
                        "rbd",
                        "-c",
                        str(secondary.conf),
                        "--id",
                        secondary.user,
                        "mirror",
                        "pool",
                        "promote",
                        "--force",
                        secondary.pool,
                    ]
                )
            )
        finally:
            lab.thaw("primary")
        self.mirrored("db-forced-b")
        lab.freeze("primary")
        try:
            runs["rbdfail"].append(timed(self.rbdfail("failover", "--to", "secondary", "--yes")))
        finally:
            lab.thaw("primary")
        return Row(
            f"failover, primary frozen, {self.n} volumes",
            runs["rbdfail"][0],
            {"rbd pool promote --force": runs["rbd pool promote --force"][0]},
            "<= 0.5",
            runs,
        )

    def help_startup(self) -> Row:
        median, runs = median_of(max(self.reps, 5), lambda _: timed([*RBDFAIL, "--help"]))
        return Row("rbdfail --help start-up", median, {}, "< 0.3 s", {"rbdfail": runs})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="volumes per scenario")
    parser.add_argument("--reps", type=int, default=3, help="repetitions where repeatable")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--only", nargs="*", choices=SCENARIOS, default=list(SCENARIOS), help="scenarios to run"
    )
    args = parser.parse_args()

    # SIGTERM would end Python without the `finally` below and leave the lab running.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    lab_dir = Path(tempfile.mkdtemp(prefix="rbdfail-bench-"))
    lab = Lab(lab_dir, progress=lambda m: print(f"  lab: {m}", file=sys.stderr))
    started = time.monotonic()
    config_file = lab.up()
    try:
        bench = Bench(load_config(config_file), config_file, args.n, args.reps)
        rows = [getattr(bench, SCENARIOS[name])() for name in args.only]
    finally:
        lab.down()
        shutil.rmtree(lab_dir, ignore_errors=True)

    print(
        f"\nrbdfail benchmark: N={args.n}, median of {args.reps}, "
        f"{platform.node()} ({_cores()} cores), {time.monotonic() - started:.0f}s in all\n"
    )
    print(f"{'what':<48} {'rbdfail':>9}  {'alternative':<16} {'time':>9} {'ratio':>7}  target")
    for row in rows:
        alternatives = list(row.alternatives.items()) or [("", 0.0)]
        for index, (name, seconds) in enumerate(alternatives):
            head = f"{row.what:<48} {row.rbdfail_s:>8.2f}s" if index == 0 else " " * 58
            alt = f"{name:<16} {seconds:>8.2f}s {row.rbdfail_s / seconds:>7.3f}" if name else ""
            print(f"{head}  {alt:<35}  {row.target if index == 0 else ''}")
    out = args.out or Path("bench/results") / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "n": args.n,
                "reps": args.reps,
                "cores": _cores(),
                "rows": [asdict(r) | {"ratios": r.ratios()} for r in rows],
            },
            indent=2,
        )
    )
    print(f"\nwritten to {out}")


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
