# shellcheck shell=bash
# Sourced by bench.sh (section scale). Defines scale_tree.
#
# Many files in the mount (issue 18): for each size in BENCH_SCALE_TREE_SIZES (default
# "10000 100000 1000000" files in 200 directories, empty, made by integration/bench/scalegen
# through the cache API, which stores the first snapshot and closes cleanly), mount, then:
# the first sync (the tree cache loaded from the state directory: nothing to walk), change one
# file + sync (wall time; trees uploaded and inodes read by the walk, from /metrics), the same
# after an unmount and a remount, and the daemon's peak RSS. Then ls -l of a directory of
# BENCH_SCALE_TREE_BIGDIR (default 100000) entries through a fresh mount vs the native disk,
# with a cold kernel cache (drop_caches, when root) and warm.
#
# Table columns: keepfs, and "bound", what the design allows (1 s; the trees on the changed
# path; the entries of the directories on it), so keepfs/bound <= 1 is a PASS.
scale_tree() {
	local sizes=${BENCH_SCALE_TREE_SIZES:-10000 100000 1000000} bigdir=${BENCH_SCALE_TREE_BIGDIR:-100000}
	local SW=$W/scale-tree gen=$W/bin/scalegen n port dpid rss
	say "== scale: tree (sizes: $sizes; ls -l of $bigdir entries)"
	[ -x "$KEEPFS" ] || { warn "keepfs binary not found at $KEEPFS: run 'make build' first (or set KEEPFS)"; return 1; }
	mkdir -p "$W/logs" "$W/bin"
	(cd "$ROOT" && "$GO" build -o "$gen" ./integration/bench/scalegen) >"$W/logs/scalegen.build.log" 2>&1 ||
		{ warn "cannot build scalegen (see $W/logs/scalegen.build.log)"; return 1; }
	wipe "$SW"; mkdir -p "$SW"
	ROWS=$SW/rows.tsv; : >"$ROWS"
	export KEEPFS_PASSWORD=bench-scale-tree
	local fails=0

	# metric NAME: the value of a counter at the mount's /metrics.
	metric() { curl -fsS "http://127.0.0.1:$port/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
	# st_mount: mount $MNT on $D with metrics at $port; sets dpid.
	st_mount() {
		port=$(free_port)
		MOUNTS+=("$MNT")
		timeout 300 "${K[@]}" mount --snapshot-interval 1h --metrics-listen "127.0.0.1:$port" "$MNT" \
			>>"$W/logs/scale-tree.$n.mount.log" 2>&1 || return 1
		dpid=$(keepfs_daemon_pid "$MNT") || dpid=""
		[ -z "$dpid" ] || BGPIDS+=("$dpid")
		wait_for 30 metric keepfs_snapshot_walk_inodes_total >/dev/null
	}
	st_unmount() { timeout 900 "${K[@]}" unmount "$MNT" >>"$W/logs/scale-tree.$n.mount.log" 2>&1 || unmount_fuse "$MNT" "$dpid"; }
	# st_change KEY FILE: echo into FILE + keepfs sync, timed; V[KEY], V[KEY_trees], V[KEY_inodes].
	st_change() {
		local key=$1 f=$2 t0 i0
		t0=$(metric keepfs_snapshot_trees_uploaded_total) i0=$(metric keepfs_snapshot_walk_inodes_total)
		if NOSYNC=1 measure "scale-tree.$n.$key" bash -c 'echo "changed $(date +%s.%N)" >"$1" && "${@:3}" sync "$2"' _ "$f" "$MNT" "${K[@]}"; then
			V[$key]=$T_wall
			V[${key}_trees]=$(($(metric keepfs_snapshot_trees_uploaded_total) - t0))
			V[${key}_inodes]=$(($(metric keepfs_snapshot_walk_inodes_total) - i0))
		else
			fails=$((fails + 1))
		fi
	}
	# st_sync KEY: keepfs sync with nothing changed; V[KEY_inodes], V[KEY].
	st_sync() {
		local key=$1 i0
		i0=$(metric keepfs_snapshot_walk_inodes_total)
		if NOSYNC=1 measure "scale-tree.$n.$key" "${K[@]}" sync "$MNT"; then
			V[$key]=$T_wall V[${key}_inodes]=$(($(metric keepfs_snapshot_walk_inodes_total) - i0))
		else
			fails=$((fails + 1))
		fi
	}

	for n in $sizes; do
		local D=$SW/$n MNT=$SW/$n/mnt per=$((n / 200))
		local K=("$KEEPFS" --repo "file://$D/repo" --state "$D/state")
		declare -A V=()
		mkdir -p "$MNT"
		say "-- $n files in 200 directories"
		if ! measure "scale-tree.$n.init" "${K[@]}" init ||
			! measure "scale-tree.$n.generate" "$gen" -repo "file://$D/repo" -state "$D/state" -files "$n" -dirs 200; then
			fails=$((fails + 1)); continue
		fi
		V[generate]=$T_wall
		if ! st_mount; then warn "scale-tree: mount of $n failed (see $W/logs/scale-tree.$n.mount.log)"; fails=$((fails + 1)); continue; fi
		st_sync first
		st_change change "$MNT/d0100/f$(printf %07d $((100 * per + per / 2)))"
		st_change change2 "$MNT/d0100/f$(printf %07d $((100 * per + per / 3)))"
		[ -z "$dpid" ] || V[rss]=$(peak_rss_kib "$dpid")
		st_unmount
		if st_mount; then
			st_sync rfirst
			st_change rchange "$MNT/d0150/f$(printf %07d $((150 * per + 1)))"
			[ -z "$dpid" ] || V[rrss]=$(peak_rss_kib "$dpid")
			st_unmount
		else
			warn "scale-tree: remount of $n failed"; fails=$((fails + 1))
		fi
		V[state]=$(sizeof "$D/state")
		put_row "#table" "$n files in 200 directories of $per"
		put_row metric unit target keepfs bound
		put_row "generate (cache API) + first snapshot" s "" "${V[generate]:-}" ""
		put_row "first sync after mount: inodes read" count "abs<1" "${V[first_inodes]:-}" 0
		put_row "change one file + sync" s "<=1" "${V[change]:-}" 1
		put_row "  trees uploaded" count "<=1" "${V[change_trees]:-}" 2
		put_row "  inodes read by the walk" count "<=1" "${V[change_inodes]:-}" $((200 + per))
		put_row "change another file + sync" s "<=1" "${V[change2]:-}" 1
		put_row "after remount: first sync, inodes read" count "abs<1" "${V[rfirst_inodes]:-}" 0
		put_row "after remount: change one file + sync" s "<=1" "${V[rchange]:-}" 1
		put_row "  trees uploaded" count "<=1" "${V[rchange_trees]:-}" 2
		put_row "  inodes read by the walk" count "<=1" "${V[rchange_inodes]:-}" $((200 + per))
		put_row "daemon peak RSS (first mount)" KiB "" "${V[rss]:-}" ""
		put_row "daemon peak RSS (after remount)" KiB "" "${V[rrss]:-}" ""
		put_row "state directory" bytes "" "${V[state]:-}" ""
		unset V
	done

	# ls -l of one big directory: keepfs (fresh mount) vs native disk.
	n=big
	local D=$SW/big MNT=$SW/big/mnt NAT=$SW/big/native
	local K=("$KEEPFS" --repo "file://$D/repo" --state "$D/state")
	declare -A V=()
	mkdir -p "$MNT" "$NAT"
	say "-- ls -l of $bigdir entries"
	drop() { [ "$(id -u)" != 0 ] || { sync; echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null || true; }
	lsl() { ls -l "$1" >/dev/null; }
	if measure scale-tree.big.init "${K[@]}" init &&
		measure scale-tree.big.generate "$gen" -repo "file://$D/repo" -state "$D/state" -files 0 -dirs 0 -bigdir "$bigdir" &&
		measure scale-tree.big.native "$gen" -native "$NAT" -bigdir "$bigdir" && st_mount; then
		drop; NOSYNC=1 time_fn scale-tree.big.ls-cold lsl "$MNT/big" && V[kcold]=$T_wall
		NOSYNC=1 time_fn scale-tree.big.ls-warm lsl "$MNT/big" && V[kwarm]=$T_wall
		[ -z "$dpid" ] || V[rss]=$(peak_rss_kib "$dpid")
		st_unmount
		drop; NOSYNC=1 time_fn scale-tree.big.native-cold lsl "$NAT/big" && V[ncold]=$T_wall
		NOSYNC=1 time_fn scale-tree.big.native-warm lsl "$NAT/big" && V[nwarm]=$T_wall
	else
		fails=$((fails + 1))
	fi
	put_row "#table" "ls -l of a directory of $bigdir entries"
	put_row metric unit target keepfs native
	put_row "ls -l, cold (fresh mount, caches dropped)" s "<=3" "${V[kcold]:-}" "${V[ncold]:-}"
	put_row "ls -l, warm (again)" s "<=3" "${V[kwarm]:-}" "${V[nwarm]:-}"
	put_row "daemon peak RSS" KiB "" "${V[rss]:-}" ""
	unset V
	unset -f metric st_mount st_unmount st_change st_sync drop lsl

	machine_meta
	meta method "scalegen creates empty files through the cache API and closes the state cleanly (first snapshot stored); keepfs mount --snapshot-interval 1h --metrics-listen; 'change one file + sync' is echo into an existing file then keepfs sync, timed together; trees uploaded and inodes read are deltas of keepfs_snapshot_trees_uploaded_total and keepfs_snapshot_walk_inodes_total"
	render scale-tree
	if [ "${BENCH_KEEP:-0}" = 1 ] || [ "$fails" -gt 0 ]; then say "scratch kept in $SW"; else wipe "$SW"; fi
	[ "$fails" -eq 0 ]
}
