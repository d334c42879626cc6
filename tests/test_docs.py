"""The documentation holds: links resolve, every command is documented, documented commands run.

No Ceph needed: the commands' `--help` runs through click's CliRunner.
"""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from rbdfail.cli import main
from rbdfail.config import load_config

ROOT = Path(__file__).resolve().parent.parent
DOCS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").rglob("*.md")),
    *sorted((ROOT / "examples").glob("*.md")),
]
COMMANDS_REFERENCE = ROOT / "docs" / "reference" / "commands.md"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
GLOBAL_OPTIONS_WITH_VALUE = {"-c", "--config", "--backend"}


def _relative_links(doc: Path) -> list[str]:
    links = [m.group(1) for m in LINK.finditer(doc.read_text())]
    return [
        link
        for link in links
        if not re.match(r"^[a-z]+:", link) and not link.startswith("#")  # http:, mailto:
    ]


def _command_lines(doc: Path) -> list[str]:
    """`rbdfail ...` lines of the ```console/```sh blocks and the indented code of a document."""
    text = doc.read_text()
    lines: list[str] = []
    for m in FENCE.finditer(text):
        if m.group(1) in ("console", "sh", "shell", "bash", ""):
            lines += m.group(2).splitlines()
    lines += [line for line in text.splitlines() if line.startswith("    ")]
    found = []
    for line in lines:
        line = line.strip().removeprefix("$ ")
        if line.startswith("rbdfail "):
            found.append(line.split("#", 1)[0].strip())
    return found


def _command_path(line: str) -> list[str]:
    """The command (and a group's subcommand) a documented line runs, options left out."""
    words = line.split()[1:]  # the command comes before any quoted argument
    path: list[str] = []
    group: click.Group = main
    skip = False
    for word in words:
        if skip:
            skip = False
            continue
        if word in GLOBAL_OPTIONS_WITH_VALUE and not path:
            skip = True
            continue
        if word.startswith("-"):
            continue
        command = group.commands.get(word.split("|")[0])  # `lab up|down`: the first
        if command is None:
            break
        path.append(word.split("|")[0])
        if not isinstance(command, click.Group):
            break
        group = command
    return path


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_docs__every_relative_link_resolves_to_a_file(doc: Path) -> None:
    broken = []
    for link in _relative_links(doc):
        target = (doc.parent / link.split("#", 1)[0]).resolve()
        if not target.exists():
            broken.append(link)
    assert broken == [], f"{doc.relative_to(ROOT)}: links to nothing: {broken}"


def test_docs__every_command_of_the_group_is_in_the_command_reference() -> None:
    reference = COMMANDS_REFERENCE.read_text()
    missing = [name for name in main.commands if f"rbdfail {name}" not in reference]
    assert missing == []


def test_docs__every_documented_command_line_names_a_command() -> None:
    unknown = [
        (str(doc.relative_to(ROOT)), line)
        for doc in DOCS
        for line in _command_lines(doc)
        if not _command_path(line)
    ]
    assert unknown == []


def _documented_commands() -> list[tuple[str, ...]]:
    paths = {tuple(_command_path(line)) for doc in DOCS for line in _command_lines(doc)}
    paths |= {(name,) for name in main.commands}
    return sorted(path for path in paths if path)


@pytest.mark.parametrize("path", _documented_commands(), ids=" ".join)
def test_docs__the_help_of_every_documented_command_runs(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(
        main, [*path, "--help"], prog_name="rbdfail", catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert f"Usage: rbdfail {' '.join(path)}" in result.output


def test_readme__is_under_300_lines() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) < 300


def test_readme__its_minimal_configuration_loads(tmp_path: Path) -> None:
    yaml = re.search(r"^```yaml\n(.*?)^```", (ROOT / "README.md").read_text(), re.M | re.S)
    assert yaml is not None
    path = tmp_path / "rbdfail.yaml"
    path.write_text(yaml.group(1))
    config = load_config(path)
    assert [device.backend_id for device in config.replication_devices] == ["secondary"]


def _options_of(path: list[str]) -> set[str]:
    command: click.Command = main
    names = {opt for param in main.params for opt in getattr(param, "opts", [])}
    for word in path:
        assert isinstance(command, click.Group)
        command = command.commands[word]
        for param in command.params:
            names |= set(getattr(param, "opts", [])) | set(getattr(param, "secondary_opts", []))
    return names | {"--help", "-h"}


def test_docs__every_option_of_a_documented_command_line_exists() -> None:
    unknown = []
    for doc in DOCS:
        for line in _command_lines(doc):
            path = _command_path(line)
            before_quotes = re.split(r"['\"]", line)[0]
            for word in re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", before_quotes):
                if word not in _options_of(path):
                    unknown.append((str(doc.relative_to(ROOT)), line, word))
    assert unknown == []
