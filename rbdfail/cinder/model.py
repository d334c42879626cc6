"""What import-cinder writes, chosen from cinder.conf and the openstack outputs: which
backends (the one named, else every replicated RBD backend among enabled_backends, else the
one RBD backend there), one connect timeout for all, which volume types, and the rules that
type each volume; with what must be filled in (`todo`) and what an operator must know
(`notes`). The text is writer.py's."""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from rbdfail.cinder.conf import (
    BACKEND_DEFAULTS,
    RBD_DRIVER,
    CinderBackend,
    CinderConf,
    Setting,
    enabled_backends,
    read_backend,
    read_cinder_conf,
    section_key,
    short_driver,
    volume_driver,
)
from rbdfail.cinder.openstack import (
    DEFAULT_TYPE,
    TYPES_COMMAND,
    VOLUMES_COMMAND,
    CinderType,
    CinderVolume,
    read_volume_list,
    read_volume_types,
)
from rbdfail.config import BACKEND_NAME
from rbdfail.errors import ConfigError


@dataclass(frozen=True)
class CinderImport:
    """The YAML text and what an operator must know about it."""

    text: str
    backend: str  # the cinder.conf section imported (the first one, when several are)
    todo: tuple[str, ...]  # what must be filled in before rbdfail can use the file
    notes: tuple[str, ...]  # what was ignored, assumed or passed over (also in the text)
    backends: tuple[str, ...] = ()  # every section imported, in enabled_backends' order
    # From --volume-list: each volume written with its exact type (what the state dir and the
    # attachments file take; nothing of it is in the YAML but the image names and types).
    volumes: tuple[ImportedVolume, ...] = ()

    def __post_init__(self) -> None:
        if not self.backends:
            object.__setattr__(self, "backends", (self.backend,))


@dataclass(frozen=True)
class ImportedVolume:
    image: str  # volume_name_template % ID
    id: str
    type: str
    status: str  # Cinder's, e.g. in-use
    backend: str | None  # the cinder.conf section its type places it on; None: several may
    servers: tuple[str, ...]  # the instances it is attached to (their uuids)
    hosts: tuple[str | None, ...] = ()  # each one's compute host, when the list says


@dataclass(frozen=True)
class ChosenType:
    """A volume type written, with the backends the scheduler may place its volumes on: the
    one(s) whose volume_backend_name its extra spec names, else any."""

    type: CinderType
    on: tuple[CinderBackend, ...]


class CatchAll(Enum):
    """Where the last rule's type comes from: the type of every image no rule above names."""

    ONLY_TYPE = "the only volume type, and every backend may hold it"
    UNLISTED = "--unlisted"
    CINDER_DEFAULT = "the type Cinder gives a volume created without one"
    FILL_IN = "to fill in: Cinder keeps it in its database"


@dataclass(frozen=True)
class ImportPlan:
    """What import-cinder writes, before it is YAML: the backends, the types and the rules,
    with what must be filled in and the notes."""

    conf_path: Path
    backends: tuple[CinderBackend, ...]  # in enabled_backends' order
    # With several backends: those of enabled_backends not written, each with its volume_driver.
    left_out: tuple[tuple[str, str], ...]
    timeout: Setting  # rbdfail has one for every backend
    volume_types: Path | None
    volume_list: Path | None
    types: tuple[ChosenType, ...]
    no_types: str | None  # why no volume type is written; None when some are
    glob: Setting  # every volume's image: volume_name_template with `*` for the ID
    catch_all: CatchAll
    catch_all_type: str | None  # None: a FILL IN
    todo: tuple[str, ...]  # what must be filled in before rbdfail can use the file
    notes: tuple[str, ...]  # what was ignored, assumed or passed over
    volumes: tuple[ImportedVolume, ...]  # from --volume-list: an exact rule each

    @property
    def several(self) -> bool:
        return len(self.backends) > 1


