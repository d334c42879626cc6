"""Exact rules are looked up by name, with "first matching rule wins" kept exactly."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from rbdfail.config import NOT_TYPED, Config, load_config

HEAD = (
    "backend: {name: ceph, pool: volumes}\n"
    "replication_device: [{backend_id: secondary}]\n"
    "volume_types:\n  gold: {replication_enabled: '<is> True'}\n  standard: {}\n  other: {}\n"
)


def config_with(tmp_path: Path, rules: str) -> Config:
    path = tmp_path / "rbdfail.yaml"
    path.write_text(HEAD + "volumes:\n" + rules)
    return load_config(path)


def test_exact_rule_after_a_matching_glob_loses_to_the_glob(tmp_path: Path) -> None:
    config = config_with(
        tmp_path,
        "  - {match: 'db-*', type: standard}\n"
        "  - {match: db-1, type: gold}\n"
        "  - {match: web-1, type: gold}\n"
        "  - {match: '*', type: other}\n",
    )
    assert config.volume_type_for("db-1").name == "standard"  # the glob came first
    assert config.volume_type_for("web-1").name == "gold"  # the exact rule came first
    assert config.volume_type_for("web-2").name == "other"


def test_first_of_two_exact_rules_for_one_name_wins(tmp_path: Path) -> None:
    config = config_with(
        tmp_path, "  - {match: db-1, type: gold}\n  - {match: db-1, type: standard}\n"
    )
    assert config.volume_type_for("db-1").name == "gold"
    assert config.volume_type_for("db-2") is NOT_TYPED


def test_glob_characters_make_a_glob_and_metadata_still_wins(tmp_path: Path) -> None:
    config = config_with(
        tmp_path,
        "  - {match: 'vol-?', type: gold}\n  - {match: 'vol-[ab]c', type: standard}\n",
    )
    assert config.volume_type_for("vol-1").name == "gold"
    assert config.volume_type_for("vol-ac").name == "standard"
    assert config.volume_type_for("vol-?").name == "gold"  # '?' matches itself too
    assert config.volume_type_for("vol-1", override="other").name == "other"


def test_ten_thousand_exact_rules_load_fast_and_type_each_image(tmp_path: Path) -> None:
    names = [f"volume-{uuid.UUID(int=i + 1)}" for i in range(10_000)]
    rules = "".join(
        f"  - {{match: {name}, type: {'gold' if i % 2 else 'standard'}}}\n"
        for i, name in enumerate(names)
    )
    started = time.perf_counter()
    config = config_with(tmp_path, rules + "  - {match: '*', type: other}\n")
    assert time.perf_counter() - started < 3  # ~0.4 s here; generous for a shared machine
    assert [config.volume_type_for(n).name for n in names[:4]] == [
        "standard",
        "gold",
        "standard",
        "gold",
    ]
    assert config.volume_type_for("volume-unknown").name == "other"
