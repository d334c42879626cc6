"""`rbdfail import-cinder`: an rbdfail.yaml written from a real cinder.conf (and the volume types).

cinder.conf is read the way Cinder reads it (oslo.config), not the way configparser would:
- a backend's driver options come from its own section, else from `[backend_defaults]`, else
  Cinder's default. `[DEFAULT]` is not inherited: Cinder has ignored driver options there since
  Ocata (a stale `rbd_pool` in `[DEFAULT]` must not become the pool a failover acts on);
- a key given several times keeps every value (`replication_device` is a MultiOpt: one line per
  secondary site); for a single-valued option the last one wins;
- section names match case-insensitively, keys do not; a value in matching quotes loses them;
- `replication_device` values are oslo's Dict form, `key:value,key:value`, read as Cinder's RBD
  driver reads them: `backend_id` required, `conf` defaulting to /etc/ceph/<backend_id>.conf,
  `user` to the backend's `rbd_user`, else `cinder`; other keys are ignored, as Cinder does.

One replicated RBD backend (or the one named with --backend) is written in the one-backend
shape (`backend:` and `replication_device:`); several are written under `backends:`, each named
by its cinder.conf section, with the settings rbdfail shares between them (the connect timeout,
the volume types and their rules) at the top level. What cinder.conf cannot say (which volume
has which type: Cinder keeps that in its database) comes from `openstack volume list --long`
(--volume-list: one exact rule per volume, its Status and attachments for the state dir, never
the YAML), else is left as a `FILL IN` placeholder that the config loader refuses, quoting it,
so the file is never used half-filled. Key material is never written. Never prints.
"""

from __future__ import annotations

import ast
import configparser
import contextlib
import errno
import json
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from rbdfail.config import _BACKEND_NAME as BACKEND_NAME  # what `backends:` keys may be
from rbdfail.config import DEFAULT_BACKEND_ID, load_deployment
from rbdfail.errors import ConfigError
from rbdfail.limits import MAX_SECONDS

RBD_DRIVER = "cinder.volume.drivers.rbd.RBDDriver"
LVM_DRIVER = "cinder.volume.drivers.lvm.LVMVolumeDriver"  # Cinder's default volume_driver
SHARED = "backend_defaults"  # Cinder's section of defaults for every backend
# Written empty by some deployment templates; Cinder then does as if they were not set (an
# empty rbd_pool or rbd_cluster_name it refuses).
OPTIONAL_WHEN_EMPTY = ("rbd_user", "volume_backend_name")
FILL_IN = "FILL IN"
MAX_INPUT_BYTES = 1 << 20
MAX_VOLUME_LIST_BYTES = 256 << 20  # ~1 KiB a volume in `openstack volume list --long -f json`
TYPES_COMMAND = "openstack volume type list --long -f json"
# Cinder's RBD driver mirrors a volume only when its type says exactly this (_is_replicated_type).
REPLICATED_SPEC = "<is> True"
DEFAULT_TYPE = "__DEFAULT__"  # the type Cinder gives a volume created without one, since Train
_NO_DEFAULT_SECTION = "\x00"  # configparser's DEFAULT would be inherited by every section
_OCCURRENCE = "\x00"  # joins a key and its occurrence while reading; no key can hold it


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


def attachments_document(result: CinderImport) -> dict[str, object]:
    """What import-cinder keeps next to the YAML (never in it): which volume is attached to
    which instance, for the `nova-manage volume_attachment refresh` lines after a switch."""
    return {
        "written_by": "rbdfail import-cinder",
        "volumes": [
            {
                "image": v.image,
                "id": v.id,
                "backend": v.backend,
                "servers": list(v.servers),
                "hosts": list(v.hosts or (None,) * len(v.servers)),
            }
            for v in result.volumes
            if v.servers
        ],
    }


def seed_state(result: CinderImport, state_dir: Path) -> list[str]:
    """Cinder's status of each imported volume into the state dir's state.json (so that a
    volume a failover cannot move becomes `error` with Cinder's status kept, `in-use` restored
    on failback), and the attachments into cinder-attachments.json there (for the nova-manage
    lines after a switch). Refused while a failover is in effect: the statuses are then
    rbdfail's. Returns what was done, one line each."""
    from rbdfail import state as states
    from rbdfail.cinder_steps import ATTACHMENTS_FILE

    several = len(result.backends) > 1
    scopes: list[str | None] = list(result.backends) if several else [None]
    seeded = 0
    for scope in scopes:
        current = states.read_state(state_dir, scope)
        if current.active_backend != DEFAULT_BACKEND_ID:
            raise ConfigError(
                f"{state_dir}: backend {scope or result.backend} is failed over to "
                f"{current.active_backend!r}: its statuses are rbdfail's now, not seeded",
                hint="seed the state dir before a failover, or after the failback",
            )
        records = dict(current.volumes)
        for volume in result.volumes:
            if scope is not None and volume.backend not in (None, scope):
                continue
            if records.get(volume.image, states.VolumeRecord()) == states.VolumeRecord():
                # Cinder's `error` kept as the status to restore too: a failback restores an
                # `error` record to its previous status, which must not become `available`.
                previous = volume.status if volume.status == states.ERROR else None
                records[volume.image] = states.VolumeRecord(volume.status, previous)
                seeded += 1
        states.write_state(state_dir, states.State(current.active_backend, records), scope)
    attached = attachments_document(result)
    path = Path(state_dir) / ATTACHMENTS_FILE
    write_new_file(path, json.dumps(attached, indent=1) + "\n", force=True)
    count = len(attached["volumes"])  # type: ignore[arg-type]
    return [
        f"{state_dir}/state.json: Cinder's status of {len(result.volumes)} volume(s) "
        f"({seeded} record(s) written)",
        f"{path}: the instances of {count} attached volume(s)",
    ]


# ---- cinder.conf, read as oslo.config reads it --------------------------------------------------
class _OsloIni(configparser.RawConfigParser):
    """configparser with oslo.config's rules: every occurrence of a key kept, keys as written,
    [DEFAULT] an ordinary section, a blank line ends a value, no interpolation."""

    def __init__(self) -> None:
        super().__init__(
            strict=False,  # a section given twice is merged, as oslo does
            default_section=_NO_DEFAULT_SECTION,
            interpolation=None,
            empty_lines_in_values=False,
        )
        self._read_keys = 0

    def optionxform(self, optionstr: str) -> str:
        # Called once per key line while reading: numbering each makes every occurrence a key of
        # its own, so a repeated key is neither refused (strict) nor overwritten (not strict).
        self._read_keys += 1
        return f"{optionstr}{_OCCURRENCE}{self._read_keys}"


