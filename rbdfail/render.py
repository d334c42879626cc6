"""Tables and colours for a terminal; the only module besides cli.py that writes output."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from rbdfail.volumes import Volume

stdout = Console()


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
