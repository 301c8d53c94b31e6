package audit

import (
	"context"
	"fmt"
)

// Anchor is a head recorded somewhere else (the local mirror, the newest
// snapshot): the log must reach it, with the same hash there.
type Anchor struct {
	Source string // "the local mirror", "snapshot 1a2b3c4d"
	Head   Head
}

// Problem is one finding of Verify, naming the entry.
type Problem struct {
	Seq    uint64 `json:"seq"`
	Reason string `json:"reason"`
}

func (p Problem) String() string { return fmt.Sprintf("entry %d: %s", p.Seq, p.Reason) }

// Report is the outcome of Verify.
type Report struct {
	Items    []Item
	Head     Head
	Problems []Problem
}

// OK reports a log without findings.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

// Verify reads the whole log and checks it: every entry opens and its MAC
// verifies, seqs run from 1 without gaps, each entry names the hash of the
// one before, and the log reaches every anchor with the hash it recorded
// (a shorter log was truncated). mirror, if not nil, maps the seqs the local
// mirror holds to their hashes: each must match the stored entry.
func (l *Log) Verify(ctx context.Context, anchors []Anchor, mirror map[uint64]string) (*Report, error) {
	items, err := l.Read(ctx)
	if err != nil {
		return nil, err
	}
	return Check(items, anchors, mirror), nil
}

// Check is Verify on entries already read (Log.Read), in seq order.
func Check(items []Item, anchors []Anchor, mirror map[uint64]string) *Report {
	rep := &Report{Items: items}
	add := func(seq uint64, format string, args ...any) {
		rep.Problems = append(rep.Problems, Problem{Seq: seq, Reason: fmt.Sprintf(format, args...)})
	}
	next := uint64(1)
	prevHash := ""
	hashes := make(map[uint64]string, len(items))
	for _, it := range items {
		hashes[it.Seq] = it.Hash
		if it.Seq > next {
			if it.Seq == next+1 {
				add(next, "missing (deleted)")
			} else {
				add(next, "missing (deleted), and so are the entries up to %d", it.Seq-1)
			}
			prevHash = "" // no link to check across a gap
		}
		switch {
		case it.Err != nil:
			add(it.Seq, "%v", it.Err)
		case it.Entry.Seq != it.Seq:
			add(it.Seq, "holds entry %d (moved, reordered or replayed)", it.Entry.Seq)
		case it.Seq > 1 && prevHash != "" && it.Entry.Prev != prevHash:
			add(it.Seq, "does not chain to entry %d (reordered, replaced or edited)", it.Seq-1)
		}
		prevHash = it.Hash
		if it.Err != nil {
			// Its hash changed with it: the next link cannot be judged.
			prevHash = ""
		}
		next = it.Seq + 1
	}
	if n := len(items); n > 0 {
		rep.Head = Head{Seq: items[n-1].Seq, Hash: items[n-1].Hash}
	}
	for _, a := range anchors {
		if a.Head.IsZero() {
			continue
		}
		h, ok := hashes[a.Head.Seq]
		switch {
		case a.Head.Seq > rep.Head.Seq:
			add(a.Head.Seq, "missing: %s recorded the log up to entry %d, the log ends at entry %d (truncated)", a.Source, a.Head.Seq, rep.Head.Seq)
		case ok && h != a.Head.Hash:
			add(a.Head.Seq, "differs from the entry %s recorded (replaced)", a.Source)
		}
	}
	var mirrorMax uint64
	for seq, mh := range mirror {
		if seq > mirrorMax {
			mirrorMax = seq
		}
		if h, ok := hashes[seq]; ok && h != mh {
			add(seq, "differs from the local mirror's copy (edited or replaced)")
		}
	}
	if mirrorMax > rep.Head.Seq {
		add(mirrorMax, "missing: the local mirror holds the log up to entry %d, the log ends at entry %d (truncated)", mirrorMax, rep.Head.Seq)
	}
	sortProblems(rep.Problems)
	return rep
}

func sortProblems(p []Problem) {
	for i := 1; i < len(p); i++ {
		for j := i; j > 0 && p[j].Seq < p[j-1].Seq; j-- {
			p[j], p[j-1] = p[j-1], p[j]
		}
	}
}
