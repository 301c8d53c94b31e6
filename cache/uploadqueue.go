package cache

import (
	"fmt"

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
	want, err := q.c.chunks.Sizes(ids)
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		if _, ok := want[id]; !ok {
			// The uploader dropped it as missing since the walk.
			return nil, fmt.Errorf("chunk %s: %w", id.Short(), errChunkVanished)
		}
	}
	return want, nil
}

func (q queueChunks) WithChunk(id crypto.ID, fn func([]byte) error) error {
	return q.c.chunks.WithChunk(id, fn)
}

func (q queueChunks) Uploaded(ids []crypto.ID, sizes []int) { q.c.chunks.Uploaded(ids, sizes) }

func (q queueChunks) Lost(ids []crypto.ID) { q.c.chunks.Forgotten(ids) }
