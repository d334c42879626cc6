"""The contract: the fake two-site Ceph and the real adapter on the lab obey the same rules.

Every test here runs twice, once on tests/fakeceph.py and once on the real lab through
rbdfail.ceph. When Ceph and the fake disagree, the lab run fails, and the fake is what to fix.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from rbdfail.cluster import (
    Cluster,
    Feature,
    ImageStatus,
    MirrorInfo,
    MirrorMode,
    MirrorSnapshot,
    MirrorSnapshotState,
    MirrorState,
    PoolMirrorMode,
    ReplayState,
)
from rbdfail.config import Connect, SiteConfig
from rbdfail.errors import (
    ImageBusy,
    ImageExists,
    ImageNotFound,
    InvalidState,
    LockHeld,
    OperationTimedOut,
    SiteUnreachable,
)
from rbdfail.limits import OSD_OP_FLOOR_S
from rbdfail.rpo import whole_snapshot_time
from tests.conftest import fake_site
from tests.helpers import eventually

MiB = 1 << 20


@dataclass
class TwoSites:
    a: Cluster  # the backend ("default"), where images are created
    b: Cluster  # the replication device ("secondary")
    b_config: SiteConfig
    connect: Connect
    freeze: Callable[[str], None]
    thaw: Callable[[str], None]
    patience: float  # how long replication may take to show

    def copy_on_b(self, name: str) -> MirrorInfo:
        """Wait until the replication daemon has made the image's copy on b (it is CREATING
        on a real site for a moment first)."""

        def created() -> MirrorInfo | None:
            info = self.b.mirror_info(name)
            return info if info.state == MirrorState.ENABLED else None

        copy = eventually(created, self.patience, (ImageNotFound,))
        assert copy is not None
        return copy

    def replaying_on_b(self, name: str) -> None:
        """Wait until b's rbd-mirror reports the copy replaying: past its bootstrap. Once, in a
        full run, a copy force-promoted right after it appeared (a alive) refused the next
        write as read-only; probably its rbd-mirror finished the bootstrap over the promotion."""

        def replaying() -> bool:
            return self.b.mirror_status(name).state == ReplayState.REPLAYING

        eventually(replaying, self.patience, (ImageNotFound,), interval=1)


@pytest.fixture(params=["fake", pytest.param("lab", marks=pytest.mark.lab)])
def sites(request: pytest.FixtureRequest) -> Iterator[TwoSites]:
    if request.param == "fake":
        world = request.getfixturevalue("fake_ceph")
        a_config, b_config = fake_site("default"), fake_site("secondary")
        connect: Connect = world.connect
        freeze, thaw, patience = world.freeze, world.thaw, 2.0
    else:
        running = request.getfixturevalue("lab")
        a_config, b_config = running.config.backend, running.config.replication_devices[0]
        connect = running.connect
        freeze, thaw, patience = running.lab.freeze, running.lab.thaw, 60.0
    a, b = connect(a_config, 5), connect(b_config, 5)
    try:
        yield TwoSites(a, b, b_config, connect, freeze, thaw, patience)
    finally:
        a.close()
        b.close()


def mirrored(sites: TwoSites, name: str, mode: MirrorMode = MirrorMode.SNAPSHOT) -> MirrorInfo:
    sites.a.create_image(name, 8 * MiB)
    sites.a.enable_mirroring(name, mode)
    return sites.copy_on_b(name)


# ---- images ------------------------------------------------------------------------------
def test_images__create_list_remove(sites: TwoSites, image_name: str) -> None:
    sites.a.create_image(image_name, 8 * MiB)
    assert image_name in sites.a.list_images()
    sites.a.remove_image(image_name)
    assert image_name not in sites.a.list_images()


def test_images__existing_name_is_refused(sites: TwoSites, image_name: str) -> None:
    sites.a.create_image(image_name, 8 * MiB)
    with pytest.raises(ImageExists) as caught:
        sites.a.create_image(image_name, 8 * MiB)
    assert caught.value.image == image_name


@pytest.mark.parametrize(
    "call",
    [
        lambda c, n: c.mirror_info(n),
        lambda c, n: c.demote(n),
        lambda c, n: c.promote(n),
        lambda c, n: c.enable_mirroring(n, MirrorMode.SNAPSHOT),
        lambda c, n: c.read(n, 0, 16),
        lambda c, n: c.get_metadata(n, "k"),
        lambda c, n: c.image_features(n),
        lambda c, n: c.remove_image(n),
    ],
    ids=["mirror_info", "demote", "promote", "enable", "read", "metadata", "features", "remove"],
)
def test_images__missing_image_is_not_found_naming_site_and_image(
    sites: TwoSites, image_name: str, call: Callable[[Cluster, str], object]
) -> None:
    with pytest.raises(ImageNotFound) as caught:
        call(sites.a, image_name)
    assert (caught.value.site, caught.value.image) == ("default", image_name)
    assert image_name in str(caught.value)


def test_features__update_refuses_no_op_changes_and_journaling_without_lock(
    sites: TwoSites, image_name: str
) -> None:
    sites.a.create_image(image_name, 8 * MiB, frozenset({Feature.LAYERING}))
    assert sites.a.image_features(image_name) == {Feature.LAYERING}
    with pytest.raises(InvalidState):
        sites.a.update_features(image_name, [Feature.JOURNALING], True)
    sites.a.update_features(image_name, [Feature.EXCLUSIVE_LOCK], True)
    with pytest.raises(InvalidState):
        sites.a.update_features(image_name, [Feature.EXCLUSIVE_LOCK], True)
    with pytest.raises(InvalidState):
        sites.a.update_features(image_name, [Feature.OBJECT_MAP], False)
    sites.a.update_features(image_name, [Feature.JOURNALING], True)
    assert sites.a.image_features(image_name) == {
        Feature.LAYERING,
        Feature.EXCLUSIVE_LOCK,
        Feature.JOURNALING,
    }


def test_metadata__set_get_remove(sites: TwoSites, image_name: str) -> None:
    sites.a.create_image(image_name, 8 * MiB)
    assert sites.a.get_metadata(image_name, "rbdfail.volume_type") is None
    sites.a.set_metadata(image_name, "rbdfail.volume_type", "replicated")
    assert sites.a.get_metadata(image_name, "rbdfail.volume_type") == "replicated"
    sites.a.remove_metadata(image_name, "rbdfail.volume_type")
    sites.a.remove_metadata(image_name, "rbdfail.volume_type")  # absent: no error
    assert sites.a.get_metadata(image_name, "rbdfail.volume_type") is None


def test_metadata_values__one_pass_finds_exactly_the_images_with_the_key(
    sites: TwoSites, image_name: str
) -> None:
    for suffix in ("with", "other", "without"):
        sites.a.create_image(f"{image_name}-{suffix}", 8 * MiB)
    sites.a.set_metadata(f"{image_name}-with", "rbdfail.volume_type", "gold")
    sites.a.set_metadata(f"{image_name}-other", "something.else", "x")
    found = sites.a.metadata_values("rbdfail.volume_type")
    # An image typed with a type no config knows is every later switch's failure on the shared
    # lab (a drill test's failover met it): not left behind.
    sites.a.remove_metadata(f"{image_name}-with", "rbdfail.volume_type")
    assert {n: v for n, v in found.items() if n.startswith(image_name)} == {
        f"{image_name}-with": "gold"
    }


def test_data__written_bytes_read_back_and_holes_are_zero(sites: TwoSites, image_name: str) -> None:
    sites.a.create_image(image_name, 8 * MiB)
    sites.a.write(image_name, 4096, b"rbdfail" * 100)
    assert sites.a.read(image_name, 4096, 700) == b"rbdfail" * 100
    assert sites.a.read(image_name, 0, 4096) == b"\0" * 4096


# ---- per-image mirroring ------------------------------------------------------------------
def test_mirror_info__unmirrored_image(sites: TwoSites, image_name: str) -> None:
    sites.a.create_image(image_name, 8 * MiB)
    assert sites.a.mirror_info(image_name) == MirrorInfo(MirrorState.DISABLED, None, False, "")


def test_enable__snapshot_is_idempotent_and_the_other_mode_refused(
    sites: TwoSites, image_name: str
) -> None:
    sites.a.create_image(image_name, 8 * MiB)
    sites.a.enable_mirroring(image_name, MirrorMode.SNAPSHOT)
    info = sites.a.mirror_info(image_name)
    assert (info.state, info.mode, info.primary) == (MirrorState.ENABLED, "snapshot", True)
    assert info.global_id
    sites.a.enable_mirroring(image_name, MirrorMode.SNAPSHOT)
    assert sites.a.mirror_info(image_name) == info
    with pytest.raises(InvalidState):
        sites.a.enable_mirroring(image_name, MirrorMode.JOURNAL)


def test_enable_journal__adds_lock_and_journaling__disable_removes_journaling_only(
    sites: TwoSites, image_name: str
) -> None:
    sites.a.create_image(image_name, 8 * MiB, frozenset({Feature.LAYERING}))
    sites.a.enable_mirroring(image_name, MirrorMode.JOURNAL)
    assert sites.a.image_features(image_name) == {
        Feature.LAYERING,
        Feature.EXCLUSIVE_LOCK,
        Feature.JOURNALING,
    }
    sites.a.disable_mirroring(image_name)
    assert sites.a.image_features(image_name) == {Feature.LAYERING, Feature.EXCLUSIVE_LOCK}
    assert sites.a.mirror_info(image_name).state == MirrorState.DISABLED
    sites.a.disable_mirroring(image_name)  # already disabled: no error


def test_promote_of_primary_and_demote_of_unmirrored_are_invalid(
    sites: TwoSites, image_name: str
) -> None:
    sites.a.create_image(image_name, 8 * MiB)
    with pytest.raises(InvalidState):
        sites.a.demote(image_name)
    sites.a.enable_mirroring(image_name, MirrorMode.SNAPSHOT)
    with pytest.raises(InvalidState):
        sites.a.promote(image_name)
    with pytest.raises(InvalidState):
        sites.a.promote(image_name, force=True)


def test_peer_copy__non_primary_same_global_id__refuses_promote_write_remove(
    sites: TwoSites, image_name: str
) -> None:
    copy = mirrored(sites, image_name)
    primary = sites.a.mirror_info(image_name)
    assert (copy.state, copy.mode, copy.primary) == (MirrorState.ENABLED, "snapshot", False)
    assert copy.global_id == primary.global_id
    with pytest.raises(ImageBusy):  # the peer is still primary
        sites.b.promote(image_name)
    with pytest.raises(InvalidState):
        sites.b.write(image_name, 0, b"x" * 512)
    with pytest.raises(InvalidState):
        sites.b.demote(image_name)
    with pytest.raises(InvalidState):
        sites.b.disable_mirroring(image_name)
    with pytest.raises(InvalidState):  # a journal-mode copy answers ImageBusy instead
        sites.b.remove_image(image_name)


def test_demote_then_promote_on_peer__moves_primary_with_the_data(
    sites: TwoSites, image_name: str
) -> None:
    payload = bytes(range(256)) * 16
    sites.a.create_image(image_name, 8 * MiB)
    sites.a.write(image_name, 0, payload)
    sites.a.enable_mirroring(image_name, MirrorMode.SNAPSHOT)
    sites.copy_on_b(image_name)
    sites.a.demote(image_name)
    assert sites.a.mirror_info(image_name).primary is False
    # Until the demotion has been replayed on b, a non-forced promote answers ImageBusy.
    eventually(lambda: sites.b.promote(image_name) is None, sites.patience, (ImageBusy,))
    assert sites.b.mirror_info(image_name).primary is True
    assert sites.b.read(image_name, 0, len(payload)) == payload


def test_promote_back_where_it_was_demoted__needs_no_propagation(
    sites: TwoSites, image_name: str
) -> None:
    journal = f"{image_name}-j"
    for name, mode in ((image_name, MirrorMode.SNAPSHOT), (journal, MirrorMode.JOURNAL)):
        mirrored(sites, name, mode)
        sites.a.demote(name)
        # What a switch's promote asks: refused in both modes, since this copy holds nothing
        # of the peer since (journal mode: its newest journal tag is its own demotion).
        with pytest.raises(ImageBusy):
            sites.a.promote(name, only_if_replayed=True)
        assert sites.a.mirror_info(name).primary is False
        assert sites.a.replayed_since_own_demotion(name) is False  # what status reads
        sites.a.promote(name)  # the rollback failover relies on: no wait, no force
        assert sites.a.mirror_info(name).primary is True


def replaying_again(copy: Cluster, name: str, patience: float) -> None:
    """Wait until the demoted copy replays its peer again. Ceph's rbd-mirror can call it
    split-brain although its peer was promoted without force after replaying its demotion
    (2 of 3 fresh labs: the replayer read the peer's tags while the promotion was under way,
    docs/design/replay-proofs.md); it stays so until resynced, which is safe here: the
    peer holds every write of this copy."""

    resynced: list[str] = []

    def replaying() -> bool:
        status = copy.mirror_status(name)
        split = status.state == ReplayState.ERROR and "split-brain" in status.description
        if split and not resynced:
            print(f"\n{name}: its demoted copy called split-brain, resynced")
            copy.resync(name)
            resynced.append(name)
        return status.state == ReplayState.REPLAYING

    eventually(replaying, 2 * patience, (ImageNotFound,), interval=0.5)


def test_journal_round_trip__the_checked_promote_waits_for_the_peers_demotion__with_its_write(
    sites: TwoSites, image_name: str
) -> None:
    """Issue 28: a journal copy demoted by its own site is promotable by Ceph without force at
    once; the checked promote (`only_if_replayed`) goes through only once the copy has replayed
    the peer's demotion, and then holds the peer's last write."""
    mirrored(sites, image_name, MirrorMode.JOURNAL)
    sites.replaying_on_b(image_name)  # demoted mid-bootstrap, the copy stayed EBUSY past 60 s
    sites.a.demote(image_name)
    eventually(
        lambda: sites.b.promote(image_name, only_if_replayed=True) is None,
        sites.patience,
        (ImageBusy,),
    )
    # Demoted before a's rbd-mirror had started replaying b (within 1 s of b's promote), the
    # copy on a never got b's write (still refused after 60 s): the refusal is the point,
    # but a round trip that ends promoted needs a's replayer running first.
    replaying_again(sites.a, image_name, sites.patience)
    # Replaying b, a's copy has its own demotion behind it: what status reads.
    eventually(lambda: sites.a.replayed_since_own_demotion(image_name) is True, sites.patience)
    payload = b"written on b" * 40
    sites.b.write(image_name, 4096, payload)
    sites.b.demote(image_name)
    eventually(
        lambda: sites.a.promote(image_name, only_if_replayed=True) is None,
        sites.patience,
        (ImageBusy,),
    )
    assert sites.a.read(image_name, 4096, len(payload)) == payload


def test_newest_mirror_snapshot__says_who_demoted__journal_mode_has_none(
    sites: TwoSites, image_name: str
) -> None:
    """What the engine reads before a non-forced promote (issue 13 item 10): a copy whose
    newest mirror snapshot is its own demotion has not replayed the peer since."""
    mirrored(sites, image_name)
    assert sites.a.last_mirror_snapshot(image_name) == (MirrorSnapshotState.PRIMARY, True)
    sites.a.demote(image_name)
    assert sites.a.last_mirror_snapshot(image_name) == (
        MirrorSnapshotState.PRIMARY_DEMOTED,
        True,
    )
    eventually(
        lambda: (
            sites.b.last_mirror_snapshot(image_name)
            == (MirrorSnapshotState.NON_PRIMARY_DEMOTED, True)
        ),
        sites.patience,
        (ImageNotFound,),
        interval=0.5,
    )
    journal = f"{image_name}-j"
    mirrored(sites, journal, MirrorMode.JOURNAL)
    assert sites.a.last_mirror_snapshot(journal) is None


def test_whole_snapshot_time__on_primary_and_synced_copy__none_in_journal_mode(
    sites: TwoSites, image_name: str
) -> None:
    """What status falls back on when rbd-mirror has not said how fresh a copy is: whether
    it holds a whole snapshot yet (a first sync unfinished has none)."""
    before = datetime.now(UTC) - timedelta(seconds=5)
    mirrored(sites, image_name)
    taken = whole_snapshot_time(sites.a.mirror_snapshots(image_name))
    assert taken is not None and taken >= before
    copied = eventually(
        lambda: whole_snapshot_time(sites.b.mirror_snapshots(image_name)), sites.patience
    )
    assert copied is not None and copied >= taken - timedelta(seconds=1)
    journal = f"{image_name}-j"
    mirrored(sites, journal, MirrorMode.JOURNAL)
    assert whole_snapshot_time(sites.a.mirror_snapshots(journal)) is None


def test_image_users__an_idle_image_has_none__rbd_mirror_is_not_one(
    sites: TwoSites, image_name: str
) -> None:
    """On the lab the peer's rbd-mirror watches a snapshot-mode primary and the local one
    holds the copy's lock: neither is a user a demote would cut off."""
    mirrored(sites, image_name)
    eventually(
        lambda: sites.b.mirror_statuses()[image_name].state == ReplayState.REPLAYING,
        sites.patience,
        (KeyError,),
        interval=1,
    )
    assert sites.a.image_users(image_name) == []
    assert sites.b.image_users(image_name) == []


