package chunkstore

import (
	"bytes"
	"context"
	"crypto/cipher"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/keepfs/keepfs/cache/meta"
	"github.com/keepfs/keepfs/repo/crypto"
)

// A batch writes its records into the caller's transaction: they commit
// with the caller's own records or not at all, and a transaction that
// failed leaves no segment bytes counted live (the segment can go).
func TestBatchInCallersTransaction(t *testing.T) {
	e := newEnv(t, 1<<30)
	s := e.s
	chunks := []Chunk{
		{Data: randBytes(1, 100)},     // inline
		{Data: randBytes(2, 20<<10)},  // a segment record
		{Data: randBytes(3, 400<<10)}, // a file
	}
	for i := range chunks {
		chunks[i].ID = e.key.BlobID(chunks[i].Data)
	}
	other := []byte("the caller's record")

	liveBytes := func() (n int64) {
		s.segs.mu.Lock()
		defer s.segs.mu.Unlock()
		for _, l := range s.segs.live {
			n += l
		}
		return n
	}
	for _, fail := range []struct {
		name  string
		inFn  bool // the caller's fn fails, else the commit
		retry bool // the transaction runs twice, as after a conflict
	}{{"caller fails", true, false}, {"commit fails", false, false}, {"retried, then the commit fails", false, true}} {
		b, err := s.Prepare(chunks, false)
		if err != nil {
			t.Fatal(err)
		}
		boom := errors.New("boom")
		if !fail.inFn {
			e.db.failUpdate = boom
		}
		e.db.retry = fail.retry
		err = e.db.Update(func(txn Txn) error {
			if err := b.Write(txn); err != nil {
				return err
			}
			if err := txn.Set(other, other); err != nil {
				return err
			}
			if fail.inFn {
				return boom
			}
			return nil
		})
		e.db.failUpdate, e.db.retry = nil, false
		b.Finish(err)
		if !errors.Is(err, boom) {
			t.Fatalf("%s: %v", fail.name, err)
		}
		for _, ch := range chunks {
			if e.db.record(ch.ID) != nil {
				t.Fatalf("%s: chunk %s recorded", fail.name, ch.ID.Short())
			}
		}
		if n := liveBytes(); n != 0 {
			t.Fatalf("%s: %d segment bytes counted live that no record names", fail.name, n)
		}
		if s.Stored() != 0 {
			t.Fatalf("%s: %d chunks counted stored", fail.name, s.Stored())
		}
	}

	b, err := s.Prepare(chunks, false)
	if err != nil {
		t.Fatal(err)
	}
	e.db.retry = true // a retried transaction writes each record once
	err = e.db.Update(func(txn Txn) error {
		if err := b.Write(txn); err != nil {
			return err
		}
		return txn.Set(other, other)
	})
	e.db.retry = false
	b.Finish(err)
	if err != nil {
		t.Fatal(err)
	}
	if e.db.record(crypto.ID{}) != nil || !bytes.Equal(e.db.m[string(other)], other) {
		t.Fatal("the caller's record did not commit")
	}
	for _, ch := range chunks {
		if e.db.record(ch.ID) == nil {
			t.Fatalf("chunk %s not recorded with the caller's record", ch.ID.Short())
		}
		if got, err := s.Load(ch.ID); err != nil || !bytes.Equal(got, ch.Data) {
			t.Fatalf("chunk %s: %v", ch.ID.Short(), err)
		}
	}
	if s.Stored() != 3 {
		t.Fatalf("%d chunks counted stored, want 3", s.Stored())
	}
	if n := liveBytes(); n == 0 {
		t.Fatal("the segment record counts no live bytes")
	}
	// Stored again: nothing new.
	if err := s.Put(chunks, false); err != nil || s.Stored() != 3 {
		t.Fatalf("second store: %v, %d stored", err, s.Stored())
	}
}

