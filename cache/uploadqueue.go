package cache

import (
	"errors"
	"fmt"
	"sync"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/keepfs/keepfs/cache/meta"
	"github.com/keepfs/keepfs/cache/upload"
	"github.com/keepfs/keepfs/repo/crypto"
)

// newUploadQueue wires the upload queue (package upload) to the state
// directory, the chunk store and the repository. What stays here are the
// adapters that reach into the cache's own state (Badger transactions,
// the chunk store).
func (c *Cache) newUploadQueue() *upload.Queue {
	return upload.New(upload.Config{
		Store:   queueStore{c},
		Chunks:  queueChunks{c},
		Sink:    upload.RepoSink(c.r),
		Changes: func() uint64 { return c.snap.Changes() },
		Contact: c.setRemoteHealth,
		Now:     c.opts.Now,
		Log:     c.log,
	})
}

// queueStore runs the queue's transactions as every other update (see
// Cache.update).
type queueStore struct{ c *Cache }

func (s queueStore) Update(fn func(upload.Txn) error) error {
	return s.c.update(func(t *wtxn) error { return fn(t) })
}

// queueChunks is the chunk store as the upload queue sees it.
type queueChunks struct{ c *Cache }

func (q queueChunks) Sizes(ids []crypto.ID) (map[crypto.ID]int64, error) {
	want := make(map[crypto.ID]int64, len(ids))
	err := q.c.view(func(txn *badger.Txn) error {
		for _, id := range ids {
			v, err := getValue(txn, meta.ChunkKey(id))
			if errors.Is(err, badger.ErrKeyNotFound) {
				// The uploader dropped it as missing since the walk.
				return fmt.Errorf("chunk %s: %w", id.Short(), errChunkVanished)
			} else if err != nil {
				return err
			}
			want[id] = valueSize(v)
		}
		return nil
	})
	return want, err
}

// uploadBufs recycles the buffers the uploader reads large chunks into.
var uploadBufs = sync.Pool{New: func() any { return new([]byte) }}

func (q queueChunks) WithChunk(id crypto.ID, fn func([]byte) error) error {
	// Small ones are usually just committed and still in memory; large
	// ones are read into a recycled buffer, which the pack has copied from
	// once fn returns.
	if data := q.c.mem.get(id); data != nil {
		return fn(data)
	}
	bp := uploadBufs.Get().(*[]byte)
	defer uploadBufs.Put(bp)
	data, err := q.c.loadLocalInto(id, *bp)
	if err != nil {
		return err
	}
	if cap(data) > cap(*bp) && len(data) > segmentMax {
		*bp = data[:0]
	}
	return fn(data)
}

func (q queueChunks) Uploaded(ids []crypto.ID, sizes []int) {
	for i, id := range ids {
		q.c.lru.add(id, int64(sizes[i]))
	}
	q.c.evict()
}

func (q queueChunks) Lost(ids []crypto.ID) {
	for _, id := range ids {
		q.c.files.fds.drop(id)
	}
}
