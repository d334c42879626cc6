"""Property-based sweeps over what an operator's machine may hold: rbdfail.yaml, state.json,
inventory.json and journal.jsonl built from their schemas, then broken (wrong types, huge and
negative numbers, nan, anchors and billion laughs, duplicate and unknown keys, odd strings,
torn text). Each document is loaded or refused with exit 2 and its file named; never a
traceback, never more than a bounded time and memory.

`make test` tries RBDFAIL_FUZZ_EXAMPLES (default 150) documents per sweep; `make fuzz` many more.
Each sweep prints how many documents it tried (run pytest with -s to see the figures).
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rbdfail.cli import main
from rbdfail.config import SiteConfig, load_config
from rbdfail.errors import ConfigError, SiteUnreachable, StateCorrupt
from rbdfail.state import (
    INVENTORY_FILE,
    JOURNAL_FILE,
    STATE_FILE,
    Inventory,
    State,
    journal_damage,
    journal_lines,
    read_inventory,
    read_state,
)
from rbdfail.switch.history import forced_on, unfinished_run

EXAMPLES = int(os.environ.get("RBDFAIL_FUZZ_EXAMPLES", "150"))
SWEEP = settings(
    max_examples=EXAMPLES,
    deadline=2000,  # ms per document: a document that makes rbdfail work harder fails
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    # The same documents on every `make test`; `make fuzz` draws new ones each time.
    derandomize=not os.environ.get("RBDFAIL_FUZZ_RANDOM"),
)
PEAK_RSS_BOUND_MB = 1024  # the whole sweep, this test process included


def figures(sweep: str, tried: int, started: float) -> None:
    """One line a README can quote: documents tried, tracebacks (a sweep that got here had 0)."""
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(
        f"\nfuzz {sweep}: {tried} documents tried, 0 tracebacks, "
        f"{time.monotonic() - started:.1f}s, peak RSS {peak_mb} MB"
    )
    assert peak_mb < PEAK_RSS_BOUND_MB


@pytest.fixture
def workdir() -> Iterator[Path]:
    """One folder reused by every document of a sweep (hypothesis calls the property many
    times inside one test), emptied before each."""
    path = Path(tempfile.mkdtemp(prefix="rbdfail-fuzz-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def emptied(path: Path) -> Path:
    for child in path.iterdir():
        shutil.rmtree(child) if child.is_dir() else child.unlink()
    return path


# ---- values an operator (or a disk) could put anywhere ------------------------------------------
ODD_TEXT = st.sampled_from(
    [
        "",
        " ",
        "~",
        "null",
        "yes",
        "NaN",
        ".inf",
        "-.inf",
        "1e10",
        "0x1F",
        "0o17",
        "2001-12-14",
        "<is> True",
        "<is> False",
        "journal",
        "snapshot",
        "unknown",
        "1h",
        "0m",
        "99999999999999999999d",
        "[bold]x[/]",
        "a\x00b",
        "tab\there",
        "new\nline",
        "ünïcødé 卷",
        "\u202eevil",
        "../../etc/passwd",
        "x" * 5000,
    ]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([0, -1, 1, 1024, 1025, 86400, 86401, 2**63, 10**400, -(10**400)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(st.characters(exclude_categories=["Cs"]), max_size=30),
    ODD_TEXT,
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


# ---- rbdfail.yaml --------------------------------------------------------------------------------
def valid_config() -> dict[str, Any]:
    return {
        "backend": {
            "name": "ceph",
            "conf": "/etc/ceph/ceph.conf",
            "user": "cinder",
            "pool": "volumes",
        },
        "replication_device": [
            {"backend_id": "secondary", "conf": "/etc/ceph/secondary.conf", "user": "cinder"},
            "backend_id:tertiary, conf:/etc/ceph/tertiary.conf, user:cinder",
        ],
        "replication_connect_timeout": 5,
        "volume_timeout": 60,
        "concurrency": 32,
        "volume_types": {
            "replicated": {
                "replication_enabled": "<is> True",
                "mirror_mode": "snapshot",
                "snapshot_interval": "1h",
            },
            "standard": {},
        },
        "volumes": [{"match": "db-*", "type": "replicated"}, {"match": "*", "type": "standard"}],
        "state_dir": "/var/lib/rbdfail",
    }


def paths(document: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in the document a value sits, to put another there."""
    found = [prefix] if prefix else []
    if isinstance(document, dict):
        for key, value in document.items():
            found += paths(value, (*prefix, key))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            found += paths(value, (*prefix, index))
    return found


def put(document: Any, path: tuple[Any, ...], value: Any) -> None:
    for step in path[:-1]:
        document = document[step]
    document[path[-1]] = value