def test_mirror_daemon_lock_holders__the_daemon_holds_a_journal_copy_s__not_a_writer_s(
    sites: TwoSites, image_name: str
) -> None:
    """A replaying journal-mode copy's lock is held by its site's rbd-mirror (on the lab, the
    one kept by a stuck daemon after a forced promote: forced.py); the primary has none."""
    mirrored(sites, image_name, MirrorMode.JOURNAL)
    sites.replaying_on_b(image_name)
    held = eventually(lambda: sites.b.mirror_daemon_lock_holders(image_name), sites.patience)
    assert len(held) == 1 and held[0].startswith("client."), held
    sites.a.write(image_name, 0, b"a writer takes the lock")
    assert sites.a.mirror_daemon_lock_holders(image_name) == []
    # Asked to break only another holder's, nothing is broken.
    assert sites.b.break_image_lock(image_name, only=["client.0"]) == []
    assert sites.b.mirror_daemon_lock_holders(image_name) == held


def test_mirror_daemon_addresses__one_pass_names_the_copy_s_daemon__never_a_writer(
    sites: TwoSites, image_name: str
) -> None:
    """What a failover whose source is lost blocklists (forced.py take_daemon_out): the
    address of the rbd-mirror connection holding a replaying copy's lock; a primary whose
    lock a writer holds names nobody."""
    mirrored(sites, image_name, MirrorMode.JOURNAL)
    sites.replaying_on_b(image_name)
    held = eventually(lambda: sites.b.mirror_daemon_addresses([image_name]), sites.patience)
    ((client, address),) = held.items()
    assert client.startswith("client.") and address, held
    assert [client] == sites.b.mirror_daemon_lock_holders(image_name)
    sites.a.write(image_name, 0, b"a writer takes the lock")
    assert sites.a.mirror_daemon_addresses([image_name]) == {}


