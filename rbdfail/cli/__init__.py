"""The command line: each command's module registers it on the group `main` (base.py); `run`
is the program."""

from rbdfail.cli import cinder, drill, lab, mirroring, pools, status, switch  # noqa: F401
from rbdfail.cli.base import AppContext, main, run

__all__ = ["AppContext", "main", "run"]
