package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/keepfs/keepfs/policy/notify"
	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/index"
	"golang.org/x/sync/errgroup"
)

// Keeping a persistent index (index.Persistent, the mount's) in line with
// the remote. The store remembers the segments it holds, by id (a hash of
// the sealed segment: a segment never changes), and the generation it
// matched. LoadIndex then lists index/ and loads only the segments the
// store has not seen; segments gone from the listing, or superseded by a
// new one (a merge), are dropped. The store is refilled from scratch, into
// a fresh database swapped in when complete, when it was never filled,
// was left dirty (a change interrupted), matched another generation (a
// prune or an erase by another client), or when dropping segments would
// take a pack out of the index (only a prune or an erase does that).

// syncPersistent brings the persistent store in line with the remote.
func (r *Repository) syncPersistent(ctx context.Context) error {
	return r.syncPersistentFrom(ctx, noGeneration)
}

const noGeneration = ^uint64(0)

// syncPersistentFrom is syncPersistent, also accepting a store that
// matched generation prev (this handle just moved the repository on from
// it, under the exclusive lock, and the store has seen every change but
// the segments this sync reads).
func (r *Repository) syncPersistentFrom(ctx context.Context, prev uint64) error {
	p := r.persist
	gen, err := r.Generation(ctx)
	if err != nil {
		return err
	}
	st, err := p.State()
	if err != nil {
		return fmt.Errorf("local index: %w", err)
	}
	names, err := r.listIndex(ctx)
	if err != nil {
		return err
	}
	if !st.Filled || st.Dirty || (st.Generation != gen && st.Generation != prev) {
		return r.refillPersistent(ctx, gen, names)
	}
	listed := make(map[crypto.ID]bool, len(names))
	var fresh []crypto.ID
	for _, id := range names {
		listed[id] = true
		if _, ok := st.Segments[id]; !ok {
			fresh = append(fresh, id)
		}
	}
	segs := make([]*index.Segment, len(fresh))
	if err := r.loadSegments(ctx, fresh, func(i int, s *index.Segment) error {
		segs[i] = s
		return nil
	}); err != nil {
		return err
	}
	if len(r.skipped) > 0 {
		fresh = slices.DeleteFunc(fresh, func(id crypto.ID) bool { return r.skipped[id] })
		segs = slices.DeleteFunc(segs, func(s *index.Segment) bool { return s == nil })
		names = r.withoutSkipped(names)
	}
	superseded := map[crypto.ID]bool{}
	for _, s := range segs {
		for _, id := range s.Supersedes {
			superseded[id] = true
		}
	}
	var add []index.Held
	for i, id := range fresh {
		if superseded[id] {
			add = append(add, index.Held{ID: id})
		} else {
			add = append(add, index.Held{ID: id, Segment: segs[i], Live: true})
		}
	}
	var drop, suspects []crypto.ID
	for id, live := range st.Segments {
		switch {
		case !listed[id]:
			if live && !superseded[id] && st.Generation == gen {
				// Gone, no new segment names it, and no prune or erase
				// (which may delete segments no stored segment names)
				// happened. A chain of merges does this too (a second
				// merge names only the first), and carries the packs on:
				// suspect only if Apply finds packs leaving the index.
				suspects = append(suspects, id)
			}
			drop = append(drop, id)
		case live && superseded[id]:
			// Still listed (a merge under way): remembered as superseded,
			// so that it is not loaded again.
			drop = append(drop, id)
			add = append(add, index.Held{ID: id})
		}
	}
	if len(add) > 0 || len(drop) > 0 {
		err := p.Apply(add, drop)
		if errors.Is(err, index.ErrRefill) {
			// Packs named only by dropped segments: writers store the
			// segment that carries a pack on before deleting the one
			// that named it, so the suspects' packs left unasked.
			slices.SortFunc(suspects, func(a, b crypto.ID) int { return bytes.Compare(a[:], b[:]) })
			for _, id := range suspects {
				r.Raise(notify.Event{Type: notify.TypeMissing, Severity: notify.Critical, Object: "index/" + id.String(),
					Message: "index segment " + id.Short() + " is missing and no segment replaces it: packs it named are no longer indexed"})
			}
			return r.refillPersistent(ctx, gen, names)
		}
		if err != nil {
			return fmt.Errorf("local index: %w", err)
		}
	}
	if st.Generation != gen {
		if err := p.SetGeneration(gen); err != nil {
			return fmt.Errorf("local index: %w", err)
		}
	}
	r.setLoaded(names, st.Segments, add, drop)
	return nil
}

