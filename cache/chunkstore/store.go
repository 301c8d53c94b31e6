package chunkstore

import (
	"bytes"
	"context"
	"crypto/cipher"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keepfs/keepfs/cache/meta"
	"github.com/keepfs/keepfs/repo/crypto"
)

// ErrCorrupt means the state directory does not hold what its records say:
// a chunk's bytes are missing, truncated or do not authenticate.
var ErrCorrupt = errors.New("local state is inconsistent")

// Reader is what the store needs of a state-directory read transaction.
type Reader interface {
	// Has reports whether key has a value; it copies nothing (a commit
	// asks it of every chunk it stores).
	Has(key []byte) (bool, error)
	// Value returns a copy of key's value; found is false if there is none.
	Value(key []byte) (v []byte, found bool, err error)
}

// Txn is a state-directory write transaction. The caller owns it: the
// store writes its chunk records into it beside the caller's own records,
// so both commit together or not at all.
type Txn interface {
	Reader
	Set(key, value []byte) error
	Delete(key []byte) error
}

// DB runs transactions on the state directory.
type DB interface {
	View(fn func(Reader) error) error
	// Update runs fn in one write transaction; fn may run more than once
	// (a conflict retries it), so it must have no other effects.
	Update(fn func(Txn) error) error
	// Chunks calls fn with the id and value of every chunk record, in one
	// read transaction; v is valid only during the call.
	Chunks(fn func(id crypto.ID, v []byte) error) error
}

// Repository is what the store needs of the repository.
type Repository interface {
	// Has reports whether the repository's index holds data blob id: only
	// such chunks are clean, so evictable.
	Has(id crypto.ID) bool
	// Load fetches data blob id's plaintext from the remote.
	Load(ctx context.Context, id crypto.ID) ([]byte, error)
}

// Config wires a Store to the rest of the mount.
type Config struct {
	// Dir is the state directory; the store keeps chunks/ and segments/.
	Dir string
	// Key derives the keys chunk files and segments are sealed with.
	Key *crypto.Key
	// NewAEAD makes the AEAD of chunk files and segments from a derived
	// key (default crypto.NewAEAD; tests may turn sealing off).
	NewAEAD func(key []byte) (cipher.AEAD, error)
	DB      DB
	Repo    Repository
	// CacheSize bounds clean chunk bytes (the LRU).
	CacheSize int64
	// MemSize bounds chunk plaintexts kept in memory.
	MemSize int64
	Log     *slog.Logger
}

// Chunk is a chunk to keep in the state directory.
type Chunk struct {
	ID   crypto.ID
	Data []byte
	// Owned: nobody changes Data after Put, which may keep it for the
	// uploader without a copy.
	Owned bool
}

// Store is the chunk store of a state directory: chunk records (c keys)
// with their bytes inline, in segments or in chunk files, the LRU of clean
// chunks and its eviction, the in-memory copies of recent chunks and the
// list of chunks not yet on the disk.
type Store struct {
	db       DB
	r        Repository
	log      *slog.Logger
	dir      string
	size     int64 // CacheSize
	files    *chunkFiles
	segs     *segments
	lru      *chunkLRU
	mem      *memCache
	unsynced unsynced // chunks stored by closes, not yet on the disk

	// evictMu is held for writing while the repository's index is
	// rewritten (PauseEviction), and tried for reading by eviction.
	evictMu sync.RWMutex

	// pinned holds the chunks uploaded since the last stored snapshot,
	// with their sizes: clean, but no snapshot names them yet, so a prune
	// run elsewhere while this client's lock lapsed may drop their blobs,
	// and the local copy would be the only one. Unpin makes them
	// evictable once a snapshot is stored.
	// pinOrder keeps upload order, so that Unpin hands them to the LRU
	// oldest first, as uploads did before pinning, not in map order.
	pinMu    sync.Mutex
	pinned   map[crypto.ID]int64
	pinOrder []crypto.ID

	fetches sync.WaitGroup // background fetches (Prefetch)

	stored       atomic.Int64 // chunks new to the state directory
	hits, misses atomic.Int64
	// unindexed counts the bytes of chunks stored outside their records
	// that the repository did not hold when stored: what may turn into
	// dead chunks (see Drop), for the mount to judge when to look.
	unindexed atomic.Int64
}

