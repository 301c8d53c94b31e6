package cache

import (
	"bytes"
	"container/list"
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/keepfs/keepfs/cache/meta"
	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/pack"
)

// newChunk is a chunk to keep in the state directory.
type newChunk struct {
	id   crypto.ID
	data []byte
	// owned: nobody changes data after storeChunks, which may keep it
	// for the uploader without a copy.
	owned bool
}

// storeChunk keeps data under its id in the state directory. It never
// queues the chunk for upload: only a snapshot walk that includes a file
// naming it does (DESIGN invariant 7).
func (c *Cache) storeChunk(id crypto.ID, data []byte, durable bool) error {
	return c.storeChunks([]newChunk{{id: id, data: data}}, durable, nil)
}

// storeChunks is storeChunk for several chunks, and runs also (if set) in
// the same transaction: a small file's commit is one write to Badger.
func (c *Cache) storeChunks(chunks []newChunk, durable bool, also func(*wtxn) error) error {
	indexed := make([]bool, len(chunks))
	present := make([]bool, len(chunks))
	if err := c.view(func(txn *badger.Txn) error {
		for i, ch := range chunks {
			indexed[i] = c.r.Index().Has(pack.Data, ch.id)
			_, err := txn.Get(meta.ChunkKey(ch.id))
			if err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
				return err
			}
			present[i] = err == nil
		}
		return nil
	}); err != nil {
		return fmt.Errorf("store chunks: %w", err)
	}
	// Records and files first: a c key never names missing data. vals[i]
	// is chunk i's c value when it has to be set.
	vals := make([][]byte, len(chunks))
	var appended []segLoc // every segment record written, used or not
	used := map[segLoc]bool{}
	defer func() {
		for _, l := range appended {
			if !used[l] {
				c.segs.dropLive(l)
			}
		}
	}()
	place := func(ch newChunk) ([]byte, error) {
		switch {
		case len(ch.data) <= inlineMax:
			return chunkValue(ch.data), nil
		case len(ch.data) <= segmentMax:
			l, err := c.segs.append(ch.id, ch.data, durable)
			if err != nil {
				return nil, err
			}
			appended = append(appended, l)
			if !durable {
				c.unsynced.add(ch.id, int64(l.seg))
			}
			return segValue(len(ch.data), l), nil
		}
		if err := c.files.write(ch.id, ch.data, durable); err != nil {
			return nil, err
		}
		if !durable {
			c.unsynced.add(ch.id, fileChunk)
		}
		return chunkValue(ch.data), nil
	}
	for i, ch := range chunks {
		if !present[i] {
			v, err := place(ch)
			if err != nil {
				return err
			}
			vals[i] = v
		}
	}
	var set [][]byte
	var fresh []int
	err := c.update(func(txn *wtxn) error {
		set, fresh = set[:0], fresh[:0]
		for i, ch := range chunks {
			_, err := txn.Get(meta.ChunkKey(ch.id))
			switch {
			case errors.Is(err, badger.ErrKeyNotFound):
				v := vals[i]
				if v == nil {
					// Evicted since we looked: its data may be gone too.
					if v, err = place(ch); err != nil {
						return err
					}
				}
				if err := txn.Set(meta.ChunkKey(ch.id), v); err != nil {
					return err
				}
				set = append(set, v)
				fresh = append(fresh, i)
			case err != nil:
				return err
			}
		}
		if also != nil {
			return also(txn)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store chunks: %w", err)
	}
	for _, v := range set {
		if l, ok := segLocOf(v); ok {
			used[l] = true
		}
	}
	c.chunksStored.Add(int64(len(fresh)))
	// The next snapshot uploads new chunks of included files: spare it
	// reading small ones back, one system call each. Large chunks it
	// reads from their files in a few calls; copying them here would cost
	// the writer and push the small ones out of memory.
	for _, i := range fresh {
		if ch := chunks[i]; !indexed[i] && len(ch.data) <= segmentMax {
			if !ch.owned {
				ch.data = bytes.Clone(ch.data)
			}
			c.mem.add(ch.id, ch.data)
		}
	}
	for i, ch := range chunks {
		if indexed[i] {
			c.lru.add(ch.id, int64(len(ch.data)))
		}
	}
	c.evict()
	return nil
}

// getChunk returns a chunk's plaintext from memory, the state directory or
// the remote, in that order. The caller must not modify it.
func (c *Cache) getChunk(ctx context.Context, id crypto.ID) ([]byte, error) {
	if b := c.mem.get(id); b != nil {
		c.stats.chunkHits.Add(1)
		c.lru.touch(id)
		return b, nil
	}
	data, err := c.loadLocal(id)
	if err == nil {
		c.stats.chunkHits.Add(1)
		c.lru.touch(id)
		c.mem.add(id, data)
		return data, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read chunk %s: %w", id.Short(), err)
	}
	c.stats.chunkMisses.Add(1)
	data, err = c.r.LoadBlob(ctx, pack.Data, id)
	if err != nil {
		if !errors.Is(err, context.Canceled) {
			c.setRemoteHealth(err)
		}
		return nil, fmt.Errorf("fetch chunk: %w", err)
	}
	// Kept as clean cache (it is indexed, so the LRU may evict it again).
	if err := c.storeChunks([]newChunk{{id: id, data: data}}, false, nil); err != nil {
		c.log.Warn("cannot cache a fetched chunk", "err", err)
	}
	c.mem.add(id, data)
	return data, nil
}

// readChunkInto fills dst with the chunk's bytes from offset off, from
// memory or the state directory, reading as little as the chunk's storage
// allows; false if the chunk is not kept locally (the caller fetches it
// whole). A chunk file's blocks are decrypted straight into dst.
func (c *Cache) readChunkInto(id crypto.ID, off uint64, dst []byte) (bool, error) {
	if b := c.mem.get(id); b != nil {
		c.lru.touch(id)
		if off+uint64(len(dst)) > uint64(len(b)) {
			return false, fmt.Errorf("chunk %s: %d bytes, read to %d: %w", id.Short(), len(b), off+uint64(len(dst)), errCorruptState)
		}
		copy(dst, b[off:])
		return true, nil
	}
	bp := readBufs.Get().(*[]byte)
	defer readBufs.Put(bp)
	if need := c.files.readScratch(len(dst)); cap(*bp) < need {
		*bp = make([]byte, 0, need)
	}
	_, err := c.loadLocalRangeTo(id, int64(off), int64(len(dst)), *bp, dst)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read chunk %s: %w", id.Short(), err)
	}
	c.lru.touch(id)
	return true, nil
}

