"""Tables and colours for a terminal; the only module besides cli.py that writes output."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from rbdfail.check import CheckItem, Verdict
from rbdfail.cinder.steps import CinderSteps
from rbdfail.drill import DrillReport, VolumeDrill
from rbdfail.mirroring import Outcome, Report
from rbdfail.pools import SetupAction, SetupItem
from rbdfail.rpo import Rpo
from rbdfail.status import SiteImage, StatusReport
from rbdfail.switch.deployment import SwitchOfBackends
from rbdfail.switch.model import (
    Action,
    DaemonOut,
    Plan,
    SwitchPlan,
    SwitchReport,
    VolumeOutcome,
)
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
            escape(v.name),
            escape(v.volume_type),
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


class _Attention(Protocol):
    @property
    def needs_attention(self) -> bool: ...


class _Done(Protocol):
    """One volume's result as progress shows it (enable/disable mirroring, drill)."""

    @property
    def name(self) -> str: ...
    @property
    def outcome(self) -> _Attention: ...
    @property
    def detail(self) -> str: ...
    @property
    def duration_s(self) -> float: ...


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

    def __call__(self, result: _Done) -> None:
        self.done += 1
        outcome = str(result.outcome)
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
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
        row = [
            escape(v.name),
            escape(v.volume_type or "-"),
            v.mode or "-",
            f"[{style}]{v.outcome}[/]",
            escape(v.detail),
        ]
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
    styles = {SetupAction.CHANGED: "green", SetupAction.IN_PLACE: "dim", SetupAction.FAILED: "red"}
    for item in items:
        action = f"[{styles[item.action]}]{item.action}[/]"
        table.add_row(escape(item.site), item.item, action, escape(item.detail))
    stdout.print(table)


