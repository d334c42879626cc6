"""cinder.conf, read the way Cinder reads it (oslo.config), not the way configparser would.

- a backend's driver options come from its own section, else from `[backend_defaults]`, else
  Cinder's default. `[DEFAULT]` is not inherited: Cinder has ignored driver options there since
  Ocata (a stale `rbd_pool` in `[DEFAULT]` must not become the pool a failover acts on);
- a key given several times keeps every value (`replication_device` is a MultiOpt: one line per
  secondary site); for a single-valued option the last one wins;
- section names match case-insensitively, keys do not; a value in matching quotes loses them;
- `replication_device` values are oslo's Dict form, `key:value,key:value`, read as Cinder's RBD
  driver reads them: `backend_id` required, `conf` defaulting to /etc/ceph/<backend_id>.conf,
  `user` to the backend's `rbd_user`, else `cinder`; other keys are ignored, as Cinder does.

Each value read keeps where it came from (section and key, or why a default was taken): the
YAML says it in a comment.
"""

from __future__ import annotations

import ast
import configparser
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from rbdfail.config import DEFAULT_BACKEND_ID
from rbdfail.errors import ConfigError
from rbdfail.limits import MAX_SECONDS

RBD_DRIVER = "cinder.volume.drivers.rbd.RBDDriver"
LVM_DRIVER = "cinder.volume.drivers.lvm.LVMVolumeDriver"  # Cinder's default volume_driver
BACKEND_DEFAULTS = "backend_defaults"  # Cinder's section of defaults for every backend
# Written empty by some deployment templates; Cinder then does as if they were not set (an
# empty rbd_pool or rbd_cluster_name it refuses).
OPTIONAL_WHEN_EMPTY = ("rbd_user", "volume_backend_name")
MAX_INPUT_BYTES = 1 << 20
_NO_DEFAULT_SECTION = "\x00"  # configparser's DEFAULT would be inherited by every section
_OCCURRENCE = "\x00"  # joins a key and its occurrence while reading; no key can hold it


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
class CinderConf:
    """A cinder.conf's sections, each key with every value given, as oslo.config reads them."""

    path: Path
    names: dict[str, str] = field(default_factory=dict)  # normalized section name -> as written
    values: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # by normalized name

    def section(self, name: str) -> dict[str, list[str]] | None:
        return self.values.get(section_key(name))

    def lookup(self, backend: str, key: str) -> tuple[list[str], str] | None:
        """Every value of `key` for the backend and where it came from: its section, else
        [backend_defaults] (oslo.config's lookup for a backend's option); None when neither."""
        for name in (backend, BACKEND_DEFAULTS):
            found = (self.section(name) or {}).get(key)
            if found:
                return found, f"[{self.names[section_key(name)]}] {key}"
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
            f"section and [{BACKEND_DEFAULTS}] since Ocata"
        )


def section_key(section: str) -> str:
    """What names a section when looking it up."""
    return section if section == "DEFAULT" else section.lower()  # oslo.config's group lookup


def read_cinder_conf(path: Path) -> CinderConf:
    text = read_input(path, "cinder.conf")
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
    conf = CinderConf(path)
    for section in parser.sections():
        name = section_key(section)
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


def read_input(path: Path, what: str, most: int = MAX_INPUT_BYTES) -> str:
    """An input file as text, refused (naming it as `what`) when unreadable, over `most` bytes
    or not UTF-8."""
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


# ---- a backend, with its options as Cinder reads them --------------------------------------
def enabled_backends(conf: CinderConf) -> list[str]:
    """[DEFAULT] enabled_backends, each section named once, in its order."""
    values = (conf.section("DEFAULT") or {}).get("enabled_backends") or [""]
    names: dict[str, str] = {}
    for name in filter(None, (name.strip() for name in values[-1].split(","))):
        # Named twice (or in two cases: sections match case-insensitively), it is one backend.
        names.setdefault(section_key(name), name)
    return list(names.values())


def volume_driver(conf: CinderConf, backend: str) -> str:
    """The backend's volume_driver, Cinder's default when not set."""
    found = conf.last(backend, "volume_driver")
    return found[0].strip() if found else LVM_DRIVER


def short_driver(driver: str) -> str:
    """A volume_driver as named to an operator: its class."""
    return driver.rpartition(".")[2] or driver


def _text(conf: CinderConf, value: str, origin: str) -> str:
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


def _path(conf: CinderConf, value: str, origin: str) -> str:
    value = _text(conf, value, origin)
    if not os.path.isabs(value):
        raise ConfigError(
            f"{conf.path}: {origin} {value!r} is a relative path (relative to the cinder-volume "
            "service's working directory; rbdfail would read it next to its own file)",
            hint="write it as an absolute path",
        )
    return value


@dataclass(frozen=True)
class Setting:
    """A value import-cinder writes, and where it came from (said in its comment)."""

    value: str
    origin: str  # "[ceph] rbd_pool", or why a default was taken