// Eviction drops only chunks the repository's index holds, never while
// paused, and not one the index dropped since it became clean.
func TestEvictionKeepsWhatTheIndexLacks(t *testing.T) {
	e := newEnv(t, 1) // every clean chunk is over the bound
	s := e.s
	local := func(id crypto.ID) bool {
		_, err := s.Load(id)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		return err == nil
	}
	dirty := randBytes(1, 300<<10)
	d := e.put(dirty, false)
	small := e.put(randBytes(2, 20<<10), false)
	if !local(d) || !local(small) {
		t.Fatal("a chunk the index lacks was evicted")
	}
	// Already in the repository when stored: clean at once.
	clean := randBytes(3, 300<<10)
	cid := e.key.BlobID(clean)
	e.repo.upload(cid, clean)
	e.put(clean, false)
	if local(cid) {
		t.Fatal("a clean chunk over the bound was kept")
	}

	// Uploaded, but no stored snapshot names it yet: pinned.
	e.repo.upload(d, dirty)
	s.Uploaded([]crypto.ID{d}, []int{len(dirty)})
	if !local(d) || s.Pinned() != 1 {
		t.Fatalf("an uploaded chunk was evicted before a snapshot named it (pinned %d)", s.Pinned())
	}
	resume := s.PauseEviction()
	s.Unpin()
	if !local(d) {
		t.Fatal("evicted while eviction was paused")
	}
	resume()
	// Clean, but the index dropped it (a prune) before the eviction came.
	e.repo.mu.Lock()
	delete(e.repo.indexed, d)
	e.repo.mu.Unlock()
	s.Unpin()
	s.Uploaded(nil, nil)
	if !local(d) {
		t.Fatal("evicted a chunk the index no longer holds")
	}
	e.repo.upload(d, dirty)
	s.Uploaded([]crypto.ID{d}, []int{len(dirty)})
	s.Unpin()
	if local(d) {
		t.Fatal("not evicted once clean again and eviction resumed")
	}
	if s.CleanBytes() != 0 {
		t.Fatalf("%d clean bytes counted after everything clean went", s.CleanBytes())
	}
}

// Chunks pinned until a snapshot enter the LRU in upload order: the
// first uploaded is the first evicted, as before pinning.
func TestUnpinKeepsUploadOrder(t *testing.T) {
	const n, size = 12, 40 << 10
	e := newEnv(t, (n-1)*size) // room for all but one
	s := e.s
	var ids []crypto.ID
	for i := range n {
		b := randBytes(uint64(100+i), size)
		ids = append(ids, e.put(b, false))
		e.repo.upload(ids[i], b)
		s.Uploaded(ids[i:i+1], []int{size})
	}
	s.Uploaded(ids[3:4], []int{size}) // told twice: keeps its first place
	s.Unpin()
	for i, id := range ids {
		_, err := s.Load(id)
		if evicted := errors.Is(err, os.ErrNotExist); evicted != (i == 0) {
			t.Fatalf("chunk %d of %d evicted %v (%v); only the first uploaded should be", i, n, evicted, err)
		}
	}
}

// Get reads local chunks, fetches others from the repository once and
// keeps them, and counts hits and misses.
func TestGetFetchesOnceAndKeeps(t *testing.T) {
	e := newEnv(t, 1<<30)
	s := e.s
	ctx := context.Background()
	data := randBytes(4, 300<<10)
	id := e.key.BlobID(data)
	if _, err := s.Get(ctx, id); err == nil {
		t.Fatal("Get of a chunk neither local nor in the repository succeeded")
	}
	e.repo.upload(id, data)
	for range 2 {
		s.Uncache(id)
		if got, err := s.Get(ctx, id); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("Get: %v", err)
		}
	}
	if e.repo.loads != 2 { // the failed one, then one fetch
		t.Fatalf("%d fetches from the repository, want 2", e.repo.loads)
	}
	if hits, misses := s.Counters(); hits != 1 || misses != 2 {
		t.Fatalf("%d hits, %d misses; want 1 and 2", hits, misses)
	}
	if !s.Has(id) || s.CleanBytes() != int64(len(data)) {
		t.Fatalf("fetched chunk: kept %v, %d clean bytes", s.Has(id), s.CleanBytes())
	}
}