// Open opens the chunk files and segments of cfg.Dir. Scan then counts
// what the chunk records name.
func Open(cfg Config) (*Store, error) {
	if cfg.NewAEAD == nil {
		cfg.NewAEAD = crypto.NewAEAD
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	s := &Store{db: cfg.DB, r: cfg.Repo, log: cfg.Log, dir: cfg.Dir, size: cfg.CacheSize,
		lru: newChunkLRU(), mem: newMemCache(cfg.MemSize)}
	var err error
	if s.files, err = newChunkFiles(cfg.Dir, cfg.Key, cfg.NewAEAD); err != nil {
		return nil, err
	}
	if s.segs, err = newSegments(cfg.Dir, cfg.Key, cfg.NewAEAD); err != nil {
		return nil, err
	}
	return s, nil
}

// Close closes the files the store keeps open; later reads open them
// anew and do not keep them. Background fetches must be over (Wait).
func (s *Store) Close() {
	s.segs.close()
	s.files.fds.close()
}

// Wait waits for the background fetches Prefetch started.
func (s *Store) Wait() { s.fetches.Wait() }

// Stored counts chunks new to the state directory since Open.
func (s *Store) Stored() int64 { return s.stored.Load() }

// Unindexed counts the bytes of chunks stored outside their records since
// Open that the repository did not hold then.
func (s *Store) Unindexed() int64 { return s.unindexed.Load() }

// Counters returns chunk reads served locally (hits) and fetched from the
// remote (misses) since Open.
func (s *Store) Counters() (hits, misses int64) { return s.hits.Load(), s.misses.Load() }

// CleanBytes is how many bytes of clean (evictable) chunks are kept.
func (s *Store) CleanBytes() int64 { return s.lru.bytes() }

// Put keeps chunks in the state directory, each under its id, in a
// transaction of its own. It never queues a chunk for upload: only a
// snapshot walk that includes a file naming it does (DESIGN invariant 7).
func (s *Store) Put(chunks []Chunk, durable bool) error {
	b, err := s.Prepare(chunks, durable)
	if err != nil {
		return err
	}
	err = s.db.Update(b.Write)
	b.Finish(err)
	if err != nil {
		return fmt.Errorf("store chunks: %w", err)
	}
	return nil
}

// Batch is a Put whose records go into the caller's transaction: Prepare
// writes the bytes, Write (inside the caller's Update) the records, and
// Finish, once the transaction is over, what follows from its outcome. A
// small file's commit is then one write to Badger.
type Batch struct {
	s       *Store
	chunks  []Chunk
	durable bool
	indexed []bool
	vals    [][]byte // vals[i] is chunk i's c value when it has to be set
	// appended are every segment record written, used or not; Finish
	// uncounts those no record names.
	appended []segLoc
	set      [][]byte // values Write set
	fresh    []int    // chunks Write recorded
}

// Prepare writes the bytes of the chunks the state directory lacks (files
// and segments first: a chunk record never names missing data). The
// caller must call Write in a transaction and then Finish.
func (s *Store) Prepare(chunks []Chunk, durable bool) (*Batch, error) {
	flags := make([]bool, 2*len(chunks)) // one allocation for both
	b := &Batch{s: s, chunks: chunks, durable: durable,
		indexed: flags[:len(chunks)], vals: make([][]byte, len(chunks))}
	present := flags[len(chunks):]
	if err := s.db.View(func(txn Reader) error {
		for i, ch := range chunks {
			b.indexed[i] = s.r.Has(ch.ID)
			found, err := txn.Has(meta.ChunkKey(ch.ID))
			if err != nil {
				return err
			}
			present[i] = found
		}
		return nil
	}); err != nil {
		b.Finish(err)
		return nil, fmt.Errorf("store chunks: %w", err)
	}
	for i, ch := range chunks {
		if !present[i] {
			v, err := b.place(ch)
			if err != nil {
				b.Finish(err)
				return nil, err
			}
			b.vals[i] = v
		}
	}
	return b, nil
}

// place writes a chunk's bytes where its size says and returns its record.
func (b *Batch) place(ch Chunk) ([]byte, error) {
	s := b.s
	switch {
	case len(ch.Data) <= inlineMax:
		return chunkValue(ch.Data), nil
	case len(ch.Data) <= segmentMax:
		l, err := s.segs.append(ch.ID, ch.Data, b.durable)
		if err != nil {
			return nil, err
		}
		b.appended = append(b.appended, l)
		if !b.durable {
			s.unsynced.add(ch.ID, int64(l.seg))
		}
		return segValue(len(ch.Data), l), nil
	}
	if err := s.files.write(ch.ID, ch.Data, b.durable); err != nil {
		return nil, err
	}
	if !b.durable {
		s.unsynced.add(ch.ID, fileChunk)
	}
	return chunkValue(ch.Data), nil
}

// Write sets the records of the chunks txn does not hold yet. It may run
// more than once (a conflict retries the transaction).
func (b *Batch) Write(txn Txn) error {
	b.set, b.fresh = b.set[:0], b.fresh[:0]
	for i, ch := range b.chunks {
		found, err := txn.Has(meta.ChunkKey(ch.ID))
		if err != nil {
			return err
		}
		if found {
			continue
		}
		v := b.vals[i]
		if v == nil {
			// Evicted since Prepare looked: its data may be gone too.
			if v, err = b.place(ch); err != nil {
				return err
			}
		}
		if err := txn.Set(meta.ChunkKey(ch.ID), v); err != nil {
			return err
		}
		b.set = append(b.set, v)
		b.fresh = append(b.fresh, i)
	}
	return nil
}

// Finish ends the batch with the outcome of the transaction Write ran in
// (err nil: committed).
func (b *Batch) Finish(err error) {
	s := b.s
	used := map[segLoc]bool{}
	if err == nil {
		for _, v := range b.set {
			if l, ok := segLocOf(v); ok {
				used[l] = true
			}
		}
	}
	for _, l := range b.appended {
		if !used[l] {
			s.segs.dropLive(l)
		}
	}
	b.appended = nil
	if err != nil {
		return
	}
	s.stored.Add(int64(len(b.fresh)))
	for _, i := range b.fresh {
		if n := len(b.chunks[i].Data); !b.indexed[i] && n > inlineMax {
			s.unindexed.Add(int64(n))
		}
	}
	// The next snapshot uploads new chunks of included files: spare it
	// reading small ones back, one system call each. Large chunks it
	// reads from their files in a few calls; copying them here would cost
	// the writer and push the small ones out of memory.
	for _, i := range b.fresh {
		if ch := b.chunks[i]; !b.indexed[i] && len(ch.Data) <= segmentMax {
			if !ch.Owned {
				ch.Data = bytes.Clone(ch.Data)
			}
			s.mem.add(ch.ID, ch.Data)
		}
	}
	for i, ch := range b.chunks {
		if b.indexed[i] {
			s.lru.add(ch.ID, int64(len(ch.Data)))
		}
	}
	s.evict()
}

// Get returns a chunk's plaintext from memory, the state directory or
// the remote, in that order. The caller must not modify it.
func (s *Store) Get(ctx context.Context, id crypto.ID) ([]byte, error) {
	if b := s.mem.get(id); b != nil {
		s.hits.Add(1)
		s.lru.touch(id)
		return b, nil
	}
	data, err := s.Load(id)
	if err == nil {
		s.hits.Add(1)
		s.lru.touch(id)
		s.mem.add(id, data)
		return data, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read chunk %s: %w", id.Short(), err)
	}
	s.misses.Add(1)
	data, err = s.r.Load(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("fetch chunk: %w", err)
	}
	// Kept as clean cache (it is indexed, so the LRU may evict it again).
	if err := s.Put([]Chunk{{ID: id, Data: data}}, false); err != nil {
		s.log.Warn("cannot cache a fetched chunk", "err", err)
	}
	s.mem.add(id, data)
	return data, nil
}

// readBufs recycles the buffers random reads decrypt blocks into.
var readBufs = sync.Pool{New: func() any { return new([]byte) }}

// ReadInto fills dst with the chunk's bytes from offset off, from memory
// or the state directory, reading as little as the chunk's storage
// allows; false if the chunk is not kept locally (the caller fetches it
// whole, with Get). A chunk file's blocks are decrypted straight into
// dst. A chunk read here counts as a hit.
func (s *Store) ReadInto(id crypto.ID, off uint64, dst []byte) (bool, error) {
	if b := s.mem.get(id); b != nil {
		s.lru.touch(id)
		if off+uint64(len(dst)) > uint64(len(b)) {
			return false, fmt.Errorf("chunk %s: %d bytes, read to %d: %w", id.Short(), len(b), off+uint64(len(dst)), ErrCorrupt)
		}
		copy(dst, b[off:])
		s.hits.Add(1)
		return true, nil
	}
	bp := readBufs.Get().(*[]byte)
	defer readBufs.Put(bp)
	if need := s.files.readScratch(len(dst)); cap(*bp) < need {
		*bp = make([]byte, 0, need)
	}
	_, err := s.loadRangeTo(id, int64(off), int64(len(dst)), *bp, dst)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read chunk %s: %w", id.Short(), err)
	}
	s.lru.touch(id)
	s.hits.Add(1)
	return true, nil
}