def choose(
    cinder_conf: Path,
    backend: str | None = None,
    volume_types: Path | None = None,
    volume_list: Path | None = None,
    unlisted: str | None = None,
) -> ImportPlan:
    """Read cinder.conf (and the openstack outputs) and choose what to write; refuse, with the
    file, section and key, whatever Cinder would refuse or rbdfail could not use."""
    conf = read_cinder_conf(Path(cinder_conf))
    notes: list[str] = []
    todo: list[str] = []
    backends = [
        read_backend(conf, section, notes) for section in _choose_backends(conf, backend, notes)
    ]
    _refuse_shared_pool(conf, backends)
    types = read_volume_types(Path(volume_types)) if volume_types is not None else None
    if len(backends) == 1 and not backends[0].devices:
        todo.append(
            f"replication_device: [{backends[0].section}] has no replication_device: add the "
            "secondary site (backend_id, conf, user)"
        )
    for each in backends:
        _device_notes(each, notes)
    timeout = _shared_timeout(backends, notes)
    if volume_list is not None and volume_types is None:
        raise ConfigError(
            "--volume-list needs --volume-types: the volumes' types are written from them",
            hint=f"add --volume-types FILE, FILE from `{TYPES_COMMAND}`",
        )
    if unlisted is not None and volume_list is None:
        raise ConfigError(
            "--unlisted gives the type of the images a volume list does not name: it needs "
            "--volume-list",
            hint=f"add --volume-list FILE, FILE from `{VOLUMES_COMMAND}`",
        )
    listing = (
        (Path(volume_list), read_volume_list(Path(volume_list)))
        if volume_list is not None
        else None
    )
    glob = _glob(conf, notes)
    chosen = _choose_types(backends, types, volume_types, notes)
    no_types = None
    if not chosen:
        no_types = (
            "no --volume-types given"
            if types is None
            else f"no volume type in {volume_types} is for backend {_either(backends)}"
        )
        todo.append(
            f"volume_types: {no_types}: import again with --volume-types FILE, or write them"
        )
    imported: list[ImportedVolume] = []
    if listing is not None:
        path, volumes = listing
        imported = _listed_volumes(glob, backends, chosen, path, volumes, unlisted, notes)
        catch_all, catch_all_type = _type_of_unlisted(conf, chosen, path, unlisted, todo, notes)
    elif len(chosen) == 1 and len(chosen[0].on) == len(backends):
        # One type that every backend may hold is every volume's; else Cinder's database knows.
        catch_all, catch_all_type = CatchAll.ONLY_TYPE, chosen[0].type.name
    else:
        todo.append(
            "volumes: which volume has which type (Cinder keeps it in its database): write the "
            "rules"
        )
        catch_all, catch_all_type = CatchAll.FILL_IN, None
    return ImportPlan(
        conf_path=conf.path,
        backends=tuple(backends),
        left_out=_left_out(conf, backends) if len(backends) > 1 else (),
        timeout=timeout,
        volume_types=volume_types,
        volume_list=volume_list,
        types=tuple(chosen),
        no_types=no_types,
        glob=glob,
        catch_all=catch_all,
        catch_all_type=catch_all_type,
        todo=tuple(todo),
        # Backends sharing [backend_defaults] share its notes.
        notes=tuple(dict.fromkeys(notes)),
        volumes=tuple(imported),
    )


def _device_notes(backend: CinderBackend, notes: list[str]) -> None:
    """What a replication_device line holds that is not written."""
    for device in backend.devices:
        if "secret_uuid" in device.ignored:
            notes.append(f"{device.origin}: secret_uuid ignored: a libvirt secret, not copied")
        if others := [key for key in device.ignored if key != "secret_uuid"]:
            notes.append(
                f"{device.origin}: {', '.join(others)} ignored, as Cinder's RBD driver ignores them"
            )


def _left_out(conf: CinderConf, backends: list[CinderBackend]) -> tuple[tuple[str, str], ...]:
    """Not silently: what enabled_backends holds that the file does not, with each driver."""
    chosen = {section_key(backend.section) for backend in backends}
    return tuple(
        (name, volume_driver(conf, name))
        for name in enabled_backends(conf)
        if section_key(name) not in chosen
    )


def _choose_types(
    backends: list[CinderBackend],
    types: list[CinderType] | None,
    types_file: Path | None,
    notes: list[str],
) -> list[ChosenType]:
    """Each type with the backends the scheduler may place its volumes on. The types stay one
    list: rbdfail's volume_types and rules are for every backend of the file."""
    mine: list[ChosenType] = []
    for cinder_type in types or ():
        target = cinder_type.properties.get("volume_backend_name")
        on = [b for b in backends if target is None or b.volume_backend_name == target]
        if on:
            mine.append(ChosenType(cinder_type, tuple(on)))
        else:
            notes.append(
                f"volume type {cinder_type.name!r} passed over: it is for backend "
                f"{target!r}, not {_either(backends)}"
            )
    for backend in backends:
        own = [chosen.type for chosen in mine if backend in chosen.on]
        if backend.devices and own and not any(t.replicated for t in own):
            notes.append(
                f"no volume type of backend {backend.volume_backend_name!r} replicates: a "
                "failover would move no volume"
            )
        if mine and not own:
            notes.append(
                f"no volume type in {types_file} is for backend {backend.volume_backend_name!r} "
                f"([{backend.section}]): the rules below must give its volumes a type"
            )
    return mine


