#!/usr/bin/env bash
# keepfs benchmark harness (what `make bench` runs).
#
# Usage: integration/bench/bench.sh [SECTION...]        default: all
#   workload  generate the ~1 GiB workload into $PB, unless it is there and verifies
#   repo      keepfs init/import/restore vs restic init/backup/restore on that workload
#   mount     cp -a, untar, warm ls -lR/find, fio, through a keepfs mount vs native disk,
#             go-fuse's example loopback file system (the FUSE floor: a Go FUSE server doing
#             no work of its own, built from the module cache at go.mod's go-fuse version;
#             a keepfs/loopback column beside keepfs/native, targets stay against native),
#             gocryptfs and rclone mount (crypt, --vfs-cache-mode full); keepfs: 1-byte change
#             in a 1 GiB file + sync, daemon peak RSS (issue 3)
#   versions  ls -lR/find of .versions/latest vs the live tree vs restic mount; keepfs restore
#             vs restic restore; prune after deleting half the files, sizes before/after (issue 4)
#   erase     erase of one 4 MiB file from 20 snapshots of the workload vs restic rewrite +
#             prune --max-unused 0: wall time, bytes rewritten (issue 15; BENCH_ERASE_SNAPSHOTS)
#   go        go test -bench (one iteration each) over $BENCH_GO_PKGS
#   s3        keepfs import/restore vs restic backup/restore to the same SeaweedFS (S3 over
#             HTTP on 127.0.0.1, bin/tools/weed from `make weed`), and cp -a + sync through a
#             keepfs mount on it; peak RSS of each (issue 17). Not part of "all".
#   scale     growth curves at 10^4, 10^5, 10^6 ... (issue 18): scale_index (integration/bench/
#             scale_index.sh: synthetic repositories of many blobs; daemon RSS, mount start,
#             index objects per upload passes) and scale_tree (integration/bench/scale_tree.sh:
#             many files in the mount; change one + sync, ls -l of a big directory). Not in "all".
#   all       workload repo mount versions go   (go is left out with BENCH_GO=0)
#
# Environment:
#   PB           workload and results directory          (default /tmp/keepfs-bench)
#   KEEPFS       keepfs binary                           (default <repo>/bin/keepfs)
#   BENCH_WORK   scratch directory, wiped at the start   (default $PB/run)
#   BENCH_ROUNDS repo rounds; the table shows medians      (default 3)
#   BENCH_KEEP=1 keep the scratch directory afterwards (last round's repositories, logs)
#   BENCH_STRICT=1  exit non-zero when a target is missed (default: only on errors)
#   BENCH_GO=0   skip the go section in "all";  BENCH_GO_PKGS (default "./repo/... ./remote/... ./cache/...")
#   BENCH_SHARED directory holding make-workload.sh      (default <repo>/../shared/bench)
#   BENCH_MOUNT_TOOLS  tools of the mount section        (default "native loopback gocryptfs rclone keepfs")
#   BENCH_FIO_SIZE fio file size (default 512M); BENCH_FIO_TIME random jobs' seconds (default 10)
#   BENCH_FIO_RCLONE=1 run fio on the rclone mount too (slow; off by default)
#   BENCH_STEP_TIMEOUT deadline in seconds of each timed step of mount/versions (default 900)
#   WEED         SeaweedFS binary of the s3 section          (default <repo>/bin/tools/weed)
#
# The mount and versions sections work in $BENCH_WORK/mount and $BENCH_WORK/versions; every
# mount they create is unmounted (lazily, if need be) and every process they start is stopped
# on exit, whatever happens. A keepfs that cannot mount leaves n/a cells and an error, and the
# baselines are still measured.
#
# Each section writes $PB/results-<section>.md and .json and prints its table.
# Every timed command runs under GNU time (/usr/bin/time -f '%e %U %S %M'): wall seconds,
# user and system CPU seconds, peak RSS in KiB of the largest process. The page cache is
# warm for both tools alike (the workload is copied just before); `sync` runs before each
# timed command so that one tool's writeback is not billed to the next.
#
# Adding a section: write section_NAME (use measure, put_row, render), add NAME to the
# case in main and, if it belongs in the default run, to ALL_SECTIONS.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PB=${PB:-/tmp/keepfs-bench}
KEEPFS=${KEEPFS:-$ROOT/bin/keepfs}
W=${BENCH_WORK:-$PB/run}
SHARED=${BENCH_SHARED:-$ROOT/../shared/bench}
GO=${GO:-go}
ALL_SECTIONS="workload repo mount versions erase"
[ "${BENCH_GO:-1}" = 0 ] || ALL_SECTIONS="$ALL_SECTIONS go"
# manifest hash printed by make-workload.sh for the current generator; a different one means
# the figures are not comparable with earlier runs (warned, not fatal).
KNOWN_MANIFEST=63ff53e3646a8feaa8315b6a61b3336330de3215c1920e43ec55e50aadd14897

errors=0   # sections or steps that failed
missed=0   # sections with a target missed

say() { printf '%s\n' "$*"; }
warn() { printf 'bench: %s\n' "$*" >&2; }
die() { warn "$*"; exit 1; }

# ---------------------------------------------------------------- measuring helpers

# measure KEY CMD...: run CMD under GNU time, output to $W/logs/KEY.log.
# Sets T_wall T_cpu (s, user+sys) T_rss (KiB). Returns CMD's failure, after showing its log.
measure() {
	local key=$1; shift
	local tf="$W/logs/$key.time" log="$W/logs/$key.log" u s
	[ "${NOSYNC:-0}" = 1 ] || sync
	if ! /usr/bin/time -f '%e %U %S %M' -o "$tf" "$@" </dev/null >"$log" 2>&1; then
		warn "$key failed: $*"
		sed 's/^/    | /' "$log" | tail -n 15 >&2
		return 1
	fi
	read -r T_wall u s T_rss < <(tail -n 1 "$tf")
	T_cpu=$(awk -v u="$u" -v s="$s" 'BEGIN { printf "%.2f", u + s }')
	printf '  %-22s %9.2f s wall %9.2f s cpu %9.1f MiB peak RSS\n' "$key" "$T_wall" "$T_cpu" \
		"$(awk -v k="$T_rss" 'BEGIN { print k / 1024 }')"
}

# sizeof DIR: bytes under DIR (du -sb); files vanishing meanwhile are not an error.
sizeof() { { du -sb "$1" 2>/dev/null || true; } | cut -f1; }
add() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a + b }'; }
max() { awk -v a="$1" -v b="$2" 'BEGIN { print (a > b ? a : b) }'; }

# Rows of the section being measured: put_row LABEL UNIT TARGET VALUE... into $ROWS.
put_row() { local IFS=$'\t'; printf '%s\n' "$*" >>"$ROWS"; }
meta() { printf '#meta\t%s\t%s\n' "$1" "$2" >>"$ROWS"; }
note() { printf '#note\t%s\n' "$*" >>"$ROWS"; }

# render SECTION: table on stdout, $PB/results-SECTION.{md,json}.
render() {
	local rc=0
	echo
	python3 "$HERE/report.py" "$1" "$ROWS" "$PB/results-$1" || rc=$?
	case $rc in
	0) ;;
	4) missed=$((missed + 1)) ;;
	*) warn "report for $1 failed"; errors=$((errors + 1)) ;;
	esac
	say "written: $PB/results-$1.md $PB/results-$1.json"
}

machine_meta() {
	meta date "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
	meta machine "$(nproc) CPUs, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
	meta kernel "$(uname -r)"
	meta keepfs "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' (+ uncommitted changes)')"
	meta workload "$PB/workload, $(wc -l <"$PB/workload-manifest.sha256") files, $(sizeof "$PB/workload") bytes, manifest $(sha256sum <"$PB/workload-manifest.sha256" | cut -c1-16)"
}

need_workload() {
	[ -f "$PB/workload-manifest.sha256" ] && [ -d "$PB/mut/new" ] \
		|| die "no workload in $PB: run '$0 workload' (or 'make bench') first"
}

# ---------------------------------------------------------------- section: workload

gen_hash() { cat "$SHARED/make-workload.sh" "$SHARED/gen/main.go" | sha256sum | cut -d' ' -f1; }
mut_hash() { (cd "$PB/mut" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1); }

# workload_ok: the workload in $PB exists and matches its manifest; the generator and the
# mutation set match the stamp written when it was generated (a workload made by running
# make-workload.sh directly has no stamp: its mutation set is checked against mut/orig).
workload_ok() {
	local man=$PB/workload-manifest.sha256 stamp=$PB/.workload-stamp
	[ -f "$man" ] && [ -d "$PB/workload" ] && [ -f "$PB/mut/list.txt" ] && [ -d "$PB/mut/new" ] || return 1
	if [ -f "$stamp" ]; then
		[ "$(sed -n 1p "$stamp")" = "$(gen_hash)" ] || { say "workload: generator changed"; return 1; }
		[ "$(sed -n 2p "$stamp")" = "$(mut_hash)" ] || { say "workload: mutation set changed"; return 1; }
	else
		while read -r rel; do
			cmp -s "$PB/mut/orig/$rel" "$PB/workload/$rel" && [ -f "$PB/mut/new/$rel" ] || return 1
		done <"$PB/mut/list.txt"
	fi
	[ "$(find "$PB/workload" -type f | wc -l)" -eq "$(wc -l <"$man")" ] || { say "workload: file count differs from the manifest"; return 1; }
	(cd "$PB/workload" && sha256sum --check --quiet --strict "$man" >/dev/null 2>&1) \
		|| { say "workload: content differs from the manifest"; return 1; }
}

section_workload() {
	[ -f "$SHARED/make-workload.sh" ] || die "workload generator not found: $SHARED/make-workload.sh (../shared must sit beside the repository, or set BENCH_SHARED)"
	mkdir -p "$PB"
	if workload_ok; then
		say "workload: $PB/workload matches its manifest; not regenerating"
	else
		say "workload: generating ~1 GiB into $PB"
		rm -f "$PB/.workload-stamp"
		PB=$PB bash "$SHARED/make-workload.sh"
		printf '%s\n%s\n' "$(gen_hash)" "$(mut_hash)" >"$PB/.workload-stamp"
	fi
	[ -f "$PB/.workload-stamp" ] || printf '%s\n%s\n' "$(gen_hash)" "$(mut_hash)" >"$PB/.workload-stamp"
	local got; got=$(sha256sum <"$PB/workload-manifest.sha256" | cut -d' ' -f1)
	[ "$got" = "$KNOWN_MANIFEST" ] || warn "workload manifest hash $got is not the known $KNOWN_MANIFEST: figures are not comparable with earlier runs"
}