BILLION_LAUGHS = "\n".join(
    ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    + ["volumes: *a9"]
)
MERGE_BOMB = "\n".join(
    ["m0: &m0 {x: 1, y: 2}"]
    + [f"m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}], k{i}: {i}}}" for i in range(1, 40)]
    + ["volume_types: {t: *m39}"]
)
TEXT_EDITS = st.sampled_from(
    [
        "duplicate",
        "anchors",
        "billion laughs",
        "merge bomb",
        "deep nesting",
        "truncate",
        "tabs",
        "bom",
        "crlf",
        "nul",
        "python tag",
        "surrogate",
        "huge",
        "none",
    ]
)


def edit_text(text: str, edit: str, position: int) -> str:
    """A way the file's text itself may be wrong, beyond its values."""
    if edit == "duplicate":
        return text + "concurrency: 8\nconcurrency: 9\n"
    if edit == "anchors":
        return "x-site: &site {pool: volumes, user: u}\n" + text.replace(
            "backend:", "backend:\n  <<: *site\n  name: merged\nbackend_old:", 1
        )
    if edit == "billion laughs":
        return text + BILLION_LAUGHS + "\n"
    if edit == "merge bomb":
        return text + MERGE_BOMB + "\n"
    if edit == "deep nesting":
        return text + "volumes: " + "[" * 5000 + "]" * 5000 + "\n"
    if edit == "truncate":
        return text[: position % (len(text) + 1)]
    if edit == "tabs":
        return text.replace("  ", "\t", 1)
    if edit == "bom":
        return "\ufeff" + text
    if edit == "crlf":
        return text.replace("\n", "\r\n")
    if edit == "nul":
        return text.replace("volumes", "vol\x00umes", 1)
    if edit == "python tag":
        return text + "state_dir: !!python/object/apply:os.system ['true']\n"
    if edit == "surrogate":
        return text + 'state_dir: "\\ud800"\n'
    if edit == "huge":
        return text + "# " + "x" * (1 << 20) + "\n"
    return text


@st.composite
def config_documents(draw: st.DrawFn) -> str:
    document = valid_config()
    for _ in range(draw(st.integers(0, 4))):
        where = draw(st.sampled_from(paths(document)))
        action = draw(st.sampled_from(["replace", "unknown key", "delete"]))
        parent: Any = document
        for step in where[:-1]:
            parent = parent[step]
        if action == "replace":
            put(document, where, draw(VALUES))
        elif action == "unknown key" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=12))] = draw(VALUES)
        elif action == "delete" and isinstance(parent, dict):
            parent.pop(where[-1], None)
    text = yaml.safe_dump(document, allow_unicode=True, sort_keys=False, width=1000)
    return edit_text(text, draw(TEXT_EDITS), draw(st.integers(0, 10**6)))


REFUSAL = re.compile(r"^(?P<file>[^\n]+?)(:\d+(:\d+)?)?: \S")


def unreachable(site: SiteConfig, timeout: float) -> Any:
    """The sites of a fuzzed config are never reached: only the config's handling is tried."""
    raise SiteUnreachable("not reached in the fuzz", site=site.backend_id)


def test_fuzz_config__every_document_loads_or_is_refused_exit_2_naming_file_and_key(
    workdir: Path,
) -> None:
    tried = 0
    started = time.monotonic()

    @SWEEP
    @given(text=config_documents())
    def check(text: str) -> None:
        nonlocal tried
        tried += 1
        path = emptied(workdir) / "rbdfail.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            load_config(path)
        except ConfigError as exc:
            assert exc.exit_code == 2
            match = REFUSAL.match(str(exc))
            assert match and match["file"] == str(path), str(exc)
        result = CliRunner().invoke(main, ["-c", str(path), "volumes", "--json"], obj=unreachable)
        assert result.exit_code in (1, 2), (result.exit_code, result.output, result.exception)
        assert isinstance(result.exception, SystemExit), result.exception
        assert result.stdout == "" and "Traceback" not in result.output
        assert result.stderr.startswith("rbdfail: error: ")

    check()
    figures("rbdfail.yaml", tried, started)


@pytest.mark.parametrize("bomb", [BILLION_LAUGHS, MERGE_BOMB], ids=["billion laughs", "merges"])
def test_fuzz_config__alias_bombs_refused_fast_and_small(tmp_path: Path, bomb: str) -> None:
    path = tmp_path / "rbdfail.yaml"
    path.write_text("backend: {pool: v}\nreplication_device: [backend_id:b]\n" + bomb + "\n")
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"rbdfail\.yaml|aliases|keys"):
        load_config(path)
    assert time.monotonic() - started < 1.0


# ---- the state dir -------------------------------------------------------------------------------
def json_text(value: Any) -> str:
    return json.dumps(value, allow_nan=True, default=str)


@st.composite
def state_documents(draw: st.DrawFn) -> str:
    valid: dict[str, Any] = {
        "active_backend": "secondary",
        "volumes": {
            "vm-1": {"status": "error", "previous_status": "in-use"},
            "vm-2": {"status": "available", "previous_status": None},
        },
    }
    return draw(mutated_json(valid))


