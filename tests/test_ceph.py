"""The real adapter's connection errors on the lab: each names the site and says what to do."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from rbdfail import ceph
from rbdfail.errors import CephError, PermissionDenied, SiteUnreachable
from tests.conftest import RunningLab

pytestmark = pytest.mark.lab


def test_connect__missing_conf_file_names_it(lab: RunningLab) -> None:
    site = dataclasses.replace(lab.config.backend, conf=Path("/nowhere/ceph.conf"))
    with pytest.raises(SiteUnreachable, match=r"/nowhere/ceph\.conf not found") as caught:
        ceph.connect(site, 2)
    assert caught.value.site == "default"


def test_connect__user_without_keyring_is_refused_and_named(lab: RunningLab) -> None:
    site = dataclasses.replace(lab.config.backend, user="nobody")
    with pytest.raises(PermissionDenied, match=r"client\.nobody was refused") as caught:
        ceph.connect(site, 2)
    assert "keyring" in (caught.value.hint or "")


def test_connect__missing_pool_is_named(lab: RunningLab) -> None:
    site = dataclasses.replace(lab.config.replication_devices[0], pool="nope")
    with pytest.raises(CephError, match="pool 'nope' does not exist") as caught:
        ceph.connect(site, 2)
    assert caught.value.site == "secondary"


def test_connect__no_key_material_in_any_error(lab: RunningLab) -> None:
    keyring = Path(lab.config.backend.conf).parent / "ceph.client.cinder.keyring"
    key = keyring.read_text().split("key = ")[1].split()[0]
    messages = []
    changes: list[dict[str, Any]] = [{"user": "nobody"}, {"pool": "nope"}, {"conf": Path("/no")}]
    for change in changes:
        try:
            ceph.connect(dataclasses.replace(lab.config.backend, **change), 2)
        except CephError as exc:
            messages.append(f"{exc} {exc.hint}")
    assert len(messages) == 3
    assert all(key not in m for m in messages)