def test_forced_promote__while_peer_is_primary__leaves_both_primary(
    sites: TwoSites, image_name: str
) -> None:
    mirrored(sites, image_name)
    sites.b.promote(image_name, force=True)
    assert sites.b.mirror_info(image_name).primary is True
    assert sites.a.mirror_info(image_name).primary is True  # split brain


def test_split_brain__demote_resync_then_switch_back__the_copy_takes_the_primarys_data(
    sites: TwoSites, image_name: str
) -> None:
    """The failback after a forced failover, as measured on the lab."""
    mirrored(sites, image_name)
    sites.replaying_on_b(image_name)
    sites.b.promote(image_name, force=True)  # a forced failover: both primary
    payload = b"written on b after the failover" * 64
    sites.b.write(image_name, 0, payload)
    sites.a.write(image_name, 0, b"lost on a" * 64)  # a's own history from here on
    sites.a.demote(image_name)
    sites.a.resync(image_name)

    def replaying() -> bool:
        return sites.a.mirror_status(image_name).state == ReplayState.REPLAYING

    # While re-copied, a's image may vanish from its pool for a moment.
    eventually(replaying, sites.patience * 2, (ImageNotFound,), interval=1)
    sites.b.demote(image_name)
    eventually(lambda: sites.a.promote(image_name) is None, sites.patience, (ImageBusy,))
    assert sites.a.read(image_name, 0, len(payload)) == payload
    assert sites.a.mirror_info(image_name).primary and not sites.b.mirror_info(image_name).primary