def _listed_volumes(
    glob: Setting,
    backends: list[CinderBackend],
    mine: list[ChosenType],
    path: Path,
    volumes: list[CinderVolume],
    unlisted: str | None,
    notes: list[str],
) -> list[ImportedVolume]:
    """The volumes of the list whose type is written, each to get an exact rule (looked up by
    name: 10,000 cost what one rule does); the others are left out, named in a note."""
    if glob.value == "*":
        raise ConfigError(
            f"--volume-list: volume_name_template is not NAME%s-like ({glob.origin}): the "
            "image of each volume cannot be named",
            hint="write the rules by hand, or fix volume_name_template",
        )
    template = glob.value.replace("*", "%s")
    types = {chosen.type.name: chosen.on for chosen in mine}
    known = [chosen.type.name for chosen in mine]
    if unlisted is not None and unlisted not in types:
        raise ConfigError(
            f"--unlisted {unlisted!r}: not a volume type of this file (known: "
            f"{', '.join(known) or 'none'})",
            hint="give --unlisted one of the types written (see --volume-types)",
        )
    imported: list[ImportedVolume] = []
    left_out: dict[str, list[str]] = {}
    for volume in volumes:
        type_name = volume.type if volume.type is not None else DEFAULT_TYPE
        on = types.get(type_name)
        if on is None:
            why = (
                f"type {type_name!r} is not one of this file's ({', '.join(known) or 'none'})"
                if volume.type is not None
                else f"no type, and no {DEFAULT_TYPE} type in the types given"
            )
            left_out.setdefault(why, []).append(volume.id)
            continue
        image = template % volume.id
        imported.append(
            ImportedVolume(
                image,
                volume.id,
                type_name,
                volume.status,
                on[0].section if len(on) == 1 and len(backends) > 1 else None,
                volume.servers,
                volume.hosts,
            )
        )
    for why, ids in left_out.items():
        shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
        notes.append(f"{len(ids)} volume(s) of {path} left out: {why}: {shown}")
    return imported


def _type_of_unlisted(
    conf: CinderConf,
    mine: list[ChosenType],
    path: Path,
    unlisted: str | None,
    todo: list[str],
    notes: list[str],
) -> tuple[CatchAll, str | None]:
    """The type of the pool's images the list does not name: --unlisted TYPE, else the type
    Cinder gives a volume created without one, else a FILL IN."""
    if unlisted is not None:
        return CatchAll.UNLISTED, unlisted
    if (cinder_default := _cinder_default_type(conf, [t.type for t in mine])) is not None:
        notes.append(
            f"the pool's images {path} does not name get {cinder_default!r}, the type Cinder "
            "gives a volume created without one: import again after creating volumes of "
            "another type, or give --unlisted TYPE"
        )
        return CatchAll.CINDER_DEFAULT, cinder_default
    todo.append(
        f"volumes: the type of the images {path} does not list (import again with "
        "--unlisted TYPE, or write it)"
    )
    return CatchAll.FILL_IN, None


def _choose_backends(conf: CinderConf, asked: str | None, notes: list[str]) -> list[str]:
    """The backend named, else every replicated RBD backend among enabled_backends, else the
    one RBD backend there (a backend without replication is written with a FILL IN)."""
    enabled = enabled_backends(conf)
    if asked is not None:
        if conf.section(asked) is None:
            known = ", ".join(f"[{n}]" for n in conf.names.values()) or "none"
            raise ConfigError(
                f"{conf.path}: no section [{asked}] (sections: {known})",
                hint="give --backend the name of the backend's section, as in enabled_backends",
            )
        section = conf.names[section_key(asked)]
        if section_key(section) in ("DEFAULT", BACKEND_DEFAULTS):
            raise ConfigError(
                f"{conf.path}: [{section}] is not a backend's section",
                hint="give --backend the name of the backend's section, as in enabled_backends",
            )
        if (driver := volume_driver(conf, section)) != RBD_DRIVER:
            unset = conf.last(section, "volume_driver") is None
            raise ConfigError(
                f"{conf.path}: [{section}] is not an RBD backend: volume_driver is {driver}"
                + (" (not set: Cinder's default)" if unset else ""),
                hint=f"rbdfail imports backends with volume_driver = {RBD_DRIVER}",
            )
        if section_key(section) not in {section_key(n) for n in enabled}:
            notes.append(f"[{section}] is not in enabled_backends: imported as asked")
        return [section]
    if not enabled:
        raise ConfigError(
            f"{conf.path}: [DEFAULT] enabled_backends is not set: no backend to import",
            hint="pass --backend SECTION (Cinder has needed enabled_backends since Ocata)",
        )
    rbd = [name for name in enabled if volume_driver(conf, name) == RBD_DRIVER]
    replicated = [name for name in rbd if conf.lookup(name, "replication_device")]
    chosen = replicated or rbd
    if not chosen:
        found = ", ".join(f"{name} ({short_driver(volume_driver(conf, name))})" for name in enabled)
        raise ConfigError(
            f"{conf.path}: no RBD backend in enabled_backends: {found}",
            hint=f"rbdfail imports backends with volume_driver = {RBD_DRIVER}",
        )
    if len(chosen) > 1 and not replicated:
        # Nothing to fail over in any of them: which one to prepare is the operator's choice.
        raise ConfigError(
            f"{conf.path}: {len(chosen)} RBD backends in enabled_backends, none with "
            f"replication_device: {', '.join(chosen)}",
            hint="pick one with --backend NAME (written with its secondary site to fill in), "
            "or add replication_device to the backends to fail over and import again",
        )
    if passed_over := [name for name in rbd if name not in chosen]:
        notes.append(
            f"RBD backend(s) without replication_device passed over: {', '.join(passed_over)} "
            "(import one with --backend NAME)"
        )
    for backend in chosen:
        if conf.section(backend) is None:
            raise ConfigError(
                f"{conf.path}: enabled_backends names {backend!r} but there is no [{backend}] "
                "section",
                hint="add the backend's section, or pass --backend SECTION",
            )
    sections = [conf.names[section_key(backend)] for backend in chosen]
    for section in sections if len(sections) > 1 else ():
        if not BACKEND_NAME.match(section):
            raise ConfigError(
                f"{conf.path}: [{section}]: the section's name cannot name an rbdfail backend "
                "(letters, digits, '_', '.' and '-', at most 64)",
                hint="import each backend into its own file with --backend NAME",
            )
    return sections