def status_table(report: StatusReport) -> None:
    sites = list(report.sites)
    table = Table(title=f"volumes (active backend: {report.active_backend})", title_justify="left")
    table.add_column("volume", overflow="fold")
    table.add_column("type", overflow="fold")
    table.add_column("primary", no_wrap=True)
    for site in sites:
        table.add_column(site, overflow="fold")
    table.add_column("RPO", justify="right", no_wrap=True)
    table.add_column("schedule", no_wrap=True)
    table.add_column("users", justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for v in report.volumes:
        attention = bool(v.problems)
        primary = f"[red]{escape(v.primary_site)}[/]" if attention else escape(v.primary_site)
        rpo = ("first sync" if v.rpo.first_sync else str(v.rpo)) if v.replicated else "-"
        schedule = v.snapshot_interval or "-"
        if v.schedule_ok is False:
            schedule = f"[red]{escape(schedule)} stopped[/]"
        users = str(len(v.users)) if v.users is not None else "-"
        status = escape(v.status + (f" (was {v.previous_status})" if v.previous_status else ""))
        cells = [_site_cell(v.sites[site]) for site in sites]
        table.add_row(
            escape(v.name), escape(v.volume_type), primary, *cells, rpo, schedule, users, status
        )
    stdout.print(table)
    sites_table = Table(title="sites", title_justify="left")
    columns = ("site", "reachable", "pool mode", "peers", "rbd-mirror", "worst RPO", "problems")
    for column in columns:
        sites_table.add_column(column, overflow="fold")
    for site, view in report.sites.items():
        worst = report.worst_rpo(site)
        sites_table.add_row(
            site,
            "yes" if view.reachable else f"[red]no[/]: {escape(str(view.error))}",
            str(view.pool_mode or "-"),
            ", ".join(f"{p.site_name} ({p.direction})" for p in view.peers) or "-",
            report.mirror_daemon(site)[0],
            escape(f"{worst.rpo} ({worst.name})") if worst else "-",
            "[yellow]" + escape("; ".join(view.problems)) + "[/]" if view.problems else "-",
        )
    stdout.print(sites_table)
    problems = report.problems
    if problems:
        stdout.print(f"[yellow]{len(problems)} thing(s) need attention:[/]")
        for problem in problems:
            stdout.print(f"  - {escape(problem)}", highlight=False)
    else:
        replicated = sum(v.replicated for v in report.volumes)
        stdout.print(f"[green]healthy[/]: {len(report.volumes)} volumes, {replicated} replicated")


def _site_cell(image: SiteImage) -> str:
    role = {True: "primary", False: "copy", None: ""}[image.primary]
    text = escape(f"{role} {image.state}".strip())
    bad = image.state in ("error", "unknown", "unreachable")
    return f"[red]{text}[/]" if bad else text


def check_items(target: str, items: list[CheckItem]) -> None:
    styles = {"pass": "green", "warn": "yellow", "fail": "red"}
    table = Table(title=f"check: failover to {target!r}", title_justify="left")
    for column in ("item", "verdict", "reason"):
        table.add_column(column, overflow="fold")
    for item in items:
        verdict = f"[{styles[item.verdict]}]{item.verdict}[/]"
        table.add_row(escape(item.name), verdict, escape(item.reason))
    stdout.print(table)
    failed = sum(item.verdict == Verdict.FAIL for item in items)
    stdout.print("[green]ready[/]" if not failed else f"[red]not ready[/]: {failed} item(s) failed")


# ---- failover ---------------------------------------------------------------------------------
_PLAN_STYLE = {
    Plan.DEMOTE_PROMOTE: "green",
    Plan.PROMOTE: "green",
    Plan.FORCE_PROMOTE: "yellow",
    Plan.NOTHING: "dim",
    Plan.MARK_ERROR: "dim",
    Plan.RESTORE: "dim",
    Plan.RESYNC: "yellow",
    Plan.CANNOT: "red",
}
_ACTION_STYLE = {
    Action.DEMOTED_PROMOTED: "green",
    Action.RESYNCED_PROMOTED: "green",
    Action.FORCE_PROMOTED: "yellow",
    Action.ALREADY_PRIMARY: "dim",
    Action.NOT_REPLICATED: "dim",
    Action.RESTORED: "dim",
    Action.FAILED: "red",
    Action.NOT_STARTED: "yellow",
}
stderr = Console(stderr=True)


def switch_plan(plan: SwitchPlan, console: Console = stdout) -> None:
    table = Table(title=f"failover plan: {plan.source} -> {plan.target}", title_justify="left")
    table.add_column("volume", overflow="fold")
    table.add_column("type", overflow="fold")
    table.add_column("plan", no_wrap=True)
    table.add_column("why", overflow="fold")
    for v in plan.volumes:
        plan_cell = f"[{_PLAN_STYLE[v.plan]}]{v.plan}[/]"
        why = v.reason
        if v.schedule:
            why += f"; then its {v.schedule} snapshot schedule is added on {plan.target}"
        if v.users:
            why += f"; open on {plan.source} by {', '.join(v.users)}"
        table.add_row(escape(v.name), escape(v.volume_type), plan_cell, escape(why))
    console.print(table)
    if not plan.source_reachable:
        known = (
            f"volumes that exist only on {plan.source} are those it had when last listed "
            f"({plan.inventory_taken_at})"
            if plan.inventory_taken_at
            else f"volumes that exist only on {plan.source} are unknown (it was never listed "
            "by rbdfail from here) and cannot be marked"
        )
        console.print(
            f"[yellow]{plan.source} is unreachable ({escape(str(plan.source_error))}): "
            f"replicated volumes will be force-promoted on {plan.target}; {known}.[/]"
        )
    if plan.forced and plan.takes_daemon_out_s is not None:
        console.print(
            f"{plan.target}'s rbd-mirror will be taken out of the way once first: its "
            f"addresses blocklisted for {plan.takes_daemon_out_s}s (it comes back by itself "
            "once the entries lapse)"
        )
    if plan.forced and plan.breaks_locks_after is not None:
        console.print(
            f"a forced promote still waiting for {plan.target}'s rbd-mirror to hand the copy's "
            f"lock over after {plan.breaks_locks_after:g}s takes it (Ceph blocklists the "
            "daemon for a minute); the daemon may be stuck on the lost site"
        )
    elif plan.forced:
        console.print(
            f"forced promotes wait for {plan.target}'s rbd-mirror to hand each copy's lock "
            "over (--no-break-locks): they hang if it is stuck on the lost site"
        )
    if plan.resumes:
        console.print(f"finishing the failover run {plan.resumes}, which was cut off")
    for warning in plan.warnings:
        console.print(f"[yellow]{escape(warning)}[/]")
    counts = ", ".join(f"{n} {p}" for p, n in sorted(plan.counts().items())) or "no volumes"
    console.print(f"{len(plan.volumes)} volume(s): {counts}", highlight=False)


class SwitchProgress:
    """Live switch progress on stderr: on a terminal, an overall bar with the counts and
    the volumes in flight longest; otherwise one timestamped line per event. Before the
    volumes move, what the switch is doing goes to `say`."""

    SHOWN_IN_FLIGHT = 5

    def __init__(self, say: Callable[[str], None]) -> None:
        self.note = say
        self.console = Console(stderr=True)
        self.total = 0
        self.counts = {"demoted": 0, "promoted": 0, "forced": 0, "failed": 0}
        self.in_flight: dict[str, tuple[str, float]] = {}  # volume -> (step, since)
        self.lost: str | None = None
        self._lock = threading.Lock()
        self._live = self.console.is_terminal
        self._bar = Progress(console=self.console)
        self._task = self._bar.add_task("")
        self._display = Live(
            console=self.console, get_renderable=self._renderable, refresh_per_second=4
        )

    def started(self, plan: SwitchPlan) -> None:
        self.total = sum(
            v.plan in (Plan.DEMOTE_PROMOTE, Plan.PROMOTE, Plan.FORCE_PROMOTE, Plan.RESYNC)
            for v in plan.volumes
        )
        self._bar = Progress(
            TextColumn(f"[bold]{plan.operation} to {plan.target}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
        )
        self._task = self._bar.add_task("", total=self.total)
        if self._live:
            self._display.start()
        else:
            self._line(f"{plan.operation} to {plan.target}: {self.total} volume(s) to move")

    def ended(self) -> None:
        if self._live:
            self._display.stop()

    def _renderable(self) -> RenderableType:
        with self._lock:
            longest = sorted(self.in_flight.items(), key=lambda item: item[1][1])
        table = Table.grid(padding=(0, 2))
        now = time.monotonic()
        for name, (step, since) in longest[: self.SHOWN_IN_FLIGHT]:
            table.add_row(f"  {escape(name)}", step, f"{now - since:.0f}s")
        counts = "  ".join(f"{what} {n}" for what, n in self.counts.items())
        parts: list[RenderableType] = [self._bar, f"  {counts}", table]
        if self.lost:
            parts.insert(0, f"[yellow]{escape(self.lost)}: forcing the rest[/]")
        return Group(*parts)

    def step(self, name: str, step: str) -> None:
        with self._lock:
            since = self.in_flight.get(name, (step, time.monotonic()))[1]
            self.in_flight[name] = (step, since)
            counted = {"demoted": "demoted", "promoted": "promoted", "force-promoted": "forced"}
            if step in counted:
                self.counts[counted[step]] += 1
        if not self._live and step in ("roll-back", "rolled-back", "resync", "resynced"):
            self._line(f"{name}: {step}")

    def finished(self, outcome: VolumeOutcome) -> None:
        with self._lock:
            self.in_flight.pop(outcome.name, None)
            if outcome.action == Action.FAILED:
                self.counts["failed"] += 1
            self._bar.advance(self._task)
            done = self._bar.tasks[0].completed
        if not self._live:
            error = f": {outcome.error}" if outcome.error else ""
            self._line(
                f"[{done:.0f}/{self.total}] {outcome.name} {outcome.action}{error} "
                f"({outcome.duration_s:.1f}s)"
            )

    def primary_lost(self, reason: str) -> None:
        self.lost = reason
        if not self._live:
            self._line(f"{reason}: no more demotions, forcing the rest")

    def _line(self, text: str) -> None:
        self.console.print(f"{time.strftime('%H:%M:%S')} {text}", highlight=False, markup=False)


def switch_report(report: SwitchReport) -> None:
    plan = report.plan
    table = Table(
        title=f"{plan.operation} {plan.source} -> {plan.target}: {report.result}",
        title_justify="left",
    )
    table.add_column("volume", overflow="fold")
    table.add_column("action", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("time", justify="right", no_wrap=True)
    worst = report.worst_rpo
    if worst is not None:  # forced: which point in time each forced copy serves
        table.add_column("rpo", justify="right", no_wrap=True)
    table.add_column("error / detail", overflow="fold")
    for v in report.volumes:
        style = _ACTION_STYLE[v.action]
        cells = [escape(v.name), f"[{style}]{v.action}[/]", v.status or "-", f"{v.duration_s:.1f}s"]
        if worst is not None:
            cells.append(rpo_text(v.rpo) if v.rpo is not None else "")
        detail = f"[red]{escape(v.error)}[/]" if v.error else escape(v.detail)
        if v.rpo is not None and v.rpo.seconds is None:
            detail += f"; rpo unknown: {escape(v.rpo.how)}"
        table.add_row(*cells, detail)
    stdout.print(table)
    if report.primary_lost and not plan.source_reachable:
        lost = escape(report.primary_lost)
        stdout.print(f"[yellow]{lost}[/]: replicated volumes were force-promoted")
    elif report.primary_lost:
        stdout.print(
            f"[yellow]{escape(report.primary_lost)}[/]: the volumes not demoted by then were forced"
        )
    if (out := report.daemon_out) is not None:
        stdout.print(daemon_out_text(out), highlight=False)
    for warning in plan.warnings:
        stdout.print(f"[yellow]{escape(warning)}[/]")
    for unrecorded in report.unrecorded:
        stdout.print(f"[red]not recorded: {escape(unrecorded)}[/]")
    counts = ", ".join(f"{n} {a}" for a, n in sorted(report.counts().items()))
    worst_text = (
        f"; worst rpo {rpo_text(worst.rpo)} ({escape(worst.name)})"
        if worst is not None and worst.rpo is not None
        else ""
    )
    stdout.print(
        f"{len(report.volumes)} volume(s): {counts} in {report.duration_s:.1f}s{worst_text}; "
        f"active backend: {report.active_backend}; run {report.run_id}"
        + (" (interrupted)" if report.interrupted else ""),
        highlight=False,
    )


def rpo_text(rpo: Rpo) -> str:
    """An RPO with the time of the point it counts from: "≤42s (06:51:03Z)"."""
    if rpo.last_sync is None:
        return str(rpo)
    at = datetime.fromtimestamp(rpo.last_sync, UTC).strftime("%H:%M:%SZ")
    return f"{rpo} ({at})"


def cinder_steps(steps: CinderSteps, console: Console = stdout) -> None:
    """What Cinder and Nova need after the switch: commands to run, one a line, copyable."""
    if steps.empty:
        return
    console.print("[bold]Then in Cinder and Nova[/] (rbdfail runs none of these):")
    for line in steps.lines():
        style = "dim" if line.startswith("#") else ""
        console.print(
            f"  [{style}]{escape(line)}[/]" if style else f"  {escape(line)}",
            highlight=False,
            soft_wrap=True,
        )


def daemon_out_text(out: DaemonOut) -> str:
    """What taking the target's rbd-mirror out came to, for the text report."""
    if out.error is not None:
        return (
            f"[yellow]{out.site}'s rbd-mirror could not be taken out ({escape(out.error)}): "
            "each forced promote waited for its lock hand-off instead[/]"
        )
    if not out.clients:
        return f"{out.site}'s rbd-mirror held no copy's lock: nothing blocklisted"
    return (
        f"{out.site}'s rbd-mirror taken out once: {', '.join(out.addresses)} blocklisted for "
        f"{out.expires_s}s ({out.duration_s:.1f}s); it comes back by itself once the entry "
        f"lapses (`ceph osd blocklist ls` on {out.site} shows it until then)"
    )


def backend_heading(backend: str, where: str, console: Console = stdout) -> None:
    """Where one backend's part of a command of several backends begins."""
    console.rule(f"[bold]backend {escape(backend)}[/] (pool {escape(where)})", align="left")


def switch_of_backends(switch: SwitchOfBackends, console: Console = stdout) -> None:
    """Each backend's plan, or its report once carried out, then the switch's outcome."""
    for why in switch.left_out:
        console.print(f"[yellow]left out: {escape(why)}[/]")
    for part in switch.parts:
        backend_heading(part.backend, part.where, console)
        if part.report is None:
            switch_plan(part.plan, console)
        else:
            switch_report(part.report)
    if switch.carried_out:
        moved = sum(len(report.volumes) for report in switch.reports)
        console.print(
            f"[bold]{switch.operation} to {switch.target}: {switch.result}[/] "
            f"({len(switch.parts)} backends, {moved} volume(s))",
            highlight=False,
        )


# ---- drill (issue 16) -------------------------------------------------------------------------
_VERDICT_STYLE = {"identical": "green", "differs": "red", "unknown": "yellow"}


class DrillProgress:
    """The drill's observer: its notes as timestamped lines on stderr, then the per-volume
    progress of the other commands once the volumes are known."""

    def __init__(self, line: Callable[[str], None]) -> None:
        self._line = line
        self._bar: VolumeProgress | None = None

    def note(self, message: str) -> None:
        self._line(message)

    def started(self, total: int) -> None:
        self._bar = VolumeProgress("drill", total)
        self._bar.__enter__()

    def finished(self, volume: VolumeDrill) -> None:
        if self._bar is not None:
            self._bar(volume)

    def stopped(self, reason: str) -> None:
        self.close()
        self._line(f"drill stopped: {reason}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


def drill_report(report: DrillReport) -> None:
    mode = "every extent" if report.full else "sampled"
    table = Table(
        title=f"drill of {report.target!r} against {report.source!r} ({mode})",
        title_justify="left",
    )
    table.add_column("volume", overflow="fold")
    table.add_column("verdict", no_wrap=True)
    table.add_column("snapshot", no_wrap=True)
    table.add_column("RPO", justify="right", no_wrap=True)
    table.add_column("detail", overflow="fold")
    with_exec = any(v.exec for v in report.volumes)
    if with_exec:
        table.add_column("--exec", no_wrap=True)
    for v in report.volumes:
        row = [
            escape(v.name),
            f"[{_VERDICT_STYLE[v.verdict]}]{v.verdict}[/]",
            f"{v.snapshot.primary_id}/{v.snapshot.copy_id}" if v.snapshot else "-",
            f"{v.rpo_seconds:.0f}s" if v.rpo_seconds is not None else "-",
            escape(v.detail),
        ]
        if with_exec:
            code = "-" if v.exec is None else v.exec.exit_code
            row.append(f"exit {code}" if v.exec and code is not None else escape(str(code)))
        table.add_row(*row)
    stdout.print(table)
    counts = ", ".join(f"{n} {o}" for o, n in sorted(report.counts.items())) or "no volume"
    stdout.print(
        f"{len(report.volumes)} volume(s): {counts}, {report.result}, in {report.duration_s:.1f}s",
        highlight=False,
    )
    if report.stopped:
        stdout.print(f"[yellow]stopped: {escape(report.stopped)}[/]")
    for warning in report.warnings:
        stdout.print(f"[yellow]warning: {escape(warning)}[/]")