// Scan counts clean chunks into the LRU, except queued ones, whose sizes
// it returns for the upload queue.
func TestScanLeavesQueuedChunksDirty(t *testing.T) {
	e := newEnv(t, 1<<30)
	a, b := randBytes(5, 20<<10), randBytes(6, 300<<10)
	ia, ib := e.put(a, false), e.put(b, false)
	e.repo.upload(ia, a)
	e.repo.upload(ib, b)
	e.s.Close()
	s := e.open(1 << 30) // Scan(nil): both clean
	if s.CleanBytes() != int64(len(a)+len(b)) {
		t.Fatalf("%d clean bytes, want %d", s.CleanBytes(), len(a)+len(b))
	}
	s.Close()
	s, err := Open(Config{Dir: e.dir, Key: e.key, DB: e.db, Repo: e.repo, CacheSize: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	restore, err := s.Scan(map[crypto.ID]bool{ib: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(restore) != 1 || restore[ib] != int64(len(b)) {
		t.Fatalf("queued sizes %v, want %s: %d", restore, ib.Short(), len(b))
	}
	if s.CleanBytes() != int64(len(a)) {
		t.Fatalf("%d clean bytes, want only the unqueued chunk's %d", s.CleanBytes(), len(a))
	}
}

// Purge removes a chunk's record, bytes and in-memory copy, with the
// caller's writes in the same transaction; a segment record is wiped at
// once, not left for compaction.
func TestPurgeWipes(t *testing.T) {
	dir := t.TempDir()
	k, err := crypto.NewMasterKey()
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, dir: dir, key: k, db: newMemDB(), repo: newFakeRepo(), aead: func([]byte) (cipher.AEAD, error) { return PlaintextAEAD{}, nil }}
	s := e.open(1 << 30)
	small, big := randBytes(7, 20<<10), randBytes(8, 300<<10)
	keep := randBytes(9, 20<<10) // shares the segment
	is, ib, ik := e.put(small, false), e.put(big, false), e.put(keep, false)
	if grepDir(t, dir, string(small[:64])) == "" {
		t.Fatal("plaintext not found before the purge: the test proves nothing")
	}
	queue := meta.QueueKey(is)
	for _, id := range []crypto.ID{is, ib} {
		if err := s.Purge(id, func(txn Txn) error { return txn.Set(queue, []byte("x")) }); err != nil {
			t.Fatal(err)
		}
		if e.db.record(id) != nil {
			t.Fatalf("chunk %s still recorded", id.Short())
		}
		if _, err := s.Load(id); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("purged chunk %s: %v", id.Short(), err)
		}
	}
	if e.db.m[string(queue)] == nil {
		t.Fatal("the caller's write did not commit with the purge")
	}
	for name, data := range map[string][]byte{"small": small, "big": big} {
		if p := grepDir(t, dir, string(data[:64])); p != "" {
			t.Fatalf("%s chunk's plaintext still in %s", name, p)
		}
	}
	if got, err := s.Load(ik); err != nil || !bytes.Equal(got, keep) {
		t.Fatalf("the chunk sharing the segment: %v", err)
	}

	// A segment of an earlier session (opened at start, not appended to
	// any more) is wiped too.
	s.Close()
	s = e.open(1 << 30)
	if err := s.Purge(ik, nil); err != nil {
		t.Fatalf("purge of a chunk in an earlier session's segment: %v", err)
	}
	if p := grepDir(t, dir, string(keep[:64])); p != "" {
		t.Fatalf("plaintext of a chunk purged from an earlier session's segment still in %s", p)
	}
}

// Past syncOneByOne noted chunks, SyncNoted syncs the state directory as
// a whole; either way nothing stays noted.
func TestSyncNoted(t *testing.T) {
	e := newEnv(t, 1<<30)
	s := e.s
	if n := s.Unsynced(); n != 0 {
		t.Fatalf("%d chunks unsynced right after open", n)
	}
	e.put(randBytes(1, 300<<10), false)
	e.put(randBytes(2, 20<<10), false)
	e.put(randBytes(3, 100), false) // inline: nothing to sync
	e.put(randBytes(4, 20<<10), true)
	if n := s.Unsynced(); n != 2 {
		t.Fatalf("%d chunks noted, want the file and the segment record stored without durable", n)
	}
	if err := s.SyncNoted(); err != nil {
		t.Fatal(err)
	}
	if n := s.Unsynced(); n != 0 {
		t.Fatalf("%d chunks noted after SyncNoted", n)
	}
	// Which way SyncNoted went shows when the state directory cannot be
	// opened: only the syncfs needs it.
	dir := s.dir
	s.dir = filepath.Join(dir, "missing")
	note := func(n int) {
		for i := range n {
			var id crypto.ID
			id[0], id[1] = byte(i), 0xee
			s.unsynced.add(id, fileChunk) // no such file: nothing to sync
		}
	}
	note(syncOneByOne)
	if err := s.SyncNoted(); err != nil {
		t.Fatalf("%d noted, synced one by one: %v", syncOneByOne, err)
	}
	note(syncOneByOne + 5)
	if err := s.SyncNoted(); err == nil {
		t.Fatal("past syncOneByOne noted chunks, SyncNoted did not sync the state directory")
	}
	if n := s.Unsynced(); n != syncOneByOne+5 {
		t.Fatalf("%d chunks noted after a failed sync, want them all kept", n)
	}
	s.dir = dir
	if err := s.SyncNoted(); err != nil {
		t.Fatalf("many noted: %v", err)
	}
	if n := s.Unsynced(); n != 0 {
		t.Fatalf("after SyncNoted with many noted: %d chunks still noted", n)
	}
}

// DropLost deletes the records of chunks a power loss took, with the
// caller's writes, and their files.
func TestDropLost(t *testing.T) {
	e := newEnv(t, 1<<30)
	s := e.s
	big, small := randBytes(1, 300<<10), randBytes(2, 20<<10)
	ib, is := e.put(big, false), e.put(small, false)
	var outside []crypto.ID
	if err := s.Outside(func(id crypto.ID, size int64) { outside = append(outside, id) }); err != nil || len(outside) != 2 {
		t.Fatalf("chunks outside the records: %v, %v", outside, err)
	}
	var also []crypto.ID
	if err := s.DropLost([]crypto.ID{ib}, func(txn Txn, id crypto.ID) error {
		also = append(also, id)
		return txn.Delete(meta.QueueKey(id))
	}); err != nil {
		t.Fatal(err)
	}
	if len(also) != 1 || also[0] != ib || e.db.record(ib) != nil {
		t.Fatalf("caller ran for %v; record left: %v", also, e.db.record(ib) != nil)
	}
	if _, err := os.Stat(s.FilePath(ib)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("lost chunk's file: %v", err)
	}
	if got, err := s.Load(is); err != nil || !bytes.Equal(got, small) {
		t.Fatalf("the other chunk: %v", err)
	}
}

// Drop takes a chunk away while the store is in use: record, bytes (a
// file, or its place in a segment that another chunk keeps), the copy in
// memory and the place in the LRU; Unindexed counts what may die.
func TestDropWhileInUse(t *testing.T) {
	e := newEnv(t, 1<<30)
	s := e.s
	big, small, other := randBytes(1, 300<<10), randBytes(2, 20<<10), randBytes(3, 20<<10)
	ib, is, io := e.put(big, false), e.put(small, false), e.put(other, false)
	e.put(randBytes(4, 100), false) // inline: nothing to sweep
	clean := randBytes(5, 300<<10)
	ic := e.key.BlobID(clean)
	e.repo.upload(ic, clean)
	e.put(clean, false)
	if got, want := s.Unindexed(), int64(len(big)+len(small)+len(other)); got != want {
		t.Fatalf("Unindexed %d, want %d (chunks outside their records the index lacked)", got, want)
	}
	if s.CleanBytes() != int64(len(clean)) {
		t.Fatalf("clean bytes %d before the drop", s.CleanBytes())
	}
	if _, err := s.Get(context.Background(), is); err != nil { // in memory too
		t.Fatal(err)
	}
	loc, ok := segLocOf(e.db.record(is))
	if !ok {
		t.Fatal("the small chunk is not in a segment")
	}
	n, size, err := s.Drop([]crypto.ID{ib, is, ic, e.key.BlobID([]byte("never stored"))})
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(len(big) + len(small) + len(clean)); n != 3 || size != want {
		t.Fatalf("dropped %d chunks, %d bytes; want 3, %d (an unknown id counts nothing)", n, size, want)
	}
	for _, id := range []crypto.ID{ib, is, ic} {
		if e.db.record(id) != nil || s.Has(id) {
			t.Fatalf("chunk %s still recorded", id.Short())
		}
		if _, err := s.Load(id); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("dropped chunk %s: %v", id.Short(), err)
		}
	}
	if _, err := os.Stat(s.FilePath(ib)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("dropped chunk's file: %v", err)
	}
	if s.CleanBytes() != 0 {
		t.Fatalf("%d clean bytes counted after the clean chunk was dropped", s.CleanBytes())
	}
	if got, err := s.Load(io); err != nil || !bytes.Equal(got, other) {
		t.Fatalf("the chunk sharing the segment: %v", err)
	}
	// Its record is punched out of the segment that stays.
	seg, err := os.ReadFile(s.segs.path(loc.seg))
	if err != nil {
		t.Fatal(err)
	}
	if rec := seg[loc.off : loc.off+int64(loc.n)]; !bytes.Equal(rec, make([]byte, len(rec))) {
		t.Fatal("the dropped record's bytes are still in its segment")
	}
	// Stored again after the drop: kept anew.
	e.put(small, false)
	if got, err := s.Load(is); err != nil || !bytes.Equal(got, small) {
		t.Fatalf("stored again after the drop: %v", err)
	}
}

// A file whose record a killed process never wrote (a commit) or had
// already deleted (an eviction, a drop) is named by nothing: it goes.
func TestDropStrayFiles(t *testing.T) {
	e := newEnv(t, 1<<30)
	s := e.s
	big := randBytes(1, 300<<10)
	ib := e.put(big, false)
	e.put(randBytes(2, 20<<10), false) // in a segment: not a file
	stray := s.FilePath(e.key.BlobID([]byte("a record never written")))
	if err := os.WriteFile(stray, []byte("sealed bytes of some chunk"), 0o600); err != nil {
		t.Fatal(err)
	}
	n, err := s.DropStrayFiles()
	if err != nil || n != 1 {
		t.Fatalf("removed %d stray files (%v), want 1", n, err)
	}
	if _, err := os.Stat(stray); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stray file: %v", err)
	}
	if got, err := s.Load(ib); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("the named chunk after the sweep of stray files: %v", err)
	}
	if n, err := s.DropStrayFiles(); err != nil || n != 0 {
		t.Fatalf("second pass removed %d (%v)", n, err)
	}
}