def test_resync_of_a_primary_image_is_invalid(sites: TwoSites, image_name: str) -> None:
    mirrored(sites, image_name)
    with pytest.raises(InvalidState):
        sites.a.resync(image_name)


def test_disable_on_primary__removes_the_peer_copy(sites: TwoSites, image_name: str) -> None:
    mirrored(sites, image_name)
    sites.a.disable_mirroring(image_name)
    eventually(lambda: image_name not in sites.b.list_images(), sites.patience)


# ---- the pool ------------------------------------------------------------------------------
def test_mirror_infos__lists_mirrored_images_only_in_one_pass(
    sites: TwoSites, image_name: str
) -> None:
    plain, journal = f"{image_name}-plain", f"{image_name}-journal"
    sites.a.create_image(plain, 8 * MiB)
    sites.a.create_image(journal, 8 * MiB)
    sites.a.enable_mirroring(journal, MirrorMode.JOURNAL)
    infos = sites.a.mirror_infos()
    assert plain not in infos
    assert infos[journal] == sites.a.mirror_info(journal)
    assert infos[journal].mode == MirrorMode.JOURNAL


def test_mirror_statuses__primary_says_so_and_the_copy_replays_with_its_lag(
    sites: TwoSites, image_name: str
) -> None:
    mirrored(sites, image_name)
    assert sites.a.mirror_statuses()[image_name].state == ReplayState.STOPPED
    assert sites.a.mirror_statuses()[image_name].description == "local image is primary"

    def replaying() -> ImageStatus | None:
        status = sites.b.mirror_statuses().get(image_name)
        return status if status and status.state == ReplayState.REPLAYING else None

    # The lab's rbd-mirror took about 30 s to report a new image as replaying.
    status = eventually(replaying, sites.patience, interval=1)
    assert status is not None and status.up and status.last_update is not None
    tail = json.loads(status.description.split(", ", 1)[1])
    assert {"local_snapshot_timestamp", "remote_snapshot_timestamp"} <= set(tail)


