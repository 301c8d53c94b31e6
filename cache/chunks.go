package cache

import (
	"context"
	"errors"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/keepfs/keepfs/cache/chunkstore"
	"github.com/keepfs/keepfs/cache/meta"
	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/pack"
)

// openChunkStore wires the chunk store (package chunkstore) to the state
// directory's transactions and the repository.
func (c *Cache) openChunkStore() (*chunkstore.Store, error) {
	return chunkstore.Open(chunkstore.Config{
		Dir:       c.opts.StateDir,
		Key:       c.r.Key(),
		NewAEAD:   stateAEAD,
		DB:        chunkDB{c},
		Repo:      chunkRepo{c},
		CacheSize: c.opts.CacheSize,
		MemSize:   memCacheSize,
		Log:       c.log,
	})
}

// chunkDB runs the chunk store's transactions as every other (see
// Cache.update, Cache.view).
type chunkDB struct{ c *Cache }

// View is Cache.view without its closure: a small file's commit asks the
// store a View, and a closure wrapping fn would cost it an allocation.
func (d chunkDB) View(fn func(chunkstore.Reader) error) error {
	db := d.c.dbAcquire()
	defer db.release()
	txn := db.db.NewTransaction(false)
	defer txn.Discard()
	return fn(readTxn{txn})
}

func (d chunkDB) Update(fn func(chunkstore.Txn) error) error {
	return d.c.update(func(t *wtxn) error { return fn(t) })
}

func (d chunkDB) Chunks(fn func(id crypto.ID, v []byte) error) error {
	return d.c.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: meta.ChunkPrefix(), PrefetchValues: true, PrefetchSize: 256})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			if err := item.Value(func(v []byte) error { return fn(meta.IDFromKey(item.Key()), v) }); err != nil {
				return err
			}
		}
		return nil
	})
}

// readTxn is a read-only Badger transaction as the chunk store reads it.
type readTxn struct{ *badger.Txn }

func (t readTxn) Has(key []byte) (bool, error)           { return txnHas(t.Txn, key) }
func (t readTxn) Value(key []byte) ([]byte, bool, error) { return txnValue(t.Txn, key) }

// Has and Value are what the chunk store reads in a write transaction.
func (t *wtxn) Has(key []byte) (bool, error)           { return txnHas(t.Txn, key) }
func (t *wtxn) Value(key []byte) ([]byte, bool, error) { return txnValue(t.Txn, key) }

// txnHas reports whether key has a value, copying nothing.
func txnHas(txn getter, key []byte) (bool, error) {
	_, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	return err == nil, err
}

// txnValue returns a copy of key's value; found is false if it is absent.
func txnValue(txn getter, key []byte) ([]byte, bool, error) {
	v, err := getValue(txn, key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, false, nil
	}
	return v, err == nil, err
}

// chunkRepo is the repository as the chunk store sees it.
type chunkRepo struct{ c *Cache }

func (r chunkRepo) Has(id crypto.ID) bool { return r.c.r.Index().Has(pack.Data, id) }

func (r chunkRepo) Load(ctx context.Context, id crypto.ID) ([]byte, error) {
	data, err := r.c.r.LoadBlob(ctx, pack.Data, id)
	if err != nil && !errors.Is(err, context.Canceled) {
		r.c.setRemoteHealth(err)
	}
	return data, err
}

// storeChunk keeps data under its id in the state directory.
func (c *Cache) storeChunk(id crypto.ID, data []byte, durable bool) error {
	c.sweep.note1(id)
	return c.chunks.Put([]chunkstore.Chunk{{ID: id, Data: data}}, durable)
}

