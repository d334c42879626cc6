"""rbdfail.yaml -> frozen dataclasses, validated, with Cinder's defaults.

Every problem is one ConfigError naming the file, the line (where YAML gives one), the key and
what to do; a misspelt key gets a suggestion. No click, no Ceph here.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from rbdfail.cluster import MirrorMode
from rbdfail.errors import ConfigError

SYSTEM_CONFIG = Path("/etc/rbdfail/rbdfail.yaml")
DEFAULT_BACKEND_ID = "default"  # Cinder's id for the backend itself

T = TypeVar("T")


@dataclass(frozen=True)
class SiteConfig:
    """How to reach one site's pool."""

    backend_id: str  # "default" for the backend itself, else the replication device's id
    conf: Path
    user: str  # cephx user without "client."
    pool: str
    cluster_name: str = "ceph"
    keyring: Path | None = None


@dataclass(frozen=True)
class VolumeType:
    name: str
    replicated: bool
    mirror_mode: MirrorMode = MirrorMode.JOURNAL
    snapshot_interval: str | None = None  # a mirror-snapshot schedule, snapshot mode only


NOT_TYPED = VolumeType(name="(untyped)", replicated=False)


@dataclass(frozen=True)
class VolumeRule:
    match: str  # fnmatch glob on the image name
    type: str


@dataclass(frozen=True)
class Config:
    path: Path
    backend_name: str
    backend: SiteConfig
    replication_devices: tuple[SiteConfig, ...]
    volume_types: tuple[VolumeType, ...] = ()
    volumes: tuple[VolumeRule, ...] = ()
    replication_connect_timeout: float = 5.0
    volume_timeout: float = 60.0
    concurrency: int = 32
    state_dir: Path = field(default=Path("/var/lib/rbdfail"))

    @property
    def sites(self) -> tuple[SiteConfig, ...]:
        return (self.backend, *self.replication_devices)

    def site(self, backend_id: str) -> SiteConfig:
        for site in self.sites:
            if site.backend_id == backend_id:
                return site
        known = [s.backend_id for s in self.sites]
        raise ConfigError(
            f"{self.path}: no site with backend_id {backend_id!r} (known: {', '.join(known)})",
            hint=_suggest(backend_id, known),
        )

    def volume_type(self, name: str) -> VolumeType:
        for volume_type in self.volume_types:
            if volume_type.name == name:
                return volume_type
        known = [t.name for t in self.volume_types]
        raise ConfigError(
            f"{self.path}: no volume type {name!r} in volume_types "
            f"(known: {', '.join(known) or 'none'})",
            hint=_suggest(name, known),
        )

    def volume_type_for(self, image_name: str, override: str | None = None) -> VolumeType:
        """The image's type: its metadata override, else the first matching rule."""
        if override is not None:
            try:
                return self.volume_type(override)
            except ConfigError as exc:
                raise ConfigError(
                    f"volume {image_name!r}: its rbdfail.volume_type metadata names an unknown "
                    f"type: {exc.message}",
                    hint=exc.hint or "add the type to volume_types or fix the image's metadata",
                ) from None
        for rule in self.volumes:
            if fnmatch.fnmatchcase(image_name, rule.match):
                return self.volume_type(rule.type)
        return NOT_TYPED