def test_pool__image_mode_with_one_two_way_peer(sites: TwoSites) -> None:
    for cluster in (sites.a, sites.b):
        assert cluster.pool_mirror_mode() == PoolMirrorMode.IMAGE
        [peer] = cluster.peers()
        assert peer.direction == "rx-tx"
    assert sites.a.peers()[0].site_name != sites.b.peers()[0].site_name


def test_snapshot_schedule__add_list_remove_idempotent(sites: TwoSites, image_name: str) -> None:
    sites.a.create_image(image_name, 8 * MiB)
    with pytest.raises(InvalidState):  # only for images mirrored in snapshot mode
        sites.a.add_snapshot_schedule(image_name, "1h")
    with pytest.raises(InvalidState):
        sites.a.snapshot_schedules(image_name)
    sites.a.enable_mirroring(image_name, MirrorMode.SNAPSHOT)
    assert sites.a.snapshot_schedules(image_name) == []
    sites.a.add_snapshot_schedule(image_name, "1h")
    sites.a.add_snapshot_schedule(image_name, "1h")
    assert sites.a.snapshot_schedules(image_name) == ["1h"]
    sites.a.remove_snapshot_schedule(image_name, "1h")
    sites.a.remove_snapshot_schedule(image_name, "1h")
    assert sites.a.snapshot_schedules(image_name) == []