// uploadBufs recycles the buffers the uploader reads large chunks into.
var uploadBufs = sync.Pool{New: func() any { return new([]byte) }}

// WithChunk calls fn with id's plaintext, valid only during the call; it
// fails with an error wrapping os.ErrNotExist without calling fn if the
// chunk is not kept locally.
func (s *Store) WithChunk(id crypto.ID, fn func([]byte) error) error {
	// Small ones are usually just committed and still in memory; large
	// ones are read into a recycled buffer, which fn is done with once it
	// returns.
	if data := s.mem.get(id); data != nil {
		return fn(data)
	}
	bp := uploadBufs.Get().(*[]byte)
	defer uploadBufs.Put(bp)
	data, err := s.loadRangeBuf(id, 0, -1, *bp)
	if err != nil {
		return err
	}
	if cap(data) > cap(*bp) && len(data) > segmentMax {
		*bp = data[:0]
	}
	return fn(data)
}

// Sizes returns the plaintext size of every chunk in ids as kept locally;
// missing ones are left out.
func (s *Store) Sizes(ids []crypto.ID) (map[crypto.ID]int64, error) {
	out := make(map[crypto.ID]int64, len(ids))
	err := s.db.View(func(txn Reader) error {
		for _, id := range ids {
			v, found, err := txn.Value(meta.ChunkKey(id))
			if err != nil {
				return err
			}
			if found {
				out[id] = valueSize(v)
			}
		}
		return nil
	})
	return out, err
}

