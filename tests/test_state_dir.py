"""The state dir under hostile conditions: it fails mid-run (disk full, read-only, removed), its
files hold what rbdfail did not write, two writers race. No volume may end primary nowhere, and
every problem is named with its file and what to do, never a traceback."""

from __future__ import annotations

import errno
import json
import shutil
import stat
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from rbdfail import state as state_module
from rbdfail.cli import main
from rbdfail.config import Config
from rbdfail.errors import RbdfailError, StateCorrupt
from rbdfail.state import (
    INVENTORY_FILE,
    JOURNAL_FILE,
    STATE_FILE,
    Journal,
    State,
    journal_damage,
    journal_lines,
    read_inventory,
    read_state,
    remember_volumes,
    write_state,
)
from rbdfail.switch import usecase
from rbdfail.switch.model import Action
from tests.fakeceph import FakeCeph, FakeCluster
from tests.helpers import Recorder, replicated, run, volumes


def rbdfail(world: FakeCeph, config: Config, *args: str) -> Result:
    return CliRunner().invoke(main, ["-c", str(config.path), *args], obj=world.connect)


def primary_sites(world: FakeCeph, name: str) -> list[str]:
    return [site for site, fake in world.sites.items() if fake.images[name].primary]


class FailingJournal(Journal):
    """The disk fills up after `good` lines: every write after raises ENOSPC, as os.write does."""

    good = 5

    def __init__(self, state_dir: Path, run_id: str, backend: str | None = None) -> None:
        super().__init__(state_dir, run_id, backend)
        self.written = 0

    def _append(self, data: bytes) -> None:
        if self.written >= self.good:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.written += 1
        super()._append(data)


# ---- the journal ------------------------------------------------------------------------------
def test_journal__is_created_0600_and_an_older_0644_one_is_narrowed(tmp_path: Path) -> None:
    Journal(tmp_path / "a", "run-1").write("start")
    assert stat.S_IMODE((tmp_path / "a" / JOURNAL_FILE).stat().st_mode) == 0o600
    older = tmp_path / "b" / JOURNAL_FILE
    older.parent.mkdir()
    older.write_text("")
    older.chmod(0o644)
    Journal(older.parent, "run-2")
    assert stat.S_IMODE(older.stat().st_mode) == 0o600


def test_journal__a_torn_last_line_is_ended_skipped_and_named(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "run-1")
    journal.write("start", target="secondary")
    with open(tmp_path / JOURNAL_FILE, "a") as out:
        out.write('{"time": "2024-01-01T00:00:00Z", "run": "run-1", "event": "st')  # power cut
    Journal(tmp_path, "run-2").write("start", target="secondary")

    assert [line["run"] for line in journal_lines(tmp_path)] == ["run-1", "run-2"]
    damage = journal_damage(tmp_path)
    assert damage is not None and f"{tmp_path / JOURNAL_FILE}: 1 line(s)" in damage
    assert "line 2;" in damage


def test_journal__a_write_that_fails_is_remembered_and_later_ones_are_counted(
    tmp_path: Path,
) -> None:
    journal = FailingJournal(tmp_path, "run-1")
    for _ in range(8):
        journal.write("note")  # never raises
    assert journal.error is not None and "No space left on device" in journal.error
    assert journal.unrecorded == 3
    problem = journal.problem()
    assert problem is not None and "3 line(s) of this run are not in it" in problem
    assert len(list(journal_lines(tmp_path))) == 5


def test_journal__a_state_dir_that_cannot_be_written_is_refused_before_the_run(
    tmp_path: Path,
) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(RbdfailError, match="cannot create the state dir"):
        Journal(tmp_path / "file" / "state", "run-1")