@dataclass
class _CinderConf:
    path: Path
    names: dict[str, str] = field(default_factory=dict)  # normalized section name -> as written
    values: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # by normalized name

    def section(self, name: str) -> dict[str, list[str]] | None:
        return self.values.get(_normalized(name))

    def lookup(self, backend: str, key: str) -> tuple[list[str], str] | None:
        """Every value of `key` for the backend and where it came from: its section, else
        [backend_defaults] (oslo.config's lookup for a backend's option); None when neither."""
        for name in (backend, SHARED):
            found = (self.section(name) or {}).get(key)
            if found:
                return found, f"[{self.names[_normalized(name)]}] {key}"
        return None

    def last(self, backend: str, key: str) -> tuple[str, str] | None:
        found = self.lookup(backend, key)
        return (found[0][-1], found[1]) if found else None

    def ignored_default(self, backend: str, key: str) -> str | None:
        """A note when [DEFAULT] sets a driver option the backend does not get from elsewhere."""
        values = (self.section("DEFAULT") or {}).get(key)
        if not values or self.lookup(backend, key):
            return None
        return (
            f"[DEFAULT] {key} is ignored: Cinder has read driver options only from a backend's "
            f"section and [{SHARED}] since Ocata"
        )


def _normalized(section: str) -> str:
    return section if section == "DEFAULT" else section.lower()  # oslo.config's group lookup


def _read_cinder_conf(path: Path) -> _CinderConf:
    text = _read_text(path, "cinder.conf")
    parser = _OsloIni()
    try:
        parser.read_string(text, source=str(path))
    except configparser.MissingSectionHeaderError as exc:
        raise ConfigError(
            f"{path}:{exc.lineno}: not a cinder.conf: {exc.line.strip()!r} comes before any "
            "[section]",
            hint="give the cinder.conf of the cinder-volume service (oslo.config INI format)",
        ) from None
    except configparser.ParsingError as exc:
        lineno, shown = exc.errors[0]  # configparser keeps repr(line)
        line = ast.literal_eval(shown) if shown[:1] in "'\"" else shown
        raise ConfigError(
            f"{path}:{lineno}: not a cinder.conf line: {line.strip()!r} (expected `key = value`, "
            "`[section]`, a comment or an indented continuation)",
            hint="fix that line (oslo.config would refuse it too)",
        ) from None
    except configparser.Error as exc:
        raise ConfigError(f"{path}: not a cinder.conf: {exc.message}") from None
    conf = _CinderConf(path)
    for section in parser.sections():
        name = _normalized(section)
        conf.names.setdefault(name, section)
        values = conf.values.setdefault(name, {})
        for numbered, value in parser.items(section, raw=True):
            key = numbered.rpartition(_OCCURRENCE)[0]
            values.setdefault(key, []).append(_unquoted(value))
    return conf


def _unquoted(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]  # as oslo.config's parser does
    return value


def _read_text(path: Path, what: str, most: int = MAX_INPUT_BYTES) -> str:
    try:
        with open(path, "rb") as file:
            data = file.read(most + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found", hint="check the path") from None
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read the {what}: {exc.strerror or exc}",
            hint="check the path and its permissions (cinder.conf is often readable by root "
            "and the cinder group only)",
        ) from None
    if len(data) > most:
        raise ConfigError(f"{path}: larger than {most >> 20} MiB: not a {what}")
    try:
        return data.decode("utf-8-sig")  # a BOM, as some editors write, is not a character
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: the {what} is not UTF-8 text") from None


# ---- the backend ---------------------------------------------------------------------------
def _enabled_backends(conf: _CinderConf) -> list[str]:
    values = (conf.section("DEFAULT") or {}).get("enabled_backends") or [""]
    names: dict[str, str] = {}
    for name in filter(None, (name.strip() for name in values[-1].split(","))):
        # Named twice (or in two cases: sections match case-insensitively), it is one backend.
        names.setdefault(_normalized(name), name)
    return list(names.values())


def _driver(conf: _CinderConf, backend: str) -> str:
    found = conf.last(backend, "volume_driver")
    return found[0].strip() if found else LVM_DRIVER


def _short(driver: str) -> str:
    return driver.rpartition(".")[2] or driver


def _choose_backends(conf: _CinderConf, asked: str | None, notes: list[str]) -> list[str]:
    """The backend named, else every replicated RBD backend among enabled_backends, else the
    one RBD backend there (a backend without replication is written with a FILL IN)."""
    enabled = _enabled_backends(conf)
    if asked is not None:
        if conf.section(asked) is None:
            known = ", ".join(f"[{n}]" for n in conf.names.values()) or "none"
            raise ConfigError(
                f"{conf.path}: no section [{asked}] (sections: {known})",
                hint="give --backend the name of the backend's section, as in enabled_backends",
            )
        section = conf.names[_normalized(asked)]
        if _normalized(section) in ("DEFAULT", SHARED):
            raise ConfigError(
                f"{conf.path}: [{section}] is not a backend's section",
                hint="give --backend the name of the backend's section, as in enabled_backends",
            )
        if (driver := _driver(conf, section)) != RBD_DRIVER:
            unset = conf.last(section, "volume_driver") is None
            raise ConfigError(
                f"{conf.path}: [{section}] is not an RBD backend: volume_driver is {driver}"
                + (" (not set: Cinder's default)" if unset else ""),
                hint=f"rbdfail imports backends with volume_driver = {RBD_DRIVER}",
            )
        if _normalized(section) not in {_normalized(n) for n in enabled}:
            notes.append(f"[{section}] is not in enabled_backends: imported as asked")
        return [section]
    if not enabled:
        raise ConfigError(
            f"{conf.path}: [DEFAULT] enabled_backends is not set: no backend to import",
            hint="pass --backend SECTION (Cinder has needed enabled_backends since Ocata)",
        )
    rbd = [name for name in enabled if _driver(conf, name) == RBD_DRIVER]
    replicated = [name for name in rbd if conf.lookup(name, "replication_device")]
    chosen = replicated or rbd
    if not chosen:
        found = ", ".join(f"{name} ({_short(_driver(conf, name))})" for name in enabled)
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
    sections = [conf.names[_normalized(backend)] for backend in chosen]
    for section in sections if len(sections) > 1 else ():
        if not BACKEND_NAME.match(section):
            raise ConfigError(
                f"{conf.path}: [{section}]: the section's name cannot name an rbdfail backend "
                "(letters, digits, '_', '.' and '-', at most 64)",
                hint="import each backend into its own file with --backend NAME",
            )
    return sections