// Uploaded hears of chunks the repository now holds (sizes[i] is
// ids[i]'s): they are clean, but stay pinned (not evictable) until Unpin,
// when a stored snapshot names them.
func (s *Store) Uploaded(ids []crypto.ID, sizes []int) {
	if len(ids) == 0 {
		return
	}
	s.pinMu.Lock()
	defer s.pinMu.Unlock()
	if s.pinned == nil {
		s.pinned = make(map[crypto.ID]int64, len(ids))
	}
	for i, id := range ids {
		if _, ok := s.pinned[id]; !ok {
			s.pinOrder = append(s.pinOrder, id)
		}
		s.pinned[id] = int64(sizes[i])
	}
}

// Unpin makes the chunks uploaded so far evictable: the caller has stored
// a snapshot while uploads were held, so each of them is named by it or
// by none of the live tree (garbage). A chunk whose blob a prune dropped
// meanwhile stays out of the LRU (evict skips it).
func (s *Store) Unpin() {
	s.pinMu.Lock()
	pinned, order := s.pinned, s.pinOrder
	s.pinned, s.pinOrder = nil, nil
	s.pinMu.Unlock()
	if len(pinned) == 0 {
		return
	}
	for _, id := range order {
		s.lru.add(id, pinned[id])
	}
	s.evict()
}

