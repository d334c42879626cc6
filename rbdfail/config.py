"""rbdfail.yaml -> frozen dataclasses, validated, with Cinder's names and defaults.

The operator edits this file under pressure, often during an outage, so every problem is one
ConfigError saying `FILE:LINE: dotted.key: problem` and what to do (a misspelt key gets a
suggestion). No click, no Ceph here: the CLI renders the error, the engine trusts the result.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import math
import os
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from rbdfail.cluster import Cluster, MirrorMode
from rbdfail.errors import ConfigError
from rbdfail.limits import MAX_CONCURRENCY, seconds_problem

SYSTEM_CONFIG = Path("/etc/rbdfail/rbdfail.yaml")  # the last place looked; tests patch it
ENV_VAR = "RBDFAIL_CONFIG"
DEFAULT_BACKEND_ID = "default"  # Cinder's id for the backend itself
SEE_EXAMPLE = "see examples/rbdfail.yaml"

_T = TypeVar("_T")


@dataclass(frozen=True)
class SiteConfig:
    """How to reach one site's pool."""

    backend_id: str  # "default" for the backend itself (Cinder's convention), else the device's
    conf: Path
    user: str  # cephx user without "client."
    pool: str
    cluster_name: str = "ceph"
    keyring: Path | None = None
    namespace: str = ""  # an RBD namespace of the pool; "" is the pool's default one

    @property
    def where(self) -> str:
        """The pool, and its namespace if any, as `rbd` spells it: "volumes/tenant"."""
        return f"{self.pool}/{self.namespace}" if self.namespace else self.pool


# How every use case reaches a site: ceph.connect on a real host, FakeCeph.connect in tests.
Connect = Callable[[SiteConfig, float], Cluster]


@dataclass(frozen=True)
class VolumeType:
    """Which images replicate and how, as Cinder's volume types and extra specs say."""

    name: str
    replicated: bool
    mirror_mode: MirrorMode = MirrorMode.JOURNAL
    snapshot_interval: str | None = None  # mirror-snapshot schedule ("1h"), snapshot mode only


NOT_TYPED = VolumeType(name="(untyped)", replicated=False)  # an image no rule matches


@dataclass(frozen=True)
class VolumeRule:
    match: str  # fnmatch glob on the image name
    type: str


_GLOB_CHARACTERS = frozenset("*?[")  # what makes fnmatch's pattern more than a name


@dataclass(frozen=True)
class _RuleIndex:
    """The rules, for typing many images: a rule without glob characters is looked up by name
    (its first occurrence, with its position), the globs kept in order with theirs."""

    exact: dict[str, tuple[int, VolumeRule]]
    globs: tuple[tuple[int, VolumeRule], ...]
    types: dict[str, VolumeType]

    @classmethod
    def of(cls, rules: tuple[VolumeRule, ...], types: tuple[VolumeType, ...]) -> _RuleIndex:
        exact: dict[str, tuple[int, VolumeRule]] = {}
        globs: list[tuple[int, VolumeRule]] = []
        for position, rule in enumerate(rules):
            if _GLOB_CHARACTERS.isdisjoint(rule.match):
                exact.setdefault(rule.match, (position, rule))
            else:
                globs.append((position, rule))
        named: dict[str, VolumeType] = {}
        for volume_type in types:
            named.setdefault(volume_type.name, volume_type)
        return cls(exact, tuple(globs), named)


