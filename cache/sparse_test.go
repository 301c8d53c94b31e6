package cache

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo/tree"
	"golang.org/x/sys/unix"
)

// TestSparseHoles: a truncate that grows a file records a hole, stores no
// chunk and takes no time; reads of it are zeros; lseek finds data and
// holes; snapshots carry the holes and a rebuild from the remote gets them
// back; sizes past MaxFileSize are refused with ErrFileTooBig.
func TestSparseHoles(t *testing.T) {
	ctx := context.Background()
	be := remote.NewMem()
	c := openCache(t, newRepo(t, be), t.TempDir())
	defer func() { c.Close(ctx) }()
	a, err := c.Create(ctx, c.Root(), "s", NewNode{Type: tree.File, Mode: 0o644})
	if err != nil {
		t.Fatal(err)
	}
	const tib = uint64(1) << 40
	size := tib
	stored := c.chunks.Stored()
	start := time.Now()
	if _, err := c.SetAttr(ctx, a.Ino, SetAttrIn{Size: &size}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("truncate to 1 TiB took %v", d)
	}
	n, _ := c.getInode(a.Ino)
	if n.Size != tib || len(n.Chunks) != 1 || !n.Chunks[0].IsHole() || n.Chunks[0].Len != tib {
		t.Fatalf("after truncate: size %d, chunks %+v", n.Size, n.Chunks)
	}
	if got := c.chunks.Stored() - stored; got != 0 {
		t.Fatalf("a hole stored %d chunks", got)
	}
	if a := lookupPath(t, c, "s"); a.Holes != tib || a.Blocks() != 0 {
		t.Fatalf("attributes of a 1 TiB hole: %d bytes of holes, %d blocks", a.Holes, a.Blocks())
	}
	h, err := c.OpenFile(ctx, a.Ino, uint32(os.O_RDWR))
	if err != nil {
		t.Fatal(err)
	}
	buf := bytes.Repeat([]byte{1}, 4096)
	if k, err := h.ReadAt(ctx, buf, int64(tib/2)); err != nil || k != 4096 || !bytes.Equal(buf, make([]byte, 4096)) {
		t.Fatalf("read in the hole: %d, %v", k, err)
	}
	// Data in the middle: hole, chunk, hole.
	mid := uint64(512) << 30
	data := randBytes(7, 3<<20)
	if _, err := h.WriteAt(ctx, data, int64(mid)); err != nil {
		t.Fatal(err)
	}
	seek := func(off uint64, whence uint32) uint64 {
		t.Helper()
		p, err := c.Lseek(ctx, a.Ino, off, whence)
		if err != nil {
			t.Fatalf("lseek(%d, %d): %v", off, whence, err)
		}
		return p
	}
	check := func(when string) {
		t.Helper()
		if p := seek(0, unix.SEEK_DATA); p != mid {
			t.Fatalf("%s: SEEK_DATA from 0 = %d, want %d", when, p, mid)
		}
		if p := seek(mid+1, unix.SEEK_HOLE); p != mid+uint64(len(data)) {
			t.Fatalf("%s: SEEK_HOLE from the data = %d", when, p)
		}
		if p := seek(5, unix.SEEK_HOLE); p != 5 {
			t.Fatalf("%s: SEEK_HOLE in a hole = %d", when, p)
		}
		if _, err := c.Lseek(ctx, a.Ino, mid+uint64(len(data)), unix.SEEK_DATA); !errors.Is(err, ErrNoMoreData) {
			t.Fatalf("%s: SEEK_DATA in the last hole: %v", when, err)
		}
		if _, err := c.Lseek(ctx, a.Ino, tib, unix.SEEK_HOLE); !errors.Is(err, ErrNoMoreData) {
			t.Fatalf("%s: SEEK_HOLE at the end: %v", when, err)
		}
	}
	check("before the commit")
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
	check("after the commit")
	n, _ = c.getInode(a.Ino)
	var holes, dataBytes uint64
	for _, ch := range n.Chunks {
		if ch.IsHole() {
			holes += ch.Len
		} else {
			dataBytes += ch.Len
		}
	}
	if dataBytes != uint64(len(data)) || holes != tib-dataBytes || !n.Chunks[0].IsHole() || !n.Chunks[len(n.Chunks)-1].IsHole() {
		t.Fatalf("after a write in the middle: %d data bytes, %d in holes, %+v", dataBytes, holes, n.Chunks)
	}
	readAt := func(c *Cache, ino uint64, off uint64, n int) []byte {
		t.Helper()
		h, err := c.OpenFile(ctx, ino, uint32(os.O_RDONLY))
		if err != nil {
			t.Fatal(err)
		}
		defer h.Release(ctx)
		b := make([]byte, n)
		if k, err := h.ReadAt(ctx, b, int64(off)); err != nil || k != n {
			t.Fatalf("read %d at %d: %d, %v", n, off, k, err)
		}
		return b
	}
	want := append(make([]byte, 100), data...)
	want = append(want, make([]byte, 100)...)
	if got := readAt(c, a.Ino, mid-100, len(want)); !bytes.Equal(got, want) {
		t.Fatal("data and the holes around it read wrong")
	}

	// The snapshot's tree records the holes, and a rebuild reads them.
	sn, err := c.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := c.r.LoadTree(ctx, sn.Tree)
	if err != nil {
		t.Fatal(err)
	}
	nd := tr.Find("s")
	if nd == nil || len(nd.Holes) != 2 || nd.Size != tib {
		t.Fatalf("snapshot node: %+v", nd)
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	c = openCache(t, reopenRepo(t, be), t.TempDir())
	ino := lookupPath(t, c, "s").Ino
	if got := readAt(c, ino, mid-100, len(want)); !bytes.Equal(got, want) {
		t.Fatal("rebuilt from the remote: data and the holes around it read wrong")
	}
	m, _ := c.getInode(ino)
	if len(m.Chunks) != len(n.Chunks) {
		t.Fatalf("rebuilt chunk list %+v, want %+v", m.Chunks, n.Chunks)
	}

	// 10^15 bytes fits; past MaxFileSize is EFBIG, at any size.
	big := uint64(1e15)
	if _, err := c.SetAttr(ctx, ino, SetAttrIn{Size: &big}); err != nil {
		t.Fatalf("truncate to 10^15: %v", err)
	}
	tooBig := uint64(MaxFileSize + 1)
	if _, err := c.SetAttr(ctx, ino, SetAttrIn{Size: &tooBig}); !errors.Is(err, ErrFileTooBig) {
		t.Fatalf("truncate past the maximum: %v", err)
	}
	h, _ = c.OpenFile(ctx, ino, uint32(os.O_RDWR))
	if _, err := h.WriteAt(ctx, []byte("x"), MaxFileSize); !errors.Is(err, ErrFileTooBig) {
		t.Fatalf("write past the maximum: %v", err)
	}
	h.Release(ctx)
	if a := lookupPath(t, c, "s"); a.Size != big {
		t.Fatalf("size %d after the refused changes", a.Size)
	}
}

// TestSparseModel drives random writes, growing and shrinking truncates
// and commits against an in-memory model: the content always reads as the
// model, and never-written runs of minHole or more are holes, not chunks.
func TestSparseModel(t *testing.T) {
	ctx := context.Background()
	c := openCache(t, newRepo(t, remote.NewMem()), t.TempDir())
	defer c.Close(ctx)
	a, _ := c.Create(ctx, c.Root(), "m", NewNode{Type: tree.File, Mode: 0o644})
	rng := rand.New(rand.NewPCG(11, 12))
	var model []byte
	holesSeen := 0
	h, _ := c.OpenFile(ctx, a.Ino, uint32(os.O_RDWR))
	for step := 0; step < 120; step++ {
		switch r := rng.IntN(10); {
		case r < 5:
			off := rng.IntN(24 << 20)
			b := randBytes(uint64(step), 1+rng.IntN(1<<20))
			model = modelWrite(t, h, model, off, b)
		case r < 8:
			size := rng.IntN(32 << 20)
			model = modelTruncate(t, h, model, size)
		default:
			if err := h.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			holesSeen += modelHoles(t, c, a.Ino, model, step)
		}
		if rng.IntN(4) == 0 {
			if got := readFile(t, c, a.Ino); !bytes.Equal(got, model) {
				t.Fatalf("step %d: content differs from the model (%d bytes, want %d)", step, len(got), len(model))
			}
		}
	}
	h.Release(ctx)
	wantContent(t, c, a.Ino, model, "final content differs from the model")
	if holesSeen < 10 {
		t.Fatalf("only %d holes committed: the model test does not exercise them", holesSeen)
	}
}

// TestZeroModel drives random writes, truncates, Zero (fallocate's punch
// hole and zero range, with and without keeping the size), fsyncs (which
// leave intents for big changes) and commits against an in-memory model:
// the content always reads as the model, the zeroed runs of minHole or
// more become holes, and every hole reads as zeros in the model.
func TestZeroModel(t *testing.T) {
	ctx := context.Background()
	c := openCache(t, newRepo(t, remote.NewMem()), t.TempDir())
	defer c.Close(ctx)
	a, _ := c.Create(ctx, c.Root(), "m", NewNode{Type: tree.File, Mode: 0o644})
	rng := rand.New(rand.NewPCG(13, 14))
	var model []byte
	holesSeen, zeroed, intents := 0, 0, 0
	h, _ := c.OpenFile(ctx, a.Ino, uint32(os.O_RDWR))
	for step := 0; step < 150; step++ {
		switch r := rng.IntN(12); {
		case r < 4:
			off := rng.IntN(16 << 20)
			b := randBytes(uint64(step), 1+rng.IntN(3<<20))
			model = modelWrite(t, h, model, off, b)
		case r < 5:
			size := rng.IntN(20 << 20)
			model = modelTruncate(t, h, model, size)
		case r < 9:
			off, n := rng.IntN(20<<20), 1+rng.IntN(5<<20)
			keep := rng.IntN(2) == 0
			if err := h.Zero(ctx, uint64(off), uint64(n), keep); err != nil {
				t.Fatal(err)
			}
			end := off + n
			if keep {
				end = min(end, len(model))
			} else if end > len(model) {
				model = append(model, make([]byte, end-len(model))...)
			}
			if off < end {
				clear(model[off:end])
				zeroed++
			}
		case r < 10:
			// Enough bytes that the fsync leaves an intent and commits
			// in the background, racing the next steps.
			off := rng.IntN(16 << 20)
			b := randBytes(uint64(step), deferCommitMin+rng.IntN(1<<20))
			model = modelWrite(t, h, model, off, b)
			if err := h.Fsync(ctx); err != nil {
				t.Fatal(err)
			}
			intents += intentCount(t, c)
		default:
			// A commit (a background one may hold the lock first).
			if err := c.commit(ctx, h.f, false); err != nil {
				t.Fatal(err)
			}
			holesSeen += modelHoles(t, c, a.Ino, model, step)
		}
		if got := h.f.size; got != uint64(len(model)) {
			t.Fatalf("step %d: size %d, model %d", step, got, len(model))
		}
		if rng.IntN(3) == 0 {
			if got := readFile(t, c, a.Ino); !bytes.Equal(got, model) {
				t.Fatalf("step %d: content differs from the model (%d bytes, want %d)", step, len(got), len(model))
			}
		}
	}
	h.Release(ctx)
	wantContent(t, c, a.Ino, model, "final content differs from the model")
	if holesSeen < 10 || zeroed < 20 || intents < 3 {
		t.Fatalf("%d holes committed, %d ranges zeroed, %d intents: the model test does not exercise them", holesSeen, zeroed, intents)
	}
}

// modelWrite writes b at off through h and into model, which it returns.
func modelWrite(t *testing.T, h *Handle, model []byte, off int, b []byte) []byte {
	t.Helper()
	if _, err := h.WriteAt(context.Background(), b, int64(off)); err != nil {
		t.Fatal(err)
	}
	if end := off + len(b); end > len(model) {
		model = append(model, make([]byte, end-len(model))...)
	}
	copy(model[off:], b)
	return model
}

// modelTruncate truncates h's file and model to size.
func modelTruncate(t *testing.T, h *Handle, model []byte, size int) []byte {
	t.Helper()
	if err := h.f.truncate(context.Background(), uint64(size)); err != nil {
		t.Fatal(err)
	}
	if size < len(model) {
		return model[:size]
	}
	return append(model, make([]byte, size-len(model))...)
}

// modelHoles checks the committed chunks of ino against model (they cover
// it, and every hole is minHole or more of zeros) and counts the holes.
func modelHoles(t *testing.T, c *Cache, ino uint64, model []byte, step int) int {
	t.Helper()
	n, _ := c.getInode(ino)
	holes := 0
	var off uint64
	for _, ch := range n.Chunks {
		if ch.IsHole() {
			holes++
			if ch.Len < minHole || !bytes.Equal(model[off:off+ch.Len], make([]byte, ch.Len)) {
				t.Fatalf("step %d: hole of %d at %d", step, ch.Len, off)
			}
		}
		off += ch.Len
	}
	if off != uint64(len(model)) || n.Size != off {
		t.Fatalf("step %d: chunks cover %d bytes, size %d, model %d", step, off, n.Size, len(model))
	}
	return holes
}
