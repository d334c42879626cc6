"""The rbdfail.yaml text of an import, by lines with comments (each value's says where it came
from); checked by loading it as rbdfail will; written whole or not at all."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import yaml

from rbdfail.cinder.conf import RBD_DRIVER, CinderBackend, short_driver
from rbdfail.cinder.model import CatchAll, ImportPlan
from rbdfail.cinder.openstack import REPLICATED_SPEC, TYPES_COMMAND, CinderType
from rbdfail.config import load_deployment
from rbdfail.errors import ConfigError

FILL_IN = "FILL IN"


def yaml_text(plan: ImportPlan) -> str:
    """The file: what cinder.conf says, then the types and rules; what it cannot say is a
    `FILL IN` placeholder that the config loader refuses, quoting it."""
    lines = _header(plan)
    if plan.several:
        lines += _backends_lines(plan)
    else:
        lines += _backend_lines(plan.backends[0])
        lines += _device_lines(plan.backends[0])
    lines += [
        "",
        _line(f"replication_connect_timeout: {plan.timeout.value}", plan.timeout.origin),
        "# volume_timeout, concurrency and state_dir are rbdfail's own (defaults 60, 32,",
        "# /var/lib/rbdfail): see examples/rbdfail.yaml.",
    ]
    lines += _type_lines(plan)
    if plan.notes:
        lines += ["", "# Notes from the import:", *(f"# - {_shown(note)}" for note in plan.notes)]
    return "\n".join(lines) + "\n"


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


def _header(plan: ImportPlan) -> list[str]:
    sections = ", ".join(f"[{_shown(backend.section)}]" for backend in plan.backends)
    lines = [
        "# rbdfail configuration written by `rbdfail import-cinder`",
        f"#   from {_shown(str(plan.conf_path))}, backend section{'s' * plan.several} {sections}",
    ]
    if plan.volume_types is not None:
        lines.append(f"#   and the volume types in {_shown(str(plan.volume_types))}")
    if plan.volume_list is not None:
        lines.append(f"#   and the volumes' types in {_shown(str(plan.volume_list))}")
    return [
        *lines,
        "# Each value's comment says where it came from. Lines marked FILL IN must be completed:",
        "# until then rbdfail refuses this file and quotes the placeholder.",
        "# No key material is copied: rbd_secret_uuid and secret_uuid (libvirt secrets) are",
        "# ignored.",
        "",
    ]


def _backend_lines(backend: CinderBackend) -> list[str]:
    return [
        "backend:",
        _line(f"name: {_scalar(backend.name.value)}", backend.name.origin, 2),
        *_site_lines(backend, 2),
        *_host_lines(backend, 2),
    ]


def _host_lines(backend: CinderBackend, indent: int) -> list[str]:
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


def _site_lines(backend: CinderBackend, indent: int) -> list[str]:
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


def _backends_lines(plan: ImportPlan) -> list[str]:
    """Several replicated backends, each under its section's name, its devices with it."""
    lines = [
        "# One entry per replicated RBD backend, named by its cinder.conf section: the name",
        "# `rbdfail --backend NAME` takes. Each lists its own secondary sites.",
        "backends:",
    ]
    for backend in plan.backends:
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
            *_device_items(backend, 4),
        ]
    # Not silently: what enabled_backends holds that this file does not.
    for name, driver in plan.left_out:
        if driver == RBD_DRIVER:
            lines += [
                f"  # Left out: [{_shown(name)}], an RBD backend without replication_device "
                "(Cinder does not",
                "  #   replicate it). Add its secondary site in cinder.conf and import again, or",
                f"  #   import it alone: rbdfail import-cinder ... --backend {_shown(name)}",
            ]
        else:
            lines.append(
                f"  # Left out: [{_shown(name)}], not an RBD backend ({short_driver(driver)})"
            )
    return lines


def _device_lines(backend: CinderBackend) -> list[str]:
    if not backend.devices:
        return [
            "",
            f"# {FILL_IN}: [{_shown(backend.section)}] has no replication_device (Cinder does not "
            "replicate this backend).",
            "#   Add the secondary site, e.g.  - {backend_id: secondary, conf: "
            "/etc/ceph/secondary.conf, user: cinder}",
            "replication_device: []",
        ]
    return ["", "replication_device:", *_device_items(backend, 0)]


def _device_items(backend: CinderBackend, indent: int) -> list[str]:
    lines = []
    for device in backend.devices:
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


def _type_lines(plan: ImportPlan) -> list[str]:
    glob, glob_origin = plan.glob.value, plan.glob.origin
    lines = ["", "volume_types:"]
    for chosen in plan.types:
        lines += _one_type(chosen.type, chosen.on if plan.several else None, plan.volume_types)
    if plan.no_types is not None:
        whose = "these backends'" if plan.several else "this backend's"
        lines += [
            f"  # {FILL_IN}: {_shown(plan.no_types)}.",
            f"  #   Import again with --volume-types FILE, FILE from `{TYPES_COMMAND}`,",
            f"  #   or write {whose} types here, e.g.:",
            "  replicated:                           # a type Cinder mirrors",
            f'    replication_enabled: "{REPLICATED_SPEC}"',
            "    mirror_mode: journal                # Cinder's RBD driver mirrors in journal mode",
            "  not-replicated: {}",
        ]
    names = [chosen.type.name for chosen in plan.types] or ["replicated", "not-replicated"]
    lines += [
        "",
        "# Which type each volume has: the first rule whose glob matches its image wins.",
        *(["# The rules are for every backend's volumes."] if plan.several else []),
        "volumes:",
    ]
    if plan.volume_list is not None:
        return lines + _listed_lines(plan, Path(plan.volume_list), names)
    if plan.catch_all_type is not None:  # the only type, for every backend
        lines.append(_line(f"  - match: {_scalar(glob)}", f"every volume's image ({glob_origin})"))
        only = (
            "the only volume type, for every backend"
            if plan.several
            else "the backend's only volume type"
        )
        lines.append(_line(f"    type: {_scalar(plan.catch_all_type)}", only))
        return lines
    placeholder = (
        f"{FILL_IN}: the type of the volumes no rule above names (one of: {', '.join(names)})"
    )
    pools = list(dict.fromkeys(backend.pool.value for backend in plan.backends))
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


def _listed_lines(plan: ImportPlan, path: Path, names: list[str]) -> list[str]:
    """One exact rule per volume of the list at `path`, then the catch-all for the pool's other
    images."""
    glob, glob_origin = plan.glob.value, plan.glob.origin
    lines = [
        f"  # Each volume of {_shown(str(path))}, by its ID: its type as Cinder has it.",
        *(f"  - {{match: {_scalar(v.image)}, type: {_scalar(v.type)}}}" for v in plan.volumes),
    ]
    if plan.catch_all_type is not None:
        why = (
            "--unlisted: not in the volume list"
            if plan.catch_all is CatchAll.UNLISTED
            else "Cinder's type for a volume created without one"
        )
        return [
            *lines,
            _line(f"  - match: {_scalar(glob)}", f"the pool's other images ({glob_origin})"),
            _line(f"    type: {_scalar(plan.catch_all_type)}", why),
        ]
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


def _one_type(
    cinder_type: CinderType, on: tuple[CinderBackend, ...] | None, types_file: Path | None
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
    if cinder_type.replicated:
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


def must_load(text: str) -> None:
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