# ---------------------------------------------------------------- section: repo

# tree_listing DIR: one line per entry (path, type, mode, size of files, mtime in seconds).
tree_listing() {
	(cd "$1" && find . -mindepth 1 -printf '%P\t%y\t%m\t%s\t%T@\n' | awk -F'\t' -v OFS='\t' '
		{ if ($2 != "f") $4 = "-"; sub(/\..*/, "", $5); print }' | LC_ALL=C sort)
}

# verify_restore NAME SRC DST: compares the restored tree DST with SRC. Sets VERIFY_MSG
# ("identical" when content, types, modes and mtimes match) and VERIFY_OK=1 when at least
# the content does. Differences go to $W/logs/NAME.{diff,meta}.
verify_restore() {
	local name=$1 src=$2 dst=$3 n
	VERIFY_OK=0
	if [ ! -d "$dst" ]; then VERIFY_MSG="missing"; return; fi
	if ! diff -r --no-dereference -q "$src" "$dst" >"$W/logs/$name.diff" 2>&1; then
		VERIFY_MSG="CONTENT DIFFERS ($(wc -l <"$W/logs/$name.diff") entries)"; return
	fi
	VERIFY_OK=1
	diff <(tree_listing "$src") <(tree_listing "$dst") >"$W/logs/$name.meta" || true
	n=$(grep -c '^<' "$W/logs/$name.meta" || true)
	if [ "$n" -eq 0 ]; then VERIFY_MSG="identical"; else VERIFY_MSG="content identical, metadata differs (${n} entries)"; fi
}

# One round: fresh copy of the workload, fresh repositories; appends "tool<TAB>metric<TAB>value"
# to $VALS and "tool<TAB>message" to $VERIFY. Tools listed in $ORDER run in that order at
# each step (the order alternates between rounds, so neither tool always goes first).
# A tool that fails is marked in OK[] and skipped from then on.
repo_round() {
	local r=$1 RW=$W/round t
	local D=$RW/data KR=$RW/keepfs-repo KS=$RW/keepfs-state RR=$RW/restic-repo RC=$RW/restic-cache
	local KF=("$KEEPFS" --repo "file://$KR" --state "$KS") RS=(restic --repo "$RR" --cache-dir "$RC")
	local -A size1=()
	rm -rf "$RW"; mkdir -p "$RW"
	rec() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$VALS"; }
	# step TOOL METRIC CMD...: measure unless TOOL already failed; record wall/cpu/rss.
	step() {
		local tool=$1 m=$2; shift 2
		[ "${OK[$tool]}" = 1 ] || return 0
		if measure "r$r.$tool.$m" "$@"; then
			rec "$tool" "${m}_wall" "$T_wall"; rec "$tool" "${m}_cpu" "$T_cpu"; rec "$tool" "${m}_rss" "$T_rss"
		else
			OK[$tool]=0; errors=$((errors + 1))
		fi
	}
	# the commands of each tool, per operation
	op() {
		case $1:$2 in
		keepfs:init) step keepfs init "${KF[@]}" init ;;
		keepfs:import) step keepfs import "${KF[@]}" import "$D" ;;
		keepfs:incr) step keepfs incr "${KF[@]}" import "$D" ;;
		keepfs:restore) cold; step keepfs restore "${KF[@]}" restore / --to "$RW/restore-keepfs" ;;
		keepfs:check) step keepfs check "${KF[@]}" check --read-data ;;
		restic:init) step restic init "${RS[@]}" init ;;
		restic:import) step restic import "${RS[@]}" backup "$D" ;;
		restic:incr) step restic incr "${RS[@]}" backup "$D" ;;
		restic:restore) cold; step restic restore "${RS[@]}" restore latest --target "$RW/restore-restic" ;;
		restic:check) step restic check "${RS[@]}" check --read-data ;;
		esac
	}
	repodir() { if [ "$1" = keepfs ]; then echo "$KR"; else echo "$RR"; fi; }

	say "== repo round $r/$ROUNDS (order: $ORDER)"
	cp -a "$PB/workload" "$D"
	for t in $ORDER; do op "$t" init; op "$t" import; done
	for t in $ORDER; do
		[ "${OK[$t]}" = 1 ] || continue
		size1[$t]=$(sizeof "$(repodir "$t")"); rec "$t" size1 "${size1[$t]}"
	done

	cp -a "$PB/mut/new/." "$D/"   # the 1% mutation
	for t in $ORDER; do op "$t" incr; done
	for t in $ORDER; do
		[ "${OK[$t]}" = 1 ] || continue
		rec "$t" added $(($(sizeof "$(repodir "$t")") - ${size1[$t]}))
	done
	[ "${OK[keepfs]}" = 1 ] && rec keepfs state "$(sizeof "$KS")"
	[ "${OK[restic]}" = 1 ] && rec restic state "$(sizeof "$RC")"

	for t in $ORDER; do op "$t" restore; done
	local verified="keepfs: n/a"
	if [ "${OK[keepfs]}" = 1 ]; then
		verify_restore "r$r.keepfs-restore" "$D" "$RW/restore-keepfs"
		printf 'keepfs\t%s\n' "$VERIFY_MSG" >>"$VERIFY"; verified="keepfs: $VERIFY_MSG"
		[ "$VERIFY_OK" = 1 ] || { OK[keepfs]=0; errors=$((errors + 1)); warn "keepfs restore is not the source tree: $VERIFY_MSG (see $W/logs)"; }
	fi
	if [ "${OK[restic]}" = 1 ]; then
		verify_restore "r$r.restic-restore" "$D" "$RW/restore-restic$D"
		printf 'restic\t%s\n' "$VERIFY_MSG" >>"$VERIFY"; verified="$verified; restic: $VERIFY_MSG"
	fi
	say "  restored tree vs source: $verified"
	rm -rf "$RW/restore-keepfs" "$RW/restore-restic"

	[ "$r" -ne "$ROUNDS" ] || for t in $ORDER; do op "$t" check; done   # informational, last round only
	unset -f rec step op repodir
}

