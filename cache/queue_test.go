package cache

import (
	"context"
	"encoding/binary"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/keepfs/keepfs/cache/meta"
	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo/crypto"
)

// A cp -a of a large tree queues more chunks than one Badger transaction
// takes; the upload queue must still record them all, upload and retire
// them, and drop them again, through the state directory's real
// transactions.
func TestSetQueueBeyondOneTransaction(t *testing.T) {
	ctx := context.Background()
	c := openCache(t, newRepo(t, remote.NewMem()), t.TempDir())
	defer c.Close(ctx)
	const n = 30000
	ids := make([]crypto.ID, n)
	for i := range ids {
		ids[i] = c.r.Key().BlobID(binary.BigEndian.AppendUint64(nil, uint64(i)))
	}
	for i := 0; i < n; i += 2000 {
		err := c.update(func(txn *wtxn) error {
			for _, id := range ids[i:min(i+2000, n)] {
				if err := txn.Set(meta.ChunkKey(id), append(binary.BigEndian.AppendUint64(nil, 3), "abc"...)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	queued := func() int {
		var k int
		err := c.view(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: meta.QueuePrefix()})
			defer it.Close()
			for it.Rewind(); it.Valid(); it.Next() {
				k++
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	// A change count no walk matches keeps the background uploader off
	// these made-up chunks.
	seq := c.snap.Changes() + 1000
	if err := c.up.Set(ids, seq); err != nil {
		t.Fatalf("queueing %d chunks: %v", n, err)
	}
	inMem, bytes, _ := c.up.State()
	if k := queued(); k != n || inMem != n || bytes != 3*n {
		t.Fatalf("queued %d keys, %d in memory, %d bytes; want %d, %d, %d", k, inMem, bytes, n, n, 3*n)
	}
	// One upload pass takes them all (90 KB): retiring them must not be
	// one transaction either, or every pass fails and the queue never drains.
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := c.up.Drain(dctx); err != nil {
		t.Fatalf("draining %d chunks: %v", n, err)
	}
	inMem, bytes, _ = c.up.State()
	if k := queued(); k != 0 || inMem != 0 || bytes != 0 {
		t.Fatalf("after draining: %d keys, %d in memory, %d bytes", k, inMem, bytes)
	}
	if err := c.up.Set(ids[:10], seq); err != nil {
		t.Fatal(err)
	}
	inMem, bytes, _ = c.up.State()
	if k := queued(); k != 10 || inMem != 10 || bytes != 30 {
		t.Fatalf("after queueing again: %d keys, %d in memory, %d bytes", k, inMem, bytes)
	}
}
