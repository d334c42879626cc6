"""Small test helpers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from tenacity import (
    RetryError,
    Retrying,
    retry_base,
    retry_if_exception_type,
    retry_if_result,
    stop_after_delay,
    wait_fixed,
)

T = TypeVar("T")


def eventually(
    check: Callable[[], T],
    timeout: float,
    retry_on: tuple[type[BaseException], ...] = (),
    interval: float = 0.1,
) -> T:
    """Call check until it returns something truthy (or stops raising retry_on) within timeout."""
    retry: retry_base = retry_if_result(lambda result: not result)
    if retry_on:
        retry = retry | retry_if_exception_type(retry_on)
    try:
        return Retrying(
            stop=stop_after_delay(timeout), wait=wait_fixed(interval), retry=retry, reraise=True
        )(check)
    except RetryError as exc:
        last = exc.last_attempt.result()
        raise AssertionError(f"not true within {timeout}s (last answer: {last!r})") from None


def lab_config(
    lab_file: Path,
    tmp_path: Path,
    volumes: list[dict[str, str]],
    types: dict[str, dict[str, Any]] | None = None,
    backend: dict[str, Any] | None = None,
) -> Path:
    """The lab's rbdfail.yaml for one test: its volume rules first (every other image is
    `standard`: other tests' images are never touched), extra volume types and backend keys,
    and a state dir of its own in tmp_path."""
    config = yaml.safe_load(lab_file.read_text())
    config["volume_types"].update(types or {})
    config["backend"].update(backend or {})
    config["volumes"] = [*volumes, {"match": "*", "type": "standard"}]
    config["state_dir"] = str(tmp_path / "state")
    path = tmp_path / "rbdfail.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def lab_config_two_pools(
    lab_file: Path,
    tmp_path: Path,
    volumes: list[dict[str, str]],
    types: dict[str, dict[str, Any]] | None = None,
    backends: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """The lab's rbdfail-two-pools.yaml (backends `ceph` on pool `volumes`, `fast` on pool
    `fast`) for one test, as `lab_config` does the one-backend file: its volume rules first
    (every other image is `standard`), extra volume types, extra keys per backend name, and a
    state dir of its own in tmp_path.

    The rules are the file's, shared by both backends (as every top-level setting is): a rule
    types the images of its name in either pool, so a test names its images for their pool
    (`{image_name}-v*` in volumes, `{image_name}-f*` in fast, say) where that matters."""
    config = yaml.safe_load(lab_file.read_text())
    config["volume_types"].update(types or {})
    for name, keys in (backends or {}).items():
        config["backends"][name].update(keys)
    config["volumes"] = [*volumes, {"match": "*", "type": "standard"}]
    config["state_dir"] = str(tmp_path / "state")
    path = tmp_path / "rbdfail-two-pools.yaml"
    path.write_text(yaml.safe_dump(config))
    return path