// isLocal reports whether the state directory holds the chunk.
func (c *Cache) isLocal(id crypto.ID) bool {
	if oc := c.files.fds.get(id); oc != nil {
		c.files.fds.put(oc)
		return true
	}
	err := c.view(func(txn *badger.Txn) error {
		_, err := txn.Get(meta.ChunkKey(id))
		return err
	})
	return err == nil
}

// prefetch fetches a chunk the state directory lacks from the remote in the
// background, for a sequential reader. Local chunks are left alone: the
// reader decrypts just the blocks it asks for, and the kernel reads their
// files ahead (readAheadLocked).
func (c *Cache) prefetch(id crypto.ID) {
	if c.mem.has(id) || !c.mem.startFetch(id) {
		return
	}
	// Close waits for it: it reads the state directory with keys that
	// are zeroed once the cache is closed.
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer c.mem.endFetch(id)
		if c.isLocal(id) {
			return
		}
		ctx, cancel := context.WithTimeout(c.bg, time.Minute)
		defer cancel()
		_, _ = c.getChunk(ctx, id)
	}()
}

// evict drops least-recently-used clean chunks beyond CacheSize. Only
// chunks the repository index holds are ever in the LRU, so dirty and
// not-yet-uploaded data is never evicted.
func (c *Cache) evict() {
	// While a prune or erase rewrites the index, a blob the index holds
	// now may be gone in a moment, and the local copy with it would be
	// the only one: evict nothing then (the next commit or upload evicts).
	if !c.pruneMu.TryRLock() {
		return
	}
	defer c.pruneMu.RUnlock()
	for c.lru.bytes() > c.opts.CacheSize {
		id, ok := c.lru.oldest()
		if !ok {
			return
		}
		if !c.r.Index().Has(pack.Data, id) {
			continue // pruned meanwhile: keep it, it may be the only copy
		}
		var v []byte
		err := c.update(func(txn *wtxn) error {
			var err error
			if v, err = getValue(txn, meta.ChunkKey(id)); err != nil {
				return err
			}
			return txn.Delete(meta.ChunkKey(id))
		})
		if errors.Is(err, badger.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			c.log.Warn("cannot evict a chunk", "err", err)
			return
		}
		if l, ok := segLocOf(v); ok {
			c.segs.dropLive(l)
		} else if err := c.files.remove(id); err != nil {
			c.log.Warn("cannot remove an evicted chunk's file", "err", err)
		}
		c.mem.drop(id)
	}
}

