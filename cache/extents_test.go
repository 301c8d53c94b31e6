package cache

import (
	"context"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/keepfs/keepfs/remote"
)

// extents against a bitmap: after every add the set is sorted, disjoint,
// has no two touching ranges, and covers exactly the bytes added.
func TestExtentsAdd(t *testing.T) {
	const space = 300
	rng := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 200; round++ {
		var x extents
		var bits [space]bool
		for step := 0; step < 60; step++ {
			s := uint64(rng.IntN(space))
			e := s + uint64(rng.IntN(20))
			if e > space {
				e = space
			}
			var added int64
			x, added = x.add(s, e)
			var fresh int64
			for i := s; i < e; i++ {
				if !bits[i] {
					fresh++
				}
				bits[i] = true
			}
			if added != fresh {
				t.Fatalf("round %d step %d: add(%d, %d) reports %d new bytes, want %d", round, step, s, e, added, fresh)
			}
			var cover [space]bool
			for k, r := range x {
				if r.Start >= r.End || (k > 0 && x[k-1].End >= r.Start) {
					t.Fatalf("round %d step %d: bad set %v", round, step, x)
				}
				for i := r.Start; i < r.End; i++ {
					cover[i] = true
				}
			}
			if cover != bits {
				t.Fatalf("round %d step %d: after add(%d, %d) the set %v covers other bytes", round, step, s, e, x)
			}
			var want int64
			for _, b := range bits {
				if b {
					want++
				}
			}
			if x.total() != want {
				t.Fatalf("total %d, want %d", x.total(), want)
			}
		}
	}
}

// The dirty byte count kept up by writes (status shows it, and writes
// check free space against it) stays the number of bytes written since the
// commit through random writes, holes and truncates: gaps never written
// are not counted, as big ones become holes that take no space.
func TestDirtyBytesTracksExtents(t *testing.T) {
	ctx := context.Background()
	c := openCache(t, newRepo(t, remote.NewMem()), t.TempDir())
	defer c.Close(ctx)
	ino := writeFile(t, c, c.Root(), "f", randBytes(9, 100<<10))
	h, err := c.OpenFile(ctx, ino, uint32(os.O_RDWR))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Release(ctx)
	rng := rand.New(rand.NewPCG(3, 4))
	buf := make([]byte, 8<<10)
	for step := 0; step < 500; step++ {
		if rng.IntN(20) == 0 {
			if err := h.f.truncate(ctx, uint64(rng.IntN(300<<10))); err != nil {
				t.Fatal(err)
			}
		} else if _, err := h.WriteAt(ctx, buf[:1+rng.IntN(len(buf)-1)], int64(rng.IntN(400<<10))); err != nil {
			t.Fatal(err)
		}
		h.f.mu.Lock()
		got, want := h.f.dirtyBytes.Load(), h.f.written.total()
		h.f.mu.Unlock()
		if got != want {
			t.Fatalf("step %d: %d dirty bytes counted, the written set holds %d", step, got, want)
		}
	}
}
