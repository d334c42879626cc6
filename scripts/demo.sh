#!/usr/bin/env bash
# `make demo`: a guided tour of rbdfail on the real two-site lab.
# It grows with each capability; today: the lab, setup, volumes of both kinds, mirroring
# enabled on the replicated ones, what a dead site looks like, a failover to the secondary
# with the primary frozen, and the failback that resyncs what split.
set -euo pipefail

lab_dir=${RBDFAIL_LAB_DIR:-$HOME/.local/state/rbdfail/lab}
export RBDFAIL_LAB_DIR=$lab_dir
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
show() { printf '\033[2m$ %s\033[0m\n' "$*"; "$@"; }

step "Start a fresh two-site Ceph lab (primary + secondary, peered both ways)"
rbdfail lab down >/dev/null 2>&1 || true
show rbdfail lab up
export RBDFAIL_CONFIG=$lab_dir/rbdfail.yaml

step "The configuration rbdfail uses for the lab"
grep -v '^#' "$RBDFAIL_CONFIG"

step "Both pools ready for mirroring? (the lab ran the same code; here it checks)"
show rbdfail setup

step "Create sample volumes as client.cinder: databases replicate, VMs do not"
rbd_primary=(rbd -c "$lab_dir/primary/ceph.conf" --id cinder)
for name in db-orders db-billing db-users journal-ledger vm-web-1 vm-web-2 scratch; do
    show "${rbd_primary[@]}" create "volumes/$name" --size 64M
done

step "What rbdfail sees: every volume, its type (from the rules) and its mirroring"
show rbdfail volumes

step "Enable mirroring for every replicated volume: first the plan, then for real"
show rbdfail enable-mirroring --dry-run
show rbdfail enable-mirroring
show rbdfail enable-mirroring --json

step "Status of both sites: where each volume is primary, how its copy is doing"
show rbdfail status || true
echo "(the copies are just being created; rbd-mirror reports them replaying about 30 s later)"
for _ in $(seq 45); do rbdfail status >/dev/null 2>&1 && break; sleep 2; done
show rbdfail status || true

step "Could a failover to the secondary start now? (pre-flight)"
show rbdfail check --to secondary || true

step "What a client needs to attach db-orders where it is primary now (no key material)"
show rbdfail connection-info db-orders

step "A dead site costs one connect timeout, never a hang"
show rbdfail lab freeze primary
start=$(date +%s)
show rbdfail status || echo "(exit code $?, after $(( $(date +%s) - start ))s: the secondary is still shown)"
show rbdfail check --to secondary || echo "(exit code $?: forced failover still possible, see the warning)"

step "3 a.m.: the primary is down. Fail over: first the plan, then for real"
show rbdfail failover --to secondary --dry-run
show rbdfail failover --to secondary --yes || echo "(exit code $?)"
echo "(every replicated volume is primary on the secondary; vm-* became 'error', their status kept)"
show rbdfail connection-info db-orders
show rbdfail status || true

step "The primary comes back: its images are still primary there too (split brain)"
show rbdfail lab thaw primary
show rbdfail status || echo "(exit code $?: split brain is what failback resolves)"
echo "The journal of every step, fsynced as it went:"
show tail -n 4 "$lab_dir/state/journal.jsonl"

step "Quiet hours: write on the secondary, then fail back (resyncing what split)"
rbd_secondary=(rbd -c "$lab_dir/secondary/ceph.conf" --id cinder)
show "${rbd_secondary[@]}" bench --io-type write --io-total 4M volumes/db-orders
show rbdfail failback --dry-run
show rbdfail failback --yes || echo "(exit code $?)"
echo "(rbd-mirror on the secondary reports its copies replaying about 30 s after the switch)"
for _ in $(seq 45); do rbdfail status >/dev/null 2>&1 && break; sleep 2; done
show rbdfail status || true

step "Done. The lab keeps running for you to try things:"
echo "  export RBDFAIL_CONFIG=$RBDFAIL_CONFIG"
echo "  rbdfail lab status      rbdfail lab down"