section_repo() {
	need_workload
	command -v restic >/dev/null || die "restic not installed (make bench installs it)"
	[ -x /usr/bin/time ] || die "GNU time (/usr/bin/time) not installed (make bench installs it)"
	ROUNDS=${BENCH_ROUNDS:-3}
	local free; free=$(df -Pk "$PB" | awk 'NR == 2 { print $4 }')
	[ "$free" -gt $((5 * 1024 * 1024)) ] || warn "less than 5 GiB free in $PB: the repo section may run out of space"

	wipe "$W"; mkdir -p "$W/logs"
	ROWS=$W/rows-repo.tsv VALS=$W/values-repo.tsv VERIFY=$W/verify-repo.tsv
	: >"$ROWS"; : >"$VALS"; : >"$VERIFY"
	export KEEPFS_PASSWORD=bench-keepfs RESTIC_PASSWORD=bench-restic
	declare -A OK=([keepfs]=1 [restic]=1)
	if [ ! -x "$KEEPFS" ]; then
		warn "keepfs binary not found at $KEEPFS: run 'make build' first (or set KEEPFS); measuring restic only"
		OK[keepfs]=0; errors=$((errors + 1))
	fi

	local r
	for ((r = 1; r <= ROUNDS; r++)); do
		if ((r % 2)); then ORDER="keepfs restic"; else ORDER="restic keepfs"; fi
		repo_round "$r"
	done

	# V[tool:metric] = median over the rounds (sizes are the same in every round anyway)
	declare -A V=()
	local t m v
	while IFS=$'\t' read -r t m v; do V[$t:$m]=$v; done < <(
		sort -t$'\t' -k1,2 -k3,3g "$VALS" | awk -F'\t' -v OFS='\t' '
			{ k = $1 OFS $2; n[k]++; x[k, n[k]] = $3 }
			END { for (k in n) { c = n[k]; print k, (c % 2 ? x[k, (c + 1) / 2] : (x[k, c / 2] + x[k, c / 2 + 1]) / 2) } }')
	for t in keepfs restic; do
		[ -n "${V[$t:import_wall]:-}" ] || continue
		V[$t:initial_wall]=$(add "${V[$t:init_wall]}" "${V[$t:import_wall]}")
		V[$t:initial_cpu]=$(add "${V[$t:init_cpu]}" "${V[$t:import_cpu]}")
		V[$t:initial_rss]=$(max "${V[$t:init_rss]}" "${V[$t:import_rss]}")
		local peak=0 k
		for k in initial incr restore; do [ -z "${V[$t:${k}_rss]:-}" ] || peak=$(max "$peak" "${V[$t:${k}_rss]}"); done
		V[$t:peak_rss]=$peak
	done
	# restore verification: "identical" only if every round was; else the first other message
	verdict() { awk -F'\t' -v t="$1" '$1 == t { s = 1; if ($2 != "identical" && m == "") m = $2 }
		END { print s ? (m != "" ? m : "identical") : "n/a" }' "$VERIFY"; }
	local vk vr
	vk=$(verdict keepfs) vr=$(verdict restic)
	unset -f verdict

	machine_meta
	meta restic "$(restic version | head -n 1)"
	meta method "median of $ROUNDS rounds (tool order alternating), each on a fresh copy of the workload with fresh repositories; keepfs: init, import DIR, import DIR after the mutation, restore / --to DIR; restic: init, backup DIR, backup DIR, restore latest --target DIR (repository format 2, compression auto, fresh cache dir); every restore after sync and drop_caches"
	put_row "metric" "unit" "target" "keepfs" "restic"
	row() { put_row "$1" "$2" "$3" "${V[keepfs:$4]:-}" "${V[restic:$4]:-}"; }
	row "initial backup (init + import): wall" s "<=0.5" initial_wall
	row "initial backup: CPU user+sys" s "" initial_cpu
	row "initial backup: peak RSS" KiB "" initial_rss
	row "init alone: wall" s "" init_wall
	row "import alone (keepfs import / restic backup): wall" s "<=0.5" import_wall
	row "import alone: CPU user+sys" s "" import_cpu
	row "import alone: peak RSS" KiB "" import_rss
	row "repository size after initial backup" bytes "<=0.98" size1
	row "incremental (1% mutated): wall" s "<=0.5" incr_wall
	row "incremental: CPU user+sys" s "" incr_cpu
	row "incremental: peak RSS" KiB "" incr_rss
	row "incremental: bytes added to repository" bytes "" added
	row "restore latest: wall" s "<=0.8" restore_wall
	row "restore: CPU user+sys" s "" restore_cpu
	row "restore: peak RSS" KiB "" restore_rss
	row "peak RSS of backup, incremental, restore" KiB "<=1.0" peak_rss
	row "check --read-data: wall (last round)" s "" check_wall
	row "local state (keepfs) / cache (restic)" bytes "" state
	put_row "restored tree equals source" "" "" "$vk" "$vr"
	unset -f row
	note "workload: $(sizeof "$PB/workload") bytes in $(wc -l <"$PB/workload-manifest.sha256") files; per-round figures in $PB/results-repo-rounds.tsv"
	[ "${OK[keepfs]}" = 1 ] || note "keepfs failed or is missing: see $W/logs"
	[ "${OK[restic]}" = 1 ] || note "restic failed: see $W/logs"
	render repo
	cp "$VALS" "$PB/results-repo-rounds.tsv"
	if [ "${BENCH_KEEP:-0}" = 1 ] || [ "${OK[keepfs]}${OK[restic]}" != 11 ]; then
		say "scratch kept in $W"
	else
		wipe "$W"
	fi
}

# ---------------------------------------------------------------- mounts: helpers

MOUNTS=()   # mount points this run created: lazily unmounted on exit
BGPIDS=()   # background processes this run started (rclone mount, restic mount, keepfs daemons)

is_mounted() { awk -v m="$1" '$2 == m { f = 1 } END { exit !f }' /proc/mounts; }

# cleanup: on exit, whatever happened: stop what we started, lazily unmount what we mounted.
cleanup() {
	local p m
	for m in ${MOUNTS[@]+"${MOUNTS[@]}"}; do
		is_mounted "$m" && { fusermount3 -u -z "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; }
	done
	for p in ${BGPIDS[@]+"${BGPIDS[@]}"}; do kill "$p" 2>/dev/null || true; done
	for p in ${WEED_PIDS[@]+"${WEED_PIDS[@]}"}; do kill -KILL "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wipe DIR: rm -rf DIR, after lazily unmounting any mount below it (never delete through one).
wipe() {
	local m
	[ -e "$1" ] || return 0
	while read -r m; do fusermount3 -u -z "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done < <(
		awk -v d="$(realpath "$1")/" 'index($2 "/", d) == 1 { print $2 }' /proc/mounts)
	rm -rf "$1"
}

# wait_for SECONDS CMD...: poll CMD every 0.1 s until it succeeds; fails after SECONDS.
wait_for() {
	local end=$((SECONDS + $1)); shift
	until "$@" 2>/dev/null; do
		[ "$SECONDS" -lt "$end" ] || return 1
		sleep 0.1
	done
}

# unmount_fuse MNT [PID]: unmount MNT and wait (up to 120 s) for PID, the daemon, to exit.
unmount_fuse() {
	is_mounted "$1" && fusermount3 -u "$1" 2>/dev/null || { is_mounted "$1" && fusermount3 -u -z "$1" 2>/dev/null; } || true
	[ -z "${2:-}" ] || wait_for 120 bash -c "! kill -0 $2" || warn "daemon $2 of $1 still running after unmount"
}

# daemon_pid NAME MNT: the pid of the process called NAME serving MNT (its command line names
# MNT; else the only NAME process holding /dev/fuse open).
daemon_pid() {
	local p cand=()
	for p in $(pgrep -x "$1" 2>/dev/null); do
		if tr '\0' '\n' <"/proc/$p/cmdline" 2>/dev/null | grep -qxF -- "$2"; then echo "$p"; return 0; fi
		ls -l "/proc/$p/fd" 2>/dev/null | grep -q ' /dev/fuse$' && cand+=("$p")
	done
	[ "${#cand[@]}" -eq 1 ] && { echo "${cand[0]}"; return 0; }
	return 1
}

# peak_rss_kib PID: VmHWM of a live process, in KiB.
peak_rss_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null; }

# time_fn KEY CMD...: like measure, for shell functions (wall time only; T_cpu T_rss empty).
time_fn() {
	local key=$1 t0 t1; shift
	[ "${NOSYNC:-0}" = 1 ] || sync
	t0=$(date +%s.%N)
	if ! "$@" >"$W/logs/$key.log" 2>&1; then
		warn "$key failed: $*"; sed 's/^/    | /' "$W/logs/$key.log" | tail -n 15 >&2
		return 1
	fi
	t1=$(date +%s.%N)
	T_wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') T_cpu="" T_rss=""
	printf '  %-22s %9.2f s wall\n' "$key" "$T_wall"
}

# fio_job KEY DIR FIO-ARGS...: one fio job on DIR/fio.dat (psync, buffered). Sets F_mbs (MB/s,
# 10^6 bytes) and F_iops, from fio's JSON output.
fio_job() {
	local key=$1 dir=$2; shift 2
	local out=$W/logs/$key.json
	sync
	if ! fio --name="$key" --directory="$dir" --filename=fio.dat --ioengine=psync --direct=0 \
		--fallocate=none --output-format=json --output="$out" "$@" >"$W/logs/$key.log" 2>&1; then
		warn "$key failed: fio $*"; sed 's/^/    | /' "$W/logs/$key.log" | tail -n 15 >&2
		return 1
	fi
	read -r F_mbs F_iops < <(python3 - "$out" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
job = json.loads(text[text.index("{"):])["jobs"][0]
bw = sum(job[d]["bw_bytes"] for d in ("read", "write"))
iops = sum(job[d]["iops"] for d in ("read", "write"))
print(f"{bw / 1e6:.1f} {iops:.0f}")
PY
	)
	printf '  %-22s %9s MB/s %9s IOPS\n' "$key" "$F_mbs" "$F_iops"
}

# ---------------------------------------------------------------- section: mount

# mstep TOOL METRIC CMD...: measure CMD unless TOOL already failed; V[TOOL:METRIC] = wall s,
# V[TOOL:METRIC_rss] = peak RSS of the command. A failure marks the tool failed (OK[TOOL]=0:
# n/a from then on) and counts as an error; mstep itself always returns 0 (set -e), so test
# `ok TOOL` afterwards.
mstep() {
	local t=$1 m=$2; shift 2
	ok "$t" || return 0
	# a hung mount must not hang the benchmark: every step has a deadline
	if measure "$t.$m" timeout -k 10 "${BENCH_STEP_TIMEOUT:-900}" "$@"; then
		V[$t:$m]=$T_wall; V[$t:${m}_rss]=$T_rss
	else
		OK[$t]=0; errors=$((errors + 1))
	fi
}
# fstep TOOL METRIC FUNC ARGS...: the same for a shell function (wall time only).
fstep() {
	local t=$1 m=$2; shift 2
	ok "$t" || return 0
	if time_fn "$t.$m" "$@"; then V[$t:$m]=$T_wall; else OK[$t]=0; errors=$((errors + 1)); fi
}
ok() { [ "${OK[$1]}" = 1 ]; }

# file_bytes DIR: total size of the regular files below DIR.
file_bytes() { find "$1" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%.0f\n", s }'; }

# rclone_drain MIN_BYTES: wait until the rclone VFS has no upload queued or in progress and
# the remote's files hold at least MIN_BYTES (crypt only adds bytes). The byte check matters:
# FUSE sends RELEASE after close(2) returns, so right after cp the last files may not be
# queued yet and vfs/stats can already say 0. Gives up after 600 s.
rclone_drain() {
	local n end=$((SECONDS + 600))
	while [ "$SECONDS" -lt "$end" ]; do
		n=$(rclone rc --url "http://127.0.0.1:$RC_PORT/" vfs/stats \
			| awk -F: '/"uploadsInProgress"|"uploadsQueued"/ { gsub(/[ ,]/, "", $2); s += $2 } END { print s + 0 }') \
			|| return 1
		[ "$n" -eq 0 ] && [ "$(file_bytes "$STORE")" -ge "$1" ] && return 0
		sleep 0.2
	done
	echo "rclone: uploads not finished after 600 s" >&2; return 1
}

# drop_caches: write back and drop the kernel's page cache, dentries and inodes (before the cold
# fio reads); false when that is not allowed (not root), and the cold rows stay n/a.
drop_caches() { sync && { echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null; }

# cold: before a restore, nothing cached for either tool: not the packs one tool just wrote
# (keepfs writes them around the page cache, restic through it), and not the inode-table
# blocks of files deleted before, which make ext4 skip each recently freed inode at every
# create. The restore walls of both tools still swing 2-3x between rounds with it (the
# rounds' medians are what the table shows).
cold() { drop_caches || true; }

# flush_to_disk DIR: sync(1) of the file system holding DIR (native and gocryptfs "sync").
flush_to_disk() { sync -f "$1"; }

# the daemon re-executes the keepfs binary: its process name is the binary's (15 chars at most)
keepfs_daemon_pid() { local n; n=$(basename "$KEEPFS"); daemon_pid "${n:0:15}" "$1"; }

# build_loopback: $W/bin/loopback from go-fuse's example/loopback, at the go-fuse version
# go.mod requires, built in a scratch module (the example is not part of the library's API).
# Only the mount section wipes its own directory, not $W: a binary left by an earlier run is
# reused only if it was built from the same go-fuse version ($W/bin/loopback.version).
build_loopback() {
	local dir ver b=$W/loopback-build
	ver=$(cd "$ROOT" && "$GO" list -m -f '{{.Version}}' github.com/hanwen/go-fuse/v2) || return 1
	[ -x "$W/bin/loopback" ] && [ "$(cat "$W/bin/loopback.version" 2>/dev/null)" = "$ver" ] && return 0
	dir=$(cd "$ROOT" && "$GO" list -m -f '{{.Dir}}' github.com/hanwen/go-fuse/v2) || return 1
	[ -n "$dir" ] && [ -f "$dir/example/loopback/main.go" ] || { echo "go-fuse $ver not in the module cache (run 'go mod download')"; return 1; }
	rm -rf "$b" "$W/bin/loopback" "$W/bin/loopback.version"; mkdir -p "$b" "$W/bin"
	cp "$dir/example/loopback/main.go" "$b/"
	(cd "$b" && "$GO" mod init keepfs-bench/loopback && "$GO" mod edit -require "github.com/hanwen/go-fuse/v2@$ver" &&
		GOFLAGS=-mod=mod "$GO" build -o "$W/bin/loopback" .) || return 1
	printf '%s\n' "$ver" >"$W/bin/loopback.version"
}

# mount_setup TOOL: creates and mounts TOOL's file system; sets MNT (where the benchmark
# writes) and STORE (what holds the data at rest: cipher dir, remote dir, repository).
mount_setup() {
	local t=$1 p
	case $t in
	native)
		MNT=$MW/native STORE=$MW/native; mkdir -p "$MNT" ;;
	gocryptfs)
		STORE=$MW/gc-cipher MNT=$MW/gc-mnt; mkdir -p "$STORE" "$MNT"
		printf 'bench-gocryptfs\n' >"$MW/gc-pass"
		mstep "$t" init gocryptfs -q -init -passfile "$MW/gc-pass" "$STORE"; ok "$t" || return 1
		MOUNTS+=("$MNT")
		mstep "$t" mount gocryptfs -q -passfile "$MW/gc-pass" "$STORE" "$MNT"; ok "$t" || return 1
		DPID[$t]=$(daemon_pid gocryptfs "$MNT") || DPID[$t]="" ;;
	rclone)
		STORE=$MW/rc-remote MNT=$MW/rc-mnt; mkdir -p "$STORE" "$MNT" "$MW/rc-cache"
		RC_PORT=$((20000 + RANDOM % 20000))
		cat >"$MW/rclone.conf" <<-CONF
			[bench-local]
			type = local

			[bench-crypt]
			type = crypt
			remote = bench-local:$STORE
			password = $(rclone obscure bench-rclone-1)
			password2 = $(rclone obscure bench-rclone-2)
		CONF
		MOUNTS+=("$MNT")
		rclone --config "$MW/rclone.conf" mount bench-crypt: "$MNT" --vfs-cache-mode full \
			--vfs-write-back 0s --cache-dir "$MW/rc-cache" --rc --rc-addr "127.0.0.1:$RC_PORT" \
			--rc-no-auth --log-file "$W/logs/rclone.log" --log-level NOTICE </dev/null &
		p=$!; BGPIDS+=("$p"); DPID[$t]=$p
		if ! wait_for 60 is_mounted "$MNT" || ! wait_for 30 rclone rc --url "http://127.0.0.1:$RC_PORT/" vfs/stats >/dev/null; then
			warn "rclone mount did not come up (see $W/logs/rclone.log)"; OK[$t]=0; errors=$((errors + 1)); return 1
		fi ;;
	loopback)
		STORE=$MW/lb-src MNT=$MW/lb-mnt; mkdir -p "$STORE" "$MNT"
		if ! build_loopback >"$W/logs/loopback.build.log" 2>&1; then
			warn "cannot build go-fuse's loopback example (see $W/logs/loopback.build.log)"
			OK[$t]=0; errors=$((errors + 1)); return 1
		fi
		MOUNTS+=("$MNT")
		"$W/bin/loopback" -q -directmount "$MNT" "$STORE" >"$W/logs/loopback.log" 2>&1 </dev/null &
		p=$!; BGPIDS+=("$p"); DPID[$t]=$p
		if ! wait_for 60 is_mounted "$MNT"; then
			warn "loopback mount did not come up (see $W/logs/loopback.log)"; OK[$t]=0; errors=$((errors + 1)); return 1
		fi ;;
	keepfs)
		STORE=$MW/kf-remote MNT=$MW/kf-mnt; mkdir -p "$MNT"
		KF=("$KEEPFS" --repo "file://$STORE" --state "$MW/kf-state")
		if [ ! -x "$KEEPFS" ]; then
			warn "keepfs binary not found at $KEEPFS: run 'make build' first (or set KEEPFS)"
			OK[$t]=0; errors=$((errors + 1)); return 1
		fi
		mstep "$t" init "${KF[@]}" init; ok "$t" || return 1
		MOUNTS+=("$MNT")
		mstep "$t" mount timeout 120 "${KF[@]}" mount "$MNT"
		if ! ok "$t" || ! is_mounted "$MNT"; then
			warn "keepfs mount failed or did not mount $MNT: the keepfs column is n/a (see $W/logs/keepfs.mount.log)"
			ok "$t" && errors=$((errors + 1)); OK[$t]=0; return 1
		fi
		DPID[$t]=$(keepfs_daemon_pid "$MNT") || { DPID[$t]=""; warn "keepfs daemon pid not found: no RSS figure"; }
		[ -z "${DPID[$t]}" ] || BGPIDS+=("${DPID[$t]}") ;;
	esac
}

