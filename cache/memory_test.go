package cache

import (
	"io"
	"log/slog"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/skl"

	"github.com/keepfs/keepfs/cache/indexstore"
)

// badgerHeap is the most Go heap a Badger database opened with o holds
// for its own buffers under a steady write load: memtable arenas (the one
// written, NumMemtables queued, one being flushed; each sized as Badger's
// arenaSize), the table being built from the flushed one, and the full
// block and index caches.
func badgerHeap(o badger.Options) int64 {
	batch := 15 * o.MemTableSize / 100
	arena := o.MemTableSize + batch + batch/int64(skl.MaxNodeSize)*int64(skl.MaxNodeSize)
	return int64(o.NumMemtables+2)*arena + o.MemTableSize + o.BlockCacheSize + o.IndexCacheSize
}

// daemonBufferBudget bounds what the daemon's two Badger databases and its
// chunk memory cache may hold together, within the daemon's memory limit
// (cmd/keepfs/daemon) beside the pack buffers, the chunker, the zstd
// encoders and FUSE request buffers. With the earlier options (8 MiB
// memtables, two queued, 16 + 8 MiB caches, a 16 MiB memory cache) it was
// 163 MiB, over the whole limit; with 8 MiB block caches, 91 MiB.
const daemonBufferBudget = 80 << 20

func TestDaemonBufferBudget(t *testing.T) {
	plaintextState(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	dir := t.TempDir()
	state := badgerHeap((&Cache{log: log}).badgerOptions(dir))
	index := badgerHeap(indexstore.BadgerOptions(dir, nil, log))
	total := state + index + memCacheSize
	t.Logf("state db %.1f MiB, index db %.1f MiB, chunk memory cache %d MiB", float64(state)/(1<<20), float64(index)/(1<<20), memCacheSize>>20)
	if total > daemonBufferBudget {
		t.Errorf("Badger and the chunk memory cache may hold %.1f MiB, over the budget of %d MiB", float64(total)/(1<<20), daemonBufferBudget>>20)
	}
}
