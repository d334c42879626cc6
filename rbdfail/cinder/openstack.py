"""What the openstack client says of a Cinder deployment that cinder.conf cannot: the volume
types (`openstack volume type list --long -f json`) and which volume has which type
(`openstack volume list --all-projects --long -f json`), read from their JSON output."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from rbdfail.cinder.conf import MAX_INPUT_BYTES, read_input
from rbdfail.errors import ConfigError

TYPES_COMMAND = "openstack volume type list --long -f json"
VOLUMES_COMMAND = "openstack volume list --all-projects --long -f json"
MAX_VOLUME_LIST_BYTES = 256 << 20  # ~1 KiB a volume in `openstack volume list --long -f json`
# Cinder's RBD driver mirrors a volume only when its type says exactly this (_is_replicated_type).
REPLICATED_SPEC = "<is> True"
DEFAULT_TYPE = "__DEFAULT__"  # the type Cinder gives a volume created without one, since Train


@dataclass(frozen=True)
class CinderType:
    name: str
    properties: dict[str, str]  # its extra specs

    @property
    def replicated(self) -> bool:
        return self.properties.get("replication_enabled") == REPLICATED_SPEC


_PROPERTY = re.compile(r"([^=',][^=']*)='(.*?)'(?=, [^=',][^=']*='|\Z)", re.DOTALL)


def read_volume_types(path: Path) -> list[CinderType]:
    """The JSON `openstack volume type list --long -f json` prints: a list of objects with
    "Name" and "Properties", a mapping (osc-lib's DictColumn) or, from clients before 2017,
    the string `key='value', key='value'`."""
    hint = f"give the output of `{TYPES_COMMAND}`"
    document = _json_list(path, "volume types file", MAX_INPUT_BYTES, "volume types", hint)
    types: list[CinderType] = []
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
        types.append(CinderType(name, _properties(entry["Properties"], f"{where} ({name!r})")))
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


_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,252}")
_OLD_ATTACHED = re.compile(r"Attached to (\S+) on \S+ ?")


@dataclass(frozen=True)
class CinderVolume:
    id: str
    status: str
    type: str | None
    servers: tuple[str, ...]
    hosts: tuple[str | None, ...]


def read_volume_list(path: Path) -> list[CinderVolume]:
    """The JSON `openstack volume list --all-projects --long -f json` prints: objects with
    "ID", "Status", "Type" and "Attached to", the last a list of Cinder's attachment objects
    (osc's AttachmentsColumn, machine-readable) or, from older clients, the text
    `Attached to SERVER on DEVICE ` once per attachment. Other columns are not read."""
    hint = f"give the output of `{VOLUMES_COMMAND}`"
    document = _json_list(path, "volume list", MAX_VOLUME_LIST_BYTES, "volumes", hint)
    volumes: list[CinderVolume] = []
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
        volumes.append(CinderVolume(volume_id, status, type_name, servers, hosts))
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


def _json_list(path: Path, what: str, most: int, items: str, hint: str) -> list[object]:
    """The JSON list of `items` an openstack command printed into the file at `path`."""
    try:
        document = json.loads(read_input(path, what, most))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: not JSON: {exc.msg}", hint=hint) from None
    except RecursionError:
        raise ConfigError(f"{path}: not JSON: nested too deeply", hint=hint) from None
    if not isinstance(document, list):
        raise ConfigError(
            f"{path}: expected a list of {items}, got JSON {_kind(document)}", hint=hint
        )
    return document


def _kind(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    return "null" if value is None else names.get(type(value), "a number")
