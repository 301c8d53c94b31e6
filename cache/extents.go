package cache

import (
	"slices"
	"sort"
)

// extents is a set of disjoint, sorted half-open byte ranges [Start, End).
type extents []extent

type extent struct{ Start, End uint64 }

// add merges [s, e) into the set, in place, and returns it with the number
// of bytes it did not cover before: random small writes to a big file leave
// thousands of extents, and copying or summing them all at every write made
// each write cost as much as the set is long.
func (x extents) add(s, e uint64) (extents, int64) {
	if s >= e {
		return x, 0
	}
	// i: the first extent that ends at or after s (touching ones merge);
	// j: the first past i that starts after e.
	i := sort.Search(len(x), func(k int) bool { return x[k].End >= s })
	j := i
	var had uint64
	for ; j < len(x) && x[j].Start <= e; j++ {
		s = min(s, x[j].Start)
		e = max(e, x[j].End)
		had += x[j].End - x[j].Start
	}
	added := int64(e - s - had)
	if i == j {
		return slices.Insert(x, i, extent{s, e}), added
	}
	x[i] = extent{s, e}
	return slices.Delete(x, i+1, j), added
}

// clip drops everything at or beyond size.
func (x extents) clip(size uint64) extents {
	out := x[:0]
	for _, r := range x {
		if r.Start >= size {
			break
		}
		r.End = min(r.End, size)
		out = append(out, r)
	}
	return out
}

// find returns the index of the first range ending after off.
func (x extents) find(off uint64) int {
	lo, hi := 0, len(x)
	for lo < hi {
		m := (lo + hi) / 2
		if x[m].End <= off {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// total is the number of bytes covered.
func (x extents) total() int64 {
	var n int64
	for _, r := range x {
		n += int64(r.End - r.Start)
	}
	return n
}

// minus returns the bytes of x not in y, as a new set.
func (x extents) minus(y extents) extents {
	var out extents
	j := 0
	for _, r := range x {
		s := r.Start
		for j < len(y) && y[j].End <= s {
			j++
		}
		for k := j; k < len(y) && y[k].Start < r.End; k++ {
			if y[k].Start > s {
				out = append(out, extent{s, y[k].Start})
			}
			s = max(s, y[k].End)
		}
		if s < r.End {
			out = append(out, extent{s, r.End})
		}
	}
	return out
}