def test_pool_snapshot_schedules__every_image_in_one_call__a_copy_may_have_one_too(
    sites: TwoSites, image_name: str
) -> None:
    """A schedule on a non-primary copy is accepted (and inert until it is promoted: Ceph's
    scheduler snapshots primaries only), so it can be there before a failover."""
    other = f"{image_name}-2"
    mirrored(sites, image_name)
    mirrored(sites, other)
    sites.a.add_snapshot_schedule(image_name, "1h")
    sites.a.add_snapshot_schedule(other, "1d")
    found = sites.a.pool_snapshot_schedules()
    assert found[image_name] == ["1h"] and found[other] == ["1d"]
    sites.b.add_snapshot_schedule(image_name, "1h")
    assert sites.b.pool_snapshot_schedules().get(image_name) == ["1h"]
    assert other not in sites.b.pool_snapshot_schedules()


# ---- the lock ------------------------------------------------------------------------------
def test_lock__one_holder_renews__another_is_refused_with_the_holders_text(
    sites: TwoSites, image_name: str
) -> None:
    name = f"{image_name}.lock"
    sites.b.lock(name, "run-1", "ops@host-a pid 1", duration=30)
    sites.b.lock(name, "run-1", "ops@host-a pid 1", duration=30)  # a renewal
    other = sites.connect(sites.b_config, 5)  # another host: its own connection
    try:
        with pytest.raises(LockHeld) as caught:
            other.lock(name, "run-2", "ops@host-b pid 2", duration=30)
        assert caught.value.holder == "ops@host-a pid 1"
        assert caught.value.site == "secondary"
        sites.b.unlock(name, "run-1")
        sites.b.unlock(name, "run-1")  # released already: no error
        other.lock(name, "run-2", "ops@host-b pid 2", duration=30)
        with pytest.raises(LockHeld) as caught:
            sites.b.lock(name, "run-1", "ops@host-a pid 1", duration=30)
        assert caught.value.holder == "ops@host-b pid 2"
        other.unlock(name, "run-2")
    finally:
        other.close()


def test_lock__of_a_holder_that_died_lapses_after_its_duration(
    sites: TwoSites, image_name: str
) -> None:
    name = f"{image_name}.lock"
    sites.b.lock(name, "run-1", "dead", duration=1)
    # Measured on the lab: a 3 s lock was free again 5 s later (the OSD's clock granularity).
    eventually(lambda: sites.b.lock(name, "run-2", "alive", duration=30) is None, 10.0, (LockHeld,))
    sites.b.unlock(name, "run-2")


