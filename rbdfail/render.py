"""Tables and colours for a terminal; the only module besides cli.py that writes output."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from rbdfail.check import CheckItem
from rbdfail.mirroring import Outcome, Report, VolumeResult
from rbdfail.pools import SetupItem
from rbdfail.status import SiteImage, StatusReport
from rbdfail.volumes import Volume

stdout = Console()
if not stdout.is_terminal:
    stdout = Console(width=120)  # a file or a pipe: wide enough that names and errors fit


def volumes_table(volumes: list[Volume], site: str) -> None:
    table = Table(title=f"volumes on site {site!r}", title_justify="left")
    # Names are what operators copy into the next command: fold them, never cut them.
    table.add_column("volume", overflow="fold")
    table.add_column("type", overflow="fold")
    for column in ("replicated", "wants", "mirrored", "primary"):
        table.add_column(column, no_wrap=True)
    for v in volumes:
        info = v.mirroring
        wanted_but_missing = v.replicated and (info is None or info.mode != v.mirror_mode)
        table.add_row(
            v.name,
            v.volume_type,
            "yes" if v.replicated else "no",
            v.mirror_mode or "-",
            f"[yellow]{info.mode if info else 'no'}[/]"
            if wanted_but_missing
            else (info.mode if info else "no"),
            "-" if info is None else "yes" if info.primary else "no",
        )
    stdout.print(table)
    replicated = sum(v.replicated for v in volumes)
    mirrored = sum(v.mirroring is not None for v in volumes)
    stdout.print(f"{len(volumes)} volumes: {replicated} replicated by type, {mirrored} mirrored")


# ---- per-volume work: progress while it runs, a table when it is done -----------------------
_OUTCOME_STYLE = {
    Outcome.ENABLED: "green",
    Outcome.DISABLED: "green",
    Outcome.ALREADY_ENABLED: "dim",
    Outcome.ALREADY_DISABLED: "dim",
    Outcome.MISMATCH: "yellow",
    Outcome.FAILED: "red",
    Outcome.NOT_STARTED: "yellow",
}


class VolumeProgress:
    """Live progress on stderr: a rich bar on a terminal, one timestamped line per volume
    otherwise (logs, CI, runbooks piping stderr to a file)."""

    def __init__(self, title: str, total: int) -> None:
        self.console = Console(stderr=True)
        self.total = total
        self.done = 0
        self.counts: dict[str, int] = {}
        self._live = self.console.is_terminal
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[counts]}"),
            TimeElapsedColumn(),
            console=self.console,
            disable=not self._live,
        )
        self._task = self._progress.add_task(title, total=total, counts="")
        self._title = title

    def __enter__(self) -> VolumeProgress:
        self._progress.start()
        if not self._live:
            self._line(f"{self._title}: {self.total} volume(s) to do")
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def __call__(self, result: VolumeResult) -> None:
        self.done += 1
        self.counts[result.outcome] = self.counts.get(result.outcome, 0) + 1
        summary = ", ".join(f"{n} {o}" for o, n in sorted(self.counts.items()))
        self._progress.update(self._task, advance=1, counts=summary)
        if not self._live:
            error = f": {result.detail}" if result.outcome.needs_attention else ""
            self._line(
                f"[{self.done}/{self.total}] {result.name} {result.outcome}{error} "
                f"({result.duration_s:.1f}s)"
            )

    def _line(self, text: str) -> None:
        self.console.print(f"{time.strftime('%H:%M:%S')} {text}", highlight=False, markup=False)


def mirroring_report(report: Report) -> None:
    what = "plan" if report.dry_run else "result"
    table = Table(title=f"{report.operation} {what} on site {report.site!r}", title_justify="left")
    table.add_column("volume", overflow="fold")
    table.add_column("type", overflow="fold")
    table.add_column("mode", no_wrap=True)
    table.add_column("action", no_wrap=True)
    table.add_column("detail", overflow="fold")
    if not report.dry_run:
        table.add_column("time", justify="right", no_wrap=True)
    for v in report.volumes:
        style = _OUTCOME_STYLE[v.outcome]
        row = [v.name, v.volume_type or "-", v.mode or "-", f"[{style}]{v.outcome}[/]", v.detail]
        if not report.dry_run:
            row.append(f"{v.duration_s:.1f}s")
        table.add_row(*row)
    stdout.print(table)
    counts = ", ".join(f"{n} {o}" for o, n in sorted(report.counts.items())) or "nothing to do"
    tail = "" if report.dry_run else f" in {report.duration_s:.1f}s"
    interrupted = " (interrupted)" if report.interrupted else ""
    stdout.print(f"{len(report.volumes)} volume(s): {counts}{tail}{interrupted}", highlight=False)


def setup_items(items: list[SetupItem]) -> None:
    table = Table(title="setup", title_justify="left")
    for column in ("site", "item", "action", "detail"):
        table.add_column(column, overflow="fold")
    styles = {"changed": "green", "in place": "dim", "failed": "red"}
    for item in items:
        table.add_row(item.site, item.item, f"[{styles[item.action]}]{item.action}[/]", item.detail)
    stdout.print(table)


def status_table(report: StatusReport) -> None:
    sites = list(report.sites)
    table = Table(title=f"volumes (active backend: {report.active_backend})", title_justify="left")
    table.add_column("volume", overflow="fold")
    table.add_column("type", overflow="fold")
    table.add_column("primary", no_wrap=True)
    for site in sites:
        table.add_column(site, overflow="fold")
    table.add_column("lag", justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for v in report.volumes:
        attention = bool(v.problems)
        primary = f"[red]{v.primary_site}[/]" if attention else v.primary_site
        lag = (
            f"{v.lag_seconds:.0f}s"
            if v.lag_seconds is not None
            else f"{v.entries_behind} entries"
            if v.entries_behind is not None
            else "-"
        )
        status = v.status + (f" (was {v.previous_status})" if v.previous_status else "")
        cells = [_site_cell(v.sites[site]) for site in sites]
        table.add_row(v.name, v.volume_type, primary, *cells, lag, status)
    stdout.print(table)
    sites_table = Table(title="sites", title_justify="left")
    for column in ("site", "reachable", "pool mode", "peers", "rbd-mirror", "problems"):
        sites_table.add_column(column, overflow="fold")
    for site, view in report.sites.items():
        sites_table.add_row(
            site,
            "yes" if view.reachable else f"[red]no[/]: {view.error}",
            str(view.pool_mode or "-"),
            ", ".join(f"{p.site_name} ({p.direction})" for p in view.peers) or "-",
            report.mirror_daemon(site)[0],
            "[yellow]" + "; ".join(view.problems) + "[/]" if view.problems else "-",
        )
    stdout.print(sites_table)
    problems = report.problems
    if problems:
        stdout.print(f"[yellow]{len(problems)} thing(s) need attention:[/]")
        for problem in problems:
            stdout.print(f"  - {problem}", highlight=False)
    else:
        replicated = sum(v.replicated for v in report.volumes)
        stdout.print(f"[green]healthy[/]: {len(report.volumes)} volumes, {replicated} replicated")


def _site_cell(image: SiteImage) -> str:
    role = {True: "primary", False: "copy", None: ""}[image.primary]
    text = f"{role} {image.state}".strip()
    bad = image.state in ("error", "unknown", "unreachable")
    return f"[red]{text}[/]" if bad else text


def check_items(target: str, items: list[CheckItem]) -> None:
    styles = {"pass": "green", "warn": "yellow", "fail": "red"}
    table = Table(title=f"check: failover to {target!r}", title_justify="left")
    for column in ("item", "verdict", "reason"):
        table.add_column(column, overflow="fold")
    for item in items:
        table.add_row(item.name, f"[{styles[item.verdict]}]{item.verdict}[/]", item.reason)
    stdout.print(table)
    failed = sum(item.verdict == "fail" for item in items)
    stdout.print("[green]ready[/]" if not failed else f"[red]not ready[/]: {failed} item(s) failed")
