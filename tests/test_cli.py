"""The command line as an operator and a runbook see it: help, errors, exit codes, JSON."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from rbdfail.cli import main


def rbdfail(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in group.commands.items():
        found.append((*prefix, name))
        if isinstance(command, click.Group):
            found += all_commands(command, (*prefix, name))
    return found


def test_help__lists_the_commands_and_the_exit_codes() -> None:
    code, out, _ = rbdfail("--help")
    assert code == 0
    assert "volumes" in out and "lab" in out
    assert "3 partial" in out


@pytest.mark.parametrize("command", all_commands(main), ids=" ".join)
def test_help__every_command_explains_itself(command: tuple[str, ...]) -> None:
    code, out, _ = rbdfail(*command, "--help")
    assert code == 0
    summary = out.split("Options:")[0]
    assert len(summary.split()) > 8, f"`rbdfail {' '.join(command)} --help` says too little"


def test_help__starts_without_rich_or_the_ceph_bindings() -> None:
    probe = (
        "import sys; from rbdfail.cli import main\n"
        "try: main(['--help'])\n"
        "except SystemExit: pass\n"
        "heavy = {'rich', 'rados', 'rbd', 'yaml', 'tenacity'} & set(sys.modules)\n"
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_module_entry_point__python_m_rbdfail_works() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "rbdfail", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0
    assert out.stdout.startswith("Usage: rbdfail")


VALID = "replication_device: ['backend_id:secondary']\nbackend:\n  pool: volumes\n"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (f"{VALID}  usr: cinder\n", ":4: backend.usr: unknown key\n  hint: did you mean 'user'?"),
        ("backend: [1, 2\n", "invalid YAML"),
        (f"{VALID}concurrency: many\n", ":4: concurrency: expected an integer, got the string"),
    ],
    ids=["misspelt key", "invalid yaml", "wrong type"],
)
def test_bad_config__one_clear_message_exit_2_no_traceback(
    tmp_path: Path, content: str, expected: str
) -> None:
    config = tmp_path / "rbdfail.yaml"
    config.write_text(content)
    code, out, err = rbdfail("-c", str(config), "volumes")
    assert code == 2
    assert out == ""
    assert err.startswith("rbdfail: error: ")
    assert str(config) in err and expected in err
    assert "Traceback" not in err


def test_missing_config__names_the_places_searched_exit_2(tmp_path: Path) -> None:
    code, _, err = rbdfail("-c", str(tmp_path / "absent.yaml"), "volumes")
    assert code == 2
    assert "absent.yaml" in err


def test_unknown_command__usage_error_exit_2() -> None:
    code, _, err = rbdfail("failovr")
    assert code == 2
    assert "No such command" in err


def test_missing_ceph_bindings__say_which_packages_to_install(tmp_path: Path) -> None:
    config = tmp_path / "rbdfail.yaml"
    config.write_text(VALID)
    probe = (
        "import sys\n"
        "sys.modules['rados'] = None  # as on a host without python3-rados\n"
        "from rbdfail.cli import main\n"
        f"main(['-c', {str(config)!r}, 'volumes'])\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert out.returncode == 1
    assert "the Ceph Python bindings (rados, rbd) cannot be imported" in out.stderr
    assert "apt-get install python3-rados python3-rbd" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e10", "86401", "0", "-1", "soon"])
@pytest.mark.parametrize(
    "option",
    [
        ("failover", "--to", "secondary", "--timeout"),
        ("failover", "--to", "secondary", "--connect-timeout"),
        ("failback", "--resync-timeout"),
        ("failback", "--timeout"),
        ("status", "--watch"),
    ],
    ids=lambda option: " ".join(option),
)
def test_options__seconds_out_of_bounds_are_refused_exit_2_naming_the_option(
    option: tuple[str, ...], value: str
) -> None:
    code, out, err = rbdfail(*option, value, "--dry-run" if "fail" in option[0] else "--json")
    assert code == 2, err
    assert f"Invalid value for '{option[-1]}'" in err and repr(value) in err
    assert out == "" and "Traceback" not in err


@pytest.mark.parametrize("value", ["0", "1025", "99999999999999999999999"])
def test_options__concurrency_out_of_bounds_is_refused_exit_2(value: str) -> None:
    code, _, err = rbdfail("enable-mirroring", "--concurrency", value, "--dry-run")
    assert code == 2
    assert "Invalid value for '--concurrency'" in err


def test_options__max_lag_may_be_0_but_not_nan() -> None:
    assert "--max-lag" in rbdfail("check", "--max-lag", "nan")[2]
    assert "--max-lag" not in rbdfail("check", "--max-lag", "0")[2]
