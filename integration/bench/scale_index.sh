# shellcheck shell=bash
# Sourced by bench.sh (section scale). Defines scale_index.
#
# Issue 18, the index half: synthetic repositories (integration/bench/synthrepo: real config,
# key slot, index segments and sparse packs with real headers, no blob data) of 10^4, 10^5,
# 10^6 and 5x10^6 blobs (BENCH_SCALE_BLOBS). For each: cold mount start (empty state
# directory: the local index is filled from the remote), warm mount start (state directory
# kept), the daemon's peak RSS (VmHWM) after each start. Then index objects in the remote
# after 10/100/1000 upload passes (BENCH_SCALE_PASSES; one pass = write a small file through
# the mount + keepfs sync) on the smallest repository.
#
# Targets: warm start and warm RSS at each size above 10^5 <= 1.2x those at 10^5; warm start
# <= 2 s; index objects <= segments before + new packs/1000 + 9 while mounted (compaction's
# bound), + 1 after unmount.
# Mount start is the wall time of `keepfs mount` (it returns once the mount serves).

scale_index() {
	local sizes=${BENCH_SCALE_BLOBS:-"10000 100000 1000000 5000000"}
	local passes=${BENCH_SCALE_PASSES:-"10 100 1000"}
	local SW=$W/scale-index n base=100000 gen
	export KEEPFS_PASSWORD=bench-keepfs
	ROWS=$W/rows-scale-index.tsv
	mkdir -p "$W/logs" "$SW"
	: >"$ROWS"
	if [ ! -x "$KEEPFS" ]; then
		warn "keepfs binary not found at $KEEPFS: run 'make build' first (or set KEEPFS)"
		return 1
	fi
	gen=$SW/synthrepo
	(cd "$ROOT" && $GO build -o "$gen" ./integration/bench/synthrepo) || { warn "cannot build synthrepo"; return 1; }
	machine_meta_scale
	declare -A WARM COLD RSSW RSSC
	for n in $sizes; do
		say "scale_index: $n blobs"
		scale_index_one "$n" || { warn "scale_index: $n blobs failed"; errors=$((errors + 1)); }
	done
	printf '#table\t%s\n' "mount start and daemon RSS against 10^5 blobs" >>"$ROWS"
	put_row metric unit target "at N" "at 10^5"
	for n in $sizes; do
		put_row "warm mount start, $n blobs" s "$([ "$n" -gt "$base" ] && echo '<=1.2')" "${WARM[$n]:-}" "${WARM[$base]:-}"
		put_row "warm daemon VmHWM, $n blobs" KiB "$([ "$n" -gt "$base" ] && echo '<=1.2')" "${RSSW[$n]:-}" "${RSSW[$base]:-}"
		put_row "cold mount start, $n blobs" s "" "${COLD[$n]:-}" "${COLD[$base]:-}"
		put_row "cold daemon VmHWM, $n blobs" KiB "" "${RSSC[$n]:-}" "${RSSC[$base]:-}"
	done
	printf '#table\t%s\n' "warm mount start, absolute" >>"$ROWS"
	put_row metric unit target "at N" "at 10^5"
	for n in $sizes; do
		put_row "warm mount start, $n blobs" s "abs<=2" "${WARM[$n]:-}" "${WARM[$base]:-}"
	done
	scale_index_passes "${sizes%% *}" "$passes"
	render scale-index
}

machine_meta_scale() {
	meta date "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
	meta machine "$(nproc) CPUs, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
	meta keepfs "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' (+ uncommitted changes)')"
	meta repository "synthetic: 64 blobs per pack, 1,000 packs per index segment, key slot argon2id t=1 8 MiB"
}