// storeChunks is storeChunk for several chunks, and runs also in the same
// transaction: a small file's commit is one write to Badger.
func (c *Cache) storeChunks(chunks []chunkstore.Chunk, durable bool, also func(*wtxn) error) error {
	c.sweep.note(chunks)
	b, err := c.chunks.Prepare(chunks, durable)
	if err != nil {
		return err
	}
	err = c.update(func(txn *wtxn) error {
		if err := b.Write(txn); err != nil {
			return err
		}
		if also != nil {
			return also(txn)
		}
		return nil
	})
	b.Finish(err)
	if err != nil {
		return fmt.Errorf("store chunks: %w", err)
	}
	return nil
}

// queuedChunks returns the chunks in the durable upload queue.
func (c *Cache) queuedChunks() (map[crypto.ID]bool, error) {
	queued := map[crypto.ID]bool{}
	err := c.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: meta.QueuePrefix()})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			queued[meta.IDFromKey(it.Item().Key())] = true
		}
		return nil
	})
	return queued, err
}

// scanChunks builds the chunk store's LRU and the upload queue from the
// state directory.
func (c *Cache) scanChunks() error {
	queued, err := c.queuedChunks()
	if err != nil {
		return err
	}
	if err := c.sweepDeadChunks(queued); err != nil {
		return fmt.Errorf("drop chunks no file names: %w", err)
	}
	if !c.cleanStart {
		n, err := c.chunks.DropStrayFiles()
		if err != nil {
			return fmt.Errorf("drop chunk files no record names: %w", err)
		}
		if n > 0 {
			c.log.Info("removed chunk files a killed session left without a record", "files", n)
		}
	}
	restore, err := c.chunks.Scan(queued)
	c.up.Restore(restore)
	return err
}

// chunkStorer stores the large chunks of one commit on a goroutine of its
// own, so that hashing, sealing and writing them overlap with reading and
// cutting the next: a big file's commit then uses two cores, not one. At
// most two chunks wait in copies of their own (the chunker reuses its
// buffer), which bounds the memory to twice the largest chunk.
type chunkStorer struct {
	c       *Cache
	durable bool
	work    chan storeJob
	free    chan []byte
	done    chan struct{}
	ids     map[int]crypto.ID // chunk index in the commit's list → id
	err     error             // the first failure; set before done closes
	failed  chan struct{}     // closed at the first failure
}

type storeJob struct {
	idx  int
	data []byte
}

func (c *Cache) newChunkStorer(durable bool) *chunkStorer {
	s := &chunkStorer{
		c: c, durable: durable,
		work: make(chan storeJob, 1), free: make(chan []byte, 2),
		done: make(chan struct{}), failed: make(chan struct{}),
		ids: map[int]crypto.ID{},
	}
	s.free <- nil
	s.free <- nil
	go s.run()
	return s
}

func (s *chunkStorer) run() {
	defer close(s.done)
	for j := range s.work {
		if s.err == nil {
			id := s.c.r.Key().BlobID(j.data)
			if err := s.c.storeChunk(id, j.data, s.durable); err != nil {
				s.err = err
				close(s.failed)
			} else {
				s.ids[j.idx] = id
			}
		}
		s.free <- j.data
	}
}

// put hands over a copy of data, chunk idx of the commit's list. It fails
// once an earlier chunk could not be stored.
func (s *chunkStorer) put(idx int, data []byte) error {
	var buf []byte
	select {
	case buf = <-s.free:
	case <-s.failed:
		return s.wait()
	}
	buf = append(buf[:0], data...)
	select {
	case s.work <- storeJob{idx, buf}:
		return nil
	case <-s.failed:
		s.free <- buf
		return s.wait()
	}
}

// finish waits until what was handed over is stored and fills in the ids
// of those chunks in out; the storer is done after it.
func (s *chunkStorer) finish(out []meta.Chunk) error {
	if err := s.wait(); err != nil {
		return err
	}
	for i, id := range s.ids {
		out[i].ID = id
	}
	return nil
}

// wait lets the storer finish and returns its first failure.
func (s *chunkStorer) wait() error {
	select {
	case <-s.done:
	default:
		close(s.work)
		<-s.done
	}
	return s.err
}
