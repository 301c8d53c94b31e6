package restorer_test

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"math/rand"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo/archiver"
	"github.com/keepfs/keepfs/repo/pack"
	"github.com/keepfs/keepfs/repo/repotest"
	"github.com/keepfs/keepfs/repo/restorer"
)

// slowStorage makes every pack read take a while, as on an object store,
// and records how many were in flight at once.
type slowStorage struct {
	remote.Storage
	mu            sync.Mutex
	inFlight, max int
	reads         int
}

func (s *slowStorage) Load(ctx context.Context, h remote.Handle, off, n int64) ([]byte, error) {
	if h.Type != remote.Pack {
		return s.Storage.Load(ctx, h, off, n)
	}
	s.mu.Lock()
	s.inFlight++
	s.reads++
	s.max = max(s.max, s.inFlight)
	s.mu.Unlock()
	time.Sleep(20 * time.Millisecond)
	b, err := s.Storage.Load(ctx, h, off, n)
	s.mu.Lock()
	s.inFlight--
	s.mu.Unlock()
	return b, err
}

// TestRestoreFetchesBlobsOfOneFileConcurrently restores a single file of
// many blobs and checks that its blobs are fetched by several workers at
// once rather than one after the other, and that the file comes out
// right, its last byte and metadata included.
func TestRestoreFetchesBlobsOfOneFileConcurrently(t *testing.T) {
	ctx := context.Background()
	ss := &slowStorage{Storage: remote.NewMem()}
	r := repotest.Create(t, ss)
	src := t.TempDir()
	data := make([]byte, 20<<20+12345)
	rand.New(rand.NewSource(7)).Read(data)
	p := filepath.Join(src, "big")
	if err := os.WriteFile(p, data, 0o640); err != nil {
		t.Fatal(err)
	}
	mtime := time.Date(2021, 3, 4, 5, 6, 7, 0, time.UTC)
	if err := os.Chtimes(p, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	sn, _, err := archiver.Import(ctx, r, src, archiver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ss.mu.Lock()
	ss.max, ss.reads = 0, 0
	ss.mu.Unlock()
	dst := filepath.Join(t.TempDir(), "out")
	if _, err := restorer.Restore(ctx, r, sn, []string{"/"}, dst, restorer.Options{Workers: 4}); err != nil {
		t.Fatal(err)
	}
	ss.mu.Lock()
	maxInFlight, reads := ss.max, ss.reads
	ss.mu.Unlock()
	t.Logf("%d pack reads, at most %d at once", reads, maxInFlight)
	if maxInFlight < 2 {
		t.Fatalf("at most %d pack read in flight restoring one file of %d reads with 4 workers: its blobs are fetched one after the other", maxInFlight, reads)
	}
	got, err := os.ReadFile(filepath.Join(dst, "big"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("restored file differs (%d bytes, want %d)", len(got), len(data))
	}
	fi, err := os.Stat(filepath.Join(dst, "big"))
	if err != nil {
		t.Fatal(err)
	}
	if !fi.ModTime().Equal(mtime) || fi.Mode().Perm() != 0o640 {
		t.Fatalf("restored mtime %v mode %v, want %v %v", fi.ModTime(), fi.Mode().Perm(), mtime, os.FileMode(0o640))
	}
}

// TestRestoreOfManyBlobsFailsCleanly restores a file whose packs are
// gone and checks that the restore fails, naming the file.
func TestRestoreOfManyBlobsFailsCleanly(t *testing.T) {
	ctx := context.Background()
	mem := remote.NewMem()
	r := repotest.Create(t, mem)
	sn := importBig(t, r, 40<<20, 8)
	// Remove every pack but the one of the root tree, which must stay
	// readable for the restore to reach the file.
	keep, ok := r.Index().Lookup(pack.Tree, sn.Tree)
	if !ok {
		t.Fatal("root tree not indexed")
	}
	var removed int
	for _, pe := range r.Index().Packs() {
		if pe.ID != keep.Pack {
			if err := mem.Remove(ctx, remote.Handle{Type: remote.Pack, Name: pe.ID.String()}); err != nil {
				t.Fatal(err)
			}
			removed++
		}
	}
	if removed == 0 {
		t.Fatal("no data pack found to remove")
	}
	dst := filepath.Join(t.TempDir(), "out")
	_, err := restorer.Restore(ctx, r, sn, []string{"/"}, dst, restorer.Options{Workers: 4})
	if err == nil {
		t.Fatal("restore of a file whose packs are gone succeeded")
	}
	if !bytes.Contains([]byte(err.Error()), []byte(filepath.Join(dst, "big"))) {
		t.Fatalf("error %q does not name the file", err)
	}
}

// TestRestoreFetchesSharedBlobsOnce restores a big file, a copy of it and
// a copy with one byte changed in the middle, and checks that the blobs
// they share are fetched once, not once per file, and that all three
// come out right.
func TestRestoreFetchesSharedBlobsOnce(t *testing.T) {
	ctx := context.Background()
	cs := &countingStorage{Storage: remote.NewMem()}
	r := repotest.Create(t, cs)
	src := t.TempDir()
	data := make([]byte, 24<<20)
	rand.New(rand.NewSource(9)).Read(data)
	edited := bytes.Clone(data)
	edited[len(edited)/2] ^= 1
	files := map[string][]byte{"a": data, "b": data, "c": edited}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(src, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sn, _, err := archiver.Import(ctx, r, src, archiver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, before := cs.counts()
	dst := filepath.Join(t.TempDir(), "out")
	if _, err := restorer.Restore(ctx, r, sn, []string{"/"}, dst, restorer.Options{Workers: 4}); err != nil {
		t.Fatal(err)
	}
	_, after := cs.counts()
	read := after - before
	t.Logf("%d bytes read from packs to restore 3 files of %d bytes", read, len(data))
	// One file's worth, the edited chunk(s) and the bytes around runs'
	// edges: well below two files' worth.
	if limit := int64(len(data)) * 3 / 2; read > limit {
		t.Fatalf("read %d bytes from packs for 3 files sharing %d bytes of content, want at most %d: shared blobs are fetched once per file", read, len(data), limit)
	}
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(dst, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s differs after restore", name)
		}
	}
}

// loadLog records the ranges of pack Loads.
type loadLog struct {
	remote.Storage
	mu     sync.Mutex
	ranges map[[2]int64]int
}

func (l *loadLog) Load(ctx context.Context, h remote.Handle, off, n int64) ([]byte, error) {
	if h.Type == remote.Pack {
		l.mu.Lock()
		if l.ranges == nil {
			l.ranges = map[[2]int64]int{}
		}
		l.ranges[[2]int64{off, n}]++
		l.mu.Unlock()
	}
	return l.Storage.Load(ctx, h, off, n)
}

func (l *loadLog) reset() {
	l.mu.Lock()
	l.ranges = map[[2]int64]int{}
	l.mu.Unlock()
}

// TestRestoreBypassesReadAhead restores through a read-ahead store whose
// window would take every read of a small file, and checks that while
// files were written the store below was asked for exactly the ranges the
// restore asked for: spans and runs already ask for what they need, and
// a window would add bytes nobody reads.
func TestRestoreBypassesReadAhead(t *testing.T) {
	ctx := context.Background()
	below := &loadLog{Storage: remote.NewMem()}
	above := &loadLog{Storage: remote.WithReadAhead(below, remote.ReadAheadOptions{Window: 1 << 20, Windows: 2})}
	r := repotest.Create(t, above)
	src := t.TempDir()
	rng := rand.New(rand.NewSource(10))
	for i := 0; i < 50; i++ {
		data := make([]byte, 1+rng.Intn(50<<10))
		rng.Read(data)
		if err := os.WriteFile(filepath.Join(src, fmt.Sprintf("f%02d", i)), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	big := make([]byte, 5<<20)
	rng.Read(big)
	if err := os.WriteFile(filepath.Join(src, "big"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	sn, _, err := archiver.Import(ctx, r, src, archiver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer restorer.SetAfterPlan(func() { below.reset(); above.reset() })()
	dst := filepath.Join(t.TempDir(), "out")
	// One worker: with several, one could find its range in a window
	// another fetched and skip the store, which is what this looks for.
	sum, err := restorer.Restore(ctx, r, sn, []string{"/"}, dst, restorer.Options{Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Files != 51 {
		t.Fatalf("restored %d files, want 51", sum.Files)
	}
	if len(above.ranges) == 0 || !maps.Equal(above.ranges, below.ranges) {
		t.Fatalf("restore asked for %v, the store below the read-ahead was asked for %v: the restore's reads went through read-ahead windows", above.ranges, below.ranges)
	}
	got, err := os.ReadFile(filepath.Join(dst, "big"))
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("big file differs after restore (%d bytes, %v)", len(got), err)
	}
}