@pytest.mark.parametrize("good", [0, 1, 3, 6, 10, 20])
def test_failover__journal_failing_mid_run__every_volume_finished_and_the_report_says_so(
    config: Config,
    fake_ceph: FakeCeph,
    primary: FakeCluster,
    secondary: FakeCluster,
    monkeypatch: pytest.MonkeyPatch,
    good: int,
) -> None:
    names = volumes("s", 6)
    replicated(primary, secondary, names)
    monkeypatch.setattr(FailingJournal, "good", good)
    monkeypatch.setattr(usecase, "Journal", FailingJournal)

    report = run(config, fake_ceph)

    for name in names:
        assert primary_sites(fake_ceph, name) == ["secondary"], name
    assert report.result == "complete"
    assert report.journal_error is not None and "No space left" in report.journal_error
    assert report.to_json()["journal_error"] == report.journal_error
    assert read_state(config.state_dir).active_backend == "secondary"


def test_failover__state_dir_removed_mid_run__volumes_finished_state_json_written_anew(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    names = volumes("s", 4)
    replicated(primary, secondary, names)
    recorder = Recorder()
    recorder.on_step = lambda name, step: (
        shutil.rmtree(config.state_dir, ignore_errors=True) if step == "demoted" else None
    )

    report = run(config, fake_ceph, recorder)

    for name in names:
        assert primary_sites(fake_ceph, name) == ["secondary"], name
    assert report.journal_error is not None and "No such file or directory" in report.journal_error
    assert report.state_error is None  # the dir is made again for state.json
    assert read_state(config.state_dir).active_backend == "secondary"


def test_cli__journal_failing_mid_run__exit_3_json_names_it_and_stderr_too(
    config: Config,
    fake_ceph: FakeCeph,
    primary: FakeCluster,
    secondary: FakeCluster,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    replicated(primary, secondary, ["s-1", "s-2"])
    monkeypatch.setattr(usecase, "Journal", FailingJournal)

    result = rbdfail(fake_ceph, config, "failover", "--to", "secondary", "--yes", "--json")

    assert result.exit_code == 3, result.stderr
    document = json.loads(result.stdout)
    assert document["result"] == "complete" and "No space left" in document["journal_error"]
    assert "rbdfail: not recorded: cannot write the journal" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli__state_json_not_writable_at_the_end__exit_3_and_the_hint_names_the_active_site(
    config: Config,
    fake_ceph: FakeCeph,
    primary: FakeCluster,
    secondary: FakeCluster,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    replicated(primary, secondary, ["s-1"])
    real = state_module._write_atomically

    def full_for_state(state_dir: Path, name: str, document: object) -> None:
        if name == STATE_FILE:
            raise OSError(errno.EROFS, "Read-only file system")
        real(state_dir, name, document)

    monkeypatch.setattr(state_module, "_write_atomically", full_for_state)

    result = rbdfail(fake_ceph, config, "failover", "--to", "secondary", "--yes", "--json")

    assert result.exit_code == 3
    document = json.loads(result.stdout)
    assert document["state_error"] == f"cannot write {config.state_dir / STATE_FILE}: " + (
        "Read-only file system"
    )
    assert document["active_backend"] == "secondary"
    assert "does not say that secondary is the active backend now" in result.stderr
    assert "rbdfail failover --to secondary --yes` again" in result.stderr
    assert primary_sites(fake_ceph, "s-1") == ["secondary"]


# ---- state.json and inventory.json holding what rbdfail did not write -------------------------
@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("[1, 2]", "expected a JSON object, got list"),
        ('"default"', "expected a JSON object, got str"),
        ("{", "not JSON"),
        ('{"active_backend": "default", "extra": 1}', "unknown key 'extra'"),
        ('{"active_backend": 5}', "active_backend: expected a backend id, got 5"),
        ('{"volumes": []}', "volumes: expected an object, got list"),
        ('{"volumes": {"vm-1": {"status": "x", "colour": "red"}}}', "volumes.vm-1: expected"),
        ('{"volumes": {"vm-1": "error"}}', "volumes.vm-1: expected"),
        ('{"volumes": {"vm-1": {"status": 3}}}', "volumes.vm-1: status and previous_status"),
    ],
)
def test_read_state__not_what_rbdfail_writes__names_the_file_and_what_to_do(
    tmp_path: Path, content: str, reason: str
) -> None:
    (tmp_path / STATE_FILE).write_text(content)
    with pytest.raises(StateCorrupt) as caught:
        read_state(tmp_path)
    assert caught.value.exit_code == 2
    assert str(caught.value).startswith(f"rbdfail's state {tmp_path / STATE_FILE} cannot be used")
    assert reason in str(caught.value)
    assert caught.value.hint is not None and "a failover still runs" in caught.value.hint


@pytest.mark.parametrize("command", [("status",), ("volumes",), ("check",)])
def test_cli__corrupt_state_json__exit_2_naming_the_file_no_traceback(
    config: Config, fake_ceph: FakeCeph, command: tuple[str, ...]
) -> None:
    config.state_dir.mkdir()
    (config.state_dir / STATE_FILE).write_text("[]")
    result = rbdfail(fake_ceph, config, *command)
    assert result.exit_code == 2
    assert f"{config.state_dir / STATE_FILE} cannot be used" in result.stderr
    assert "hint:" in result.stderr and "Traceback" not in result.stderr


def test_cli__failover_with_corrupt_state_json__runs_sets_it_aside_and_says_so(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    replicated(primary, secondary, ["s-1"])
    primary.create_image("vm-1", 1 << 20)
    config.state_dir.mkdir()
    (config.state_dir / STATE_FILE).write_text('{"active_backend": "default", "volumes": 7}')

    dry = rbdfail(fake_ceph, config, "failover", "--to", "secondary", "--dry-run", "--json")
    assert dry.exit_code == 0
    assert "planned from the sites alone" in json.loads(dry.stdout)["warnings"][0]
    result = rbdfail(fake_ceph, config, "failover", "--to", "secondary", "--yes", "--json")

    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert "cannot be used" in document["warnings"][0]
    assert {v["name"]: v["action"] for v in document["volumes"]} == {
        "s-1": Action.DEMOTED_PROMOTED,
        "vm-1": Action.NOT_REPLICATED,
    }
    state = read_state(config.state_dir)  # rewritten, usable again
    assert state.active_backend == "secondary"
    assert state.volume("vm-1").previous_status == "available"
    kept = list(config.state_dir.glob(f"{STATE_FILE}.corrupt-*"))
    assert len(kept) == 1 and kept[0].read_text().endswith('"volumes": 7}')


@pytest.mark.parametrize(
    "content",
    [
        "[]",
        "{",
        '{"site": "default", "taken_at": "x", "volume_types": ["a"]}',
        '{"site": "default", "taken_at": "x", "volume_types": {"a": 1}}',
        '{"site": 1, "taken_at": "x", "volume_types": {}}',
        '{"site": "default", "volume_types": {}}',
    ],
)
def test_read_inventory__not_what_rbdfail_writes__names_the_file(
    tmp_path: Path, content: str
) -> None:
    (tmp_path / INVENTORY_FILE).write_text(content)
    with pytest.raises(StateCorrupt, match=f"the last listing {tmp_path / INVENTORY_FILE}"):
        read_inventory(tmp_path)


def test_failover__source_lost_with_corrupt_inventory__forced_anyway_and_the_plan_says_so(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    replicated(primary, secondary, ["s-1"])
    config.state_dir.mkdir()
    (config.state_dir / INVENTORY_FILE).write_text("[]")
    fake_ceph.freeze("default")

    report = run(config, fake_ceph)

    assert report.result == "complete" and report.forced
    assert any("volumes only on default cannot be marked" in w for w in report.plan.warnings)


# ---- two writers ------------------------------------------------------------------------------
def test_write__two_writers_at_once_never_leave_a_half_file_or_a_temporary_one(
    tmp_path: Path,
) -> None:
    """`status --watch` and a failover both write inventory.json (and state.json)."""
    errors: list[BaseException] = []

    def writer(site: str) -> None:
        try:
            for i in range(100):
                assert remember_volumes(tmp_path, site, {f"v-{i}-{n}": "t" for n in range(50)})
                write_state(tmp_path, State(site))
                read_inventory(tmp_path)
                read_state(tmp_path)
        except BaseException as exc:  # the assertion is made below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(site,)) for site in ("default", "other")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [INVENTORY_FILE, STATE_FILE]
    assert stat.S_IMODE((tmp_path / STATE_FILE).stat().st_mode) == 0o644
