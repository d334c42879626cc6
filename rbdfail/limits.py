"""The bounds of every number an operator gives, in the file or on the command line.

Beyond them a value is a typo, and an absurd one breaks what follows: 1e10 s overflows a
thread wait after demotions started, inf waits for ever, nan makes every comparison false.
No imports beyond math, so that the CLI can use them without slowing `--help`.
"""

from __future__ import annotations

import math

MAX_SECONDS = 86400.0  # any timeout or interval: one day
MAX_LAG_SECONDS = 365 * 86400.0  # check --max-lag: a copy a year old is a copy to resync
MAX_CONCURRENCY = 1024  # Ceph calls in flight; each holds a thread
# The shortest OSD op timeout rbdfail's connections get (ceph.py says why it is never shorter):
# also how long a call to a site that died under the run may take before it fails.
OSD_OP_FLOOR_S = 30


def seconds_problem(
    value: float, least: float = 0.0, most: float = MAX_SECONDS, zero_ok: bool = False
) -> str | None:
    """What is wrong with a number of seconds, or None: the same words for the file's keys and
    the command line's options. 0 is refused unless `zero_ok`: a timeout must be some time."""
    if math.isnan(value):
        return "must be a number, not nan"
    if math.isinf(value):
        return "must be finite"
    if value < least or (value == 0 and not zero_ok):
        return f"must be at least {least:g}" if least else "must be greater than 0"
    if value > most:
        return f"must be at most {most:g}" + (" (one day)" if most == MAX_SECONDS else "")
    return None