# mount_sync TOOL METRIC: make what was written durable: keepfs sync (the remote holds the
# snapshot), rclone: until the VFS has uploaded everything, native/gocryptfs: sync -f.
mount_sync() {
	local t=$1 m=$2
	# no sync(1) before these: what is still dirty belongs to the copy being made durable
	case $t in
	native | gocryptfs | loopback) NOSYNC=1 fstep "$t" "$m" flush_to_disk "$STORE" ;;
	rclone) NOSYNC=1 fstep "$t" "$m" rclone_drain "$RC_EXPECT" ;;
	keepfs) NOSYNC=1 mstep "$t" "$m" timeout 600 "${KF[@]}" sync --timeout 590s "$MNT" ;;
	esac
}

mount_teardown() {
	local t=$1
	case $t in
	native) ;;
	gocryptfs) [ "${OK[$t]}" = 0 ] || fstep "$t" unmount unmount_fuse "$MNT" "${DPID[$t]:-}"; unmount_fuse "$MNT" ;;
	rclone | loopback) [ "${OK[$t]}" = 0 ] || fstep "$t" unmount unmount_fuse "$MNT" "${DPID[$t]}"; unmount_fuse "$MNT" "${DPID[$t]}" ;;
	keepfs)
		if is_mounted "$MNT"; then
			[ "${OK[$t]}" = 0 ] || mstep "$t" unmount timeout 600 "${KF[@]}" unmount "$MNT" || true
			unmount_fuse "$MNT" "${DPID[$t]:-}"
		fi ;;
	esac
}

# mount_phase TOOL: every measurement of the mount section on one tool.
mount_phase() {
	local t=$1 d
	say "== mount: $t"
	# Every tool starts alike: nothing the tool before it (or the section before) left in the
	# page cache, the workload read back in. On ext4 a create skips over each recently freed
	# inode whose table block is cached, so a tool that came right after a mass deletion paid
	# for it in every file it created (go-fuse's loopback, first in the section after the s3
	# section's wipe: cp -a 22.8 s against 8.9 s in a run without it).
	drop_caches || true
	find "$PB/workload" -type f -exec cat {} + >/dev/null
	mount_setup "$t" || { mount_teardown "$t"; return 0; }
	d=$MNT
	# rclone cannot chmod or chown (EIO): copy and untar keep what it can hold (timestamps)
	local cp=(cp -a) untar=(tar -xf)
	[ "$t" != rclone ] || cp=(cp -R --preserve=timestamps) untar=(tar --no-same-owner --no-same-permissions -xf)

	# cp -a of the workload, then until durable
	RC_EXPECT=$WL_BYTES
	mstep "$t" cp "${cp[@]}" "$PB/workload" "$d/workload"
	mount_sync "$t" sync
	if [ "${OK[$t]}" = 1 ]; then
		V[$t:cpsync]=$(add "${V[$t:cp]}" "${V[$t:sync]}")
		V[$t:store]=$(sizeof "$STORE") || true
		[ "$t" != keepfs ] || V[$t:state]=$(sizeof "$MW/kf-state") || true
	fi

	# warm listings: once to warm, the second is timed
	if [ "${OK[$t]}" = 1 ]; then
		timeout -k 10 300 ls -lR "$d/workload" >/dev/null 2>&1 || true; mstep "$t" lslr bash -c 'ls -lR "$1" >/dev/null' _ "$d/workload"
		timeout -k 10 300 find "$d/workload" >/dev/null 2>&1 || true; mstep "$t" find bash -c 'find "$1" >/dev/null' _ "$d/workload"
	fi

	# untar of the 20,000 small files
	[ "${OK[$t]}" = 0 ] || mkdir -p "$d/untar"
	RC_EXPECT=$((WL_BYTES + TAR_BYTES))
	mstep "$t" untar "${untar[@]}" "$PB/small.tar" -C "$d/untar"
	mount_sync "$t" untarsync

	# fio: sequential 1 MiB write/read, random 4 KiB read/write; the reads cached (what backs
	# the file is in the page cache: fio only drops the file's own pages) and cold (every page
	# cache dropped first, so the backing files or cipher files come from the disk)
	if [ "${OK[$t]}" = 1 ] && { [ "$t" != rclone ] || [ "${BENCH_FIO_RCLONE:-0}" = 1 ]; }; then
		local fs=${BENCH_FIO_SIZE:-512M} ft=${BENCH_FIO_TIME:-10}
		if fio_job "$t.fio-seqwrite" "$d" --rw=write --bs=1M --size="$fs" --end_fsync=1 &&
			V[$t:seqw]=$F_mbs &&
			fio_job "$t.fio-seqread" "$d" --rw=read --bs=1M --size="$fs" && V[$t:seqr]=$F_mbs &&
			{ ! drop_caches || { fio_job "$t.fio-seqread-cold" "$d" --rw=read --bs=1M --size="$fs" && V[$t:seqr_cold]=$F_mbs; }; } &&
			fio_job "$t.fio-randread" "$d" --rw=randread --bs=4k --size="$fs" --time_based --runtime="$ft" &&
			V[$t:randr]=$F_iops &&
			{ ! drop_caches || { fio_job "$t.fio-randread-cold" "$d" --rw=randread --bs=4k --size="$fs" --time_based --runtime="$ft" && V[$t:randr_cold]=$F_iops; }; } &&
			fio_job "$t.fio-randwrite" "$d" --rw=randwrite --bs=4k --size="$fs" --time_based --runtime="$ft" --end_fsync=1 &&
			V[$t:randw]=$F_iops; then
			rm -f "$d/fio.dat"
		else
			errors=$((errors + 1)); [ "$t" != keepfs ] || OK[$t]=0
		fi
	fi

	# keepfs: a 1-byte change in a 1 GiB file, then sync
	if [ "$t" = keepfs ] && [ "${OK[$t]}" = 1 ]; then
		mstep "$t" write1g dd if=/dev/urandom of="$d/one-gib.bin" bs=1M count=1024 status=none
		NOSYNC=1 mstep "$t" sync1g timeout 600 "${KF[@]}" sync --timeout 590s "$d"
		local before; before=$(sizeof "$STORE")
		mstep "$t" byte1 bash -c 'printf x | dd of="$1" bs=1 seek=500000000 conv=notrunc status=none && shift && "$@"' \
			_ "$d/one-gib.bin" timeout 600 "${KF[@]}" sync --timeout 590s "$d"
		local after; after=$(sizeof "$STORE")
		! ok "$t" || [ -z "$before" ] || [ -z "$after" ] || V[$t:byte1_added]=$((after - before))
	fi

	# keepfs: truncate -s 1T of an empty file, then sync: the hole is not stored
	if [ "$t" = keepfs ] && [ "${OK[$t]}" = 1 ]; then
		: >"$d/sparse.img"
		local sb; sb=$(sizeof "$STORE")
		mstep "$t" trunc1t truncate -s 1T "$d/sparse.img"
		NOSYNC=1 mstep "$t" trunc1tsync timeout 600 "${KF[@]}" sync --timeout 590s "$d"
		local sa; sa=$(sizeof "$STORE")
		! ok "$t" || [ -z "$sb" ] || [ -z "$sa" ] || V[$t:trunc1t_added]=$((sa - sb))
		rm -f "$d/sparse.img"
	fi

	# daemon peak RSS, before unmount
	if [ -n "${DPID[$t]:-}" ] && [ -r "/proc/${DPID[$t]}/status" ]; then
		V[$t:drss]=$(peak_rss_kib "${DPID[$t]}")
	fi
	mount_teardown "$t"
	# Each tool's files stay until the section ends (a few GiB each): on ext4 a file created
	# within a minute or so of a mass deletion costs the allocator a skip over every recently
	# freed inode, so deleting one tool's 20,000-file store here would slow the next tool's
	# creates (measured: 4-19% of keepfs's daemon samples in ext4_create against 2.5%).
}