@dataclass(frozen=True)
class Config:
    path: Path
    backend_name: str
    backend: SiteConfig  # backend_id == "default"
    replication_devices: tuple[SiteConfig, ...]
    volume_types: tuple[VolumeType, ...]
    volumes: tuple[VolumeRule, ...]
    replication_connect_timeout: float = 5.0
    volume_timeout: float = 60.0
    concurrency: int = 256
    state_dir: Path = Path("/var/lib/rbdfail")
    # In a file of several backends, this one's name: its part of state.json, its journal
    # lines, its inventory and its volumes' names shown as pool/name. None: the only backend.
    state_scope: str | None = None
    # The cinder-volume service's host for this backend, `host@backend` as `cinder-manage service
    # list` shows it: what `cinder-manage db reset_active_backend --backend-host` takes after a
    # switch. None: not known (the steps then say HOST@BACKEND).
    cinder_host: str | None = None

    def shown(self, name: str) -> str:
        """A volume's name as the operator sees it: `pool/name` (`pool/namespace/name`) where
        another backend could have an image of the same name."""
        return f"{self.backend.where}/{name}" if self.state_scope else name

    @property
    def sites(self) -> tuple[SiteConfig, ...]:
        """The backend first, then the replication devices."""
        return (self.backend, *self.replication_devices)

    def site(self, backend_id: str) -> SiteConfig:
        for site in self.sites:
            if site.backend_id == backend_id:
                return site
        known = [s.backend_id for s in self.sites]
        raise ConfigError(
            f"{self.path}: no site with backend_id {backend_id!r} (known: {', '.join(known)})",
            hint=_suggest(backend_id, known, "use one of"),
        )

    def volume_type(self, name: str) -> VolumeType:
        for volume_type in self.volume_types:
            if volume_type.name == name:
                return volume_type
        known = [t.name for t in self.volume_types]
        raise ConfigError(
            f"{self.path}: no volume type {name!r} in volume_types "
            f"(known: {', '.join(known) or 'none'})",
            hint=_suggest(name, known, "use one of"),
        )

    def volume_type_for(self, image_name: str, override: str | None = None) -> VolumeType:
        """The image's `rbdfail.volume_type` metadata when given, else the first matching rule."""
        if override is not None:
            try:
                return self.volume_type(override)
            except ConfigError as exc:
                raise ConfigError(
                    f"volume {image_name!r}: its rbdfail.volume_type metadata names {override!r}, "
                    f"which is not in volume_types of {self.path}",
                    hint=_suggest(override, [t.name for t in self.volume_types], "")
                    or "add the type to volume_types, or fix the image's metadata",
                ) from exc
        index = self._rule_index
        exact = index.exact.get(image_name)
        # First matching rule wins: a glob rule before the exact one that names the image still
        # takes it. Only the globs before it (or all of them, with no exact rule) are tried.
        for position, rule in index.globs:
            if exact is not None and position > exact[0]:
                break
            if fnmatch.fnmatchcase(image_name, rule.match):
                return index.types.get(rule.type) or self.volume_type(rule.type)
        if exact is not None:
            return index.types.get(exact[1].type) or self.volume_type(exact[1].type)
        return NOT_TYPED

    @functools.cached_property
    def _rule_index(self) -> _RuleIndex:
        return _RuleIndex.of(self.volumes, self.volume_types)


@dataclass(frozen=True)
class Deployment:
    """A configuration file: one or more backends (each a `Config`: a pool, its replication
    devices and the shared settings), as cinder.conf holds one section per RBD backend."""

    path: Path
    backends: tuple[Config, ...]

    @property
    def several(self) -> bool:
        return len(self.backends) > 1

    def select(self, name: str | None) -> tuple[Config, ...]:
        """Every backend, or the one named (--backend)."""
        if name is None:
            return self.backends
        known = [backend.backend_name for backend in self.backends]
        if name not in known:
            raise ConfigError(
                f"{self.path}: no backend {name!r} (known: {', '.join(known)})",
                hint=_suggest(name, known, "use one of"),
            )
        return tuple(b for b in self.backends if b.backend_name == name)

    def only(self, name: str | None, command: str) -> Config:
        """The backend a single-backend command acts on: the one named, or the only one."""
        chosen = self.select(name)
        if len(chosen) > 1:
            names = ", ".join(b.backend_name for b in chosen)
            raise ConfigError(
                f"{self.path}: `{command}` acts on one backend and this file has several ({names})",
                hint=f"name one: rbdfail --backend {chosen[0].backend_name} {command} ...",
            )
        return chosen[0]


def check_conf_readable(site: SiteConfig) -> None:
    """Refuse a site whose ceph.conf cannot be read, before connecting: librados would say only
    "cannot connect", and a failover takes a source it cannot connect to as lost and forces."""
    try:
        with open(site.conf, "rb") as conf:
            conf.read(1)
    except OSError as exc:
        raise ConfigError(
            f"{site.conf}: the Ceph configuration of site {site.backend_id!r} cannot be read: "
            f"{exc.strerror or exc}",
            hint=f"fix `conf` of {site.backend_id!r} in rbdfail.yaml, or the file's permissions "
            "(nothing was changed on any site)",
        ) from None