def find_config_path(
    explicit: str | os.PathLike[str] | None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Path:
    """--config, else $RBDFAIL_CONFIG, else ./rbdfail.yaml, else /etc/rbdfail/rbdfail.yaml."""
    environ = os.environ if environ is None else environ
    for given, origin in (
        (explicit, "--config"),
        (environ.get("RBDFAIL_CONFIG"), "RBDFAIL_CONFIG"),
    ):
        if given:
            path = Path(given)
            if not path.is_file():
                raise ConfigError(f"{path}: configuration file not found (from {origin})")
            return path
    candidates = [(cwd or Path.cwd()) / "rbdfail.yaml", SYSTEM_CONFIG]
    for path in candidates:
        if path.is_file():
            return path
    raise ConfigError(
        f"no configuration file: looked for {', '.join(map(str, candidates))}",
        hint="pass --config FILE or set RBDFAIL_CONFIG (see examples/rbdfail.yaml)",
    )


# ---- YAML with line numbers -----------------------------------------------------------------
class _LineDict(dict[str, Any]):
    """A mapping that remembers the line of each key and of itself."""

    line: int | None = None
    key_lines: dict[str, int]


class _Loader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        mapping = _LineDict({str(k): v for k, v in super().construct_mapping(node, True).items()})
        mapping.line = node.start_mark.line + 1
        mapping.key_lines = {str(key.value): key.start_mark.line + 1 for key, _ in node.value}
        return mapping


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _Loader.construct_mapping)


def _suggest(word: str, choices: list[str]) -> str | None:
    close = difflib.get_close_matches(word, choices, n=1)
    return f"did you mean {close[0]!r}?" if close else None


