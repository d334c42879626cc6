"""rbdfail's own exceptions.

Every error carries a human diagnosis (what happened, to which site/volume/key) and a hint
(what to do next). `str(error)` is the diagnosis alone, one line that fits a JSON field or a
report's cell; the hint is a field of its own. The CLI prints both and maps the class to an
exit code; nothing below the CLI prints.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Every exit code of rbdfail, for runbooks (docs/reference/exit-codes.md)."""

    OK = 0
    FAILED = 1  # nothing could be done: a fatal error, a refused pre-flight
    USAGE = 2  # usage or configuration error
    PARTIAL = 3  # some volumes need attention, each named in the report
    LOCKED = 4  # another run holds the lock (drill: a switch is running)
    UNREACHABLE = 5  # the target site does not answer; nothing was changed
    INTERRUPTED = 130  # Ctrl-C; run the same command again to finish


class RbdfailError(Exception):
    """Base of every error rbdfail reports to an operator."""

    exit_code: ExitCode = ExitCode.FAILED

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message

    def to_json(self) -> dict[str, str | None]:
        return {"reason": self.message, "hint": self.hint}


class ConfigError(RbdfailError):
    """The configuration file is missing, unreadable or invalid."""

    exit_code = ExitCode.USAGE


class StateCorrupt(RbdfailError):
    """A file of the state dir holds something rbdfail did not write: named, with what to do."""

    exit_code = ExitCode.USAGE


class CephBindingsMissing(RbdfailError):
    """python3-rados / python3-rbd cannot be imported."""


class LabError(RbdfailError):
    """The local two-site lab could not be started, stopped or reached."""


class CephError(RbdfailError):
    """A cluster operation failed; names the site and, where there is one, the image."""

    def __init__(
        self,
        message: str,
        *,
        site: str,
        image: str | None = None,
        hint: str | None = None,
    ) -> None:
        where = f"site {site!r}" + (f", volume {image!r}" if image else "")
        super().__init__(f"{where}: {message}", hint=hint)
        self.site = site
        self.image = image
        self.reason = message


class SiteUnreachable(CephError):
    """The site's monitors or OSDs did not answer within the connect timeout."""


class OperationTimedOut(CephError):
    """One operation did not finish within its timeout (the site may be partitioned)."""


class PermissionDenied(CephError):
    """The cephx user lacks the caps for this operation."""


class ImageNotFound(CephError):
    """The image does not exist (or vanished) on this site."""


class ImageExists(CephError):
    """An image with that name already exists."""


class ImageBusy(CephError):
    """Ceph answered EBUSY: e.g. the peer is still primary or a demotion has not propagated yet."""


class InvalidState(CephError):
    """Ceph answered EINVAL: e.g. promoting an image that is already primary."""


class LockHeld(CephError):
    """Another run holds rbdfail's lock on the site; `holder` is what it wrote there."""

    def __init__(self, message: str, *, site: str, holder: str, hint: str | None = None) -> None:
        super().__init__(message, site=site, hint=hint)
        self.holder = holder


class LockLost(CephError):
    """The run's switch lock is not provably held any more: it stops issuing Ceph calls."""


class LockedByAnotherRun(RbdfailError):
    """Another failover or failback holds a site's switch lock: someone else is running."""

    exit_code = ExitCode.LOCKED


class TargetUnreachable(RbdfailError):
    """The site a switch would move volumes to does not answer: nothing was changed."""

    exit_code = ExitCode.UNREACHABLE
