package cache

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/keepfs/keepfs/remote"
)

// Reads pick a file's chunks under its lock and decrypt them after
// releasing it. Readers racing with writes and commits through another
// handle still see each read whole from one version of the file, never a
// mix, and never bytes from neither.
func TestReadsDuringWritesAndCommits(t *testing.T) {
	ctx := context.Background()
	c := openCache(t, newRepo(t, remote.NewMem()), t.TempDir())
	defer c.Close(ctx)
	const size = 3 << 20 // a few chunks, each in a file of its own
	versions := [][]byte{randBytes(21, size), randBytes(22, size)}
	ino := writeFile(t, c, c.Root(), "f", versions[0])
	r, err := c.OpenFile(ctx, ino, uint32(os.O_RDONLY))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Release(ctx)

	var stop atomic.Bool
	var reads atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			buf := make([]byte, 300<<10)
			for !stop.Load() || reads.Load() < 50 {
				off := rng.IntN(size - len(buf))
				n := 1 + rng.IntN(len(buf))
				if _, err := r.ReadAt(ctx, buf[:n], int64(off)); err != nil {
					errs <- err
					return
				}
				reads.Add(1)
				if !bytes.Equal(buf[:n], versions[0][off:off+n]) && !bytes.Equal(buf[:n], versions[1][off:off+n]) {
					t.Errorf("read [%d,+%d) matches neither version of the file", off, n)
					return
				}
			}
		}()
	}
	for i := range 6 {
		w, err := c.OpenFile(ctx, ino, uint32(os.O_WRONLY))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.WriteAt(ctx, versions[(i+1)%2], 0); err != nil {
			t.Fatal(err)
		}
		if err := w.Flush(ctx); err != nil { // commits: the chunks change
			t.Fatal(err)
		}
		if err := w.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// A sequential reader of a file whose chunks are local has the next chunk
// prefetched once per chunk, not at every READ: each prefetch of a chunk
// whose file was not open yet started a goroutine to find it local.
func TestSequentialReadPrefetchesOncePerChunk(t *testing.T) {
	ctx := context.Background()
	c := openCache(t, newRepo(t, remote.NewMem()), t.TempDir())
	defer c.Close(ctx)
	data := randBytes(23, 4<<20) // chunks of at least 512 KiB, each in a file
	ino := writeFile(t, c, c.Root(), "f", data)
	h, err := c.OpenFile(ctx, ino, uint32(os.O_RDONLY))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Release(ctx)
	buf := make([]byte, 4096)
	var off int
	read := func() {
		if _, err := h.ReadAt(ctx, buf, int64(off)); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf, data[off:off+len(buf)]) {
			t.Fatalf("read at %d differs from what was written", off)
		}
		off += len(buf)
		// A prefetch started has finished: the next read could start
		// another.
		c.chunks.Wait()
	}
	read() // the first chunk's file opens; the next one is prefetched
	// 101 reads of 4 KiB stay inside the first chunk (at least 512 KiB).
	// The one allocation is the read's plan.
	if a := testing.AllocsPerRun(100, read); a > 1 {
		t.Fatalf("%.2f allocations per sequential read, want at most 1 (the plan)", a)
	}
}
