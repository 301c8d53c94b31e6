#!/usr/bin/env bash
# keepfs benchmark harness (what `make bench` runs).
#
# Usage: integration/bench/bench.sh [SECTION...]        default: all
#   workload  generate the ~1 GiB workload into $PB, unless it is there and verifies
#   repo      keepfs init/import/restore vs restic init/backup/restore on that workload
#   go        go test -bench (one iteration each) over $BENCH_GO_PKGS
#   all       workload repo go   (go is left out with BENCH_GO=0)
#
# Environment:
#   PB           workload and results directory          (default /tmp/keepfs-bench)
#   KEEPFS       keepfs binary                           (default <repo>/bin/keepfs)
#   BENCH_WORK   scratch directory, wiped at the start   (default $PB/run)
#   BENCH_ROUNDS repo rounds; the table shows medians      (default 3)
#   BENCH_KEEP=1 keep the scratch directory afterwards (last round's repositories, logs)
#   BENCH_STRICT=1  exit non-zero when a target is missed (default: only on errors)
#   BENCH_GO=0   skip the go section in "all";  BENCH_GO_PKGS (default "./repo/... ./remote/...")
#   BENCH_SHARED directory holding make-workload.sh      (default <repo>/../shared/bench)
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
ALL_SECTIONS="workload repo"
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
	sync
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

sizeof() { du -sb "$1" | cut -f1; }
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
		keepfs:restore) step keepfs restore "${KF[@]}" restore / --to "$RW/restore-keepfs" ;;
		keepfs:check) step keepfs check "${KF[@]}" check --read-data ;;
		restic:init) step restic init "${RS[@]}" init ;;
		restic:import) step restic import "${RS[@]}" backup "$D" ;;
		restic:incr) step restic incr "${RS[@]}" backup "$D" ;;
		restic:restore) step restic restore "${RS[@]}" restore latest --target "$RW/restore-restic" ;;
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

	rm -rf "$W"; mkdir -p "$W/logs"
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
	meta method "median of $ROUNDS rounds (tool order alternating), each on a fresh copy of the workload with fresh repositories; keepfs: init, import DIR, import DIR after the mutation, restore / --to DIR; restic: init, backup DIR, backup DIR, restore latest --target DIR (repository format 2, compression auto, fresh cache dir)"
	put_row "metric" "unit" "target" "keepfs" "restic"
	row() { put_row "$1" "$2" "$3" "${V[keepfs:$4]:-}" "${V[restic:$4]:-}"; }
	row "initial backup (init + import): wall" s "<=0.5" initial_wall
	row "initial backup: CPU user+sys" s "" initial_cpu
	row "initial backup: peak RSS" KiB "" initial_rss
	row "init alone: wall" s "" init_wall
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
		rm -rf "$W"
	fi
}

# ---------------------------------------------------------------- section: go

section_go() {
	local pkgs=${BENCH_GO_PKGS:-./repo/... ./remote/...} rc=0
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
		workload | repo | go) expanded+=("$s") ;;
		help | -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; return 0 ;;
		*) die "unknown section '$s' (sections: workload repo go all)" ;;
		esac
	done
	local start=$SECONDS
	for s in "${expanded[@]}"; do "section_$s"; done
	say "bench: done in $((SECONDS - start)) s: ${expanded[*]}"
	if [ "$errors" -gt 0 ]; then warn "$errors step(s) failed"; exit 1; fi
	if [ "$missed" -gt 0 ] && [ "${BENCH_STRICT:-0}" = 1 ]; then warn "targets missed (BENCH_STRICT=1)"; exit 1; fi
}

main "$@"
