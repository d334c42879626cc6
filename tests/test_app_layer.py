"""The application layer: the fan-out over backends, the command line kept thin, and the one
exit policy for Ceph calls left running."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

import rbdfail.cli
from rbdfail.cli import main
from rbdfail.config import Config
from rbdfail.errors import OperationTimedOut, RbdfailError
from rbdfail.fanout import over_backends
from tests.fakeceph import FakeCeph, FakeCluster
from tests.helpers import replicated


def backends(config: Config, *names: str) -> list[Config]:
    return [replace(config, backend_name=name) for name in names]


# ---- the fan-out --------------------------------------------------------------------------------
def test_fanout__at_once__every_backend_worked_then_the_first_error_raised_after_undo(
    config: Config,
) -> None:
    worked: list[str] = []
    undone: list[str] = []

    def work(backend: Config) -> str:
        worked.append(backend.backend_name)
        if backend.backend_name in ("b", "c"):
            raise RbdfailError(f"{backend.backend_name} failed")
        return backend.backend_name

    outcomes = over_backends(backends(config, "a", "b", "c", "d"), work, at_once=True)

    assert sorted(worked) == ["a", "b", "c", "d"]
    with pytest.raises(RbdfailError, match="b failed"):
        outcomes.results(undo=undone.append)
    assert sorted(undone) == ["a", "d"]


def test_fanout__one_after_the_other__stops_at_an_error_and_where_told(config: Config) -> None:
    worked: list[str] = []

    def work(backend: Config) -> str:
        worked.append(backend.backend_name)
        if backend.backend_name == "c":
            raise RbdfailError("c failed")
        return backend.backend_name

    stopped = over_backends(backends(config, "a", "b", "c"), work, stop_after=lambda r: r == "a")
    assert [name for _, name in stopped.results()] == ["a"]
    failed = over_backends(backends(config, "b", "c", "d"), work)
    assert worked == ["a", "b", "c"]
    assert [o.result for o in failed.outcomes] == ["b", None]
    with pytest.raises(RbdfailError, match="c failed"):
        failed.results()


# ---- the command line stays thin ----------------------------------------------------------------
def test_cli__no_module_connects_to_a_site_or_loops_over_backends() -> None:
    """The use cases under rbdfail/app/ do both; a command parses, calls one, renders, exits."""
    found = []
    for path in sorted(Path(rbdfail.cli.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                called = ast.unparse(node.func)
                if called.split(".")[-1] in ("connect", "connect_all", "connect_to_ceph"):
                    found.append(f"{path.name}:{node.lineno}: calls {called}")
            elif isinstance(node, ast.For | ast.comprehension):
                over = ast.unparse(node.iter)  # the deployment's backends, not cinder.conf's
                if re.fullmatch(r"backends|(app|deployment)\b.*\bbackends\b.*", over):
                    found.append(f"{path.name}: loops over {over}")
    assert found == []


# ---- calls left running ------------------------------------------------------------------------
def test_cli__a_demote_left_running__its_exit_code_reaches_the_caller_of_main(
    config_file: Path, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    """Only the program leaves through os._exit: a caller of `main` (CliRunner here) gets the
    exit code, and lives on."""
    replicated(primary, secondary, ["s-1", "s-2"])
    fake_ceph.hangs.add(("default", "demote", "s-1"))
    fake_ceph.latency["demote"] = 0.3  # s-1's demote is in flight when s-2's times out
    fake_ceph.faults[("default", "demote", "s-2")] = OperationTimedOut(
        "no answer within 0.3s", site="default", image="s-2"
    )

    result = CliRunner().invoke(
        main,
        ["-c", str(config_file), "failover", "--to", "secondary", "--yes", "--json"],
        obj=fake_ceph.connect,
    )

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["result"] == "complete"


def test_run__calls_left_running__the_program_ends_at_once_with_the_code() -> None:
    """A call given up on cannot be joined, nor its connection shut down under it: the program
    leaves without waiting for it, its report out and its exit code kept."""
    probe = textwrap.dedent(
        """
        import sys, threading, time
        from rbdfail.cli import main, run
        from rbdfail.cli.base import leave
        from rbdfail.errors import ExitCode

        @main.command("probe")
        def probe() -> None:
            threading.Thread(target=time.sleep, args=(3600,)).start()  # as a hung librbd call
            print("the report")
            leave(ExitCode.PARTIAL, calls_left_running=1)

        sys.argv = ["rbdfail", "probe"]
        run()
        """
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30)
    assert (out.returncode, out.stdout) == (3, "the report\n"), out.stderr