def _text(conf: _CinderConf, value: str, origin: str) -> str:
    """A value rbdfail will use: one printable line, no oslo.config substitution, not empty."""
    value = value.strip()
    for wrong, problem in (
        (not value, "is empty"),
        ("\n" in value, "spans several lines"),
        (not value.isprintable(), "holds a control character"),
        ("$" in value, "uses oslo.config's $substitution, which import-cinder does not expand"),
    ):
        if wrong:
            raise ConfigError(
                f"{conf.path}: {origin} {problem}", hint="write the value out in full"
            )
    return value


def _path(conf: _CinderConf, value: str, origin: str) -> str:
    value = _text(conf, value, origin)
    if not os.path.isabs(value):
        raise ConfigError(
            f"{conf.path}: {origin} {value!r} is a relative path (relative to the cinder-volume "
            "service's working directory; rbdfail would read it next to its own file)",
            hint="write it as an absolute path",
        )
    return value


@dataclass(frozen=True)
class _Value:
    value: str
    origin: str  # "[ceph] rbd_pool", or why a default was taken


@dataclass(frozen=True)
class _Device:
    backend_id: _Value
    conf: _Value
    user: _Value
    origin: str
    ignored: tuple[str, ...]  # not carried over: secret_uuid, and what Cinder's driver ignores


@dataclass(frozen=True)
class _Backend:
    section: str
    name: _Value
    conf: _Value
    user: _Value
    pool: _Value
    cluster_name: _Value
    devices: tuple[_Device, ...]
    timeout: _Value
    volume_backend_name: str  # what the scheduler matches a type's volume_backend_name with
    volume_backend_origin: str
    cinder_host: _Value | None = None  # the cinder-volume service's host@section


def _read_backend(conf: _CinderConf, section: str, notes: list[str]) -> _Backend:
    def get(key: str) -> _Value | None:
        found = conf.last(section, key)
        if found is None or (not found[0].strip() and key in OPTIONAL_WHEN_EMPTY):
            return None
        return _Value(_text(conf, found[0], found[1]), found[1])

    for key in ("rbd_pool", "rbd_user", "rbd_ceph_conf", "rbd_cluster_name", "replication_device"):
        if note := conf.ignored_default(section, key):
            notes.append(note)
    if (pool := get("rbd_pool")) is None:
        raise ConfigError(
            f"{conf.path}: [{section}] has no rbd_pool (nor has [{SHARED}])",
            hint="set rbd_pool in the backend's section and import again; Cinder would use its "
            "default pool `rbd`, but rbdfail does not guess the pool a failover acts on",
        )
    cluster = get("rbd_cluster_name") or _Value(
        "ceph", "rbd_cluster_name not set: Cinder's default"
    )
    found_conf = conf.last(section, "rbd_ceph_conf")
    if found_conf and found_conf[0].strip():
        ceph_conf = _Value(_path(conf, *found_conf), found_conf[1])
    else:  # Cinder passes "" and librados looks in its default places
        ceph_conf = _Value(
            f"/etc/ceph/{cluster.value}.conf",
            "rbd_ceph_conf not set: where librados looks for cluster "
            f"{cluster.value!r} (unless $CEPH_CONF is set for cinder-volume)",
        )
    rbd_user = get("rbd_user")
    user = rbd_user or _Value(
        "admin",
        "rbd_user not set: Cinder connects as librados' default, client.admin; rbdfail needs "
        "only the rbd profile, consider a user of its own",
    )
    if conf.lookup(section, "rbd_secret_uuid"):
        notes.append(
            "rbd_secret_uuid ignored: it names a libvirt secret; no key material is copied"
        )
    if conf.lookup(section, "rbd_keyring_conf"):
        notes.append(
            "rbd_keyring_conf ignored: Cinder no longer reads it (OSSN-0085) and its own "
            "connections never used it; rbdfail "
            "finds the keyring as librados does for Cinder (ceph.conf's `keyring`, else "
            "/etc/ceph/$cluster.client.$user.keyring)"
        )
    name = get("volume_backend_name")
    devices = _read_devices(conf, section, rbd_user)
    return _Backend(
        section=section,
        name=name or _Value(section, "volume_backend_name not set: the section's name"),
        conf=ceph_conf,
        user=user,
        pool=pool,
        cluster_name=cluster,
        devices=devices,
        timeout=_timeout(conf, section, notes),
        volume_backend_name=name.value if name else "RBD",  # the RBD driver reports "RBD" then
        volume_backend_origin=name.origin if name else "not set: Cinder's RBD driver reports 'RBD'",
        cinder_host=_service_host(conf, section),
    )


def _service_host(conf: _CinderConf, section: str) -> _Value | None:
    """The cinder-volume service's host for a backend, as cinder-volume names it: the
    section's backend_host, else [DEFAULT] host, then `@` and the section (cinder/cmd/volume.py).
    None when neither is set (Cinder then takes the machine's hostname, unknown here)."""
    own = (conf.section(section) or {}).get("backend_host")
    default = (conf.section("DEFAULT") or {}).get("host")
    for values, origin in ((own, f"[{section}] backend_host"), (default, "[DEFAULT] host")):
        if values and (host := values[-1].strip()):
            if not re.fullmatch(r"[A-Za-z0-9_.:-]+", host):
                return None
            return _Value(f"{host}@{section}", f"{origin} @ the section: cinder-volume's host")
    return None


def _read_devices(conf: _CinderConf, section: str, rbd_user: _Value | None) -> tuple[_Device, ...]:
    found = conf.lookup(section, "replication_device")
    if found is None:
        return ()
    values, origin = found
    devices: list[_Device] = []
    for index, raw in enumerate(values, 1):
        where = f"{origin} #{index}" if len(values) > 1 else origin
        pairs = _device_pairs(conf, raw, where)
        backend_id = _text(conf, pairs.pop("backend_id", ""), f"{where}: backend_id")
        used = [device.backend_id.value for device in devices]
        if backend_id in (*used, DEFAULT_BACKEND_ID):
            taken = "Cinder's id for the backend itself" if backend_id not in used else "taken"
            raise ConfigError(
                f"{conf.path}: {where}: backend_id {backend_id!r} is {taken}",
                hint="give each replication_device its own backend_id, e.g. secondary",
            )
        device_conf = pairs.pop("conf", None)
        device_user = pairs.pop("user", None)
        devices.append(
            _Device(
                backend_id=_Value(backend_id, where),
                conf=_Value(_path(conf, device_conf, f"{where}: conf"), where)
                if device_conf is not None
                else _Value(f"/etc/ceph/{backend_id}.conf", "conf not given: Cinder's default"),
                user=_Value(_text(conf, device_user, f"{where}: user"), where)
                if device_user is not None
                else _Value(rbd_user.value, f"user not given: {rbd_user.origin}, as Cinder does")
                if rbd_user is not None
                else _Value("cinder", "user not given and no rbd_user: Cinder's default"),
                origin=where,
                ignored=tuple(pairs),
            )
        )
    return tuple(devices)


