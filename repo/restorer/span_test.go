package restorer_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo/archiver"
	"github.com/keepfs/keepfs/repo/repotest"
	"github.com/keepfs/keepfs/repo/restorer"
)

// countingStorage counts ranged reads of packs.
type countingStorage struct {
	remote.Storage
	mu    sync.Mutex
	reads int
	bytes int64
}

func (c *countingStorage) Load(ctx context.Context, h remote.Handle, off, n int64) ([]byte, error) {
	b, err := c.Storage.Load(ctx, h, off, n)
	if h.Type == remote.Pack {
		c.mu.Lock()
		c.reads++
		c.bytes += int64(len(b))
		c.mu.Unlock()
	}
	return b, err
}

func (c *countingStorage) counts() (int, int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reads, c.bytes
}

// TestRestoreReadsSmallFilesBySpan restores 600 small files (with a few
// duplicates and two big files) and checks that the small files cost a
// handful of pack reads, not one each, and that every file is right.
func TestRestoreReadsSmallFilesBySpan(t *testing.T) {
	ctx := context.Background()
	cs := &countingStorage{Storage: remote.NewMem()}
	r := repotest.Create(t, cs)
	src := t.TempDir()
	rng := rand.New(rand.NewSource(1))
	const small = 600
	for i := 0; i < small; i++ {
		d := filepath.Join(src, fmt.Sprintf("d%d", i%7))
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		data := make([]byte, 1+rng.Intn(20<<10))
		rng.Read(data)
		if i%50 == 0 {
			data = []byte("the same content in several files\n")
		}
		if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%03d", i)), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 2; i++ {
		data := make([]byte, 3<<20)
		rng.Read(data)
		if err := os.WriteFile(filepath.Join(src, fmt.Sprintf("big%d", i)), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sn, _, err := archiver.Import(ctx, r, src, archiver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// A fresh handle: the trees it reads are not cached yet, so count
	// them apart from the file reads.
	r2 := repotest.Open(t, cs)
	packs := len(r2.Index().Packs())
	before, _ := cs.counts()
	dst := filepath.Join(t.TempDir(), "out")
	sum, err := restorer.Restore(ctx, r2, sn, []string{"/"}, dst, restorer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	after, read := cs.counts()
	reads := after - before
	t.Logf("%d files restored with %d pack reads (%d bytes) from %d packs", sum.Files, reads, read, packs)
	if sum.Files != small+2 {
		t.Fatalf("restored %d files, want %d", sum.Files, small+2)
	}
	// 8 trees, the big files' blobs (at least 3 MiB / 8 MiB max chunk:
	// at most 6 of 512 KiB or more) and the small files' (12 MiB of them,
	// read with the rest of their pack: a few reads per pack).
	if limit := 8 + 12 + 4*packs; reads > limit {
		t.Fatalf("%d pack reads for %d files, want at most %d: small files are not read together", reads, sum.Files, limit)
	}
	err = filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		want, _ := os.ReadFile(p)
		got, err := os.ReadFile(filepath.Join(dst, rel))
		if err != nil {
			return err
		}
		if !bytes.Equal(got, want) {
			return fmt.Errorf("%s differs after restore", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