# ---- an unreachable site --------------------------------------------------------------------
def test_frozen_site__connect_fails_within_the_timeout__calls_within_the_osd_floor__then_recover(
    sites: TwoSites,
) -> None:
    timeout = 2.0
    connected = sites.connect(sites.b_config, timeout)
    sites.freeze("secondary")
    try:
        started = time.monotonic()
        with pytest.raises(SiteUnreachable) as caught:
            sites.connect(sites.b_config, timeout)
        assert caught.value.site == "secondary"
        assert time.monotonic() - started < timeout + 3  # bounded: the timeout, not a hang

        # A monitor command is liveness: its silence is a timeout within the connect timeout
        # (what the source watch takes for a source lost mid-run), not a refusal. Asked
        # alongside the OSD call below, so the freeze lasts no longer than that call: the
        # shared lab's rbd-mirror must keep its watches for the tests after this one.
        def ask_monitors() -> float:
            started = time.monotonic()
            with pytest.raises(OperationTimedOut):
                connected.monitors()
            return time.monotonic() - started

        with ThreadPoolExecutor(1) as pool:
            monitors = pool.submit(ask_monitors)
            # An open connection's OSD calls are work, not liveness: never cut below the floor.
            started = time.monotonic()
            with pytest.raises(OperationTimedOut):
                connected.list_images()
            assert time.monotonic() - started < max(OSD_OP_FLOOR_S, timeout) + 3
            assert monitors.result() < timeout + 3
    finally:
        sites.thaw("secondary")
    eventually(
        lambda: isinstance(connected.list_images(), list), sites.patience, (OperationTimedOut,)
    )
    connected.close()


# ---- drills (issue 16): what a drill reads, read-only ----------------------------------------
def synced_to(sites: TwoSites, name: str, primary_snap: int) -> MirrorSnapshot:
    """Wait until b's newest mirror snapshot is the complete copy of a's `primary_snap`."""

    def synced() -> MirrorSnapshot | None:
        snaps = sites.b.mirror_snapshots(name)
        newest = snaps[-1] if snaps else None
        ok = newest and newest.complete and newest.primary_snap_id == primary_snap
        return newest if ok else None

    copy = eventually(synced, sites.patience, (ImageNotFound,), interval=0.2)
    assert copy is not None
    return copy


def test_mirror_snapshots__the_copy_names_the_primarys__its_head_is_that_snapshot(
    sites: TwoSites, image_name: str
) -> None:
    """Measured on the lab: a copy's non-primary snapshot holds the copy as it was before that
    sync, and its head the synced state: the head is what equals the primary's snapshot."""
    first, second = b"first" * 800, b"second" * 700
    sites.a.create_image(image_name, 8 * MiB)
    sites.a.write(image_name, 0, first)
    sites.a.enable_mirroring(image_name, MirrorMode.SNAPSHOT)
    sites.copy_on_b(image_name)
    sites.a.write(image_name, 2 * MiB, second)
    taken = sites.a.create_mirror_snapshot(image_name)
    primary = sites.a.mirror_snapshots(image_name)
    assert primary[-1].id == taken and primary[-1].primary_snap_id is None
    assert primary[-1].state == MirrorSnapshotState.PRIMARY and primary[-1].complete
    assert primary[-1].size == 8 * MiB and primary[-1].timestamp is not None
    copy = synced_to(sites, image_name, taken)
    assert copy.state == MirrorSnapshotState.NON_PRIMARY
    sites.a.write(image_name, 0, b"after the snapshot" * 100)  # not mirrored yet

    extents = [(0, len(first)), (2 * MiB, len(second))]
    at_primary = sites.a.extent_digests(image_name, taken, extents)
    assert at_primary == [hashlib.sha256(first).hexdigest(), hashlib.sha256(second).hexdigest()]
    assert sites.b.extent_digests(image_name, None, extents) == at_primary
    # Read at its own snapshot, the copy is as it was before this sync (on the lab: without
    # `second`, tests/test_drill_lab.py; the fake snapshots at every write, so there the
    # sync before already carried it): what was there before is there.
    assert sites.b.extent_digests(image_name, copy.id, extents)[0] == at_primary[0]
    assert sites.a.extent_digests(image_name, None, extents)[0] != at_primary[0]


