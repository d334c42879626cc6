"""Write a deployment's `openstack volume list --all-projects --long -f json`, as current
python-openstackclient prints it: ID, Name, Status, Size, Type, Bootable, "Attached to" (the
attachment objects, osc's AttachmentsColumn machine-readable form) and Properties.

    python tests/data/cinder/generate.py --count 5000 --seed 27 > volumes-5000.json

Deterministic for a seed: tests call `volumes(count, seed)` directly.
"""

from __future__ import annotations

import argparse
import json
import random
import uuid
from typing import Any

# (type, share): most volumes replicated gold, some of each other type, a few on LVM.
TYPES = (
    ("gold-replicated", 40),
    ("gold", 20),
    ("fast-replicated", 15),
    ("__DEFAULT__", 15),
    ("lvm", 10),
)
STATUSES = (("in-use", 55), ("available", 40), ("error", 2), ("reserved", 1), ("backing-up", 2))


def volumes(count: int, seed: int = 27) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    servers = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(count // 3 + 1)]
    out = []
    for index in range(count):
        volume_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        type_name = rng.choices([t for t, _ in TYPES], [w for _, w in TYPES])[0]
        status = rng.choices([s for s, _ in STATUSES], [w for _, w in STATUSES])[0]
        attached = []
        if status == "in-use":
            server = rng.choice(servers)
            attached.append(
                {
                    "id": volume_id,
                    "attachment_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                    "volume_id": volume_id,
                    "server_id": server,
                    "host_name": f"compute-{rng.randrange(40):02d}",
                    "device": f"/dev/vd{'bcdefg'[rng.randrange(6)]}",
                    "attached_at": "2026-11-30T09:12:44.000000",
                }
            )
        out.append(
            {
                "ID": volume_id,
                "Name": f"vol-{index:05d}" if rng.random() < 0.9 else "",
                "Status": status,
                "Size": rng.choice((10, 20, 40, 80, 100, 500)),
                "Type": type_name,
                "Bootable": "true" if rng.random() < 0.3 else "false",
                "Attached to": attached,
                "Properties": {"project_tier": "prod"} if rng.random() < 0.2 else {},
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=27)
    args = parser.parse_args()
    print(json.dumps(volumes(args.count, args.seed), indent=1))


if __name__ == "__main__":
    main()