// scanChunks builds the LRU and the upload queue from the state directory.
func (c *Cache) scanChunks() error {
	restore := map[crypto.ID]int64{}
	defer func() { c.up.Restore(restore) }()
	return c.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: meta.ChunkPrefix(), PrefetchValues: true, PrefetchSize: 256})
		defer it.Close()
		queued := map[crypto.ID]bool{}
		qit := txn.NewIterator(badger.IteratorOptions{Prefix: meta.QueuePrefix()})
		for qit.Rewind(); qit.Valid(); qit.Next() {
			queued[meta.IDFromKey(qit.Item().Key())] = true
		}
		qit.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			id := meta.IDFromKey(it.Item().Key())
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			size := valueSize(v)
			if l, ok := segLocOf(v); ok {
				c.segs.addLive(l)
			}
			if queued[id] {
				restore[id] = size
				continue
			}
			if c.r.Index().Has(pack.Data, id) {
				c.lru.add(id, size)
			}
		}
		return nil
	})
}

// segmentBudget is how many dead bytes segments may hold.
func (c *Cache) segmentBudget() int64 { return c.opts.CacheSize / 4 }

// chunkLRU tracks clean cached chunks by recency.
type chunkLRU struct {
	mu    sync.Mutex
	ll    *list.List
	items map[crypto.ID]*list.Element
	total int64
}

type lruItem struct {
	id   crypto.ID
	size int64
}

func newChunkLRU() *chunkLRU {
	return &chunkLRU{ll: list.New(), items: map[crypto.ID]*list.Element{}}
}

func (l *chunkLRU) add(id crypto.ID, size int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.items[id]; ok {
		l.ll.MoveToFront(e)
		return
	}
	l.items[id] = l.ll.PushFront(&lruItem{id, size})
	l.total += size
}

func (l *chunkLRU) touch(id crypto.ID) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.items[id]; ok {
		l.ll.MoveToFront(e)
	}
}

func (l *chunkLRU) oldest() (crypto.ID, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.ll.Back()
	if e == nil {
		return crypto.ID{}, false
	}
	it := e.Value.(*lruItem)
	l.ll.Remove(e)
	delete(l.items, it.id)
	l.total -= it.size
	return it.id, true
}

func (l *chunkLRU) bytes() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// memCache keeps recently used chunk plaintexts in memory, bounded in
// bytes: a 4 KiB read should not decrypt a 1 MiB value from Badger.
type memCache struct {
	mu       sync.Mutex
	max      int64
	total    int64
	ll       *list.List
	items    map[crypto.ID]*list.Element
	fetching map[crypto.ID]bool
}

type memItem struct {
	id   crypto.ID
	data []byte
}

func newMemCache(max int64) *memCache {
	return &memCache{max: max, ll: list.New(), items: map[crypto.ID]*list.Element{}, fetching: map[crypto.ID]bool{}}
}