class _Reader:
    """Walks the parsed YAML, knowing where it is, to say exactly what is wrong and where."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def error(
        self, where: str, problem: str, line: int | None, hint: str | None = None
    ) -> ConfigError:
        at = f"{self.path}:{line}" if line else str(self.path)
        return ConfigError(f"{at}: {where}: {problem}", hint=hint)

    def mapping(self, value: Any, where: str, line: int | None) -> _LineDict:
        if value is None:
            value = _LineDict()
        if not isinstance(value, _LineDict):
            raise self.error(where, f"expected a mapping, got {_kind(value)}", line)
        return value

    def keys(self, mapping: _LineDict, where: str, allowed: set[str], required: set[str]) -> None:
        for key in mapping:
            if key not in allowed:
                raise self.error(
                    f"{where}.{key}" if where else str(key),
                    "unknown key",
                    mapping.key_lines.get(str(key)),
                    _suggest(str(key), sorted(allowed))
                    or f"allowed keys: {', '.join(sorted(allowed))}",
                )
        for key in sorted(required - set(mapping)):
            raise self.error(
                f"{where}.{key}" if where else key, "required key missing", mapping.line
            )

    def get(
        self,
        mapping: _LineDict,
        where: str,
        key: str,
        kind: type[T],
        default: T,
        check: Callable[[T], str | None] = lambda _: None,
    ) -> T:
        """mapping[key] of the given kind (bool is not a number), else default."""
        if key not in mapping or mapping[key] is None:
            return default
        value = mapping[key]
        line = mapping.key_lines.get(key)
        name = f"{where}.{key}" if where else key
        ok = isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise self.error(name, f"expected {_KIND_NAMES[kind]}, got {_kind(value)}", line)
        if problem := check(value):
            raise self.error(name, problem, line)
        return value  # type: ignore[no-any-return]

    def path_at(self, mapping: _LineDict, where: str, key: str, default: str | None) -> Path | None:
        value = self.get(mapping, where, key, str, default)
        if value is None:
            return None
        # Relative paths follow the config file, so it can move with its keyrings (the lab's does).
        return (self.path.parent / value).absolute() if not os.path.isabs(value) else Path(value)


_KIND_NAMES: dict[type, str] = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    list: "a list",
}


def _kind(value: Any) -> str:
    return {
        dict: "a mapping",
        _LineDict: "a mapping",
        list: "a list",
        str: f"the string {value!r}",
        bool: f"{value!r}".lower(),
        type(None): "nothing",
    }.get(type(value), f"{value!r}")


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be greater than 0"


def _at_least_one(value: int) -> str | None:
    return None if value >= 1 else "must be at least 1"


def _not_empty(value: str) -> str | None:
    return None if value.strip() else "must not be empty"


TOP_KEYS = {
    "backend",
    "replication_device",
    "replication_connect_timeout",
    "volume_timeout",
    "concurrency",
    "volume_types",
    "volumes",
    "state_dir",
}
BACKEND_KEYS = {"name", "conf", "user", "pool", "cluster_name", "keyring"}
# secret_uuid is accepted because Cinder's replication_device strings carry it; it is
# libvirt's secret for attaching and means nothing to rbdfail.
DEVICE_KEYS = {"backend_id", "conf", "user", "pool", "cluster_name", "keyring", "secret_uuid"}
TYPE_KEYS = {"replication_enabled", "mirror_mode", "snapshot_interval"}
RULE_KEYS = {"match", "type"}
_INTERVAL = re.compile(r"^[1-9][0-9]*[mhd]$")


def load_config(path: Path) -> Config:
    """Read and validate the file; every problem is a ConfigError naming file, line and key."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration file: {exc.strerror}") from None
    try:
        raw = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            f"{path}{where}: invalid YAML: {problem}",
            hint="check the indentation and quoting around that line",
        ) from None
    if raw is None:
        raise ConfigError(
            f"{path}: the configuration file is empty", hint="see examples/rbdfail.yaml"
        )
    reader = _Reader(path)
    top = reader.mapping(raw, "top level", 1)
    reader.keys(top, "", TOP_KEYS, {"backend", "replication_device"})

    backend_map = reader.mapping(top["backend"], "backend", top.key_lines.get("backend"))
    reader.keys(backend_map, "backend", BACKEND_KEYS, {"pool"})
    backend = _site(reader, backend_map, "backend", DEFAULT_BACKEND_ID, None)

    devices_raw = reader.get(top, "", "replication_device", list, [])
    if not devices_raw:
        raise reader.error(
            "replication_device",
            "needs at least one secondary site",
            top.key_lines.get("replication_device"),
            "add `- backend_id: secondary` with its conf and user",
        )
    devices: list[SiteConfig] = []
    for index, entry in enumerate(devices_raw):
        where = f"replication_device[{index}]"
        line = top.key_lines.get("replication_device")
        entry = _cinder_string(reader, entry, where, line) if isinstance(entry, str) else entry
        device_map = reader.mapping(entry, where, line)
        reader.keys(device_map, where, DEVICE_KEYS, {"backend_id"})
        device = _site(reader, device_map, where, None, backend)
        if device.backend_id in [d.backend_id for d in (backend, *devices)]:
            raise reader.error(
                f"{where}.backend_id",
                f"{device.backend_id!r} is already used"
                + (" by the backend itself" if device.backend_id == "default" else ""),
                device_map.key_lines.get("backend_id"),
                "give each replication device its own backend_id",
            )
        devices.append(device)

    types_map = reader.mapping(
        top.get("volume_types"), "volume_types", top.key_lines.get("volume_types")
    )
    volume_types = tuple(_volume_type(reader, types_map, str(name)) for name in types_map)
    rules = tuple(
        _rule(reader, top, i, [t.name for t in volume_types])
        for i in range(len(reader.get(top, "", "volumes", list, [])))
    )

    return Config(
        path=path,
        backend_name=reader.get(backend_map, "backend", "name", str, "ceph", _not_empty),
        backend=backend,
        replication_devices=tuple(devices),
        volume_types=volume_types,
        volumes=rules,
        replication_connect_timeout=reader.get(
            top, "", "replication_connect_timeout", float, 5.0, _positive
        ),
        volume_timeout=reader.get(top, "", "volume_timeout", float, 60.0, _positive),
        concurrency=reader.get(top, "", "concurrency", int, 32, _at_least_one),
        state_dir=reader.path_at(top, "", "state_dir", "/var/lib/rbdfail") or Path(),
    )


