package cache

// extents is a set of disjoint, sorted half-open byte ranges [Start, End).
type extents []extent

type extent struct{ Start, End uint64 }

// add merges [s, e) into the set.
func (x extents) add(s, e uint64) extents {
	if s >= e {
		return x
	}
	out := make(extents, 0, len(x)+1)
	i := 0
	for ; i < len(x) && x[i].End < s; i++ {
		out = append(out, x[i])
	}
	for ; i < len(x) && x[i].Start <= e; i++ {
		s = min(s, x[i].Start)
		e = max(e, x[i].End)
	}
	out = append(out, extent{s, e})
	return append(out, x[i:]...)
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