# scale_mount KEY REPO STATE MNT: time `keepfs mount`, leave it mounted; sets T_wall, T_rss
# (the daemon's VmHWM after start, KiB) and DPID_SCALE.
scale_mount() {
	local key=$1 repo=$2 state=$3 mnt=$4
	mkdir -p "$mnt"
	MOUNTS+=("$mnt")
	NOSYNC=1 time_fn "$key" timeout 3600 "$KEEPFS" --repo "file://$repo" --state "$state" mount "$mnt" || return 1
	DPID_SCALE=$(keepfs_daemon_pid "$mnt") || { warn "no daemon pid for $mnt"; T_rss=""; return 0; }
	T_rss=$(peak_rss_kib "$DPID_SCALE")
	say "    daemon VmHWM $((T_rss / 1024)) MiB"
}

scale_unmount() {
	"$KEEPFS" --repo "file://$1" --state "$2" unmount "$3" >>"$W/logs/scale-unmount.log" 2>&1 || true
	unmount_fuse "$3" "${DPID_SCALE:-}"
}

scale_index_one() {
	local n=$1 repo=$SW/repo-$1 state=$SW/state-$1 mnt=$SW/mnt-$1
	wipe "$repo"; wipe "$state"
	measure "synth-$n" "$gen" -repo "$repo" -blobs "$n" || return 1
	scale_mount "cold-$n" "$repo" "$state" "$mnt" || return 1
	COLD[$n]=$T_wall RSSC[$n]=$T_rss
	scale_unmount "$repo" "$state" "$mnt"
	# warm: twice, the better one (the first may still find the page cache cold)
	scale_mount "warm-$n" "$repo" "$state" "$mnt" || return 1
	WARM[$n]=$T_wall RSSW[$n]=$T_rss
	scale_unmount "$repo" "$state" "$mnt"
	scale_mount "warm2-$n" "$repo" "$state" "$mnt" || return 1
	if awk -v a="$T_wall" -v b="${WARM[$n]}" 'BEGIN { exit !(a < b) }'; then WARM[$n]=$T_wall; fi
	RSSW[$n]=$(max "$T_rss" "${RSSW[$n]}")
	scale_unmount "$repo" "$state" "$mnt"
	[ "${BENCH_KEEP:-0}" = 1 ] || { wipe "$state"; [ "$n" = "${sizes%% *}" ] || wipe "$repo"; }
}

# scale_index_passes N "P1 P2 ...": upload passes on the N-blob repository; index objects
# after each count of passes, against the bound.
scale_index_passes() {
	local n=$1 repo=$SW/repo-$1 state=$SW/state-$1-passes mnt=$SW/mnt-$1 p done=0 want before packs0 packs objs
	[ -d "$repo" ] || { warn "no $n-blob repository for the upload passes"; return 1; }
	before=$(find "$repo/index" -type f | wc -l)
	packs0=$(find "$repo/packs" -type f | wc -l)
	wipe "$state"
	scale_mount "passes-mount" "$repo" "$state" "$mnt" || return 1
	printf '#table\t%s\n' "index objects in the remote after upload passes ($n blobs, $before segments before)" >>"$ROWS"
	put_row metric unit target objects bound
	for p in $passes; do
		while [ "$done" -lt "$p" ]; do
			head -c 4096 /dev/urandom >"$mnt/pass-$done" &&
				"$KEEPFS" --repo "file://$repo" --state "$state" sync "$mnt" >>"$W/logs/scale-passes.log" 2>&1 ||
				{ warn "upload pass $done failed (see $W/logs/scale-passes.log)"; break 2; }
			done=$((done + 1))
		done
		objs=$(find "$repo/index" -type f | wc -l)
		packs=$(find "$repo/packs" -type f | wc -l)
		want=$((before + (packs - packs0) / 1000 + 9))
		say "    after $p passes: $objs index objects ($((packs - packs0)) new packs; bound $want)"
		put_row "index objects after $p passes" objects "abs<=$want" "$objs" "$want"
	done
	scale_unmount "$repo" "$state" "$mnt"
	objs=$(find "$repo/index" -type f | wc -l)
	packs=$(find "$repo/packs" -type f | wc -l)
	want=$((before + (packs - packs0) / 1000 + 1))
	put_row "index objects after unmount" objects "abs<=$want" "$objs" "$want"
	note "unmount merges the session's own segments: one per 1,000 packs plus one (MergeOwnIndex)"
}
