package cache

import (
	"context"
	"os"
	"testing"

	"github.com/keepfs/keepfs/cache/chunkstore"
	"github.com/keepfs/keepfs/cache/meta"
	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo/tree"
)

// Chunks a close stored are noted as not yet on the disk. An fsync makes
// every inode committed so far durable, so it syncs all noted chunks first
// (those of the file itself, reopened, and of files only closed); the
// periodic sync of the state directory clears the list too.
func TestFsyncMakesClosedChunksDurable(t *testing.T) {
	ctx := context.Background()
	c := openCache(t, newRepo(t, remote.NewMem()), t.TempDir())
	defer c.Close(ctx)
	if n := c.chunks.Unsynced(); n != 0 {
		t.Fatalf("%d chunks unsynced right after open", n)
	}
	big := randBytes(1, 3<<20)    // chunk files
	small := randBytes(2, 40<<10) // a segment record
	a := writeFile(t, c, c.Root(), "a", big)
	b := writeFile(t, c, c.Root(), "b", small)
	chunksOf := func(ino uint64) []meta.Chunk {
		n, err := c.getInode(ino)
		if err != nil {
			t.Fatal(err)
		}
		return n.Chunks
	}
	// fsync opens ino (writing data at 0 when there is any), fsyncs and
	// closes it.
	fsync := func(ino uint64, data []byte) {
		t.Helper()
		flags := os.O_RDONLY
		if data != nil {
			flags = os.O_WRONLY
		}
		h, err := c.OpenFile(ctx, ino, uint32(flags))
		if err != nil {
			t.Fatal(err)
		}
		if data != nil {
			if _, err := h.WriteAt(ctx, data, 0); err != nil {
				t.Fatal(err)
			}
		}
		if err := h.Fsync(ctx); err != nil {
			t.Fatal(err)
		}
		h.Release(ctx)
	}
	// The repository's random chunker key can cut a tail small enough to
	// live in Badger itself: nothing to note for it.
	outside := func(chs []meta.Chunk) (out []meta.Chunk) {
		for _, ch := range chs {
			if ch.Len > chunkstore.InlineMax {
				out = append(out, ch)
			}
		}
		return out
	}
	ca, cb := outside(chunksOf(a)), chunksOf(b)
	if n := c.chunks.Unsynced(); n != len(ca)+len(cb) || len(cb) != 1 {
		t.Fatalf("after close: %d chunks noted unsynced, want the %d of a kept outside Badger and the %d of b", n, len(ca), len(cb))
	}

	// An fsync of a clean, reopened file syncs them all.
	fsync(a, nil)
	if n := c.chunks.Unsynced(); n != 0 {
		t.Fatalf("after fsync of a: %d chunks still noted", n)
	}

	// So does an fsync of a dirty file, before its inode.
	writeFile(t, c, c.Root(), "c", randBytes(3, 2<<20))
	if c.chunks.Unsynced() == 0 {
		t.Fatal("a close noted nothing")
	}
	nb, err := c.Create(ctx, c.Root(), "b2", NewNode{Type: tree.File, Mode: 0o644})
	if err != nil {
		t.Fatal(err)
	}
	fsync(nb.Ino, small)
	if n := c.chunks.Unsynced(); n != 0 {
		t.Fatalf("after fsync of a new file: %d chunks still noted", n)
	}

	writeFile(t, c, c.Root(), "d", randBytes(4, 2<<20))
	if c.chunks.Unsynced() == 0 {
		t.Fatal("a close noted nothing")
	}
	if err := c.chunks.Sync(); err != nil {
		t.Fatal(err)
	}
	if n := c.chunks.Unsynced(); n != 0 {
		t.Fatalf("%d chunks noted after syncing the state directory", n)
	}
}