def _device_pairs(conf: _CinderConf, raw: str, where: str) -> dict[str, str]:
    """oslo.config's Dict: `key:value` pairs separated by commas, split at the first colon."""
    pairs: dict[str, str] = {}
    parts = list(filter(None, (part.strip() for part in raw.split(","))))
    for number, part in enumerate(parts, 1):
        key, colon, value = (text.strip() for text in part.partition(":"))
        if not colon or not key or key in pairs:
            # The part itself is not shown: it could be a secret written where a key belongs.
            problem = (
                f"{key!r} is given twice" if key in pairs else f"part {number} is not key:value"
            )
            raise ConfigError(
                f"{conf.path}: {where}: {problem}",
                hint="write it as replication_device = backend_id:secondary,"
                "conf:/etc/ceph/secondary.conf,user:cinder",
            )
        pairs[key] = value
    if not pairs.get("backend_id"):
        raise ConfigError(
            f"{conf.path}: {where} has no backend_id (Cinder's RBD driver refuses it too)",
            hint="add backend_id:NAME, the id `rbdfail failover --to NAME` will use",
        )
    return pairs


def _timeout(conf: _CinderConf, section: str, notes: list[str]) -> _Value:
    found = conf.last(section, "replication_connect_timeout")
    if found is None:
        return _Value("5", "replication_connect_timeout not set: Cinder's default")
    text, origin = found
    try:
        seconds = int(text.strip())
    except ValueError:
        raise ConfigError(
            f"{conf.path}: {origin} {text.strip()!r} is not a whole number of seconds",
            hint="Cinder would refuse it too (an IntOpt)",
        ) from None
    if seconds <= 0:
        notes.append(
            f"{origin} is {seconds} (no timeout in Cinder); rbdfail needs a bound: 5 s, "
            "Cinder's default"
        )
        return _Value("5", f"{origin} is {seconds}: no timeout, which rbdfail does not allow")
    if seconds > MAX_SECONDS:
        raise ConfigError(
            f"{conf.path}: {origin} {seconds} is over a day",
            hint=f"rbdfail allows at most {MAX_SECONDS:g} seconds",
        )
    return _Value(str(seconds), origin)


# ---- volume types (openstack volume type list --long -f json) -------------------------------
@dataclass(frozen=True)
class _CinderType:
    name: str
    properties: dict[str, str]


_PROPERTY = re.compile(r"([^=',][^=']*)='(.*?)'(?=, [^=',][^=']*='|\Z)", re.DOTALL)