def _refuse_shared_pool(conf: CinderConf, backends: list[CinderBackend]) -> None:
    """Two backends on one pool are one to rbdfail: a failover acts on a pool's images (the
    loader refuses it too, naming the second)."""
    seen: dict[tuple[str, str], CinderBackend] = {}
    for backend in backends:
        key = (os.path.normpath(backend.conf.value), backend.pool.value)
        if (other := seen.setdefault(key, backend)) is not backend:
            raise ConfigError(
                f"{conf.path}: [{other.section}] and [{backend.section}] use the same pool "
                f"{backend.pool.value!r} of {backend.conf.value}: rbdfail fails over a pool's "
                "images, it cannot fail over one of these backends without the other",
                hint="import one of them with --backend NAME, or give each backend its own pool",
            )


def _shared_timeout(backends: list[CinderBackend], notes: list[str]) -> Setting:
    """rbdfail has one replication_connect_timeout for every backend: the largest of theirs."""
    if len({backend.timeout.value for backend in backends}) == 1:
        origins = dict.fromkeys(backend.timeout.origin for backend in backends)
        return Setting(backends[0].timeout.value, "; ".join(origins))
    seconds = max(int(backend.timeout.value) for backend in backends)
    each = ", ".join(f"[{backend.section}] {backend.timeout.value}" for backend in backends)
    notes.append(
        f"replication_connect_timeout differs between the backends ({each}): rbdfail has one "
        f"for all, and takes the largest, {seconds} s (a shorter one could take a slow site "
        "for a lost one)"
    )
    return Setting(str(seconds), f"the largest of the backends' ({each}): one setting in rbdfail")


def _either(backends: list[CinderBackend]) -> str:
    """The backends' volume_backend_names, as a type's extra spec would name one."""
    return " or ".join(
        repr(name) for name in dict.fromkeys(b.volume_backend_name for b in backends)
    )


def _cinder_default_type(conf: CinderConf, types: list[CinderType]) -> str | None:
    """The type Cinder gives a volume created without one ([DEFAULT] default_volume_type, else
    __DEFAULT__), when the types given hold it: the pool's images a volume list does not name
    are typed as Cinder would type them, so the import needs no hand edit. None: a FILL IN."""
    found = (conf.section("DEFAULT") or {}).get("default_volume_type")
    name = found[-1].strip() if found and found[-1].strip() else DEFAULT_TYPE
    return name if any(cinder_type.name == name for cinder_type in types) else None


def _glob(conf: CinderConf, notes: list[str]) -> Setting:
    """The glob matching every volume's image name: Cinder names them by volume_name_template."""
    found = (conf.section("DEFAULT") or {}).get("volume_name_template")
    template = found[-1].strip() if found else "volume-%s"
    origin = (
        "[DEFAULT] volume_name_template"
        if found
        else "volume_name_template not set: Cinder's volume-%s"
    )
    if template.count("%s") == 1 and "%" not in template.replace("%s", "") and "$" not in template:
        return Setting(template.replace("%s", "*"), origin)
    notes.append(f"{origin} {template!r} is not NAME%s-like: the rule matches every image")
    return Setting("*", origin)
