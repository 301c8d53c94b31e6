package cache

import (
	"context"
	"slices"
	"testing"

	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo/tree"
)

// Files the cache removes because another client erased their content
// (reconcile after a relock, while mounted) are named to the mount, which
// tells the kernel to forget them.
func TestDropErasedTellsTheMount(t *testing.T) {
	ctx := context.Background()
	c := openCache(t, newRepo(t, remote.NewMem()), t.TempDir())
	defer c.Close(ctx)
	victim := randBytes(41, 700<<10)
	d, err := c.Create(ctx, c.Root(), "d", NewNode{Type: tree.Dir, Mode: 0o755})
	if err != nil {
		t.Fatal(err)
	}
	e, err := c.Create(ctx, d.Ino, "e", NewNode{Type: tree.Dir, Mode: 0o755})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, c, e.Ino, "victim", victim)
	writeFile(t, c, c.Root(), "copy", victim)
	writeFile(t, c, c.Root(), "keep", []byte("kept"))
	var removed []string
	c.OnRemoved(func(p string) { removed = append(removed, p) })
	n, err := c.getInode(lookupPath(t, c, "copy").Ino)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.dropErased(ctx, chunkIDs(n.Chunks), nil); err != nil {
		t.Fatal(err)
	}
	slices.Sort(removed)
	if want := []string{"/copy", "/d/e/victim"}; !slices.Equal(removed, want) {
		t.Fatalf("told the mount of %q, want %q", removed, want)
	}
	if _, err := c.Lookup(ctx, e.Ino, "victim"); err == nil {
		t.Fatal("erased file still there")
	}
	if got := readFile(t, c, lookupPath(t, c, "keep").Ino); string(got) != "kept" {
		t.Fatalf("other file: %q", got)
	}
}
