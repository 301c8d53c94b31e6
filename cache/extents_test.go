package cache

import (
	"math/rand/v2"
	"testing"
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
			x = x.add(s, e)
			for i := s; i < e; i++ {
				bits[i] = true
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
