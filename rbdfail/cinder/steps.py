"""After a switch, what Cinder and Nova need: the exact commands, never run by rbdfail.

rbdfail moves the RBD images; Cinder still believes the backend it last knew is active, and
Nova's attachments still carry the old site's monitors. Cinder's way after a switch made
outside it is `cinder-manage db reset_active_backend` (cinder/cmd/manage.py: --enable-replication,
--active-backend-id ID, --backend-host HOST@BACKEND; no --active-backend-id is the primary),
run with that backend's cinder-volume stopped. Nova's is `nova-manage volume_attachment refresh
INSTANCE_UUID VOLUME_ID CONNECTOR_PATH` (nova/cmd/manage.py, Xena and later), per attached
volume, the instance stopped, CONNECTOR_PATH written on its compute host by `nova-manage
volume_attachment get_connector --json`.

The host comes from the config's `cinder_host` (import-cinder writes it); the attachments from
the state dir's cinder-attachments.json (import-cinder --volume-list --state-dir), which the
YAML never holds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rbdfail.config import DEFAULT_BACKEND_ID, Config
from rbdfail.switch.model import Action, SwitchReport

ATTACHMENTS_FILE = "cinder-attachments.json"
UNKNOWN_HOST = "HOST@{backend}"  # when the config has no cinder_host
# What moved a replicated volume's primary to the target (already-primary: an earlier run did).
_MOVED = (
    Action.DEMOTED_PROMOTED,
    Action.RESYNCED_PROMOTED,
    Action.FORCE_PROMOTED,
    Action.ALREADY_PRIMARY,
)


@dataclass(frozen=True)
class CinderSteps:
    cinder_manage: tuple[str, ...]
    nova_manage: tuple[str, ...]  # per attached volume that moved, after get_connector
    connectors: tuple[str, ...]  # the get_connector line per compute host
    notes: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "cinder_manage": list(self.cinder_manage),
            "get_connector": list(self.connectors),
            "nova_manage": list(self.nova_manage),
            "notes": list(self.notes),
        }

    @property
    def empty(self) -> bool:
        return not (self.cinder_manage or self.nova_manage)

    def lines(self) -> list[str]:
        """The steps in the order to run them, as text."""
        out = [
            "# With the backend's cinder-volume stopped, then start it again:",
            *self.cinder_manage,
        ]
        if self.nova_manage:
            out += [
                "# On each compute host named (the instances stopped first):",
                *self.connectors,
                "# Then, where nova-manage runs, with each host's connector file:",
                *self.nova_manage,
            ]
        return out + [f"# {note}" for note in self.notes]


def reset_active_backend(config: Config, active_backend: str) -> str:
    """cinder-manage's line for one backend, `active_backend` the site now primary."""
    backend = config.state_scope or config.backend_name
    host = config.cinder_host or UNKNOWN_HOST.format(backend=backend)
    active = (
        "" if active_backend == DEFAULT_BACKEND_ID else f" --active-backend-id {active_backend}"
    )
    return (
        f"cinder-manage db reset_active_backend --enable-replication{active} --backend-host {host}"
    )


def connector_file(host: str | None) -> str:
    return f"connector-{host}.json" if host else "connector.json"


def read_attachments(state_dir: Path) -> list[dict[str, Any]] | None:
    """cinder-attachments.json's volumes, or None when there is none (no list imported)."""
    try:
        document = json.loads((Path(state_dir) / ATTACHMENTS_FILE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return []
    volumes = document.get("volumes") if isinstance(document, dict) else None
    return [v for v in volumes if isinstance(v, dict)] if isinstance(volumes, list) else []


def known_to_cinder(config: Config) -> bool:
    """Whether this backend is known as a Cinder one: a cinder_host, or an imported volume list."""
    return config.cinder_host is not None or read_attachments(config.state_dir) is not None


def steps_for(parts: list[tuple[Config, SwitchReport]]) -> CinderSteps:
    """The steps after the switch of each backend known to Cinder (its config with its report).

    A switch prints them unasked, so a backend Cinder does not know of gets none: the lines
    would only be noise to an operator without Cinder (`cinder-steps` gives them on request).
    """
    return steps_from(
        [
            (
                config,
                report.active_backend,
                {_image(config, v.name) for v in report.volumes if v.action in _MOVED},
            )
            for config, report in parts
            if known_to_cinder(config)
        ]
    )


@dataclass(frozen=True)
class PastRun:
    run_id: str
    operation: str
    target: str
    moved: frozenset[str]  # the volumes the journal says were made primary on the target
    ended: bool


def past_run(config: Config, run_id: str | None = None) -> PastRun | None:
    """The journal's last switch of this backend (or the run whose id starts with `run_id`)."""
    from rbdfail.state import journal_lines

    runs: dict[str, dict[str, Any]] = {}
    for line in journal_lines(config.state_dir, config.state_scope):
        run, event = line.get("run"), line.get("event")
        if not isinstance(run, str):
            continue
        if event == "start" and isinstance(line.get("target"), str):
            runs[run] = {"line": line, "moved": set(), "ended": False}
        elif run in runs and event in ("step", "late-step"):
            made = line.get("step") in ("promoted", "force-promoted")
            if made and line.get("site") == runs[run]["line"]["target"]:
                runs[run]["moved"].add(line.get("volume"))
        elif run in runs and event == "end":
            runs[run]["ended"] = True
    chosen = [r for r in runs if run_id is None or r.startswith(run_id)]
    if not chosen:
        return None
    found = runs[chosen[-1]]
    start = found["line"]
    return PastRun(
        chosen[-1],
        str(start.get("operation", "failover")),
        start["target"],
        frozenset(v for v in found["moved"] if isinstance(v, str)),
        found["ended"],
    )


def steps_from(parts: list[tuple[Config, str, set[str] | frozenset[str]]]) -> CinderSteps:
    """The steps for each backend: its config, the site now active, the volumes moved there."""
    cinder: list[str] = []
    nova: list[str] = []
    hosts: dict[str | None, None] = {}
    notes: list[str] = []
    for config, active_backend, moved in parts:
        if not moved:
            continue  # nothing is where Cinder does not expect it
        cinder.append(reset_active_backend(config, active_backend))
        if config.cinder_host is None:
            notes.append(
                f"backend {config.state_scope or config.backend_name}: no cinder_host in "
                f"{config.path}: HOST@BACKEND is the cinder-volume host `cinder-manage service "
                "list` shows"
            )
        attachments = read_attachments(config.state_dir)
        if attachments is None:
            continue
        scope = config.state_scope
        for volume in attachments:
            image, volume_id = volume.get("image"), volume.get("id")
            if image not in moved or (scope and volume.get("backend") not in (None, scope)):
                continue
            servers = volume.get("servers") or []
            found_hosts = volume.get("hosts") or [None] * len(servers)
            for server, host in zip(servers, found_hosts, strict=False):
                hosts.setdefault(host if isinstance(host, str) else None)
                nova.append(
                    f"nova-manage volume_attachment refresh {server} {volume_id} "
                    f"{connector_file(host if isinstance(host, str) else None)}"
                )
    connectors = [
        f"nova-manage volume_attachment get_connector --json > {connector_file(host)}"
        + (f"   # on {host}" if host else "   # on the instance's compute host")
        for host in hosts
    ]
    return CinderSteps(tuple(cinder), tuple(nova), tuple(connectors), tuple(notes))


def _image(config: Config, name: str) -> str:
    """A report's volume name without the `pool/` a file of several backends shows."""
    prefix = f"{config.backend.where}/"
    return name.removeprefix(prefix) if config.state_scope else name
