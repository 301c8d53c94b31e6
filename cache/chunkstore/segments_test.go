package chunkstore

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"

	"github.com/keepfs/keepfs/repo/crypto"
)

// Small chunks go to segments, survive a crash, give their space back
// when evicted, and compaction empties mostly dead segments.
func TestSegments(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, 1<<30)
	open := func(size int64) *Store {
		s := e.open(size)
		s.segs.size = 256 << 10
		return s
	}
	s := open(1 << 30)
	chunks := map[crypto.ID][]byte{}
	for i := range 40 {
		data := randBytes(uint64(100+i), 20<<10)
		chunks[e.put(data, false)] = data
	}
	if n := countFiles(t, filepath.Join(e.dir, "chunks")); n != 0 {
		t.Fatalf("%d chunk files for small chunks", n)
	}
	segDir := filepath.Join(e.dir, "segments")
	if n := countFiles(t, segDir); n < 3 {
		t.Fatalf("%d segments for 800 KiB in 256 KiB segments", n)
	}
	for _, data := range chunks {
		if got := grepDir(t, e.dir, string(data[:64])); got != "" {
			t.Fatalf("plaintext in %s", got)
		}
		break
	}
	// Crash: nothing synced or closed but the process's files.
	s.Close()

	s = open(1 << 30)
	check := func(when string) {
		t.Helper()
		for id, data := range chunks {
			s.Uncache(id)
			if got, err := s.Get(ctx, id); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("%s: chunk %s: %v", when, id.Short(), err)
			}
		}
	}
	check("after the crash")
	for id, data := range chunks {
		e.repo.upload(id, data)
	}
	before := countFiles(t, segDir)
	s.Close()

	// Uploaded, the chunks are clean: evicted down to 60 KiB (three of the
	// forty records), segments with nothing live go and the others are
	// under a quarter live, which compaction empties.
	s = open(60 << 10)
	s.evict()
	after := countFiles(t, segDir)
	if sp := s.segs.sparse(s.segmentBudget()); after >= before && len(sp) == 0 {
		t.Fatalf("%d segments before eviction, %d after, none sparse", before, after)
	}
	if err := s.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	if sp := s.segs.sparse(s.segmentBudget()); len(sp) != 0 {
		t.Fatalf("sparse segments left after compaction: %v", sp)
	}
	checkLive(t, s)
	check("after eviction and compaction")
	s.Close()

	// Evicting everything leaves at most the segment being appended to.
	s = open(1)
	s.evict()
	if n := countFiles(t, segDir); n > 1 {
		t.Fatalf("%d segments with nothing live", n)
	}
	check("with everything evicted")
}

// checkLive fails if a segment's live count went negative or names a
// segment that is not open.
func checkLive(t *testing.T, s *Store) {
	t.Helper()
	s.segs.mu.Lock()
	defer s.segs.mu.Unlock()
	for n, live := range s.segs.live {
		if live < 0 {
			t.Errorf("segment %d: %d live bytes", n, live)
		}
		if s.segs.files[n] == nil {
			t.Errorf("segment %d counted but not open", n)
		}
	}
}

// Segments that stay more than a quarter live are compacted too once the
// dead bytes left in segments pass a quarter of the cache size: evicted
// small chunks must not hold several times the cache's bound on disk.
func TestSegmentDeadBytesBounded(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, 1<<30)
	s := e.s
	s.segs.size = 256 << 10
	chunks := map[crypto.ID][]byte{}
	var ids []crypto.ID
	var sizes []int
	for i := range 40 {
		data := randBytes(uint64(300+i), 20<<10)
		id := e.put(data, false)
		chunks[id] = data
		ids = append(ids, id)
		sizes = append(sizes, len(data))
		e.repo.upload(id, data)
	}
	s.Uploaded(ids, sizes)
	s.Unpin() // a snapshot names them
	// Evict every other chunk: each segment is left about half live.
	for i := 1; i < len(ids); i += 2 {
		s.lru.touch(ids[i])
	}
	s.size = 20 * (20 << 10)
	s.evict()
	dead := func() (d int64) {
		s.segs.mu.Lock()
		defer s.segs.mu.Unlock()
		for n, f := range s.segs.files {
			if fi, err := f.Stat(); err == nil && n != s.segs.cur {
				d += fi.Size() - s.segs.live[n]
			}
		}
		return d
	}
	if sp := s.segs.sparse(1 << 40); len(sp) != 0 {
		t.Fatalf("segments under a quarter live after evicting every other chunk: %v", sp)
	}
	if d := dead(); d <= s.segmentBudget() {
		t.Fatalf("only %d dead bytes against a budget of %d: the test proves nothing", d, s.segmentBudget())
	}
	if err := s.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	if d := dead(); d > s.segmentBudget() {
		t.Fatalf("%d dead bytes left in segments, budget %d", d, s.segmentBudget())
	}
	checkLive(t, s)
	for id, data := range chunks {
		if got, err := s.Get(ctx, id); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("chunk %s differs after compaction: %v", id.Short(), err)
		}
	}
}