// Pinned is the number of chunks waiting for a snapshot to name them.
func (s *Store) Pinned() int {
	s.pinMu.Lock()
	defer s.pinMu.Unlock()
	return len(s.pinned)
}

// Forgotten hears of chunks whose records someone else deleted (the
// upload queue, of chunks it found missing): descriptors kept for their
// files are closed.
func (s *Store) Forgotten(ids []crypto.ID) {
	for _, id := range ids {
		s.files.fds.drop(id)
	}
}

// Has reports whether the state directory holds the chunk.
func (s *Store) Has(id crypto.ID) bool {
	if oc := s.files.fds.get(id); oc != nil {
		s.files.fds.put(oc)
		return true
	}
	found := false
	err := s.db.View(func(txn Reader) error {
		var err error
		found, err = txn.Has(meta.ChunkKey(id))
		return err
	})
	return err == nil && found
}

// Prefetch fetches a chunk the state directory lacks from the remote in the
// background, for a sequential reader, bounded by ctx; Wait waits for it.
// Local chunks are left alone: the reader decrypts just the blocks it asks
// for, and the kernel reads their files ahead (ReadAhead). It reports
// whether the chunk is seen to: false only when too many fetches run, so
// the caller may ask again later.
func (s *Store) Prefetch(ctx context.Context, id crypto.ID) bool {
	// A chunk whose file is open is local: no goroutine to find that out.
	if s.mem.has(id) || s.files.fds.has(id) {
		return true
	}
	started, running := s.mem.startFetch(id)
	if !started {
		return running
	}
	// Wait waits for it: it reads the state directory with keys that are
	// zeroed once the mount is closed.
	s.fetches.Add(1)
	go func() {
		defer s.fetches.Done()
		defer s.mem.endFetch(id)
		if s.Has(id) {
			return
		}
		ctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		_, _ = s.Get(ctx, id)
	}()
	return true
}

// ReadAhead starts the kernel reading the files of the chunks ids in the
// background; chunks kept elsewhere (or not at all) are skipped.
func (s *Store) ReadAhead(ids []crypto.ID) { s.files.readAhead(ids) }

// PauseEviction stops eviction until resume is called: while a prune or
// erase rewrites the index, a blob the index holds now may be gone in a
// moment, and the local copy with it would be the only one.
func (s *Store) PauseEviction() (resume func()) {
	s.evictMu.Lock()
	return s.evictMu.Unlock
}

// evict drops least-recently-used clean chunks beyond CacheSize. Only
// chunks the repository index holds are ever in the LRU, so dirty and
// not-yet-uploaded data is never evicted.
func (s *Store) evict() {
	// Paused: evict nothing now (the next commit or upload evicts).
	if !s.evictMu.TryRLock() {
		return
	}
	defer s.evictMu.RUnlock()
	for s.lru.bytes() > s.size {
		id, ok := s.lru.oldest()
		if !ok {
			return
		}
		if !s.r.Has(id) {
			continue // pruned meanwhile: keep it, it may be the only copy
		}
		var v []byte
		var found bool
		err := s.db.Update(func(txn Txn) error {
			var err error
			if v, found, err = txn.Value(meta.ChunkKey(id)); err != nil || !found {
				return err
			}
			return txn.Delete(meta.ChunkKey(id))
		})
		if err != nil {
			s.log.Warn("cannot evict a chunk", "err", err)
			return
		}
		if !found {
			continue
		}
		if l, ok := segLocOf(v); ok {
			s.segs.dropLive(l)
		} else if err := s.files.remove(id); err != nil {
			s.log.Warn("cannot remove an evicted chunk's file", "err", err)
		}
		s.mem.drop(id)
	}
}