// setLoaded records the live segments, as loadIndex does.
func (r *Repository) setLoaded(names []crypto.ID, held map[crypto.ID]bool, add []index.Held, drop []crypto.ID) {
	live := map[crypto.ID]bool{}
	for id, l := range held {
		live[id] = l
	}
	for _, h := range add {
		live[h.ID] = h.Live
	}
	for _, id := range drop {
		delete(live, id)
	}
	var loaded []crypto.ID
	for _, id := range names {
		if live[id] {
			loaded = append(loaded, id)
		}
	}
	r.segMu.Lock()
	r.indexSegments = loaded
	r.segMu.Unlock()
}

// refillPersistent fills the store anew from every listed segment. Each
// segment is added as it is read, so memory stays that of a few segments;
// if some listed segment turns out superseded by another, the fill is done
// again knowing which (rare: a merge interrupted or under way).
func (r *Repository) refillPersistent(ctx context.Context, gen uint64, names []crypto.ID) error {
	p := r.persist
	var known map[crypto.ID]bool // superseded segments, once known
	for pass := 0; pass < 2; pass++ {
		var mu sync.Mutex
		superseded := map[crypto.ID]bool{}
		err := p.Refill(gen, func(add func(index.Held) error) error {
			return r.loadSegments(ctx, names, func(i int, s *index.Segment) error {
				mu.Lock()
				for _, id := range s.Supersedes {
					superseded[id] = true
				}
				mu.Unlock()
				if known[names[i]] {
					return add(index.Held{ID: names[i]})
				}
				return add(index.Held{ID: names[i], Segment: s, Live: true})
			})
		})
		if err != nil {
			return fmt.Errorf("refill the local index: %w", err)
		}
		names = r.withoutSkipped(names)
		again := false
		for _, id := range names {
			if superseded[id] && !known[id] {
				again = true
			}
		}
		if !again {
			live := make([]crypto.ID, 0, len(names))
			for _, id := range names {
				if !known[id] {
					live = append(live, id)
				}
			}
			r.segMu.Lock()
			r.indexSegments = live
			r.segMu.Unlock()
			return nil
		}
		known = superseded
	}
	return errors.New("refill the local index: segments kept changing")
}

// listIndex lists the ids of index/.
func (r *Repository) listIndex(ctx context.Context) ([]crypto.ID, error) {
	var names []crypto.ID
	if err := r.be.List(ctx, remote.Index, func(fi remote.Info) error {
		if id, err := crypto.ParseID(fi.Handle.Name); err == nil {
			names = append(names, id)
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list index: %w", err)
	}
	return names, nil
}

// loadSegments loads, checks and opens the segments ids, 8 at a time,
// and passes each to fn with its position.
//
// With skipBad (ReloadIndex), a segment that fails its checks is noted in
// skipped and passed over.
func (r *Repository) loadSegments(ctx context.Context, ids []crypto.ID, fn func(int, *index.Segment) error) error {
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i, id := range ids {
		g.Go(func() error {
			s, err := r.loadSegment(gctx, id.String())
			if err != nil && r.skipBad && (errors.Is(err, ErrNameMismatch) || errors.Is(err, crypto.ErrAuth)) {
				mu.Lock()
				if r.skipped == nil {
					r.skipped = map[crypto.ID]bool{}
				}
				r.skipped[id] = true
				mu.Unlock()
				return nil
			}
			if err != nil {
				return err
			}
			return fn(i, s)
		})
	}
	return g.Wait()
}

// withoutSkipped returns names less the segments loadSegments passed over.
func (r *Repository) withoutSkipped(names []crypto.ID) []crypto.ID {
	if len(r.skipped) == 0 {
		return names
	}
	return slices.DeleteFunc(slices.Clone(names), func(id crypto.ID) bool { return r.skipped[id] })
}