def test_extent_digests__past_the_end_is_zeros__a_missing_snapshot_is_not_found(
    sites: TwoSites, image_name: str
) -> None:
    mirrored(sites, image_name)
    [digest] = sites.a.extent_digests(image_name, None, [(8 * MiB - 4096, 8192)])
    assert digest == hashlib.sha256(b"\0" * 8192).hexdigest()
    with pytest.raises(ImageNotFound):
        sites.a.extent_digests(image_name, 999_999, [(0, 4096)])


def test_allocated_extents__cover_what_was_written_at_the_snapshot(
    sites: TwoSites, image_name: str
) -> None:
    sites.a.create_image(image_name, 16 * MiB)
    sites.a.write(image_name, 5 * MiB, b"x" * 8192)
    sites.a.enable_mirroring(image_name, MirrorMode.SNAPSHOT)
    snap = sites.a.mirror_snapshots(image_name)[-1].id
    sites.a.write(image_name, 12 * MiB, b"y" * 4096)  # after the snapshot
    extents = sites.a.allocated_extents(image_name, snap, limit=100)
    assert any(o <= 5 * MiB and 5 * MiB + 8192 <= o + n for o, n in extents), extents
    assert not any(o <= 12 * MiB < o + n for o, n in extents), extents
    assert sum(n for _, n in extents) <= 4 * MiB  # extents, not the whole image


def test_mirror_snapshots__journal_mode_has_none(sites: TwoSites, image_name: str) -> None:
    mirrored(sites, image_name, MirrorMode.JOURNAL)
    assert sites.a.mirror_snapshots(image_name) == []


def test_lock_holder__seen_while_held__none_when_free__never_taken(
    sites: TwoSites, image_name: str
) -> None:
    name = f"{image_name}.lock"
    assert sites.b.lock_holder(name) is None  # never locked: no object
    sites.b.lock(name, "run-1", "ops@host-a pid 1", duration=30)
    assert sites.b.lock_holder(name) == "ops@host-a pid 1"
    assert sites.b.lock_holder(name) == "ops@host-a pid 1"  # looking did not take it
    sites.b.lock(name, "run-1", "ops@host-a pid 1", duration=30)  # its holder renews as usual
    sites.b.unlock(name, "run-1")
    assert sites.b.lock_holder(name) is None
    sites.b.lock(name, "run-2", "dead", duration=1)
    eventually(lambda: sites.b.lock_holder(name) is None, 10.0)  # lapsed


def test_user_snapshots__a_journal_copy_replays_their_create_and_removal__refuses_both_itself(
    sites: TwoSites, image_name: str
) -> None:
    """What the drill of a journal-mode volume stands on: a user snapshot of the primary is
    replayed on the copy at the same point of the writes, and so is its removal."""
    before = b"before" * 100
    sites.a.create_image(image_name, 8 * MiB)
    sites.a.write(image_name, 0, before)
    sites.a.enable_mirroring(image_name, MirrorMode.JOURNAL)
    sites.copy_on_b(image_name)
    sites.replaying_on_b(image_name)
    taken = sites.a.create_snapshot(image_name, "drill-1")
    sites.a.write(image_name, 0, b"after!" * 100)  # after the snapshot, on both sites' heads
    [snap] = sites.a.user_snapshots(image_name)
    assert (snap.id, snap.name, snap.size) == (taken, "drill-1", 8 * MiB) and snap.timestamp
    assert sites.a.mirror_snapshots(image_name) == []  # a user snapshot is not a mirror one

    def replayed() -> list[int]:
        return [s.id for s in sites.b.user_snapshots(image_name) if s.name == "drill-1"]

    [copy_id] = eventually(replayed, sites.patience, interval=0.5)
    extents = [(0, len(before))]
    assert sites.a.extent_digests(image_name, taken, extents) == [
        hashlib.sha256(before).hexdigest()
    ]
    assert sites.b.extent_digests(image_name, copy_id, extents) == [
        hashlib.sha256(before).hexdigest()
    ]
    with pytest.raises(InvalidState):
        sites.b.create_snapshot(image_name, "drill-2")
    with pytest.raises(InvalidState):
        sites.b.remove_snapshot(image_name, "drill-1")
    sites.a.remove_snapshot(image_name, "drill-1")
    sites.a.remove_snapshot(image_name, "drill-1")  # none of that name: no error
    assert sites.a.user_snapshots(image_name) == []
    eventually(lambda: not sites.b.user_snapshots(image_name), sites.patience, interval=0.5)