// Scan builds the LRU and the segments' live counts from the chunk
// records and deletes segments nothing names. Queued chunks are not clean
// whatever the index says: their sizes are returned, for the upload queue.
func (s *Store) Scan(queued map[crypto.ID]bool) (map[crypto.ID]int64, error) {
	restore := map[crypto.ID]int64{}
	err := s.db.Chunks(func(id crypto.ID, v []byte) error {
		size := valueSize(v)
		if l, ok := segLocOf(v); ok {
			s.segs.addLive(l)
		}
		if queued[id] {
			restore[id] = size
			return nil
		}
		if s.r.Has(id) {
			s.lru.add(id, size)
		}
		return nil
	})
	if err != nil {
		return restore, err
	}
	s.segs.dropDead()
	return restore, nil
}

// Purge drops the local copy of id with its record, in a transaction that
// also runs also (if set); a segment record is wiped, not just
// uncounted, so erased bytes are gone from the file at once.
func (s *Store) Purge(id crypto.ID, also func(Txn) error) error {
	var v []byte
	err := s.db.Update(func(txn Txn) error {
		var err error
		if v, _, err = txn.Value(meta.ChunkKey(id)); err != nil {
			return err
		}
		if err := txn.Delete(meta.ChunkKey(id)); err != nil {
			return err
		}
		if also != nil {
			return also(txn)
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.mem.drop(id)
	if v == nil {
		return nil
	}
	if l, ok := segLocOf(v); ok {
		if err := s.segs.wipe(l); err != nil {
			return err
		}
		s.segs.dropLive(l)
	} else if inlineData(v) == nil {
		if err := s.files.remove(id); err != nil {
			return err
		}
	}
	return nil
}

// DropStrayFiles removes the chunk files no record names and returns how
// many. A file's bytes are written before its record and removed after
// it, so a process killed in between (a commit, an eviction, a drop)
// leaves a file that nothing names and nothing would ever remove. Open
// runs it after a session that did not close.
func (s *Store) DropStrayFiles() (int, error) {
	named := map[string]bool{}
	if err := s.db.Chunks(func(id crypto.ID, v []byte) error {
		if _, seg := segLocOf(v); !seg && inlineData(v) == nil {
			named[filepath.Base(s.files.path(id))] = true
		}
		return nil
	}); err != nil {
		return 0, err
	}
	dirs, err := os.ReadDir(s.files.dir)
	if err != nil {
		return 0, err
	}
	removed := 0
	for _, d := range dirs {
		if !d.IsDir() {
			continue
		}
		ents, err := os.ReadDir(filepath.Join(s.files.dir, d.Name()))
		if err != nil {
			return removed, err
		}
		for _, e := range ents {
			if named[e.Name()] {
				continue
			}
			if err := os.Remove(filepath.Join(s.files.dir, d.Name(), e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
				return removed, err
			}
			removed++
		}
	}
	return removed, nil
}

// Each calls fn with the id and size of every chunk kept.
func (s *Store) Each(fn func(id crypto.ID, size int64)) error {
	return s.db.Chunks(func(id crypto.ID, v []byte) error {
		fn(id, valueSize(v))
		return nil
	})
}

// Outside calls fn with the id and size of every chunk kept outside the
// chunk records (in a segment or a file of its own).
func (s *Store) Outside(fn func(id crypto.ID, size int64)) error {
	return s.db.Chunks(func(id crypto.ID, v []byte) error {
		if inlineData(v) == nil && valueSize(v) > 0 {
			fn(id, valueSize(v))
		}
		return nil
	})
}

// DropLost deletes the records of chunks whose bytes did not survive (a
// power loss), in batches, each transaction also running also (if set)
// for each id, and then their files. It runs before Scan: segments are not
// counted yet, and those it leaves unnamed go at Scan.
func (s *Store) DropLost(ids []crypto.ID, also func(Txn, crypto.ID) error) error {
	for len(ids) > 0 {
		batch := ids[:min(len(ids), 1000)]
		ids = ids[len(batch):]
		if err := s.db.Update(func(txn Txn) error {
			for _, id := range batch {
				if err := txn.Delete(meta.ChunkKey(id)); err != nil {
					return err
				}
				if also != nil {
					if err := also(txn, id); err != nil {
						return err
					}
				}
			}
			return nil
		}); err != nil {
			return err
		}
		for _, id := range batch {
			s.files.remove(id)
		}
	}
	return nil
}

// Drop deletes chunks while the store is in use: their records, in
// batches, then their bytes (a segment's are uncounted, for compaction to
// reclaim), their copies in memory and their places in the LRU. The
// caller answers for no file naming them and for no commit storing one
// of them again meanwhile (a commit that finds a record stores nothing).
// It returns how many chunks and bytes went.
func (s *Store) Drop(ids []crypto.ID) (chunks int, size int64, err error) {
	for len(ids) > 0 {
		batch := ids[:min(len(ids), 1000)]
		ids = ids[len(batch):]
		vals := make([][]byte, len(batch))
		if err := s.db.Update(func(txn Txn) error {
			for i, id := range batch {
				v, found, err := txn.Value(meta.ChunkKey(id))
				if err != nil {
					return err
				}
				vals[i] = nil
				if !found {
					continue
				}
				if err := txn.Delete(meta.ChunkKey(id)); err != nil {
					return err
				}
				vals[i] = v
			}
			return nil
		}); err != nil {
			return chunks, size, err
		}
		for i, id := range batch {
			v := vals[i]
			if v == nil {
				continue
			}
			chunks++
			size += valueSize(v)
			s.mem.drop(id)
			s.lru.remove(id)
			if l, ok := segLocOf(v); ok {
				s.segs.dropLive(l)
			} else if inlineData(v) == nil {
				if err := s.files.remove(id); err != nil {
					s.log.Warn("cannot remove a dropped chunk's file", "err", err)
				}
			}
		}
	}
	return chunks, size, nil
}

// segmentBudget is how many dead bytes segments may hold.
func (s *Store) segmentBudget() int64 { return s.size / 4 }

// Compact moves the live records of mostly dead segments to the current
// one, so that evicted small chunks give their space back: at most a
// quarter of the cache size stays dead in segments. It stops early once
// ctx is done.
func (s *Store) Compact(ctx context.Context) error {
	sparse := s.segs.sparse(s.segmentBudget())
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
	err := s.db.Chunks(func(id crypto.ID, v []byte) error {
		if l, ok := segLocOf(v); ok && from[l.seg] {
			recs = append(recs, rec{id, bytes.Clone(v)})
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
		if ctx.Err() != nil {
			break
		}
		old, _ := segLocOf(r.v)
		data, err := s.segs.read(r.id, old)
		if err == nil {
			var nl segLoc
			if nl, err = s.segs.append(r.id, data, false); err == nil {
				moves = append(moves, move{r, old, nl, len(data)})
				into[nl.seg] = true
				continue
			}
		}
		for _, m := range moves {
			s.segs.dropLive(m.nl)
		}
		return err
	}
	for n := range into {
		if err := s.segs.sync(n); err != nil {
			for _, m := range moves {
				s.segs.dropLive(m.nl)
			}
			return err
		}
	}
	for i, m := range moves {
		r, old, nl := m.r, m.old, m.nl
		moved := false
		err = s.db.Update(func(txn Txn) error {
			moved = false
			v, found, err := txn.Value(meta.ChunkKey(r.id))
			if err != nil {
				return err
			}
			if !found || !bytes.Equal(v, r.v) {
				return nil // evicted or rewritten meanwhile
			}
			moved = true
			return txn.Set(meta.ChunkKey(r.id), segValue(m.length, nl))
		})
		if err != nil || !moved {
			s.segs.dropLive(nl)
		}
		if err != nil {
			for _, m := range moves[i+1:] {
				s.segs.dropLive(m.nl)
			}
			return err
		}
		if moved {
			s.segs.dropLive(old)
		}
	}
	return nil
}

// FilePath is where the file of a chunk kept in a file of its own lives,
// for tests and tools that look at the state directory from outside.
func (s *Store) FilePath(id crypto.ID) string { return s.files.path(id) }

// Uncache drops the in-memory copy of id, so that the next read reaches
// the state directory.
func (s *Store) Uncache(id crypto.ID) { s.mem.drop(id) }