func (m *memCache) get(id crypto.ID) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.items[id]; ok {
		m.ll.MoveToFront(e)
		return e.Value.(*memItem).data
	}
	return nil
}

func (m *memCache) has(id crypto.ID) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.items[id]
	return ok
}

func (m *memCache) add(id crypto.ID, data []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.items[id]; ok {
		return
	}
	m.items[id] = m.ll.PushFront(&memItem{id, data})
	m.total += int64(len(data))
	for m.total > m.max && m.ll.Len() > 1 {
		e := m.ll.Back()
		it := e.Value.(*memItem)
		m.ll.Remove(e)
		delete(m.items, it.id)
		m.total -= int64(len(it.data))
	}
}

func (m *memCache) drop(id crypto.ID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.items[id]; ok {
		m.ll.Remove(e)
		delete(m.items, id)
		m.total -= int64(len(e.Value.(*memItem).data))
	}
}

// startFetch claims a background fetch of id; false if one is running.
func (m *memCache) startFetch(id crypto.ID) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fetching[id] || len(m.fetching) >= 4 {
		return false
	}
	m.fetching[id] = true
	return true
}

func (m *memCache) endFetch(id crypto.ID) {
	m.mu.Lock()
	delete(m.fetching, id)
	m.mu.Unlock()
}

// compactSegments moves the live records of mostly dead segments to the
// current one, so that evicted small chunks give their space back: at most
// a quarter of the cache size stays dead in segments.
func (c *Cache) compactSegments() error {
	sparse := c.segs.sparse(c.segmentBudget())
	if len(sparse) == 0 {
		return nil
	}
	from := map[uint32]bool{}
	for _, n := range sparse {
		from[n] = true
	}
	type rec struct {
		id crypto.ID
		v  []byte
	}
	var recs []rec
	err := c.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: meta.ChunkPrefix(), PrefetchValues: true, PrefetchSize: 256})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			if l, ok := segLocOf(v); ok && from[l.seg] {
				recs = append(recs, rec{meta.IDFromKey(it.Item().Key()), v})
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	// Copy every record first, then make the copies durable with one sync
	// per segment written, and only then point the chunks at them: the old
	// segments go once nothing names them, and a power loss must not take
	// a chunk that was only ever in the state directory.
	type move struct {
		r      rec
		old    segLoc
		nl     segLoc
		length int
	}
	var moves []move
	into := map[uint32]bool{}
	for _, r := range recs {
		if c.bg.Err() != nil {
			break
		}
		old, _ := segLocOf(r.v)
		data, err := c.segs.read(r.id, old)
		if err == nil {
			var nl segLoc
			if nl, err = c.segs.append(r.id, data, false); err == nil {
				moves = append(moves, move{r, old, nl, len(data)})
				into[nl.seg] = true
				continue
			}
		}
		for _, m := range moves {
			c.segs.dropLive(m.nl)
		}
		return err
	}
	for n := range into {
		if err := c.segs.sync(n); err != nil {
			for _, m := range moves {
				c.segs.dropLive(m.nl)
			}
			return err
		}
	}
	for i, m := range moves {
		r, old, nl := m.r, m.old, m.nl
		moved := false
		err = c.update(func(txn *wtxn) error {
			moved = false
			v, err := getValue(txn, meta.ChunkKey(r.id))
			if errors.Is(err, badger.ErrKeyNotFound) || err == nil && !bytes.Equal(v, r.v) {
				return nil // evicted or rewritten meanwhile
			}
			if err != nil {
				return err
			}
			moved = true
			return txn.Set(meta.ChunkKey(r.id), segValue(m.length, nl))
		})
		if err != nil || !moved {
			c.segs.dropLive(nl)
		}
		if err != nil {
			for _, m := range moves[i+1:] {
				c.segs.dropLive(m.nl)
			}
			return err
		}
		if moved {
			c.segs.dropLive(old)
		}
	}
	return nil
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