def _site(
    reader: _Reader, m: _LineDict, where: str, backend_id: str | None, backend: SiteConfig | None
) -> SiteConfig:
    """The backend (backend is None) or a replication device, with Cinder's defaults."""
    if backend_id is None:
        backend_id = reader.get(m, where, "backend_id", str, "", _not_empty)
    conf_default = f"/etc/ceph/{backend_id}.conf" if backend else "/etc/ceph/ceph.conf"
    keyring = reader.path_at(m, where, "keyring", None)
    if keyring is not None and not keyring.is_file():
        raise reader.error(
            f"{where}.keyring",
            f"keyring file {keyring} not found",
            m.key_lines.get("keyring"),
            "fix the path, or leave `keyring` out to use the one ceph.conf names",
        )
    return SiteConfig(
        backend_id=backend_id,
        conf=reader.path_at(m, where, "conf", conf_default) or Path(conf_default),
        user=reader.get(m, where, "user", str, backend.user if backend else "cinder", _not_empty),
        pool=reader.get(m, where, "pool", str, backend.pool if backend else "", _not_empty),
        cluster_name=reader.get(m, where, "cluster_name", str, "ceph", _not_empty),
        keyring=keyring,
    )


def _cinder_string(reader: _Reader, text: str, where: str, line: int | None) -> _LineDict:
    """Cinder's `backend_id:secondary, conf:/etc/ceph/secondary.conf, user:cinder`."""
    parsed = _LineDict()
    parsed.line, parsed.key_lines = line, {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = pair.partition(":")
        if not sep:
            raise reader.error(
                where,
                f"{pair!r} is not key:value",
                line,
                "write it as 'backend_id:secondary, conf:/etc/ceph/secondary.conf'",
            )
        parsed[key.strip()] = value.strip()
        parsed.key_lines[key.strip()] = line or 0
    return parsed


def _volume_type(reader: _Reader, types_map: _LineDict, name: str) -> VolumeType:
    where = f"volume_types.{name}"
    m = reader.mapping(types_map[name], where, types_map.key_lines.get(name))
    reader.keys(m, where, TYPE_KEYS, set())
    enabled = m.get("replication_enabled", False)
    replicated = _cinder_bool(enabled)
    if replicated is None:
        raise reader.error(
            f"{where}.replication_enabled",
            f"cannot read {enabled!r} as true/false",
            m.key_lines.get("replication_enabled"),
            'write "<is> True" as Cinder does, or true/false',
        )
    modes = [mode.value for mode in MirrorMode]
    mode_name = reader.get(m, where, "mirror_mode", str, "journal")
    if mode_name not in modes:
        raise reader.error(
            f"{where}.mirror_mode",
            f"unknown mode {mode_name!r}",
            m.key_lines.get("mirror_mode"),
            _suggest(mode_name, modes) or f"use one of: {', '.join(modes)}",
        )
    interval = reader.get(m, where, "snapshot_interval", str, None)
    if interval is not None:
        line = m.key_lines.get("snapshot_interval")
        if not _INTERVAL.match(interval):
            raise reader.error(
                f"{where}.snapshot_interval",
                f"cannot read {interval!r}",
                line,
                "write minutes, hours or days, e.g. 30m, 1h, 1d",
            )
        if mode_name != "snapshot":
            raise reader.error(
                f"{where}.snapshot_interval",
                "only for mirror_mode snapshot",
                line,
                "set mirror_mode: snapshot or remove snapshot_interval",
            )
    return VolumeType(name, replicated, MirrorMode(mode_name), interval)


def _cinder_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower().removeprefix("<is>").strip()
        return {"true": True, "false": False}.get(word)
    return None


def _rule(reader: _Reader, top: _LineDict, index: int, type_names: list[str]) -> VolumeRule:
    where = f"volumes[{index}]"
    m = reader.mapping(top["volumes"][index], where, top.key_lines.get("volumes"))
    reader.keys(m, where, RULE_KEYS, RULE_KEYS)
    match = reader.get(m, where, "match", str, "", _not_empty)
    type_name = reader.get(m, where, "type", str, "", _not_empty)
    if type_name not in type_names:
        raise reader.error(
            f"{where}.type",
            f"no volume type {type_name!r} in volume_types",
            m.key_lines.get("type"),
            _suggest(type_name, type_names) or f"known types: {', '.join(type_names) or 'none'}",
        )
    return VolumeRule(match, type_name)
