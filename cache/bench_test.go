package cache

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo/tree"
)

// BenchmarkSmallFile is the cache's share of writing one small file:
// create, write, commit on close, set times.
func BenchmarkSmallFile(b *testing.B) {
	ctx := context.Background()
	c := openCache(b, newRepo(b, remote.NewMem()), b.TempDir())
	defer c.Close(ctx)
	data := randBytes(1, 3000)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		a, err := c.Create(ctx, c.Root(), fmt.Sprintf("f%d", i), NewNode{Type: tree.File, Mode: 0o644})
		if err != nil {
			b.Fatal(err)
		}
		h, err := c.OpenFile(ctx, a.Ino, uint32(os.O_WRONLY))
		if err != nil {
			b.Fatal(err)
		}
		data[0] = byte(i)
		data[1] = byte(i >> 8)
		h.WriteAt(ctx, data, 0)
		if err := h.Flush(ctx); err != nil {
			b.Fatal(err)
		}
		h.Release(ctx)
		mt := time.Now().UnixNano()
		c.SetAttr(ctx, a.Ino, SetAttrIn{Mtime: &mt})
	}
}

// BenchmarkCommitOneByte: a 1-byte change in a 64 MiB file, committed.
func BenchmarkCommitOneByte(b *testing.B) {
	ctx := context.Background()
	c := openCache(b, newRepo(b, remote.NewMem()), b.TempDir())
	defer c.Close(ctx)
	data := randBytes(2, 64<<20)
	ino := writeFile(b, c, c.Root(), "big", data)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		h, _ := c.OpenFile(ctx, ino, uint32(os.O_RDWR))
		h.WriteAt(ctx, []byte{byte(i)}, int64(i*7919)%int64(len(data)))
		if err := h.Release(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTarFile is what tar x, cp -a and rsync ask of the cache for one
// 10 KiB file: create, write, set times, owner and mode while it is open,
// then close.
func BenchmarkTarFile(b *testing.B) {
	ctx := context.Background()
	c := openCache(b, newRepo(b, remote.NewMem()), b.TempDir())
	defer c.Close(ctx)
	data := randBytes(3, 10<<10)
	uid, mode := uint32(0), uint32(0o644)
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		a, err := c.Create(ctx, c.Root(), fmt.Sprintf("f%d", i), NewNode{Type: tree.File, Mode: 0o600})
		if err != nil {
			b.Fatal(err)
		}
		h, err := c.OpenFile(ctx, a.Ino, uint32(os.O_WRONLY))
		if err != nil {
			b.Fatal(err)
		}
		data[0], data[1] = byte(i), byte(i>>8)
		if _, err := h.WriteAt(ctx, data, 0); err != nil {
			b.Fatal(err)
		}
		mt := int64(1e18)
		for _, in := range []SetAttrIn{{Mtime: &mt}, {UID: &uid, GID: &uid, KillPriv: true}, {Mode: &mode}} {
			if _, err := c.SetAttr(ctx, a.Ino, in); err != nil {
				b.Fatal(err)
			}
		}
		if err := h.Flush(ctx); err != nil {
			b.Fatal(err)
		}
		if err := h.Release(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRandomWrite: 4 KiB writes at random places of a 256 MiB file
// held open, already scattered by 32,768 earlier ones (fio's random write
// job leaves as many dirty extents).
func BenchmarkRandomWrite(b *testing.B) {
	ctx := context.Background()
	c := openCache(b, newRepo(b, remote.NewMem()), b.TempDir())
	defer c.Close(ctx)
	_, h := createOpen(b, c, c.Root(), "f")
	const blocks = 256 << 20 >> 12
	buf := randBytes(3, 4096)
	rng := rand.New(rand.NewPCG(1, 1))
	for i := 0; i < 32768; i++ {
		h.WriteAt(ctx, buf, int64(rng.IntN(blocks))<<12)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := h.WriteAt(ctx, buf, int64(rng.IntN(blocks))<<12); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	h.f.mu.Lock()
	h.f.dirty, h.f.written = nil, nil // nothing to commit: the cost measured is the write's
	h.f.points, h.f.changed = nil, false
	h.f.mu.Unlock()
	h.Release(ctx)
}

// BenchmarkRandomRead4K is the cache's share of a 4 KiB random read of a
// committed 64 MiB file whose chunk files are in the page cache.
func BenchmarkRandomRead4K(b *testing.B) {
	ctx := context.Background()
	c := openCache(b, newRepo(b, remote.NewMem()), b.TempDir())
	defer c.Close(ctx)
	const size = 64 << 20
	ino := writeFile(b, c, c.Root(), "f", randBytes(3, size))
	h, err := c.OpenFile(ctx, ino, uint32(os.O_RDONLY))
	if err != nil {
		b.Fatal(err)
	}
	defer h.Release(ctx)
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 4096)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := h.ReadAt(ctx, buf, int64(rng.IntN(size/4096))*4096); err != nil {
			b.Fatal(err)
		}
	}
}
