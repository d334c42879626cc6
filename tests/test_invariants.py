"""The invariants helper (tests/invariants.py) on the fake: it finds each kind of violation,
names volume and site, reports them all rather than the first, and passes a correct run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rbdfail.config import Config
from rbdfail.state import Journal
from tests.fakeceph import FakeCeph, FakeCluster
from tests.helpers import replicated, run
from tests.invariants import Written, check_invariants, sha256

LENGTH = 64


def written(cluster: FakeCluster, names: list[str]) -> dict[str, Written]:
    """Each volume's data as it is now, on a copy the fake has mirrored it to."""
    wrote = {}
    for name in names:
        digest = sha256(cluster.read(name, 0, LENGTH))
        wrote[name] = Written(digest, digest, LENGTH)
    return wrote


def failover(config: Config, fake_ceph: FakeCeph) -> tuple[dict[str, Any], int]:
    report = run(config, fake_ceph)
    code = {"complete": 0, "partial": 3, "failed": 1}[report.result]
    return json.loads(json.dumps(report.to_json(), default=str)), code


def failed_over(
    config: Config,
    fake_ceph: FakeCeph,
    primary: FakeCluster,
    secondary: FakeCluster,
    names: list[str],
) -> tuple[dict[str, Written], dict[str, Any], int]:
    """The volumes mirrored with data, then a failover: what was written, its report and code."""
    replicated(primary, secondary, names, data=True)
    wrote = written(primary, names)
    return (wrote, *failover(config, fake_ceph))


def sites(primary: FakeCluster, secondary: FakeCluster) -> dict[str, FakeCluster | None]:
    return {"default": primary, "secondary": secondary}


def test_a_clean_failover_holds_every_invariant(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    wrote, report, code = failed_over(config, fake_ceph, primary, secondary, ["s-1", "j-1"])

    assert check_invariants(sites(primary, secondary), wrote, report, code, config.state_dir) == []


def test_every_violation_is_found_and_named__not_only_the_first(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    wrote, report, code = failed_over(config, fake_ceph, primary, secondary, ["s-1", "s-2", "s-3"])
    secondary.demote("s-1")  # primary nowhere, and the report says promoted
    secondary.write("s-2", 0, b"not what the newest writer wrote")
    state = config.state_dir / "state.json"
    state.write_text(json.dumps({"active_backend": "default", "volumes": {}}))

    found = check_invariants(sites(primary, secondary), wrote, report, code + 3, config.state_dir)

    assert any(v.startswith("s-1: primary on no site") for v in found), found
    assert any(v.startswith("s-1 on secondary: the report says demoted+promoted") for v in found)
    assert any(v.startswith("s-2 on secondary: data") for v in found), found
    assert any(v.startswith("exit code 3 for result 'complete'") for v in found), found
    assert any("state.json: active backend 'default'" in v for v in found), found
    assert not [v for v in found if v.startswith("s-3")], found


def test_split_brain_is_a_violation_unless_the_report_names_it(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    wrote, report, code = failed_over(config, fake_ceph, primary, secondary, ["s-1"])
    primary.promote("s-1", force=True)  # someone forced it back by hand

    found = check_invariants(sites(primary, secondary), wrote, report, code, config.state_dir)
    assert any(v.startswith("s-1: primary on default, secondary (2 sites") for v in found), found

    report["volumes"][0] |= {"action": "failed", "error": "split brain: ..."}
    report["result"] = "failed"
    found = check_invariants(sites(primary, secondary), wrote, report, 1, config.state_dir)
    assert not [v for v in found if "primary on" in v], found


def test_the_kept_data_is_accepted_only_after_a_journaled_forced_promote(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    """docs/guide/failover.md: a forced promote keeps what the copy held whole; a write after that
    on the lost source is lost. Without a forced promote, it is a lost write."""
    replicated(primary, secondary, ["s-1"], data=True)
    kept = sha256(primary.read("s-1", 0, LENGTH))
    fake_ceph.replication_delay = 3600  # the tail write never reaches the copy
    primary.write("s-1", 0, b"the tail")
    wrote = {"s-1": Written(sha256(primary.read("s-1", 0, LENGTH)), kept, LENGTH)}
    secondary.promote("s-1", force=True)  # the source lost: primary on both, named below
    report: dict[str, Any] = {"target": "secondary", "result": "complete"}
    report["volumes"] = [{"name": "s-1", "action": "force-promoted", "status": "available"}]

    def violations() -> list[str]:
        return check_invariants(sites(primary, secondary), wrote, report, 0, config.state_dir)

    assert any(v.startswith("s-1 on secondary: data") for v in violations())
    Journal(config.state_dir, "r-1").write(
        "step", volume="s-1", step="force-promoted", site="secondary"
    )
    found = violations()
    assert not [v for v in found if "data" in v], found


def test_a_site_that_cannot_be_read_is_said_not_counted(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    wrote, report, code = failed_over(config, fake_ceph, primary, secondary, ["s-1"])

    found = check_invariants(
        {"default": None, "secondary": secondary}, wrote, report, code, config.state_dir
    )

    assert found == []


def test_no_report_and_exit_0_is_a_violation(config: Config, tmp_path: Path) -> None:
    assert check_invariants({}, {}, None, 0, tmp_path) == ["exit code 0 without a JSON report"]


def test_primary_nowhere__named__still_the_newest_data_must_be_somewhere(
    config: Config, fake_ceph: FakeCeph, primary: FakeCluster, secondary: FakeCluster
) -> None:
    wrote, report, _ = failed_over(config, fake_ceph, primary, secondary, ["s-1"])
    secondary.demote("s-1")
    report["volumes"][0] |= {"action": "failed", "error": "primary nowhere: ..."}
    report["result"] = "failed"

    def violations() -> list[str]:
        return check_invariants(sites(primary, secondary), wrote, report, 1, config.state_dir)

    assert not [v for v in violations() if v.startswith("s-1:")]  # named, the data is there
    for site in ("default", "secondary"):
        fake_ceph.sites[site].images["s-1"].data[:8] = bytearray(b"garbage!")
    assert any(v.startswith("s-1: primary nowhere, and no site holds") for v in violations())
