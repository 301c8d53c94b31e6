package restorer_test

import (
	"context"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/archiver"
	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/restorer"
)

// Planning reads the trees of a hierarchy level by level, those of a level
// lying close together in a pack with one read: a handful of reads for 81
// trees, not one round trip each. The restore is still the source tree.
func TestRestorePlanningReadsTreesBySpan(t *testing.T) {
	ctx := context.Background()
	is := &countingStorage{Storage: remote.NewMem()}
	r, err := repo.Create(ctx, is, []byte("pw"), repo.Options{KDF: &crypto.TestKDF})
	if err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	for i := range 40 {
		d := filepath.Join(src, fmt.Sprintf("d%02d", i), "sub")
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "f"), []byte(fmt.Sprintf("file %d", i)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sn, _, err := archiver.Import(ctx, r, src, archiver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// A fresh client: no tree cached in memory.
	r2, err := repo.Open(ctx, is, []byte("pw"), repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	before, _ := is.counts()
	var planReads int
	defer restorer.SetAfterPlan(func() { n, _ := is.counts(); planReads = n - before })()
	dst := t.TempDir()
	if _, err := restorer.Restore(ctx, r2, sn, []string{"/"}, dst, restorer.Options{}); err != nil {
		t.Fatal(err)
	}
	// Lookup reads the root, then a read per level (root, d*, d*/sub).
	if planReads > 5 {
		t.Fatalf("planning read packs %d times for 81 trees in 3 levels; want at most 5", planReads)
	}
	for i := range 40 {
		b, err := os.ReadFile(filepath.Join(dst, fmt.Sprintf("d%02d", i), "sub", "f"))
		if err != nil || string(b) != fmt.Sprintf("file %d", i) {
			t.Fatalf("d%02d/sub/f: %q %v", i, b, err)
		}
	}
}

// inflightStorage records how many pack reads were in flight at most; each
// read takes a little while, as a round trip to an object store does.
type inflightStorage struct {
	remote.Storage
	mu       sync.Mutex
	now, max int
}

func (s *inflightStorage) Load(ctx context.Context, h remote.Handle, off, n int64) ([]byte, error) {
	if h.Type != remote.Pack {
		return s.Storage.Load(ctx, h, off, n)
	}
	s.mu.Lock()
	s.now++
	s.max = max(s.max, s.now)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.now--
		s.mu.Unlock()
	}()
	time.Sleep(2 * time.Millisecond)
	return s.Storage.Load(ctx, h, off, n)
}

// Trees that lie far apart in their pack (each directory holds 100 KB of
// file data) are read several at once, not one round trip after the other.
func TestRestorePlanningReadsTreesConcurrently(t *testing.T) {
	ctx := context.Background()
	is := &inflightStorage{Storage: remote.NewMem()}
	r, err := repo.Create(ctx, is, []byte("pw"), repo.Options{KDF: &crypto.TestKDF})
	if err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	rng := rand.New(rand.NewSource(1))
	data := make([]byte, 100<<10)
	for i := range 20 {
		d := filepath.Join(src, fmt.Sprintf("d%02d", i))
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		rng.Read(data)
		if err := os.WriteFile(filepath.Join(d, "f"), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sn, _, err := archiver.Import(ctx, r, src, archiver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r2, err := repo.Open(ctx, is, []byte("pw"), repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	is.mu.Lock()
	is.max = 0
	is.mu.Unlock()
	var peak int
	defer restorer.SetAfterPlan(func() { is.mu.Lock(); peak = is.max; is.mu.Unlock() })()
	if _, err := restorer.Restore(ctx, r2, sn, []string{"/"}, t.TempDir(), restorer.Options{}); err != nil {
		t.Fatal(err)
	}
	if peak < 2 {
		t.Fatalf("planning read at most %d trees at once; want several", peak)
	}
}
