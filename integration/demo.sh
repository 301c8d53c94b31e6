#!/usr/bin/env bash
# `make run`: mount a demo repository at ./mnt in the foreground; Ctrl-C unmounts
# cleanly (final snapshot first).
#   ./demo/remote   the encrypted repository (file://), created on first run
#   ./demo/state    keepfs's local state (encrypted too)
#   ./mnt           the mount point
# KEEPFS=/path/to/keepfs picks the binary (default bin/keepfs); the passphrase comes from
# KEEPFS_PASSWORD (default "demo"), never from the command line.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BIN=${KEEPFS:-$ROOT/bin/keepfs}
D=$ROOT/demo
MNT=$ROOT/mnt
export KEEPFS_PASSWORD=${KEEPFS_PASSWORD:-demo}
[ -x "$BIN" ] || { echo "demo: no keepfs binary at $BIN: run 'make build' first" >&2; exit 1; }

# A mount left behind by a killed run answers "transport endpoint is not connected".
if grep -qs " $MNT " /proc/self/mountinfo; then
	if "$BIN" status "$MNT" >/dev/null 2>&1; then
		echo "demo: $MNT is already mounted by a running keepfs (keepfs unmount $MNT)" >&2
		exit 1
	fi
	fusermount3 -u -z "$MNT" 2>/dev/null || umount -l "$MNT"
fi
mkdir -p "$D" "$MNT"
kf() { "$BIN" --repo "file://$D/remote" --state "$D/state" "$@"; }
if [ ! -e "$D/remote/config" ]; then
	kf init
fi
cat <<MSG
Mounting the demo repository at ./mnt (passphrase "$KEEPFS_PASSWORD"). In another terminal, try:
  cp -a docs mnt/ && bin/keepfs sync mnt      # commit, snapshot, upload
  ls mnt/.versions/                           # every snapshot, and latest
  bin/keepfs status mnt
  KEEPFS_PASSWORD=$KEEPFS_PASSWORD bin/keepfs --repo file://$D/remote snapshots
Ctrl-C here unmounts (after a final snapshot).
MSG
exec "$BIN" --repo "file://$D/remote" --state "$D/state" mount --foreground --snapshot-interval 30s "$MNT"