def _read_types(path: Path) -> list[_CinderType]:
    """The JSON `openstack volume type list --long -f json` prints: a list of objects with
    "Name" and "Properties", a mapping (osc-lib's DictColumn) or, from clients before 2017,
    the string `key='value', key='value'`."""
    hint = f"give the output of `{TYPES_COMMAND}`"
    try:
        document = json.loads(_read_text(path, "volume types file"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: not JSON: {exc.msg}", hint=hint) from None
    except RecursionError:
        raise ConfigError(f"{path}: not JSON: nested too deeply", hint=hint) from None
    if not isinstance(document, list):
        raise ConfigError(
            f"{path}: expected a list of volume types, got JSON {_kind(document)}", hint=hint
        )
    types: list[_CinderType] = []
    for index, entry in enumerate(document):
        where = f"{path}: entry {index}"
        if not isinstance(entry, dict) or not isinstance(entry.get("Name"), str):
            raise ConfigError(f'{where}: expected an object with a "Name"', hint=hint)
        name = entry["Name"]
        if not name.strip() or not name.isprintable():
            raise ConfigError(f"{where}: the name {name!r} cannot be a volume type's")
        if name in (t.name for t in types):
            raise ConfigError(f"{where}: volume type {name!r} is listed twice", hint=hint)
        if "Properties" not in entry:
            raise ConfigError(
                f'{where} ({name!r}) has no "Properties": the extra specs are needed',
                hint=f"run `{TYPES_COMMAND}` (with --long; clients on the volume v2 API leave "
                "them out: add --os-volume-api-version 3)",
            )
        types.append(_CinderType(name, _properties(entry["Properties"], f"{where} ({name!r})")))
    return types


def _properties(value: object, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, dict):
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise ConfigError(f'{where}: "Properties" holds a value that is not text')
        return dict(value)
    if not isinstance(value, str):
        raise ConfigError(f'{where}: "Properties" is JSON {_kind(value)}, not a mapping')
    properties: dict[str, str] = {}
    position = 0
    while position < len(value):
        if not (match := _PROPERTY.match(value, position)):
            raise ConfigError(
                f"{where}: cannot read \"Properties\" {value!r} as key='value', key='value'",
                hint=f"give the JSON of a current `{TYPES_COMMAND}`",
            )
        properties[match[1].strip()] = match[2]
        position = match.end() + 2  # past ", "
    return properties


VOLUMES_COMMAND = "openstack volume list --all-projects --long -f json"
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,252}")
_OLD_ATTACHED = re.compile(r"Attached to (\S+) on \S+ ?")


@dataclass(frozen=True)
class _CinderVolume:
    id: str
    status: str
    type: str | None
    servers: tuple[str, ...]
    hosts: tuple[str | None, ...]


def _read_volumes(path: Path) -> list[_CinderVolume]:
    """The JSON `openstack volume list --all-projects --long -f json` prints: objects with
    "ID", "Status", "Type" and "Attached to", the last a list of Cinder's attachment objects
    (osc's AttachmentsColumn, machine-readable) or, from older clients, the text
    `Attached to SERVER on DEVICE ` once per attachment. Other columns are not read."""
    hint = f"give the output of `{VOLUMES_COMMAND}`"
    try:
        document = json.loads(_read_text(path, "volume list", MAX_VOLUME_LIST_BYTES))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: not JSON: {exc.msg}", hint=hint) from None
    except RecursionError:
        raise ConfigError(f"{path}: not JSON: nested too deeply", hint=hint) from None
    if not isinstance(document, list):
        raise ConfigError(
            f"{path}: expected a list of volumes, got JSON {_kind(document)}", hint=hint
        )
    volumes: list[_CinderVolume] = []
    seen: set[str] = set()
    for index, entry in enumerate(document):
        where = f"{path}: entry {index}"
        if not isinstance(entry, dict) or not isinstance(entry.get("ID"), str):
            raise ConfigError(f'{where}: expected an object with an "ID"', hint=hint)
        volume_id = entry["ID"]
        if not _UUID.fullmatch(volume_id):
            raise ConfigError(f"{where}: ID {volume_id!r} is not a volume's UUID", hint=hint)
        if volume_id in seen:
            raise ConfigError(f"{where}: volume {volume_id} is listed twice", hint=hint)
        seen.add(volume_id)
        if "Type" not in entry:
            raise ConfigError(
                f'{where} ({volume_id}) has no "Type": the list must be the --long one',
                hint=f"run `{VOLUMES_COMMAND}`",
            )
        status, type_name = entry.get("Status"), entry.get("Type")
        if not isinstance(status, str) or not status.isprintable() or not status:
            raise ConfigError(f'{where} ({volume_id}): "Status" {status!r} is not a status')
        if type_name is not None and (not isinstance(type_name, str) or not type_name.strip()):
            raise ConfigError(f'{where} ({volume_id}): "Type" {type_name!r} is not a type name')
        attached = _servers(entry.get("Attached to"), f"{where} ({volume_id})")
        servers = tuple(server for server, _ in attached)
        hosts = tuple(host for _, host in attached)
        volumes.append(_CinderVolume(volume_id, status, type_name, servers, hosts))
    return volumes


def _servers(value: object, where: str) -> list[tuple[str, str | None]]:
    """Each attachment's instance and compute host (None when the list does not say)."""
    if value in (None, "", []):
        return []
    found: dict[str, str | None] = {}
    if isinstance(value, list):
        for attachment in value:
            server = attachment.get("server_id") if isinstance(attachment, dict) else None
            if not isinstance(server, str) or not _UUID.fullmatch(server):
                raise ConfigError(
                    f'{where}: "Attached to" holds an attachment without a server_id UUID',
                    hint=f"give the JSON of `{VOLUMES_COMMAND}`",
                )
            host = attachment.get("host_name")
            found.setdefault(
                server, host if isinstance(host, str) and _HOST.fullmatch(host) else None
            )
    elif isinstance(value, str):
        # Older clients: the server's name when Nova knew it, else its id. Only ids are kept.
        for match in _OLD_ATTACHED.finditer(value):
            if _UUID.fullmatch(match[1]):
                found.setdefault(match[1], None)
    else:
        raise ConfigError(f'{where}: "Attached to" is JSON {_kind(value)}')
    return list(found.items())


def _kind(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    return "null" if value is None else names.get(type(value), "a number")


# ---- the YAML ------------------------------------------------------------------------------
def _scalar(value: str) -> str:
    """A YAML scalar that reads back as exactly `value`: plain when it can be, else quoted."""
    plain = re.fullmatch(r"[A-Za-z0-9_/][A-Za-z0-9_./@+-]*", value) is not None
    if plain and yaml.safe_load(f"k: {value}") == {"k": value}:
        return value
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a YAML double-quoted one


def _shown(text: str) -> str:
    """Text safe inside a one-line comment."""
    return text if text.isprintable() else json.dumps(text)


def _line(key_value: str, comment: str, indent: int = 0) -> str:
    left = " " * indent + key_value
    return f"{left:<40} # {_shown(comment)}" if comment else left


def _cinder_default_type(conf: _CinderConf, types: list[_CinderType]) -> str | None:
    """The type Cinder gives a volume created without one ([DEFAULT] default_volume_type, else
    __DEFAULT__), when the types given hold it: the pool's images a volume list does not name
    are typed as Cinder would type them, so the import needs no hand edit. None: a FILL IN."""
    found = (conf.section("DEFAULT") or {}).get("default_volume_type")
    name = found[-1].strip() if found and found[-1].strip() else DEFAULT_TYPE
    return name if any(cinder_type.name == name for cinder_type in types) else None


def _glob(conf: _CinderConf, notes: list[str]) -> tuple[str, str]:
    """The glob matching every volume's image name: Cinder names them by volume_name_template."""
    found = (conf.section("DEFAULT") or {}).get("volume_name_template")
    template = found[-1].strip() if found else "volume-%s"
    origin = (
        "[DEFAULT] volume_name_template"
        if found
        else "volume_name_template not set: Cinder's volume-%s"
    )
    if template.count("%s") == 1 and "%" not in template.replace("%s", "") and "$" not in template:
        return template.replace("%s", "*"), origin
    notes.append(f"{origin} {template!r} is not NAME%s-like: the rule matches every image")
    return "*", origin


def import_cinder(
    cinder_conf: Path,
    backend: str | None = None,
    volume_types: Path | None = None,
    volume_list: Path | None = None,
    unlisted: str | None = None,
) -> CinderImport:
    """Read cinder.conf (and the volume types) and write the rbdfail.yaml text; refuse, with
    the file, section and key, whatever Cinder would refuse or rbdfail could not use."""
    conf = _read_cinder_conf(Path(cinder_conf))
    notes: list[str] = []
    todo: list[str] = []
    backends = [
        _read_backend(conf, section, notes) for section in _choose_backends(conf, backend, notes)
    ]
    _refuse_shared_pool(conf, backends)
    types = _read_types(Path(volume_types)) if volume_types is not None else None
    lines = _header(conf, backends, volume_types, volume_list)
    if len(backends) == 1:
        lines += _backend_lines(backends[0])
        lines += _device_lines(backends[0], todo, notes)
    else:
        lines += _backends_lines(conf, backends, notes)
    timeout = _shared_timeout(backends, notes)
    lines += [
        "",
        _line(f"replication_connect_timeout: {timeout.value}", timeout.origin),
        "# volume_timeout, concurrency and state_dir are rbdfail's own (defaults 60, 32,",
        "# /var/lib/rbdfail): see examples/rbdfail.yaml.",
    ]
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
    listed = (
        (Path(volume_list), _read_volumes(Path(volume_list)), unlisted)
        if volume_list is not None
        else None
    )
    imported: list[ImportedVolume] = []
    lines += _type_lines(conf, backends, types, volume_types, todo, notes, listed, imported)
    notes = list(dict.fromkeys(notes))  # backends sharing [backend_defaults] share its notes
    if notes:
        lines += ["", "# Notes from the import:", *(f"# - {_shown(note)}" for note in notes)]
    text = "\n".join(lines) + "\n"
    if not todo:
        _must_load(text)
    sections = tuple(b.section for b in backends)
    return CinderImport(text, sections[0], tuple(todo), tuple(notes), sections, tuple(imported))


def _refuse_shared_pool(conf: _CinderConf, backends: list[_Backend]) -> None:
    """Two backends on one pool are one to rbdfail: a failover acts on a pool's images (the
    loader refuses it too, naming the second)."""
    seen: dict[tuple[str, str], _Backend] = {}
    for backend in backends:
        key = (os.path.normpath(backend.conf.value), backend.pool.value)
        if (other := seen.setdefault(key, backend)) is not backend:
            raise ConfigError(
                f"{conf.path}: [{other.section}] and [{backend.section}] use the same pool "
                f"{backend.pool.value!r} of {backend.conf.value}: rbdfail fails over a pool's "
                "images, it cannot fail over one of these backends without the other",
                hint="import one of them with --backend NAME, or give each backend its own pool",
            )


def _header(
    conf: _CinderConf,
    backends: list[_Backend],
    volume_types: Path | None,
    volume_list: Path | None = None,
) -> list[str]:
    sections = ", ".join(f"[{_shown(backend.section)}]" for backend in backends)
    lines = [
        "# rbdfail configuration written by `rbdfail import-cinder`",
        f"#   from {_shown(str(conf.path))}, backend section{'s' * (len(backends) > 1)} {sections}",
    ]
    if volume_types is not None:
        lines.append(f"#   and the volume types in {_shown(str(volume_types))}")
    if volume_list is not None:
        lines.append(f"#   and the volumes' types in {_shown(str(volume_list))}")
    return [
        *lines,
        "# Each value's comment says where it came from. Lines marked FILL IN must be completed:",
        "# until then rbdfail refuses this file and quotes the placeholder.",
        "# No key material is copied: rbd_secret_uuid and secret_uuid (libvirt secrets) are",
        "# ignored.",
        "",
    ]


def _backend_lines(backend: _Backend) -> list[str]:
    return [
        "backend:",
        _line(f"name: {_scalar(backend.name.value)}", backend.name.origin, 2),
        *_site_lines(backend, 2),
        *_host_lines(backend, 2),
    ]


def _host_lines(backend: _Backend, indent: int) -> list[str]:
    if backend.cinder_host is None:
        return [
            f"{' ' * indent}# cinder_host: HOST@{_shown(backend.section)}   # not set in "
            "cinder.conf (no backend_host, no host):",
            f"{' ' * indent}#   the cinder-volume host as `cinder-manage service list` shows it",
        ]
    return [
        _line(
            f"cinder_host: {_scalar(backend.cinder_host.value)}", backend.cinder_host.origin, indent
        )
    ]


def _site_lines(backend: _Backend, indent: int) -> list[str]:
    pad = " " * indent
    return [
        _line(f"conf: {_scalar(backend.conf.value)}", backend.conf.origin, indent),
        _line(f"user: {_scalar(backend.user.value)}", backend.user.origin, indent),
        _line(f"pool: {_scalar(backend.pool.value)}", backend.pool.origin, indent),
        _line(
            f"cluster_name: {_scalar(backend.cluster_name.value)}",
            backend.cluster_name.origin,
            indent,
        ),
        f"{pad}# keyring: not set: found as librados finds it for Cinder (ceph.conf's `keyring`, "
        "else",
        f"{pad}#   /etc/ceph/<cluster_name>.client.<user>.keyring)",
    ]


def _backends_lines(conf: _CinderConf, backends: list[_Backend], notes: list[str]) -> list[str]:
    """Several replicated backends, each under its section's name, its devices with it."""
    lines = [
        "# One entry per replicated RBD backend, named by its cinder.conf section: the name",
        "# `rbdfail --backend NAME` takes. Each lists its own secondary sites.",
        "backends:",
    ]
    for backend in backends:
        differs = backend.volume_backend_name != backend.section
        comment = (
            f"[{backend.section}]; volume_backend_name {backend.volume_backend_name!r}: "
            f"{backend.volume_backend_origin}"
            if differs
            else f"[{backend.section}], also its volume_backend_name"
        )
        lines += [
            _line(f"  {_scalar(backend.section)}:", comment),
            *_site_lines(backend, 4),
            *_host_lines(backend, 4),
            "    replication_device:",
            *_device_items(backend, notes, 4),
        ]
    # Not silently: what enabled_backends holds that this file does not.
    chosen = {_normalized(backend.section) for backend in backends}
    for name in _enabled_backends(conf):
        if _normalized(name) in chosen:
            continue
        if (driver := _driver(conf, name)) == RBD_DRIVER:
            lines += [
                f"  # Left out: [{_shown(name)}], an RBD backend without replication_device "
                "(Cinder does not",
                "  #   replicate it). Add its secondary site in cinder.conf and import again, or",
                f"  #   import it alone: rbdfail import-cinder ... --backend {_shown(name)}",
            ]
        else:
            lines.append(f"  # Left out: [{_shown(name)}], not an RBD backend ({_short(driver)})")
    return lines


def _shared_timeout(backends: list[_Backend], notes: list[str]) -> _Value:
    """rbdfail has one replication_connect_timeout for every backend: the largest of theirs."""
    if len({backend.timeout.value for backend in backends}) == 1:
        origins = dict.fromkeys(backend.timeout.origin for backend in backends)
        return _Value(backends[0].timeout.value, "; ".join(origins))
    seconds = max(int(backend.timeout.value) for backend in backends)
    each = ", ".join(f"[{backend.section}] {backend.timeout.value}" for backend in backends)
    notes.append(
        f"replication_connect_timeout differs between the backends ({each}): rbdfail has one "
        f"for all, and takes the largest, {seconds} s (a shorter one could take a slow site "
        "for a lost one)"
    )
    return _Value(str(seconds), f"the largest of the backends' ({each}): one setting in rbdfail")


def _device_lines(backend: _Backend, todo: list[str], notes: list[str]) -> list[str]:
    if not backend.devices:
        todo.append(
            f"replication_device: [{backend.section}] has no replication_device: add the "
            "secondary site (backend_id, conf, user)"
        )
        return [
            "",
            f"# {FILL_IN}: [{_shown(backend.section)}] has no replication_device (Cinder does not "
            "replicate this backend).",
            "#   Add the secondary site, e.g.  - {backend_id: secondary, conf: "
            "/etc/ceph/secondary.conf, user: cinder}",
            "replication_device: []",
        ]
    return ["", "replication_device:", *_device_items(backend, notes, 0)]


def _device_items(backend: _Backend, notes: list[str], indent: int) -> list[str]:
    lines = []
    for device in backend.devices:
        if "secret_uuid" in device.ignored:
            notes.append(f"{device.origin}: secret_uuid ignored: a libvirt secret, not copied")
        if others := [key for key in device.ignored if key != "secret_uuid"]:
            notes.append(
                f"{device.origin}: {', '.join(others)} ignored, as Cinder's RBD driver ignores them"
            )
        lines += [
            _line(
                f"  - backend_id: {_scalar(device.backend_id.value)}",
                device.backend_id.origin,
                indent,
            ),
            _line(f"conf: {_scalar(device.conf.value)}", device.conf.origin, indent + 4),
            _line(f"user: {_scalar(device.user.value)}", device.user.origin, indent + 4),
            # Cinder hands librados the backend_id as the cluster name of a replication target,
            # which decides its default keyring: /etc/ceph/<backend_id>.client.<user>.keyring.
            _line(
                f"cluster_name: {_scalar(device.backend_id.value)}",
                "Cinder connects to a replication target with its backend_id as cluster name",
                indent + 4,
            ),
        ]
    return lines


def _either(backends: list[_Backend]) -> str:
    """The backends' volume_backend_names, as a type's extra spec would name one."""
    return " or ".join(
        repr(name) for name in dict.fromkeys(b.volume_backend_name for b in backends)
    )


def _type_lines(
    conf: _CinderConf,
    backends: list[_Backend],
    types: list[_CinderType] | None,
    types_file: Path | None,
    todo: list[str],
    notes: list[str],
    listed: tuple[Path, list[_CinderVolume], str | None] | None = None,
    imported: list[ImportedVolume] | None = None,
) -> list[str]:
    glob, glob_origin = _glob(conf, notes)
    several = len(backends) > 1
    lines = ["", "volume_types:"]
    # Each type with the backends the scheduler may place its volumes on: the one(s) whose
    # volume_backend_name its extra spec names, else any. The types stay one list: rbdfail's
    # volume_types and rules are for every backend of the file.
    mine: list[tuple[_CinderType, list[_Backend]]] = []
    for cinder_type in types or ():
        target = cinder_type.properties.get("volume_backend_name")
        on = [b for b in backends if target is None or b.volume_backend_name == target]
        if on:
            mine.append((cinder_type, on))
        else:
            notes.append(
                f"volume type {cinder_type.name!r} passed over: it is for backend "
                f"{target!r}, not {_either(backends)}"
            )
    for cinder_type, on in mine:
        lines += _one_type(cinder_type, on if several else None, types_file)
    for backend in backends:
        own = [cinder_type for cinder_type, on in mine if backend in on]
        if backend.devices and own and not any(_replicated(t) for t in own):
            notes.append(
                f"no volume type of backend {backend.volume_backend_name!r} replicates: a "
                "failover would move no volume"
            )
        if mine and not own:
            notes.append(
                f"no volume type in {types_file} is for backend {backend.volume_backend_name!r} "
                f"([{backend.section}]): the rules below must give its volumes a type"
            )
    if not mine:
        why = (
            "no --volume-types given"
            if types is None
            else f"no volume type in {types_file} is for backend {_either(backends)}"
        )
        todo.append(f"volume_types: {why}: import again with --volume-types FILE, or write them")
        whose = "these backends'" if several else "this backend's"
        lines += [
            f"  # {FILL_IN}: {_shown(why)}.",
            f"  #   Import again with --volume-types FILE, FILE from `{TYPES_COMMAND}`,",
            f"  #   or write {whose} types here, e.g.:",
            "  replicated:                           # a type Cinder mirrors",
            f'    replication_enabled: "{REPLICATED_SPEC}"',
            "    mirror_mode: journal                # Cinder's RBD driver mirrors in journal mode",
            "  not-replicated: {}",
        ]
    names = [cinder_type.name for cinder_type, _ in mine] or ["replicated", "not-replicated"]
    lines += [
        "",
        "# Which type each volume has: the first rule whose glob matches its image wins.",
        *(["# The rules are for every backend's volumes."] if several else []),
        "volumes:",
    ]
    if listed is not None:
        cinder_default = _cinder_default_type(conf, [cinder_type for cinder_type, _ in mine])
        return lines + _volume_rules(
            glob, glob_origin, backends, mine, names, listed, cinder_default, todo, notes, imported
        )
    # One type that every backend may hold is every volume's; else Cinder's database knows.
    if len(mine) == 1 and len(mine[0][1]) == len(backends):
        lines.append(_line(f"  - match: {_scalar(glob)}", f"every volume's image ({glob_origin})"))
        only = (
            "the only volume type, for every backend"
            if several
            else "the backend's only volume type"
        )
        lines.append(_line(f"    type: {_scalar(mine[0][0].name)}", only))
        return lines
    placeholder = (
        f"{FILL_IN}: the type of the volumes no rule above names (one of: {', '.join(names)})"
    )
    todo.append(
        "volumes: which volume has which type (Cinder keeps it in its database): write the rules"
    )
    pools = list(dict.fromkeys(backend.pool.value for backend in backends))
    return [
        *lines,
        f"  # {FILL_IN}: which volume has which type. Cinder keeps that in its database, not in "
        "cinder.conf:",
        "  #   `openstack volume list --long -f json` gives each volume's ID and Type; its image "
        f"is {_shown(glob.replace('*', '<ID>'))}.",
        "  #   Write a rule per volume (or per glob) above the last one, e.g.",
        f"  #     - {{match: {_shown(_scalar(glob.replace('*', '0f3c5a2e-...')))}, type: "
        f"{_shown(_scalar(names[0]))}}}",
        "  #   or set the image's metadata, which wins over the rules:",
        f"  #     rbd image-meta set {_shown(pools[0] if len(pools) == 1 else 'POOL')}/IMAGE "
        "rbdfail.volume_type TYPE",
        *(
            [f"  #   (POOL: the volume's backend's pool: {_shown(', '.join(pools))})"]
            if len(pools) > 1
            else []
        ),
        "  #   then give the last rule the type of every other volume.",
        _line(f"  - match: {_scalar(glob)}", f"every volume's image ({glob_origin})"),
        f"    type: {_scalar(placeholder)}",
    ]


def _volume_rules(
    glob: str,
    glob_origin: str,
    backends: list[_Backend],
    mine: list[tuple[_CinderType, list[_Backend]]],
    names: list[str],
    listed: tuple[Path, list[_CinderVolume], str | None],
    cinder_default: str | None,
    todo: list[str],
    notes: list[str],
    imported: list[ImportedVolume] | None,
) -> list[str]:
    """One exact rule per listed volume (looked up by name: 10,000 cost what one rule does),
    then the catch-all for the pool's other images: --unlisted TYPE, else the type Cinder
    gives a volume created without one (`cinder_default`), else a FILL IN."""
    path, volumes, unlisted = listed
    if glob == "*":
        raise ConfigError(
            f"--volume-list: volume_name_template is not NAME%s-like ({glob_origin}): the "
            "image of each volume cannot be named",
            hint="write the rules by hand, or fix volume_name_template",
        )
    template = glob.replace("*", "%s")
    types = {cinder_type.name: on for cinder_type, on in mine}
    known = [cinder_type.name for cinder_type, _ in mine]
    if unlisted is not None and unlisted not in types:
        raise ConfigError(
            f"--unlisted {unlisted!r}: not a volume type of this file (known: "
            f"{', '.join(known) or 'none'})",
            hint="give --unlisted one of the types written (see --volume-types)",
        )
    left_out: dict[str, list[str]] = {}
    lines = [f"  # Each volume of {_shown(str(path))}, by its ID: its type as Cinder has it."]
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
        lines.append(f"  - {{match: {_scalar(image)}, type: {_scalar(type_name)}}}")
        if imported is not None:
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
    if unlisted is not None:
        lines += [
            _line(f"  - match: {_scalar(glob)}", f"the pool's other images ({glob_origin})"),
            _line(f"    type: {_scalar(unlisted)}", "--unlisted: not in the volume list"),
        ]
        return lines
    if cinder_default is not None:
        notes.append(
            f"the pool's images {path} does not name get {cinder_default!r}, the type Cinder "
            "gives a volume created without one: import again after creating volumes of "
            "another type, or give --unlisted TYPE"
        )
        lines += [
            _line(f"  - match: {_scalar(glob)}", f"the pool's other images ({glob_origin})"),
            _line(
                f"    type: {_scalar(cinder_default)}",
                "Cinder's type for a volume created without one",
            ),
        ]
        return lines
    todo.append(
        f"volumes: the type of the images {path} does not list (import again with "
        "--unlisted TYPE, or write it)"
    )
    placeholder = (
        f"{FILL_IN}: the type of the images the volume list does not name (one of: "
        f"{', '.join(names)})"
    )
    return [
        *lines,
        "  # The pool's images the list does not name (created since, or not Cinder's):",
        _line(f"  - match: {_scalar(glob)}", f"every volume's image ({glob_origin})"),
        f"    type: {_scalar(placeholder)}",
    ]


def _replicated(cinder_type: _CinderType) -> bool:
    return cinder_type.properties.get("replication_enabled") == REPLICATED_SPEC


def _one_type(
    cinder_type: _CinderType, on: list[_Backend] | None, types_file: Path | None
) -> list[str]:
    """The type's lines; `on`: the backends it is for, said in its comment (None: one backend)."""
    spec = cinder_type.properties.get("replication_enabled")
    target = cinder_type.properties.get("volume_backend_name")
    where = (
        "no volume_backend_name: any backend"
        if target is None
        else f"volume_backend_name={target!r}"
        + (f": {'backend' if len(on) == 1 else 'backends'} " if on else "")
        + ", ".join(f"[{backend.section}]" for backend in on or ())
    )
    origin = f"{types_file} {cinder_type.name!r}: {where}"
    if _replicated(cinder_type):
        return [
            _line(f"  {_scalar(cinder_type.name)}:", origin),
            _line(f'    replication_enabled: "{REPLICATED_SPEC}"', "its replication_enabled"),
            _line("    mirror_mode: journal", "Cinder's RBD driver mirrors in journal mode"),
        ]
    why = (
        "no replication_enabled"
        if spec is None
        else f"replication_enabled={spec!r}: Cinder's RBD driver mirrors only on "
        f"exactly {REPLICATED_SPEC!r}"
    )
    return [_line(f"  {_scalar(cinder_type.name)}: {{}}", f"{origin}; not replicated: {why}")]


def _must_load(text: str) -> None:
    """A file with nothing to fill in must load: check it the way rbdfail will read it."""
    with tempfile.TemporaryDirectory(prefix="rbdfail-import-") as folder:
        path = Path(folder) / "rbdfail.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            load_deployment(path)
        except ConfigError as exc:
            raise ConfigError(
                f"the imported configuration does not load: {exc}",
                hint="nothing was written; please report this with the cinder.conf section",
            ) from None


# ---- writing the file --------------------------------------------------------------------------
def write_new_file(path: Path, text: str, force: bool, inputs: tuple[Path, ...] = ()) -> None:
    """Write `text` to `path` whole or not at all; an existing file is replaced only with
    force, and never one of the `inputs` (a slip of -o must not destroy cinder.conf)."""
    path = Path(path)
    for given in inputs:
        with contextlib.suppress(OSError):
            if path.exists() and path.samefile(given):
                raise ConfigError(
                    f"{path}: is the input {given}: not overwritten", hint="give -o another file"
                )
    try:
        with _temporary(path.parent, path.name) as temporary:
            with open(temporary, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())  # on disk before its name is
            os.chmod(temporary, 0o644)  # no secrets in it
            if force:
                os.replace(temporary, path)
            else:
                _link_new(temporary, path)
    except FileExistsError:
        raise ConfigError(
            f"{path}: already exists: not overwritten",
            hint="give another -o FILE, or pass --force to replace it",
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot write it: {exc.strerror or exc}",
            hint="give -o a file in a folder this user may write",
        ) from None


def _link_new(temporary: Path, path: Path) -> None:
    """Put the whole file at `path` unless something is there: a hard link does both at once."""
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        if path.exists() or path.is_symlink():  # no hard links here: check, then rename
            raise FileExistsError(errno.EEXIST, "exists", str(path)) from None
        os.replace(temporary, path)


@contextlib.contextmanager
def _temporary(folder: Path, name: str) -> Iterator[Path]:
    descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    os.close(descriptor)
    try:
        yield Path(temporary)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)  # after a link or a failure; gone already after a replace
