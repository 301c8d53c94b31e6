package cache

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo/crypto"
)

func countFiles(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Small files' chunks go to segments, survive a crash, give their space
// back when evicted, and compaction empties mostly dead segments.
func TestSegments(t *testing.T) {
	ctx := context.Background()
	be := remote.NewMem()
	r := newRepo(t, be)
	dir := t.TempDir()
	open := func(size int64) *Cache {
		c, err := Open(ctx, r, Options{StateDir: dir, CacheSize: size, SnapshotInterval: time.Hour, Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		c.segs.size = 256 << 10
		return c
	}
	c := open(1 << 30)
	files := map[string][]byte{}
	for i := range 40 {
		name := fmt.Sprintf("f%02d", i)
		files[name] = randBytes(uint64(100+i), 20<<10)
		writeFile(t, c, c.Root(), name, files[name])
	}
	if n := countFiles(t, filepath.Join(dir, "chunks")); n != 0 {
		t.Fatalf("%d chunk files for small chunks", n)
	}
	segDir := filepath.Join(dir, "segments")
	if n := countFiles(t, segDir); n < 3 {
		t.Fatalf("%d segments for 800 KiB in 256 KiB segments", n)
	}
	if got := grepDir(t, dir, string(files["f07"][:64])); got != "" {
		t.Fatalf("plaintext in %s", got)
	}
	// Crash: no final snapshot, no upload, nothing closed.
	c.cancel()
	c.wg.Wait()
	c.dbp.Load().db.Close()
	c.ix.close()
	c.lockFile.Close()

	c = open(1 << 30)
	check := func(when string) {
		t.Helper()
		for name, data := range files {
			if got := readFile(t, c, lookupPath(t, c, name).Ino); !bytes.Equal(got, data) {
				t.Fatalf("%s: %s differs", when, name)
			}
		}
	}
	check("after the crash")
	if _, err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	before := countFiles(t, segDir)
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}

	// Uploaded, the chunks are clean: evicted down to 60 KiB (three of the
	// forty records), segments with nothing live go and the others are
	// under a quarter live, which compaction empties.
	c = open(60 << 10)
	c.evict()
	after := countFiles(t, segDir)
	if sp := c.segs.sparse(c.segmentBudget()); after >= before && len(sp) == 0 {
		t.Fatalf("%d segments before eviction, %d after, none sparse", before, after)
	}
	if err := c.compactSegments(); err != nil {
		t.Fatal(err)
	}
	if sp := c.segs.sparse(c.segmentBudget()); len(sp) != 0 {
		t.Fatalf("sparse segments left after compaction: %v", sp)
	}
	check("after eviction and compaction")
	c.segs.mu.Lock()
	for n, live := range c.segs.live {
		if live < 0 {
			t.Errorf("segment %d: %d live bytes", n, live)
		}
		if c.segs.files[n] == nil {
			t.Errorf("segment %d counted but not open", n)
		}
	}
	c.segs.mu.Unlock()
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}

	// Evicting everything leaves at most the segment being appended to.
	c = open(1)
	defer c.Close(ctx)
	c.evict()
	if n := countFiles(t, segDir); n > 1 {
		t.Fatalf("%d segments with nothing live", n)
	}
	check("with everything evicted")
}

// Segments that stay more than a quarter live are compacted too once the
// dead bytes left in segments pass a quarter of the cache size: evicted
// small chunks must not hold several times the cache's bound on disk.
func TestSegmentDeadBytesBounded(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	c, err := Open(ctx, newRepo(t, remote.NewMem()), Options{StateDir: dir, CacheSize: 1 << 30, SnapshotInterval: time.Hour, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	c.segs.size = 256 << 10
	files := map[uint64][]byte{}
	var ids []crypto.ID
	for i := range 40 {
		data := randBytes(uint64(300+i), 20<<10)
		ino := writeFile(t, c, c.Root(), fmt.Sprintf("f%02d", i), data)
		files[ino] = data
		n, err := c.getInode(ino)
		if err != nil || len(n.Chunks) != 1 {
			t.Fatalf("inode %d: %v, %d chunks", ino, err, len(n.Chunks))
		}
		ids = append(ids, n.Chunks[0].ID)
	}
	if _, err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	// Evict every other chunk: each segment is left about half live.
	for i := 1; i < len(ids); i += 2 {
		c.lru.touch(ids[i])
	}
	c.opts.CacheSize = 20 * (20 << 10)
	c.evict()
	dead := func() (d int64) {
		c.segs.mu.Lock()
		defer c.segs.mu.Unlock()
		for n, f := range c.segs.files {
			if fi, err := f.Stat(); err == nil && n != c.segs.cur {
				d += fi.Size() - c.segs.live[n]
			}
		}
		return d
	}
	if sp := c.segs.sparse(1 << 40); len(sp) != 0 {
		t.Fatalf("segments under a quarter live after evicting every other chunk: %v", sp)
	}
	if d := dead(); d <= c.segmentBudget() {
		t.Fatalf("only %d dead bytes against a budget of %d: the test proves nothing", d, c.segmentBudget())
	}
	if err := c.compactSegments(); err != nil {
		t.Fatal(err)
	}
	if d := dead(); d > c.segmentBudget() {
		t.Fatalf("%d dead bytes left in segments, budget %d", d, c.segmentBudget())
	}
	for ino, data := range files {
		if got := readFile(t, c, ino); !bytes.Equal(got, data) {
			t.Fatalf("inode %d differs after compaction", ino)
		}
	}
}

// A record of erased data in a segment an earlier session wrote is wiped
// in place: the segment files are reopened writable. (A read-only reopen
// made an erase reaching an older state directory fail its Open with
// EBADF whenever an erased chunk was small enough for a segment.)
func TestWipeSegmentOfEarlierSession(t *testing.T) {
	dir := t.TempDir()
	k := newRepo(t, remote.NewMem()).Key()
	s, err := newSegments(dir, k)
	if err != nil {
		t.Fatal(err)
	}
	data := randBytes(7, 4<<10)
	id := k.BlobID(data)
	l, err := s.append(id, data, true)
	if err != nil {
		t.Fatal(err)
	}
	s.close()
	s, err = newSegments(dir, k)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	if got, err := s.read(id, l); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read after reopening: %v", err)
	}
	if err := s.wipe(l); err != nil {
		t.Fatalf("wipe in a segment of an earlier session: %v", err)
	}
	raw, err := os.ReadFile(s.path(l.seg))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(raw[l.off:l.off+int64(l.n)], make([]byte, l.n)) {
		t.Fatal("the wiped record still holds data")
	}
}
