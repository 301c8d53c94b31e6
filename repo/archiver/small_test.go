package archiver_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/archiver"
	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/pack"
	"github.com/keepfs/keepfs/repo/tree"
)

// Files below the chunker's minimum are read whole and stored as one blob
// without the chunker: their content ids must be what the chunker gives,
// or an import would not deduplicate against the mount's (and older
// imports') blobs of the same content.
func TestSmallFilesMatchChunker(t *testing.T) {
	ctx := context.Background()
	r, err := repo.Create(ctx, remote.NewMem(), []byte("pw"), repo.Options{KDF: &crypto.TestKDF})
	if err != nil {
		t.Fatal(err)
	}
	lim := r.Config().Chunker.Min
	src := t.TempDir()
	rng := rand.New(rand.NewSource(3))
	sizes := map[string]int{"empty": 0, "one": 1, "some": 4000, "below": lim - 1, "at": lim, "above": lim + 1, "two": 3 * lim}
	want := map[string][]byte{}
	for name, n := range sizes {
		b := make([]byte, n)
		rng.Read(b)
		want[name] = b
		if err := os.WriteFile(filepath.Join(src, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sn, sum, err := archiver.Import(ctx, r, src, archiver.Options{})
	if err != nil || len(sum.Warnings) > 0 {
		t.Fatalf("import: %v %v", err, sum)
	}
	root, err := r.LoadTree(ctx, sn.Tree)
	if err != nil {
		t.Fatal(err)
	}
	c := r.NewChunker()
	for name, b := range want {
		n := root.Find(name)
		if n == nil || n.Type != tree.File || n.Size != uint64(len(b)) {
			t.Fatalf("%s: node %+v", name, n)
		}
		var ids []crypto.ID
		c.Reset(bytes.NewReader(b))
		for {
			chunk, err := c.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, r.Key().BlobID(chunk))
		}
		if len(ids) != len(n.Content) {
			t.Fatalf("%s (%d bytes): %d blobs stored, the chunker makes %d", name, len(b), len(n.Content), len(ids))
		}
		for i := range ids {
			if ids[i] != n.Content[i] {
				t.Fatalf("%s: blob %d is %s, the chunker's is %s", name, i, n.Content[i].Short(), ids[i].Short())
			}
		}
		var got []byte
		for _, id := range n.Content {
			p, err := r.LoadBlob(ctx, pack.Data, id)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, p...)
		}
		if !bytes.Equal(got, b) {
			t.Fatalf("%s: stored content differs", name)
		}
	}
}