@st.composite
def inventory_documents(draw: st.DrawFn) -> str:
    valid = {
        "site": "default",
        "taken_at": "2024-01-01T00:00:00.000Z",
        "volume_types": {"vm-1": "standard", "db-1": "replicated"},
    }
    return draw(mutated_json(valid))


@st.composite
def mutated_json(draw: st.DrawFn, valid: dict[str, Any]) -> str:
    document: Any = json.loads(json.dumps(valid))
    kind = draw(st.sampled_from(["mutate", "any", "text", "deep", "valid"]))
    if kind == "any":
        return json_text(draw(VALUES))
    if kind == "text":
        return (
            draw(st.text(max_size=200))
            if draw(st.booleans())
            else json_text(valid)[: draw(st.integers(0, 150))]
        )
    if kind == "deep":
        return "[" * 100_000 + "]" * 100_000
    if kind == "mutate":
        for _ in range(draw(st.integers(1, 3))):
            where = draw(st.sampled_from(paths(document)))
            if draw(st.booleans()):
                put(document, where, draw(VALUES))
            else:
                parent = document
                for step in where[:-1]:
                    parent = parent[step]
                if isinstance(parent, dict):
                    parent[draw(st.text(max_size=10))] = draw(VALUES)
    return json_text(document)


JOURNAL_LINE = st.fixed_dictionaries(
    {"time": st.just("2024-01-01T00:00:00.000Z"), "run": st.sampled_from(["r1", "r2", "r3"])},
    optional={
        "event": st.sampled_from(["start", "step", "end", "given-up", "failed"]) | SCALARS,
        "target": st.sampled_from(["secondary", "default"]) | SCALARS,
        "resumes": st.sampled_from(["r1", "r2", None]) | VALUES,
        "step": st.sampled_from(["force-promoted", "promoted", "demote"]) | SCALARS,
        "site": st.sampled_from(["secondary", "default"]) | SCALARS,
        "volume": st.sampled_from(["s-1", "s-2"]) | VALUES,
    },
)


@st.composite
def journal_documents(draw: st.DrawFn) -> str:
    lines = []
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["line", "line", "line", "any", "garbage"]))
        if kind == "line":
            lines.append(json_text(draw(JOURNAL_LINE)))
        elif kind == "any":
            lines.append(json_text(draw(VALUES)))
        else:
            lines.append(draw(st.text(max_size=60)).replace("\n", " "))
    text = "\n".join(lines) + "\n"
    if draw(st.booleans()):  # a power cut in the middle of the last line
        text = text[: max(0, len(text) - draw(st.integers(1, 40)))]
    return text


STATE_DIRS = st.fixed_dictionaries(
    {
        STATE_FILE: state_documents(),
        INVENTORY_FILE: inventory_documents(),
        JOURNAL_FILE: journal_documents(),
    }
)


def filled(state_dir: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (state_dir / name).write_text(text, errors="surrogatepass")
    return state_dir


def test_fuzz_state_dir__every_file_is_read_or_named_as_unusable_never_a_traceback(
    workdir: Path,
) -> None:
    """Each document read directly, then by the commands themselves (sites not reached)."""
    tried = 0
    started = time.monotonic()

    @SWEEP
    @given(files=STATE_DIRS)
    def check(files: dict[str, str]) -> None:
        nonlocal tried
        tried += len(files)
        state_dir = workdir / "state"
        state_dir.mkdir(exist_ok=True)
        filled(emptied(state_dir), files)
        try:
            assert isinstance(read_state(state_dir), State)
        except StateCorrupt as exc:
            assert exc.exit_code == 2 and str(state_dir / STATE_FILE) in str(exc)
        try:
            assert isinstance(read_inventory(state_dir), Inventory)
        except StateCorrupt as exc:
            assert str(state_dir / INVENTORY_FILE) in str(exc)
        list(journal_lines(state_dir))
        damage = journal_damage(state_dir)
        assert damage is None or str(state_dir / JOURNAL_FILE) in damage
        unfinished_run(state_dir, "secondary")
        forced_on(state_dir, "secondary", "default")

        config = workdir / "rbdfail.yaml"
        config.write_text(
            f"backend: {{pool: volumes}}\nreplication_device: [backend_id:secondary]\n"
            f"state_dir: {state_dir}\n"
        )
        for args in (["status", "--json"], ["failover", "--to", "secondary", "--dry-run"]):
            result = CliRunner().invoke(main, ["-c", str(config), *args], obj=unreachable)
            assert isinstance(result.exception, SystemExit), result.exception
            assert result.exit_code in (1, 2, 3, 5), (result.exit_code, result.output)
            assert "Traceback" not in result.output

    check()
    figures("state dir", tried, started)
