"""`rbdfail import-cinder`: an rbdfail.yaml written from a real cinder.conf (and the volume types).

One replicated RBD backend (or the one named with --backend) is written in the one-backend
shape (`backend:` and `replication_device:`); several are written under `backends:`, each named
by its cinder.conf section, with the settings rbdfail shares between them (the connect timeout,
the volume types and their rules) at the top level. What cinder.conf cannot say (which volume
has which type: Cinder keeps that in its database) comes from `openstack volume list --long`
(--volume-list: one exact rule per volume, its Status and attachments for the state dir, never
the YAML), else is left as a `FILL IN` placeholder that the config loader refuses, quoting it,
so the file is never used half-filled. Key material is never written. Never prints.

conf.py reads cinder.conf, openstack.py the client's JSON, model.py chooses what to write,
writer.py writes it, seed.py seeds the state dir.
"""

from __future__ import annotations

from pathlib import Path

from rbdfail.cinder.model import CinderImport, choose
from rbdfail.cinder.writer import must_load, yaml_text


def import_cinder(
    cinder_conf: Path,
    backend: str | None = None,
    volume_types: Path | None = None,
    volume_list: Path | None = None,
    unlisted: str | None = None,
) -> CinderImport:
    """Read cinder.conf (and the volume types) and write the rbdfail.yaml text; refuse, with
    the file, section and key, whatever Cinder would refuse or rbdfail could not use."""
    plan = choose(cinder_conf, backend, volume_types, volume_list, unlisted)
    text = yaml_text(plan)
    if not plan.todo:
        must_load(text)
    sections = tuple(backend.section for backend in plan.backends)
    return CinderImport(text, sections[0], plan.todo, plan.notes, sections, plan.volumes)