section_mount() {
	need_workload
	local c
	for c in gocryptfs rclone fio fusermount3; do command -v "$c" >/dev/null || die "$c not installed (make bench installs it)"; done
	[ -x /usr/bin/time ] || die "GNU time (/usr/bin/time) not installed (make bench installs it)"
	[ -e /dev/fuse ] || die "/dev/fuse missing: the mount section needs FUSE"
	MW=$W/mount
	wipe "$MW"; mkdir -p "$MW" "$W/logs"
	MW=$(cd "$MW" && pwd -P)   # the mount table holds resolved paths
	ROWS=$W/rows-mount.tsv; : >"$ROWS"
	WL_BYTES=$(file_bytes "$PB/workload") TAR_BYTES=$(tar -tvf "$PB/small.tar" | awk '{ s += $3 } END { printf "%.0f\n", s }')
	export KEEPFS_PASSWORD=bench-keepfs
	local tools=${BENCH_MOUNT_TOOLS:-native loopback gocryptfs rclone keepfs} t
	declare -A OK=([native]=0 [loopback]=0 [gocryptfs]=0 [rclone]=0 [keepfs]=0) V=() DPID=()
	for t in $tools; do OK[$t]=1; done
	for t in $tools; do mount_phase "$t"; done

	machine_meta
	meta loopback "go-fuse $(cd "$ROOT" && "$GO" list -m -f '{{.Version}}' github.com/hanwen/go-fuse/v2 2>/dev/null) example/loopback (-directmount)"
	meta gocryptfs "$(gocryptfs -version | head -n 1)"
	meta rclone "$(rclone version | head -n 1)"
	meta fio "$(fio --version)"
	meta method "one tool after another, each on a fresh directory or mount in $MW; cp -a of the workload; sync = keepfs sync MNT (returns when the remote holds the snapshot), rclone: until rc vfs/stats shows no upload queued or in progress (--vfs-cache-mode full --vfs-write-back 0s, crypt over a local remote), native, loopback and gocryptfs: sync -f of the directory holding the data; warm = the second of two runs; fio: psync, buffered (--direct=0, fio invalidates the file's page cache before each job), ${BENCH_FIO_SIZE:-512M} file, random jobs ${BENCH_FIO_TIME:-10} s time-based, writes end with fsync; each tool after sync, drop_caches and a read of the workload, every tool's files kept until the section ends"
	put_row "metric" "unit" "target" "keepfs" "native" "loopback" "gocryptfs" "rclone"
	row() { put_row "$1" "$2" "$3" "${V[keepfs:$4]:-}" "${V[native:$4]:-}" "${V[loopback:$4]:-}" "${V[gocryptfs:$4]:-}" "${V[rclone:$4]:-}"; }
	row "cp -a workload: wall" s "" cp
	row "sync after cp (until durable / uploaded)" s "" sync
	put_row "cp -a + sync (native: cp -a alone)" s "<=2.0" "${V[keepfs:cpsync]:-}" "${V[native:cp]:-}" "${V[loopback:cpsync]:-}" "${V[gocryptfs:cpsync]:-}" "${V[rclone:cpsync]:-}"
	row "cp -a + sync, every tool" s "" cpsync
	row "data at rest after cp (repo / cipher dir / remote)" bytes "" store
	row "untar 20,000 small files" s "<=3.0" untar
	row "sync after untar" s "" untarsync
	row "ls -lR workload, warm" s "<=3.0" lslr
	row "find workload, warm" s "" find
	row "fio seq write 1 MiB" MB/s ">=0.7" seqw
	row "fio seq read 1 MiB" MB/s "" seqr
	row "fio seq read 1 MiB, cold" MB/s "" seqr_cold
	row "fio rand read 4 KiB" IOPS "" randr
	row "fio rand read 4 KiB, cold" IOPS "" randr_cold
	row "fio rand write 4 KiB (+ fsync)" IOPS "" randw
	row "write a 1 GiB file" s "" write1g
	row "sync of the new 1 GiB file" s "" sync1g
	row "1-byte change in the 1 GiB file + sync" s "abs<1" byte1
	row "bytes the 1-byte change added to the repo" bytes "" byte1_added
	row "truncate -s 1T of an empty file" s "abs<=0.1" trunc1t
	row "sync after truncate -s 1T" s "abs<=0.1" trunc1tsync
	row "bytes the 1 TiB hole added to the repo" bytes "" trunc1t_added
	row "daemon peak RSS (VmHWM before unmount)" KiB "abs<300" drss
	row "unmount (keepfs: final snapshot + upload)" s "" unmount
	row "mount (returns when ready)" s "" mount
	row "local state after cp + sync" bytes "" state
	unset -f row
	# keepfs against the FUSE floor: a keepfs/loopback column beside keepfs/native (targets stay
	# against native; this one only tells how much of the gap any Go FUSE server pays)
	printf '#ratio\t%s\t%s\n' keepfs loopback >>"$ROWS"
	note "loopback: go-fuse's example loopback file system, the FUSE floor (a Go FUSE server passing every call to a directory, no caching beyond go-fuse's 1 s defaults, no crypto, no chunking); keepfs/loopback: how far keepfs is above that floor (for MB/s and IOPS, below 1 is slower)"
	note "fio seq read: fio drops the file's page cache first (--invalidate=1), so native reads the disk while a FUSE file system may still be served from its backing files' page cache"
	note "rclone cannot chmod/chown: its copy is cp -R --preserve=timestamps, its untar tar --no-same-owner --no-same-permissions"
	[ "${BENCH_FIO_RCLONE:-0}" = 1 ] || note "rclone: fio not run (BENCH_FIO_RCLONE=1 adds it)"
	for t in $tools; do [ "${OK[$t]}" = 1 ] || note "$t failed or is unavailable: its n/a cells; see $W/logs/$t.*"; done
	[ -n "${V[native:seqr_cold]:-}${V[keepfs:seqr_cold]:-}" ] || note "cold fio rows n/a: the page cache could not be dropped (needs root)"
	# issue 18: the targets of a FUSE file system, against the other FUSE file systems
	printf '#table\t%s\n' "issue 18, FUSE-bound targets: keepfs vs gocryptfs" >>"$ROWS"
	put_row "metric" "unit" "target" "keepfs" "gocryptfs" "loopback" "native"
	row() { put_row "$1" "$2" "$3" "${V[keepfs:$4]:-}" "${V[gocryptfs:$4]:-}" "${V[loopback:$4]:-}" "${V[native:$4]:-}"; }
	row "fio seq read 1 MiB" MB/s ">=1.0" seqr
	row "fio seq read 1 MiB, cold" MB/s ">=1.0" seqr_cold
	row "fio rand read 4 KiB" IOPS ">=1.0" randr
	row "fio rand read 4 KiB, cold" IOPS ">=1.0" randr_cold
	note "cached: fio drops the file's own pages (--invalidate=1), what backs it (chunk files, cipher files) stays in the page cache; cold: echo 3 >/proc/sys/vm/drop_caches first"
	printf '#table\t%s\n' "issue 18, FUSE-bound targets: keepfs vs go-fuse's loopback" >>"$ROWS"
	put_row "metric" "unit" "target" "keepfs" "loopback" "gocryptfs" "native"
	row() { put_row "$1" "$2" "$3" "${V[keepfs:$4]:-}" "${V[loopback:$4]:-}" "${V[gocryptfs:$4]:-}" "${V[native:$4]:-}"; }
	row "cp -a + sync" s "<=1.0" cpsync
	row "untar 20,000 small files" s "<=0.6" untar
	row "daemon peak RSS (VmHWM before unmount)" KiB "abs<=150" drss
	unset -f row
	note "keepfs's sync waits until the remote holds the snapshot; loopback's and gocryptfs's is sync -f of the directory holding the data"
	render mount
	if [ "${BENCH_KEEP:-0}" = 1 ] || [ "${OK[keepfs]}" = 0 ]; then say "scratch kept in $MW"; else wipe "$MW"; fi
}

# ---------------------------------------------------------------- section: versions

# json_len: the length of the JSON array on stdin.
json_len() { python3 -c 'import json, sys; print(len(json.load(sys.stdin)))'; }

# list_step COLUMN KEY DIR: ls -lR and find over DIR, first (cold for the tool) and second (warm).
list_step() {
	local c=$1 k=$2 dir=$3
	[ "${OK[$c]}" = 1 ] || return 0
	[ -d "$dir" ] || { warn "$dir missing"; OK[$c]=0; errors=$((errors + 1)); return 0; }
	mstep "$c" "${k}lslr1" bash -c 'ls -lR "$1" >/dev/null' _ "$dir"
	mstep "$c" "${k}lslr" bash -c 'ls -lR "$1" >/dev/null' _ "$dir"
	mstep "$c" "${k}find1" bash -c 'find "$1" >/dev/null' _ "$dir"
	mstep "$c" "${k}find" bash -c 'find "$1" >/dev/null' _ "$dir"
	ok "$c" || return 0
	V[$c:${k}count]=$(find "$dir" 2>/dev/null | wc -l) || true
}

