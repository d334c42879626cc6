"""The ways the lab can fail a site: a vocabulary of its own, so that the command line can offer
them without importing the lab."""

from __future__ import annotations

from enum import StrEnum

DAEMONS = ("mon", "mgr", "osd", "rbd-mirror")  # each lab site's, in start order


class Disaster(StrEnum):
    """The ways the lab can fail a site (`Lab.fail`)."""

    PARTITION = "partition"  # every daemon stopped (SIGSTOP): calls hang, as across a cut link
    STORAGE_DEAD = "storage-dead"  # mon, mgr and OSD stopped; its rbd-mirror runs on
    KILLED = "killed"  # every daemon killed: connections refused; no way back (memstore)
    SLOW = "slow"  # alive, but its OSD stopped 3 tenths of every 4: every op is slow

    @property
    def stopped(self) -> tuple[str, ...]:
        """The daemons this disaster stops (SIGSTOP) or kills."""
        if self == Disaster.STORAGE_DEAD:
            return ("mon", "mgr", "osd")
        if self == Disaster.SLOW:
            return ()
        return DAEMONS