@dataclass(frozen=True)
class ReplicationDevice:
    """One replication_device line: a secondary site, as Cinder's RBD driver connects to it."""

    backend_id: Setting
    conf: Setting
    user: Setting
    origin: str
    ignored: tuple[str, ...]  # not carried over: secret_uuid, and what Cinder's driver ignores


@dataclass(frozen=True)
class CinderBackend:
    """An RBD backend of cinder.conf, each option with where it came from."""

    section: str
    name: Setting
    conf: Setting
    user: Setting
    pool: Setting
    cluster_name: Setting
    devices: tuple[ReplicationDevice, ...]
    timeout: Setting
    volume_backend_name: str  # what the scheduler matches a type's volume_backend_name with
    volume_backend_origin: str
    cinder_host: Setting | None = None  # the cinder-volume service's host@section


def read_backend(conf: CinderConf, section: str, notes: list[str]) -> CinderBackend:
    """The backend of `section`, refused naming the key when Cinder would refuse it or rbdfail
    could not use it; what is ignored is said in `notes`."""

    def get(key: str) -> Setting | None:
        found = conf.last(section, key)
        if found is None or (not found[0].strip() and key in OPTIONAL_WHEN_EMPTY):
            return None
        return Setting(_text(conf, found[0], found[1]), found[1])

    for key in ("rbd_pool", "rbd_user", "rbd_ceph_conf", "rbd_cluster_name", "replication_device"):
        if note := conf.ignored_default(section, key):
            notes.append(note)
    if (pool := get("rbd_pool")) is None:
        raise ConfigError(
            f"{conf.path}: [{section}] has no rbd_pool (nor has [{BACKEND_DEFAULTS}])",
            hint="set rbd_pool in the backend's section and import again; Cinder would use its "
            "default pool `rbd`, but rbdfail does not guess the pool a failover acts on",
        )
    cluster = get("rbd_cluster_name") or Setting(
        "ceph", "rbd_cluster_name not set: Cinder's default"
    )
    found_conf = conf.last(section, "rbd_ceph_conf")
    if found_conf and found_conf[0].strip():
        ceph_conf = Setting(_path(conf, *found_conf), found_conf[1])
    else:  # Cinder passes "" and librados looks in its default places
        ceph_conf = Setting(
            f"/etc/ceph/{cluster.value}.conf",
            "rbd_ceph_conf not set: where librados looks for cluster "
            f"{cluster.value!r} (unless $CEPH_CONF is set for cinder-volume)",
        )
    rbd_user = get("rbd_user")
    user = rbd_user or Setting(
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
    return CinderBackend(
        section=section,
        name=name or Setting(section, "volume_backend_name not set: the section's name"),
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


def _service_host(conf: CinderConf, section: str) -> Setting | None:
    """The cinder-volume service's host for a backend, as cinder-volume names it: the
    section's backend_host, else [DEFAULT] host, then `@` and the section (cinder/cmd/volume.py).
    None when neither is set (Cinder then takes the machine's hostname, unknown here)."""
    own = (conf.section(section) or {}).get("backend_host")
    default = (conf.section("DEFAULT") or {}).get("host")
    for values, origin in ((own, f"[{section}] backend_host"), (default, "[DEFAULT] host")):
        if values and (host := values[-1].strip()):
            if not re.fullmatch(r"[A-Za-z0-9_.:-]+", host):
                return None
            return Setting(f"{host}@{section}", f"{origin} @ the section: cinder-volume's host")
    return None


def _read_devices(
    conf: CinderConf, section: str, rbd_user: Setting | None
) -> tuple[ReplicationDevice, ...]:
    found = conf.lookup(section, "replication_device")
    if found is None:
        return ()
    values, origin = found
    devices: list[ReplicationDevice] = []
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
            ReplicationDevice(
                backend_id=Setting(backend_id, where),
                conf=Setting(_path(conf, device_conf, f"{where}: conf"), where)
                if device_conf is not None
                else Setting(f"/etc/ceph/{backend_id}.conf", "conf not given: Cinder's default"),
                user=Setting(_text(conf, device_user, f"{where}: user"), where)
                if device_user is not None
                else Setting(rbd_user.value, f"user not given: {rbd_user.origin}, as Cinder does")
                if rbd_user is not None
                else Setting("cinder", "user not given and no rbd_user: Cinder's default"),
                origin=where,
                ignored=tuple(pairs),
            )
        )
    return tuple(devices)


def _device_pairs(conf: CinderConf, raw: str, where: str) -> dict[str, str]:
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


def _timeout(conf: CinderConf, section: str, notes: list[str]) -> Setting:
    found = conf.last(section, "replication_connect_timeout")
    if found is None:
        return Setting("5", "replication_connect_timeout not set: Cinder's default")
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
        return Setting("5", f"{origin} is {seconds}: no timeout, which rbdfail does not allow")
    if seconds > MAX_SECONDS:
        raise ConfigError(
            f"{conf.path}: {origin} {seconds} is over a day",
            hint=f"rbdfail allows at most {MAX_SECONDS:g} seconds",
        )
    return Setting(str(seconds), origin)