section_versions() {
	need_workload
	command -v restic >/dev/null || die "restic not installed (make bench installs it)"
	[ -x /usr/bin/time ] || die "GNU time (/usr/bin/time) not installed (make bench installs it)"
	local VW=$W/versions
	wipe "$VW"; mkdir -p "$VW" "$W/logs"
	VW=$(cd "$VW" && pwd -P)   # the mount table holds resolved paths
	ROWS=$W/rows-versions.tsv; : >"$ROWS"
	export KEEPFS_PASSWORD=bench-keepfs RESTIC_PASSWORD=bench-restic
	local D=$VW/data KM=$VW/kf-mnt RM=$VW/restic-mnt KR=$VW/kf-remote RR=$VW/restic-repo
	local KF=("$KEEPFS" --repo "file://$KR" --state "$VW/kf-state") RS=(restic --repo "$RR" --cache-dir "$VW/restic-cache")
	# columns: versions = keepfs .versions/latest, live = keepfs live tree, restic, native;
	# keepfs = the keepfs CLI (import/restore/prune)
	declare -A OK=([versions]=1 [live]=1 [restic]=1 [native]=1 [keepfs]=1) V=() DPID=()
	local mode=mount p

	say "== versions: data"
	cp -a "$PB/workload" "$D"
	mkdir -p "$KM" "$RM"
	if [ ! -x "$KEEPFS" ]; then
		warn "keepfs binary not found at $KEEPFS: run 'make build' first (or set KEEPFS)"
		OK[keepfs]=0 OK[versions]=0 OK[live]=0; errors=$((errors + 1))
	fi
	mstep keepfs init "${KF[@]}" init
	if [ "${OK[keepfs]}" = 1 ]; then
		MOUNTS+=("$KM")
		mstep keepfs mount timeout 120 "${KF[@]}" mount "$KM"
		if ok keepfs && is_mounted "$KM"; then
			DPID[keepfs]=$(keepfs_daemon_pid "$KM") && BGPIDS+=("${DPID[keepfs]}") || DPID[keepfs]=""
			mstep keepfs fill cp -a "$D/." "$KM/"
			NOSYNC=1 mstep keepfs fillsync timeout 600 "${KF[@]}" sync "$KM"
			ok keepfs || OK[versions]=0 OK[live]=0
		else
			warn "keepfs mount failed: .versions and live-tree columns are n/a; the keepfs repository is filled by import instead"
			OK[keepfs]=1 OK[versions]=0 OK[live]=0 mode=import
			mstep keepfs fill "${KF[@]}" import "$D"
		fi
	fi
	mstep restic init "${RS[@]}" init
	mstep restic fill "${RS[@]}" backup "$D"
	[ "${OK[restic]}" = 0 ] || V[restic:size1]=$(sizeof "$RR")
	[ "${OK[keepfs]}" = 0 ] || V[keepfs:size1]=$(sizeof "$KR")

	say "== versions: listings of small/"
	list_step native "" "$D/small"
	if [ "$mode" = mount ]; then
		list_step live "" "$KM/small"
		list_step versions "" "$KM/.versions/latest/small"
	fi
	if ok restic; then
		MOUNTS+=("$RM")
		"${RS[@]}" mount "$RM" >"$W/logs/restic.mount.log" 2>&1 </dev/null &
		p=$!; BGPIDS+=("$p")
		if wait_for 120 test -d "$RM/snapshots/latest$D/small"; then
			list_step restic "" "$RM/snapshots/latest$D/small"
		else
			warn "restic mount did not show snapshots/latest (see $W/logs/restic.mount.log)"; OK[restic]=0; errors=$((errors + 1))
		fi
		unmount_fuse "$RM" "$p"
		OK[restic]=1   # only the listing can have failed here; restore and prune still run
	fi

	say "== versions: restore of the workload"
	[ "$mode" != mount ] || ! is_mounted "$KM" || mstep keepfs unmount timeout 600 "${KF[@]}" unmount "$KM" || unmount_fuse "$KM"
	unmount_fuse "$KM" "${DPID[keepfs]:-}"
	mstep keepfs restore "${KF[@]}" restore / --to "$VW/restore-keepfs"
	mstep restic restore "${RS[@]}" restore latest --target "$VW/restore-restic"
	if [ "${OK[keepfs]}" = 1 ]; then
		verify_restore versions.keepfs-restore "$D" "$VW/restore-keepfs"; V[keepfs:verify]=$VERIFY_MSG
	fi
	if [ "${OK[restic]}" = 1 ]; then
		verify_restore versions.restic-restore "$D" "$VW/restore-restic$D"; V[restic:verify]=$VERIFY_MSG
	fi
	rm -rf "$VW/restore-keepfs" "$VW/restore-restic"

	say "== versions: delete half of the files, snapshot, forget the old snapshot, prune"
	(cd "$D" && find . -type f | LC_ALL=C sort | awk 'NR % 2' | sed 's|^\./||') >"$VW/half.txt"
	V[keepfs:delbytes]=$(cd "$D" && tr '\n' '\0' <"$VW/half.txt" | du -cb --files0-from=- | tail -n 1 | cut -f1)
	V[restic:delbytes]=${V[keepfs:delbytes]}
	if [ "$mode" = mount ] && [ "${OK[keepfs]}" = 1 ]; then
		mstep keepfs remount timeout 120 "${KF[@]}" mount "$KM"
		if ok keepfs && is_mounted "$KM"; then
			DPID[keepfs]=$(keepfs_daemon_pid "$KM") && BGPIDS+=("${DPID[keepfs]}") || DPID[keepfs]=""
			mstep keepfs delete bash -c 'cd "$1" && xargs -d "\n" rm -f <"$2"' _ "$KM" "$VW/half.txt"
			NOSYNC=1 mstep keepfs delsync timeout 600 "${KF[@]}" sync "$KM"
			mstep keepfs unmount2 timeout 600 "${KF[@]}" unmount "$KM"
			unmount_fuse "$KM" "${DPID[keepfs]:-}"
		fi
	fi
	(cd "$D" && xargs -d '\n' rm -f <"$VW/half.txt")
	[ "$mode" != import ] || mstep keepfs delsync "${KF[@]}" import "$D"
	mstep restic delsync "${RS[@]}" backup "$D"
	[ "${OK[keepfs]}" = 0 ] || V[keepfs:size2]=$(sizeof "$KR")
	[ "${OK[restic]}" = 0 ] || V[restic:size2]=$(sizeof "$RR")
	# keep only the newest snapshot: --hourly 1 keeps the newest of the current hour (like restic's
	# --keep-last 1); "--keep-within 1s" would keep no snapshot at all once a second has passed
	mstep keepfs retention "${KF[@]}" retention set --hourly 1
	ok keepfs && V[keepfs:snaps2]=$("${KF[@]}" snapshots --json 2>/dev/null | json_len) || true
	ok restic && V[restic:snaps2]=$("${RS[@]}" snapshots --json 2>/dev/null | json_len) || true
	mstep keepfs prune "${KF[@]}" prune
	mstep restic prune "${RS[@]}" forget --keep-last 1 --prune
	[ "${OK[keepfs]}" = 0 ] || V[keepfs:size3]=$(sizeof "$KR")
	[ "${OK[restic]}" = 0 ] || V[restic:size3]=$(sizeof "$RR")
	ok keepfs && V[keepfs:snaps3]=$("${KF[@]}" snapshots --json 2>/dev/null | json_len) || true
	ok restic && V[restic:snaps3]=$("${RS[@]}" snapshots --json 2>/dev/null | json_len) || true
	if [ "${OK[keepfs]}" = 1 ]; then mstep keepfs check "${KF[@]}" check; fi

	machine_meta
	meta restic "$(restic version | head -n 1)"
	meta method "the workload copied to $D; keepfs: init, mount, cp -a into the mount, sync (or import when the mount is unavailable); restic: init, backup. Listings of small/ (20,000 files): first run, then second (warm); restic through 'restic mount' (snapshots/latest). Restore: keepfs restore / --to DIR (unmounted) vs restic restore latest. Prune: delete every second file (sorted) through the mount, sync, unmount; retention set --hourly 1 (keeps the newest), prune; restic: backup, forget --keep-last 1 --prune"
	meta mode "$mode"
	printf '#table\t%s\n' "listing small/ (20,000 files): keepfs .versions/latest vs the live tree" >>"$ROWS"
	put_row "metric" "unit" "target" ".versions/latest" "live tree" "restic mount" "native"
	row() { put_row "$1" "$2" "$3" "${V[versions:$4]:-}" "${V[live:$4]:-}" "${V[restic:$4]:-}" "${V[native:$4]:-}"; }
	row "ls -lR, first run" s "" lslr1
	row "ls -lR, warm" s "<=3.0" lslr
	row "find, first run" s "" find1
	row "find, warm" s "" find
	row "entries seen" "" "" count
	unset -f row
	[ "$mode" = mount ] || note "keepfs mount unavailable: .versions and live-tree figures are n/a"
	# the issue-18 targets: each keepfs tree against the native disk (warm)
	printf '#table\t%s\n' "listing small/ (20,000 files), warm: keepfs trees vs native disk" >>"$ROWS"
	put_row "metric" "unit" "target" "keepfs" "native"
	put_row ".versions/latest: ls -lR" s "<=1.5" "${V[versions:lslr]:-}" "${V[native:lslr]:-}"
	put_row ".versions/latest: find" s "<=1.5" "${V[versions:find]:-}" "${V[native:find]:-}"
	put_row "live tree: ls -lR" s "<=1.5" "${V[live:lslr]:-}" "${V[native:lslr]:-}"
	put_row "live tree: find" s "<=1.5" "${V[live:find]:-}" "${V[native:find]:-}"
	printf '#table\t%s\n' "restore and prune: keepfs vs restic" >>"$ROWS"
	put_row "metric" "unit" "target" "keepfs" "restic"
	row() { put_row "$1" "$2" "$3" "${V[keepfs:$4]:-}" "${V[restic:$4]:-}"; }
	if [ "$mode" = mount ]; then row "fill: cp -a into the mount (keepfs) / backup (restic)" s "" fill
	else row "fill: import (keepfs, no mount) / backup (restic)" s "" fill; fi
	row "sync after cp" s "" fillsync
	row "repository size" bytes "" size1
	row "restore latest of the workload" s "" restore
	row "restore: peak RSS" KiB "" restore_rss
	put_row "restored tree equals source" "" "" "${V[keepfs:verify]:-}" "${V[restic:verify]:-}"
	row "bytes of the deleted half of the files" bytes "" delbytes
	row "delete the half through the mount" s "" delete
	row "snapshot after the delete (sync / backup)" s "" delsync
	row "snapshots before prune" "" "" snaps2
	row "repository size before prune" bytes "" size2
	row "prune (keepfs prune / restic forget --prune)" s "" prune
	row "prune: peak RSS" KiB "" prune_rss
	row "repository size after prune" bytes "" size3
	row "snapshots after prune (keeping the newest)" "" "" snaps3
	row "check after prune" s "" check
	unset -f row
	note "workload: $(sizeof "$PB/workload") bytes in $(wc -l <"$PB/workload-manifest.sha256") files"
	for p in versions live keepfs restic; do [ "${OK[$p]}" = 1 ] || note "$p: failed or unavailable (n/a cells); see $W/logs"; done
	render versions
	if [ "${BENCH_KEEP:-0}" = 1 ] || [ "${OK[keepfs]}${OK[versions]}" != 11 ]; then say "scratch kept in $VW"; else wipe "$VW"; fi
}

