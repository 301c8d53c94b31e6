#!/usr/bin/env bash
# The `make run` demo: a repository round trip without a mount.
#   ./demo/src       a small generated tree (text, a duplicated binary, a symlink, a .gdprignore)
#   ./demo/remote    the encrypted repository (file://)
#   ./demo/state     keepfs's local state
#   ./demo/restored  what `keepfs restore` gives back
# init, import, change a file, import again, list snapshots, restore, compare, check.
# KEEPFS=/path/to/keepfs picks the binary (default bin/keepfs); the passphrase comes from
# KEEPFS_PASSWORD (default "demo"), never from the command line.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BIN=${KEEPFS:-$ROOT/bin/keepfs}
D=$ROOT/demo
export KEEPFS_PASSWORD=${KEEPFS_PASSWORD:-demo}
[ -x "$BIN" ] || { echo "demo: no keepfs binary at $BIN: run 'make build' first" >&2; exit 1; }

kf() {
	printf '\n$ keepfs --repo file://demo/remote --state demo/state %s\n' "$*"
	"$BIN" --repo "file://$D/remote" --state "$D/state" "$@"
}

rm -rf "$D"
mkdir -p "$D/src/notes" "$D/src/data" "$D/src/build"
S=$D/src
# A tree with the usual things in it: the project's docs, text, a duplicated binary file
# (stored once), a symlink, and a .gdprignore that keeps build output out of the backup.
if [ -n "$(ls -A docs 2>/dev/null)" ]; then cp -a docs "$S/docs"; fi
for i in $(seq 1 50); do printf 'note %d: keepfs keeps every version of this file\n' "$i" >"$S/notes/note-$i.txt"; done
head -c 4194304 /dev/urandom >"$S/data/photo.raw"
cp "$S/data/photo.raw" "$S/data/photo-copy.raw"
ln -s notes/note-1.txt "$S/first-note"
printf 'compiled object\n' >"$S/build/main.o"
printf 'build/\n*.tmp\n' >"$S/.gdprignore"
printf 'scratch\n' >"$S/notes/scratch.tmp"
echo "demo: source tree $S ($(du -sh "$S" | cut -f1), $(find "$S" -type f | wc -l) files)"

kf init
kf import "$S"
echo "note 1, second version" >>"$S/notes/note-1.txt"
kf import "$S"
kf snapshots
kf restore / --to "$D/restored"

printf '\n$ diff -r demo/src demo/restored   (without the ignored build/ and *.tmp)\n'
diff -r --no-dereference -x build -x '*.tmp' "$S" "$D/restored"
[ ! -e "$D/restored/build" ] && [ ! -e "$D/restored/notes/scratch.tmp" ] \
	|| { echo "demo: files excluded by .gdprignore were restored" >&2; exit 1; }
echo "restored tree is identical; ignored files stayed out"

kf check
echo
echo "demo: OK — repository $(du -sh "$D/remote" | cut -f1) for a $(du -sh --exclude build "$S" | cut -f1) tree (the 4 MiB file is stored once); see ./demo"