def find_config_path(
    explicit: str | os.PathLike[str] | None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Path:
    """--config, else $RBDFAIL_CONFIG, else ./rbdfail.yaml, else /etc/rbdfail/rbdfail.yaml.

    A file named explicitly must exist: silently falling back to another one could fail over
    the wrong deployment.
    """
    environ = os.environ if environ is None else environ
    for given, origin in ((explicit, "--config"), (environ.get(ENV_VAR), f"${ENV_VAR}")):
        if given:
            path = Path(given)
            if not path.is_file():
                raise ConfigError(
                    f"{path}: configuration file not found (from {origin})",
                    hint=f"fix the path given by {origin}",
                )
            return path
    searched = [(cwd or Path.cwd()) / "rbdfail.yaml", SYSTEM_CONFIG]
    for path in searched:
        if path.is_file():
            return path
    raise ConfigError(
        f"no configuration file found: looked for {', '.join(map(str, searched))} "
        f"(no --config given, ${ENV_VAR} not set)",
        hint=f"pass --config FILE or set {ENV_VAR} (see examples/rbdfail.yaml)",
    )


# ---- YAML that remembers where each key is ----------------------------------------------------
class _LineDict(dict[str, Any]):
    """A mapping that knows the (1-based) line of each of its keys."""

    def __init__(self, items: Iterable[tuple[str, Any]] = (), lines: dict[str, int] | None = None):
        super().__init__(items)
        self.key_lines = lines or {}


class _LineList(list[Any]):
    """A list that knows the (1-based) line of each of its items."""

    def __init__(self, items: Iterable[Any] = (), lines: list[int] | None = None):
        super().__init__(items)
        self.lines = lines or []


# A configuration is a page or two, or one exact rule per volume (import-cinder --volume-list
# writes ~60 bytes a volume: 4 MiB is ~65,000 volumes): beyond these it is not one, or it is
# built to exhaust memory (an alias expands to a copy of its anchor's node in a merge, so
# "billion laughs" documents grow exponentially with their size).
MAX_CONFIG_BYTES = 4 << 20
MAX_ALIASES = 100
MAX_MAPPING_KEYS = 10_000
MAX_DEPTH = 32  # a configuration is 4 levels deep; recursion to Python's limit is slow


class _Loader(yaml.SafeLoader):
    """safe_load plus lines; a key given twice is refused rather than silently overwritten;
    aliases and merged mappings are bounded."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.aliases = self.depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.depth >= MAX_DEPTH:
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            problem = f"nested more than {MAX_DEPTH} levels deep: refused"
            raise yaml.composer.ComposerError(None, None, problem, mark)
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                problem = f"more than {MAX_ALIASES} aliases (*name): refused"
                raise yaml.composer.ComposerError(None, None, problem, mark)
        self.depth += 1
        try:
            return yaml.composer.Composer.compose_node(self, parent, index)
        finally:
            self.depth -= 1

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        yaml.constructor.SafeConstructor.flatten_mapping(self, node)
        if len(node.value) > MAX_MAPPING_KEYS:
            problem = f"more than {MAX_MAPPING_KEYS} keys once `<<` merges are expanded: refused"
            raise yaml.constructor.ConstructorError(None, None, problem, node.start_mark)


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> _LineDict:
    first: dict[str, int] = {}
    for key, _ in node.value:
        if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
            if key.value in first:
                problem = f"{key.value!r} is given twice (first on line {first[key.value]})"
                raise yaml.constructor.ConstructorError(None, None, problem, key.start_mark)
            first[key.value] = key.start_mark.line + 1
    items = yaml.SafeLoader.construct_mapping(loader, node, deep=True).items()
    # node.value is read after construct_mapping, which flattens any `<<` merge into it.
    lines = {str(key.value): key.start_mark.line + 1 for key, _ in node.value}
    return _LineDict(((str(k), v) for k, v in items), lines)


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> _LineList:
    items = loader.construct_sequence(node, deep=True)
    return _LineList(items, [item.start_mark.line + 1 for item in node.value])


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_sequence)

# libyaml's parser when PyYAML has it (Debian's does) gives the same events some ten times faster
# than the pure-Python scanner and parser: a file of 10,000 rules loads in a fraction of a second.
# The nodes are still composed and constructed in Python, by _Loader's own methods, so its limits
# and lines hold. A document it refuses is read again by _Loader, whose messages are the ones
# rbdfail shows (libyaml words its errors differently).
_FastLoader: type | None = None
if not TYPE_CHECKING and getattr(yaml, "__with_libyaml__", False):

    class _FastLoader(
        yaml.composer.Composer,
        yaml.constructor.SafeConstructor,
        yaml.resolver.Resolver,
        yaml.cyaml.CParser,
    ):
        def __init__(self, stream: str) -> None:
            yaml.cyaml.CParser.__init__(self, stream)
            yaml.composer.Composer.__init__(self)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)
            self.aliases = self.depth = 0

        compose_node = _Loader.compose_node
        flatten_mapping = _Loader.flatten_mapping

    _FastLoader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)
    _FastLoader.add_constructor("tag:yaml.org,2002:seq", _construct_sequence)


def _load_yaml(text: str) -> Any:
    if _FastLoader is not None:
        try:
            return yaml.load(text, Loader=_FastLoader)
        except yaml.YAMLError:
            pass  # read again below, for _Loader's words
    return yaml.load(text, Loader=_Loader)  # a SafeLoader


# ---- checking, with the place of each problem -------------------------------------------------
def _suggest(word: str, choices: Collection[str], listing: str = "") -> str | None:
    """'did you mean X?' when a choice is close, else `listing: a, b, c` (None without one)."""
    if close := difflib.get_close_matches(word, list(choices), n=1):
        return f"did you mean {close[0]!r}?"
    return f"{listing}: {', '.join(sorted(choices))}" if listing and choices else None


def _kind(value: Any) -> str:
    if isinstance(value, bool | str):
        return str(value).lower() if isinstance(value, bool) else f"the string {value!r}"
    if isinstance(value, dict | list):
        return "a mapping" if isinstance(value, dict) else "a list"
    return "nothing" if value is None else repr(value)


_KINDS = {str: "a string", int: "an integer", float: "a number", _LineList: "a list"}


def _error(file: Path, where: str, line: int | None, problem: str, hint: str | None) -> ConfigError:
    at = f"{file}:{line}" if line else str(file)
    return ConfigError(f"{at}: {where or 'top level'}: {problem}", hint=hint)


class _Section:
    """One mapping of the file and where it sits: it refuses unknown (allowed=None: any key is
    fine) and missing keys on arrival, then hands out typed values, so that every error names
    FILE:LINE: dotted.key."""

    def __init__(
        self,
        file: Path,
        where: str,
        data: Any,
        line: int | None,
        allowed: Collection[str] | None,
        required: Collection[str] = (),
    ) -> None:
        self.file, self.where, self.line = file, where, line
        data = _LineDict() if data is None else data  # `key:` with nothing under it
        if not isinstance(data, _LineDict):
            raise _error(file, where, line, f"expected a mapping, got {_kind(data)}", SEE_EXAMPLE)
        self.data = data
        for key in data:
            if allowed is not None and key not in allowed:
                raise self.error(key, "unknown key", _suggest(key, allowed, "allowed keys"))
        for key in required:
            if data.get(key) is None:
                problem = "required key has no value" if key in data else "required key missing"
                raise self.error(key, problem, SEE_EXAMPLE)

    def name(self, key: str) -> str:
        key = key if key.isprintable() and key.strip() == key else repr(key)  # seen as it is
        return f"{self.where}.{key}" if self.where else key

    def line_of(self, key: str) -> int | None:
        return self.data.key_lines.get(key, self.line)

    def error(self, key: str, problem: str, hint: str | None = None) -> ConfigError:
        return _error(self.file, self.name(key), self.line_of(key), problem, hint)

    def sub(
        self, key: str, allowed: Collection[str] | None, required: Collection[str] = ()
    ) -> _Section:
        """The mapping under `key`, checked the same way."""
        data = self.data.get(key)
        return _Section(self.file, self.name(key), data, self.line_of(key), allowed, required)

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None  # `key:` with no value counts as not given

    def get(self, key: str, kind: type[_T], default: _T) -> _T:
        """data[key] if it is of `kind` (a bool is no number; an int is a float), else default."""
        value = self.data.get(key)
        if value is None:
            return default
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value) if abs(value) < 2**63 else math.inf * (1 if value > 0 else -1)
        if isinstance(value, bool) or not isinstance(value, kind):
            raise self.error(key, f"expected {_KINDS[kind]}, got {_kind(value)}")
        return value

    def text(self, key: str, default: str) -> str:
        if not (value := self.get(key, str, default).strip()):
            raise self.error(key, "must not be empty")
        if not value.isprintable():  # a NUL breaks every path; a newline, every message
            raise self.error(key, f"{value!r} holds a control character", "remove it")
        return value

    def seconds(self, key: str, default: float) -> float:
        value = self.get(key, float, default)
        if problem := seconds_problem(value):
            raise self.error(key, problem)
        return value

    def count(self, key: str, default: int, most: int) -> int:
        value = self.get(key, int, default)
        if not 1 <= value <= most:
            raise self.error(key, "must be at least 1" if value < 1 else f"must be at most {most}")
        return value

    def path(self, key: str, default: str) -> Path:
        value = self.text(key, default)
        # Relative paths follow the config file, not the cwd: the file can be moved together
        # with its keyrings, and the lab writes one next to its own.
        return Path(value) if os.path.isabs(value) else (self.file.parent / value).absolute()


TOP_KEYS = (
    *("backends", "backend", "replication_device", "replication_connect_timeout"),
    "volume_timeout",
    *("concurrency", "volume_types", "volumes", "state_dir"),
)
SITE_KEYS = ("conf", "user", "pool", "namespace", "cluster_name", "keyring")
BACKEND_KEYS = ("name", *SITE_KEYS, "cinder_host")
BACKENDS_ENTRY_KEYS = (
    *SITE_KEYS,
    "replication_device",
    "cinder_host",
)  # under `backends:`, named by its key
# secret_uuid is accepted because Cinder's replication_device strings carry it; it is libvirt's
# secret for attaching volumes to guests and means nothing to rbdfail, so it is ignored.
DEVICE_KEYS = ("backend_id", *SITE_KEYS, "secret_uuid")
TYPE_KEYS = ("replication_enabled", "mirror_mode", "snapshot_interval")
RULE_KEYS = ("match", "type")
_INTERVAL = re.compile(r"^[1-9][0-9]*[mhd]$")
# What names a backend under `backends:` (a cinder.conf section name; import-cinder checks it too).
BACKEND_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_NAMESPACE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_CINDER_BOOL = re.compile(r"^(?:<is>\s*)?(true|false)$", re.IGNORECASE)


def load_config(path: Path) -> Config:
    """The file's backend, for a file of one backend (tests, the lab); a file of several is
    refused naming them: the commands use `load_deployment`."""
    deployment = load_deployment(path)
    return deployment.only(None, "this")


def load_deployment(path: Path) -> Deployment:
    """Read and validate the file; every problem is one ConfigError naming file, line and key."""
    path = Path(path)
    top = _Section(path, "", _read_yaml(path), None, TOP_KEYS)
    # The sites first: a file is read in the order it is written, backends on top.
    found: list[tuple[str, SiteConfig, tuple[SiteConfig, ...], str | None]] = []
    if not top.has("backends"):  # the first shape: one backend, its devices at the top level
        for key in ("backend", "replication_device"):
            if not top.has(key):
                hint = "add it, or list the backends under `backends:` (" + SEE_EXAMPLE + ")"
                raise top.error(key, "required key missing", hint)
        section = top.sub("backend", BACKEND_KEYS, ["pool"])
        found.append((section.text("name", "ceph"), *_backend(section, top), _cinder_host(section)))
    else:
        for key in ("backend", "replication_device"):
            if key in top.data:
                problem = "cannot be given with `backends`: each backend lists its own devices"
                raise top.error(key, problem, "move it under the backend it belongs to")
        sections = top.sub("backends", None)
        if not sections.data:
            raise top.error("backends", "lists no backend", SEE_EXAMPLE)
        for name in sections.data:
            if not BACKEND_NAME.match(name):
                hint = "letters, digits, '_', '.' and '-', as a cinder.conf section name"
                raise sections.error(name, "is not a backend name", hint)
            section = sections.sub(name, BACKENDS_ENTRY_KEYS, ["pool", "replication_device"])
            backend, devices = _backend(section, section)
            for other, site, _, _ in found:
                if _same_images(site, backend):
                    problem = f"the same pool as backend {other!r} ({backend.where} in {site.conf})"
                    hint = "give each backend its own pool or namespace"
                    raise section.error("pool", problem, hint)
            found.append((name, backend, devices, _cinder_host(section)))

    types = top.sub("volume_types", None)  # any name, each a mapping of TYPE_KEYS
    volume_types = tuple(_volume_type(name, types.sub(name, TYPE_KEYS)) for name in types.data)
    rules = top.get("volumes", _LineList, _LineList())
    shared = dict(
        path=path,
        volume_types=volume_types,
        volumes=tuple(
            _rule(_Section(path, f"volumes[{i}]", rule, line, RULE_KEYS, RULE_KEYS), volume_types)
            for i, (rule, line) in enumerate(zip(rules, rules.lines, strict=True))
        ),
        replication_connect_timeout=top.seconds("replication_connect_timeout", 5.0),
        volume_timeout=top.seconds("volume_timeout", 60.0),
        concurrency=top.count("concurrency", 256, MAX_CONCURRENCY),
        state_dir=top.path("state_dir", "/var/lib/rbdfail"),
    )
    several = len(found) > 1
    configs = tuple(
        Config(
            backend_name=name,
            backend=backend,
            replication_devices=devices,
            state_scope=name if several else None,
            cinder_host=cinder_host,
            **shared,  # type: ignore[arg-type]
        )
        for name, backend, devices, cinder_host in found
    )
    for config in configs:
        _ = config._rule_index  # built as the file loads: typing an image is then a lookup
    return Deployment(path, configs)


def _same_images(one: SiteConfig, other: SiteConfig) -> bool:
    return (one.conf, one.cluster_name, one.where) == (other.conf, other.cluster_name, other.where)


_CINDER_HOST = re.compile(r"[A-Za-z0-9_.:-]+@[A-Za-z0-9_.:-]+")


def _cinder_host(section: _Section) -> str | None:
    if not section.has("cinder_host"):
        return None
    host = section.text("cinder_host", "")
    if not _CINDER_HOST.fullmatch(host):
        raise section.error(
            "cinder_host",
            f"{host!r} is not a cinder-volume host@backend",
            "write it as `cinder-manage service list` shows the backend, e.g. hostgroup@ceph",
        )
    return host


def _backend(section: _Section, devices_in: _Section) -> tuple[SiteConfig, tuple[SiteConfig, ...]]:
    """One backend's own site, then its replication devices (listed under `devices_in`)."""
    backend = _site(section, DEFAULT_BACKEND_ID, None)
    if not (entries := devices_in.get("replication_device", _LineList, _LineList())):
        hint = "add `- backend_id: secondary` with its conf and user"
        raise devices_in.error("replication_device", "needs at least one secondary site", hint)
    devices: list[SiteConfig] = []
    for index, (entry, line) in enumerate(zip(entries, entries.lines, strict=True)):
        where = f"{devices_in.name('replication_device')}[{index}]"
        if isinstance(entry, str):
            entry = _cinder_string(section.file, where, line, entry)
        device = _Section(section.file, where, entry, line, DEVICE_KEYS, ["backend_id"])
        backend_id = device.text("backend_id", "")
        used = [site.backend_id for site in (backend, *devices)]
        if backend_id in used:
            owner = used.index(backend_id)
            by = f"replication_device[{owner - 1}]" if owner else "the backend itself (Cinder's id)"
            hint = "give each replication device its own backend_id, e.g. secondary"
            raise device.error("backend_id", f"{backend_id!r} is already used by {by}", hint)
        devices.append(_site(device, backend_id, backend))
    return backend, tuple(devices)


def _read_yaml(path: Path) -> Any:
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            message = f"{path}: larger than {MAX_CONFIG_BYTES >> 20} MiB: not a configuration file"
            raise ConfigError(message, hint=SEE_EXAMPLE)
        raw = _load_yaml(data.decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found", hint=SEE_EXAMPLE) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        message = f"{path}: cannot read the configuration file: {reason}"
        raise ConfigError(message, hint="check the file and its permissions") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        message = f"{path}{at}: invalid YAML: {exc.problem or exc.context}"
        raise ConfigError(message, hint="check the indentation and quoting there") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    except RecursionError:
        message = f"{path}: invalid YAML: nested too deeply to be a configuration"
        raise ConfigError(message, hint=SEE_EXAMPLE) from None
    if raw is None:
        raise ConfigError(f"{path}: the configuration file is empty", hint=SEE_EXAMPLE)
    return raw


def _cinder_string(file: Path, where: str, line: int, text: str) -> _LineDict:
    """Cinder's form of a device: `backend_id:secondary, conf:/etc/ceph/secondary.conf, ...`."""
    pairs: dict[str, str] = {}
    for pair in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = (part.strip() for part in pair.partition(":"))
        if not sep or not key or key in pairs:
            problem = f"{key!r} is given twice" if key in pairs else f"{pair!r} is not key:value"
            hint = "write it as 'backend_id:secondary, conf:/etc/ceph/secondary.conf, user:cinder'"
            raise _error(file, where, line, problem, hint)
        pairs[key] = value
    return _LineDict(pairs.items(), dict.fromkeys(pairs, line))


def _site(section: _Section, backend_id: str, backend: SiteConfig | None) -> SiteConfig:
    """The backend (backend is None) or a replication device, with Cinder's defaults."""
    keyring = section.path("keyring", "") if section.has("keyring") else None
    if keyring is not None and not keyring.is_file():
        hint = "fix the path, or leave keyring out to use the one the site's ceph.conf names"
        raise section.error("keyring", f"keyring file {keyring} not found", hint)
    pool = section.text("pool", backend.pool if backend else "")
    if backend is not None and pool != backend.pool:
        # rbd-mirror replays a pool into the pool of the same name on the peer: there is no
        # remapping (Cinder: the pool must be the same in all clusters).
        raise section.error(
            "pool",
            f"{pool!r} differs from backend.pool {backend.pool!r}: rbd-mirror pairs pools by "
            "name, so the copies are in a pool of the same name on every site",
            f"remove it (it defaults to backend.pool), or set it to {backend.pool!r}",
        )
    namespace = (
        section.text("namespace", "")
        if section.has("namespace")
        else backend.namespace
        if backend
        else ""
    )
    if namespace and not _NAMESPACE.match(namespace):
        raise section.error(
            "namespace",
            f"{namespace!r} is not an RBD namespace name",
            "letters, digits, '_', '.' and '-', at most 64",
        )
    if backend is not None and namespace != backend.namespace:
        # Measured on Ceph 16.2: a namespace is mirrored into the namespace of the same name on
        # the peer (mapping to another name came with a later release).
        raise section.error(
            "namespace",
            f"{namespace!r} differs from backend.namespace {backend.namespace!r}: rbd-mirror "
            "replays a namespace into the namespace of the same name on the peer",
            "remove it (it defaults to backend.namespace)",
        )
    return SiteConfig(
        backend_id=backend_id,
        conf=section.path("conf", f"/etc/ceph/{backend_id if backend else 'ceph'}.conf"),
        user=section.text("user", backend.user if backend else "cinder"),
        pool=pool,
        cluster_name=section.text("cluster_name", "ceph"),
        keyring=keyring,
        namespace=namespace,
    )


def _volume_type(name: str, section: _Section) -> VolumeType:
    """Cinder's extra specs: `replication_enabled` says whether, `mirror_mode` how."""
    enabled = section.data.get("replication_enabled")
    word = _CINDER_BOOL.match(enabled.strip()) if isinstance(enabled, str) else None
    if not (enabled is None or isinstance(enabled, bool) or word):
        problem = f"cannot read {enabled!r} as true or false"
        hint = 'write "<is> True" or "<is> False" as Cinder does, or true / false'
        raise section.error("replication_enabled", problem, hint)
    modes = [mode.value for mode in MirrorMode if mode != MirrorMode.UNKNOWN]
    if (mode := section.text("mirror_mode", MirrorMode.JOURNAL)) not in modes:
        raise section.error(
            "mirror_mode", f"unknown mode {mode!r}", _suggest(mode, modes, "use one of")
        )
    interval = section.text("snapshot_interval", "") if section.has("snapshot_interval") else None
    if interval is not None and not _INTERVAL.match(interval):
        hint = "write a whole number of minutes, hours or days: 30m, 1h, 1d"
        raise section.error("snapshot_interval", f"cannot read {interval!r} as an interval", hint)
    if interval is not None and mode != MirrorMode.SNAPSHOT:
        problem = f"only for mirror_mode snapshot, not {mode}"
        raise section.error("snapshot_interval", problem, "set mirror_mode: snapshot, or remove it")
    replicated = word[1].lower() == "true" if word else bool(enabled)
    return VolumeType(name, replicated, MirrorMode(mode), interval)


def _rule(section: _Section, volume_types: tuple[VolumeType, ...]) -> VolumeRule:
    known = [volume_type.name for volume_type in volume_types]
    if (type_name := section.text("type", "")) not in known:
        problem = (
            f"no volume type {type_name!r} in volume_types (known: {', '.join(known) or 'none'})"
        )
        hint = _suggest(type_name, known) or "define it under volume_types, or fix the rule"
        raise section.error("type", problem, hint)
    return VolumeRule(section.text("match", ""), type_name)