# ---------------------------------------------------------------- section: erase

# Erase of one 4 MiB file from a repository holding the workload and 20 snapshots of it
# (issue 15): keepfs erase against restic rewrite --exclude + restic prune --max-unused 0.
# Bytes rewritten: what the erase wrote into new pack objects.
section_erase() {
	need_workload
	command -v restic >/dev/null || die "restic not installed (make bench installs it)"
	local EW=$W/erase
	wipe "$EW"; mkdir -p "$EW" "$W/logs"
	ROWS=$W/rows-erase.tsv; : >"$ROWS"
	export KEEPFS_PASSWORD=bench-keepfs RESTIC_PASSWORD=bench-restic
	local D=$EW/data KR=$EW/kf-remote RR=$EW/restic-repo n=${BENCH_ERASE_SNAPSHOTS:-20} i
	local KF=("$KEEPFS" --repo "file://$KR" --state "$EW/kf-state") RS=(restic --repo "$RR" --cache-dir "$EW/restic-cache")
	declare -A OK=([keepfs]=1 [restic]=1) V=()
	say "== erase: $n snapshots of the workload plus a 4 MiB file"
	cp -a "$PB/workload" "$D"
	head -c 4194304 /dev/urandom >"$D/victim.bin"
	mstep keepfs init "${KF[@]}" init
	mstep restic init "${RS[@]}" init
	for i in $(seq 1 "$n"); do
		printf 'snapshot %d\n' "$i" >"$D/counter.txt"
		NOSYNC=1 mstep keepfs "import$i" "${KF[@]}" import "$D"
		NOSYNC=1 mstep restic "backup$i" "${RS[@]}" backup --quiet "$D"
	done
	V[keepfs:size1]=$(sizeof "$KR"); V[restic:size1]=$(sizeof "$RR")
	touch "$EW/marker"; sleep 1
	mstep keepfs erase "${KF[@]}" erase /victim.bin
	V[keepfs:rewritten]=$(find "$KR" -type f -newer "$EW/marker" -path '*/packs/*' -printf '%s\n' | awk '{ s += $1 } END { printf "%.0f\n", s }')
	V[keepfs:size2]=$(sizeof "$KR")
	touch "$EW/marker"; sleep 1
	mstep restic rewrite "${RS[@]}" rewrite --forget --exclude "$D/victim.bin"
	mstep restic prune "${RS[@]}" prune --max-unused 0
	V[restic:erase]=$(add "${V[restic:rewrite]:-0}" "${V[restic:prune]:-0}")
	V[restic:rewritten]=$(find "$RR" -type f -newer "$EW/marker" -path '*/data/*' -printf '%s\n' | awk '{ s += $1 } END { printf "%.0f\n", s }')
	V[restic:size2]=$(sizeof "$RR")
	machine_meta
	meta restic "$(restic version | head -n 1)"
	meta method "$n imports/backups of the workload plus a 4 MiB random file, then erase it: keepfs erase /victim.bin; restic rewrite --forget --exclude + prune --max-unused 0"
	put_row "metric" "unit" "target" "keepfs" "restic"
	row() { put_row "$1" "$2" "$3" "${V[keepfs:$4]:-}" "${V[restic:$4]:-}"; }
	row "erase one 4 MiB file: wall" s "<=0.5" erase
	row "erase: peak RSS" KiB "" erase_rss
	row "bytes written into new packs" bytes "" rewritten
	row "repository size before" bytes "" size1
	row "repository size after" bytes "" size2
	unset -f row
	for i in keepfs restic; do [ "${OK[$i]}" = 1 ] || note "$i failed: see $W/logs"; done
	render erase
	if [ "${BENCH_KEEP:-0}" = 1 ]; then say "scratch kept in $EW"; else wipe "$EW"; fi
}

# ---------------------------------------------------------------- section: s3

WEED=${WEED:-$ROOT/bin/tools/weed}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start_seaweed DIR: one master, one volume server, a filer and the S3 gateway on free ports
# of 127.0.0.1, data in DIR; S3 accepts only requests signed with S3_ACCESS/S3_SECRET.
# Sets S3_ENDPOINT. stop_seaweed kills them (SIGKILL: the filer lingers after SIGTERM); so
# does the exit trap, as a fallback.
WEED_PIDS=()
start_seaweed() {
	local d=$1 mp mg vp vg fp fg sp sg p
	mkdir -p "$d/master" "$d/volume" "$d/filer"
	S3_ACCESS=bench$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
	S3_SECRET=$(od -An -N20 -tx1 /dev/urandom | tr -d ' \n')
	printf '{"identities":[{"name":"bench","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","List","Tagging","Write"]}]}\n' \
		"$S3_ACCESS" "$S3_SECRET" >"$d/s3.json"
	mp=$(free_port) mg=$(free_port) vp=$(free_port) vg=$(free_port) fp=$(free_port) fg=$(free_port) sp=$(free_port) sg=$(free_port)
	local ip=(-ip=127.0.0.1 -ip.bind=127.0.0.1)
	(cd "$d" && exec "$WEED" -logdir="$W/logs" master "${ip[@]}" -port="$mp" -port.grpc="$mg" -mdir="$d/master" \
		-volumeSizeLimitMB=1024 -telemetry=false) >"$W/logs/weed-master.log" 2>&1 </dev/null &
	WEED_PIDS+=("$!")
	wait_for 60 port_open "$mp" || { warn "weed master did not start (see $W/logs/weed-master.log)"; return 1; }
	(cd "$d" && exec "$WEED" -logdir="$W/logs" volume "${ip[@]}" -port="$vp" -port.grpc="$vg" -dir="$d/volume" -max=0 \
		-master="127.0.0.1:$mp.$mg" -preStopSeconds=0) >"$W/logs/weed-volume.log" 2>&1 </dev/null &
	WEED_PIDS+=("$!")
	(cd "$d" && exec "$WEED" -logdir="$W/logs" filer "${ip[@]}" -port="$fp" -port.grpc="$fg" -master="127.0.0.1:$mp.$mg" \
		-defaultStoreDir="$d/filer" -localSocket="$d/filer.sock") >"$W/logs/weed-filer.log" 2>&1 </dev/null &
	WEED_PIDS+=("$!")
	wait_for 60 port_open "$fp" || { warn "weed filer did not start (see $W/logs/weed-filer.log)"; return 1; }
	(cd "$d" && exec "$WEED" -logdir="$W/logs" s3 "${ip[@]}" -port="$sp" -port.grpc="$sg" -filer="127.0.0.1:$fp.$fg" \
		-config="$d/s3.json" -localSocket="$d/s3.sock" -port.iceberg=0 -port.lance=0) >"$W/logs/weed-s3.log" 2>&1 </dev/null &
	WEED_PIDS+=("$!")
	wait_for 60 port_open "$sp" || { warn "weed s3 did not start (see $W/logs/weed-s3.log)"; return 1; }
	S3_ENDPOINT=127.0.0.1:$sp
}

# weed_cpu: CPU seconds (user+sys) the SeaweedFS processes have used so far. Both tools share
# the store and the machine's cores, so an import's wall is bounded below by (its own CPU +
# the store's) / cores: the section prints the store's share so the ratio can be read
# against that bound.
weed_cpu() {
	local p t=0 hz
	hz=$(getconf CLK_TCK)
	for p in ${WEED_PIDS[@]+"${WEED_PIDS[@]}"}; do
		# fields 14 and 15 of /proc/PID/stat (utime, stime), counted after the ")" that
		# ends the command name, which may itself hold spaces
		t=$((t + $(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{ print $12 + $13 }' || echo 0)))
	done
	awk -v t="$t" -v hz="$hz" 'BEGIN { printf "%.2f", t / hz }'
}

stop_seaweed() {
	local p
	for p in ${WEED_PIDS[@]+"${WEED_PIDS[@]}"}; do kill -KILL "$p" 2>/dev/null || true; done
	for p in ${WEED_PIDS[@]+"${WEED_PIDS[@]}"}; do wait "$p" 2>/dev/null || true; done
	WEED_PIDS=()
}

section_s3() {
	need_workload
	command -v restic >/dev/null || die "restic not installed (make bench installs it)"
	[ -x /usr/bin/time ] || die "GNU time (/usr/bin/time) not installed (make bench installs it)"
	[ -x "$WEED" ] || die "no SeaweedFS at $WEED: run 'make weed' (or set WEED)"
	[ -x "$KEEPFS" ] || die "keepfs binary not found at $KEEPFS: run 'make build' first (or set KEEPFS)"
	local SW=$W/s3 D KS MNT dpid rss
	wipe "$SW"; mkdir -p "$SW" "$W/logs"
	ROWS=$W/rows-s3.tsv; : >"$ROWS"
	declare -A OK=([keepfs]=1 [restic]=1) V=()
	start_seaweed "$SW/weed" || die "SeaweedFS did not start"
	export AWS_ACCESS_KEY_ID=$S3_ACCESS AWS_SECRET_ACCESS_KEY=$S3_SECRET
	export KEEPFS_PASSWORD=bench-keepfs RESTIC_PASSWORD=bench-restic
	D=$SW/data KS=$SW/keepfs-state MNT=$SW/mnt
	cp -a "$PB/workload" "$D"
	local KF=("$KEEPFS" --repo "s3+http://$S3_ENDPOINT/keepfs/repo" --state "$KS")
	local RS=(restic --repo "s3:http://$S3_ENDPOINT/restic/repo" --cache-dir "$SW/restic-cache")
	# The store is up once it takes a bucket and an object: keepfs init does both.
	wait_for 90 "${KF[@]}" init --s3-create-bucket >/dev/null || die "keepfs init on SeaweedFS failed (see $W/logs/weed-*.log)"
	rec() { V[$1:$2_wall]=$T_wall; V[$1:$2_cpu]=$T_cpu; V[$1:$2_rss]=$T_rss; }
	# recstore TOOL OP BEFORE: the store's CPU since BEFORE, and the bound (TOOL's CPU + the
	# store's) / cores on OP's wall.
	recstore() {
		V[$1:$2_store_cpu]=$(awk -v a="$(weed_cpu)" -v b="$3" 'BEGIN { printf "%.2f", a - b }')
		V[$1:$2_bound]=$(awk -v c="${V[$1:$2_cpu]}" -v s="${V[$1:$2_store_cpu]}" -v n="$(nproc)" 'BEGIN { printf "%.2f", (c + s) / n }')
	}
	local w0
	say "== s3: keepfs and restic on SeaweedFS at $S3_ENDPOINT"
	measure s3.restic.init "${RS[@]}" init && rec restic init || OK[restic]=0
	w0=$(weed_cpu)
	measure s3.keepfs.import "${KF[@]}" import "$D" && rec keepfs import && recstore keepfs import "$w0" || OK[keepfs]=0
	w0=$(weed_cpu)
	[ "${OK[restic]}" = 0 ] || { measure s3.restic.import "${RS[@]}" backup "$D" && rec restic import && recstore restic import "$w0" || OK[restic]=0; }
	# Restores in the order keepfs, restic, restic, keepfs, each into a fresh directory and
	# none deleted in between: on ext4 without a journal a create right after a big deletion
	# costs ~300 µs (the inode allocator skips recently freed inodes), so whichever tool
	# restored first paid for the deletions before it (docs/architecture.md). Each tool gets
	# one early and one late turn; the table shows the mean wall and CPU, the larger RSS.
	recmean() {
		V[$1:$2_wall]=$(awk -v a="${V[$1:$2_wall]}" -v b="$T_wall" 'BEGIN { printf "%.2f", (a + b) / 2 }')
		V[$1:$2_cpu]=$(awk -v a="${V[$1:$2_cpu]}" -v b="$T_cpu" 'BEGIN { printf "%.2f", (a + b) / 2 }')
		V[$1:$2_rss]=$(max "${V[$1:$2_rss]}" "$T_rss")
	}
	restore_keepfs() { cold; measure "s3.keepfs.restore$1" "${KF[@]}" restore / --to "$SW/restore-keepfs$1"; }
	restore_restic() { cold; measure "s3.restic.restore$1" "${RS[@]}" restore latest --target "$SW/restore-restic$1"; }
	[ "${OK[keepfs]}" = 0 ] || { restore_keepfs 1 && rec keepfs restore || OK[keepfs]=0; }
	[ "${OK[restic]}" = 0 ] || { restore_restic 1 && rec restic restore || OK[restic]=0; }
	[ "${OK[restic]}" = 0 ] || { restore_restic 2 && recmean restic restore || OK[restic]=0; }
	[ "${OK[keepfs]}" = 0 ] || { restore_keepfs 2 && recmean keepfs restore || OK[keepfs]=0; }
	local vk="n/a" vr="n/a"
	if [ "${OK[keepfs]}" = 1 ]; then verify_restore s3.keepfs-restore "$D" "$SW/restore-keepfs2"; vk=$VERIFY_MSG; fi
	if [ "${OK[restic]}" = 1 ]; then verify_restore s3.restic-restore "$D" "$SW/restore-restic2$D"; vr=$VERIFY_MSG; fi
	rm -rf "$SW"/restore-keepfs? "$SW"/restore-restic?

	# cp -a + sync through a keepfs mount on the same store (a fresh repository prefix)
	local KM=("$KEEPFS" --repo "s3+http://$S3_ENDPOINT/keepfs/mounted" --state "$SW/mount-state")
	mkdir -p "$MNT"
	if "${KM[@]}" init >"$W/logs/s3.mount-init.log" 2>&1 && MOUNTS+=("$MNT") &&
		timeout 120 "${KM[@]}" mount "$MNT" >"$W/logs/s3.mount.log" 2>&1; then
		dpid=$(keepfs_daemon_pid "$MNT") || dpid=""
		[ -z "$dpid" ] || BGPIDS+=("$dpid")
		if measure s3.keepfs.cp bash -c 'cp -a "$1" "$2/data" && timeout 900 "${@:3}" sync "$2"' _ "$D" "$MNT" "${KM[@]}"; then
			V[keepfs:mount_wall]=$T_wall
			[ -z "$dpid" ] || { rss=$(peak_rss_kib "$dpid"); V[keepfs:daemon_rss]=${rss:-}; }
		else
			errors=$((errors + 1))
		fi
		timeout 600 "${KM[@]}" unmount "$MNT" >>"$W/logs/s3.mount.log" 2>&1 || unmount_fuse "$MNT" "$dpid"
	else
		warn "keepfs mount on S3 failed (see $W/logs/s3.mount.log)"; errors=$((errors + 1))
	fi
	for t in keepfs restic; do
		[ "${OK[$t]}" = 1 ] || { errors=$((errors + 1)); continue; }
		V[$t:peak_rss]=$(max "${V[$t:import_rss]}" "${V[$t:restore_rss]}")
	done

	machine_meta
	meta restic "$(restic version | head -n 1)"
	meta seaweedfs "$("$WEED" version 2>/dev/null | head -n 1)"
	meta method "one round on a fresh copy of the workload; one SeaweedFS (master, volume, filer, s3 gateway) on 127.0.0.1 shared by both tools, S3 over plain HTTP with signed requests; keepfs: init --s3-create-bucket, import DIR, restore / --to DIR; restic: init, backup DIR, restore latest --target DIR; restores in the order keepfs, restic, restic, keepfs into fresh directories, the mean of each tool's two (peak RSS: the larger); then cp -a DIR + keepfs sync through a keepfs mount on a fresh repository in the same store; every restore after sync and drop_caches"
	put_row "metric" "unit" "target" "keepfs" "restic"
	row() { put_row "$1" "$2" "$3" "${V[keepfs:$4]:-}" "${V[restic:$4]:-}"; }
	row "import / backup to S3: wall" s "<=0.5" import_wall
	row "import / backup: CPU user+sys" s "" import_cpu
	row "import / backup: SeaweedFS CPU meanwhile" s "" import_store_cpu
	row "import / backup: (own + SeaweedFS CPU) / cores" s "" import_bound
	row "import / backup: peak RSS" KiB "" import_rss
	row "restore from S3: wall" s "<=0.8" restore_wall
	row "restore: CPU user+sys" s "" restore_cpu
	row "restore: peak RSS" KiB "" restore_rss
	row "peak RSS of import and restore" KiB "<=1.0" peak_rss
	row "cp -a + sync through the mount: wall" s "" mount_wall
	row "mount daemon peak RSS" KiB "" daemon_rss
	put_row "restored tree equals source" "" "" "$vk" "$vr"
	unset -f row rec
	note "workload: $(sizeof "$PB/workload") bytes in $(wc -l <"$PB/workload-manifest.sha256") files"
	note "the tools and SeaweedFS share $(nproc) cores: an import's wall cannot be below (own + SeaweedFS CPU) / cores (the bound row); on a machine doing nothing else both walls sit near their bounds, so the bound row's ratio is the import ratio with other load taken out"
	render s3
	stop_seaweed
	if [ "${BENCH_KEEP:-0}" = 1 ] || [ "${OK[keepfs]}${OK[restic]}" != 11 ]; then say "scratch kept in $SW"; else wipe "$SW"; fi
}

# ---------------------------------------------------------------- section: scale

# Each half lives in its own file and renders its own table (results-scale-index,
# results-scale-tree); a half that fails counts as an error, the other still runs.
section_scale() {
	# shellcheck source=/dev/null
	source "$HERE/scale_index.sh"
	# shellcheck source=/dev/null
	source "$HERE/scale_tree.sh"
	scale_index || { warn "scale_index failed"; errors=$((errors + 1)); }
	scale_tree || { warn "scale_tree failed"; errors=$((errors + 1)); }
}

# ---------------------------------------------------------------- section: go

section_go() {
	local pkgs=${BENCH_GO_PKGS:-./repo/... ./remote/... ./cache/...} rc=0
	say "== go: go test -run '^\$' -bench . -benchtime 1x -benchmem $pkgs"
	mkdir -p "$PB"
	# shellcheck disable=SC2086 # pkgs is a list of patterns
	(cd "$ROOT" && "$GO" test -run '^$' -bench . -benchtime 1x -benchmem -timeout 10m $pkgs) 2>&1 \
		| tee "$PB/results-go.txt" || rc=$?
	[ "$rc" -eq 0 ] || { warn "go benchmarks failed"; errors=$((errors + 1)); }
	say "written: $PB/results-go.txt"
}

# ---------------------------------------------------------------- main

main() {
	local sections=("$@") s
	[ ${#sections[@]} -gt 0 ] || sections=(all)
	local expanded=()
	for s in "${sections[@]}"; do
		case $s in
		all) read -ra more <<<"$ALL_SECTIONS"; expanded+=("${more[@]}") ;;
		workload | repo | mount | versions | erase | go | s3 | scale) expanded+=("$s") ;;
		help | -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; return 0 ;;
		*) die "unknown section '$s' (sections: workload repo mount versions erase go s3 scale all)" ;;
		esac
	done
	local start=$SECONDS
	for s in "${expanded[@]}"; do "section_$s"; done
	say "bench: done in $((SECONDS - start)) s: ${expanded[*]}"
	if [ "$errors" -gt 0 ]; then warn "$errors step(s) failed"; exit 1; fi
	if [ "$missed" -gt 0 ] && [ "${BENCH_STRICT:-0}" = 1 ]; then warn "targets missed (BENCH_STRICT=1)"; exit 1; fi
}

main "$@"
