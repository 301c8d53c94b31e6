package repo

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/keepfs/keepfs/policy/notify"
	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/index"
)

// Scrub: a listing diff of the remote against what the index segments
// say, plus a full authenticated read of a rotating sample of packs.
// Everything it finds is raised as an event (and returned). Segments and
// snapshots are immutable: each is loaded once per handle, and read again
// in the same rotation as packs (rereadKnown); what a pass reads in full
// is bounded by ScrubOptions' Interval and Cycle.

// ScrubOptions select one pass.
type ScrubOptions struct {
	// Interval and Cycle size the sample read in full: one pass every
	// Interval reads every pack within Cycle (ScrubSample). Packs are read
	// starting after Cursor in id order, wrapping. All reads every pack.
	Interval, Cycle time.Duration
	All             bool
	// Cursor is the last pack the previous pass read ("" to start).
	Cursor   string
	Progress Progress
}

// ScrubResult is what one pass found.
type ScrubResult struct {
	Packs     int       `json:"packs"`
	Indexes   int       `json:"index_segments"`
	Snapshots int       `json:"snapshots"`
	PacksRead int       `json:"packs_read"`
	BytesRead int64     `json:"bytes_read"`
	Cursor    string    `json:"cursor"`
	Skipped   string    `json:"skipped,omitempty"`
	Problems  []Problem `json:"problems"`
}

// scrubState is what a handle keeps between passes.
type scrubState struct {
	mu   sync.Mutex
	segs map[string]*index.Segment // verified segments by name, without their blobs
	size map[string]int64          // their sizes when verified
	bad  map[string]bool           // segments that failed (reported)
	// gen is the generation at the start of the last pass (genOK: there
	// was one): a prune or erase since may delete segments without a
	// segment naming them (a second rewrite supersedes only what is
	// still stored).
	gen   uint64
	genOK bool
	// unindexedOK are packs outside the index that were read in full and
	// are ours (an interrupted or in-flight upload), by name and size.
	unindexedOK map[string]int64
	// segCursor and snapCursor: the last segment and snapshot read again
	// (rereadKnown).
	segCursor, snapCursor string
}

func (r *Repository) scrubber() *scrubState {
	r.scrubOnce.Do(func() {
		r.scrub = &scrubState{segs: map[string]*index.Segment{}, size: map[string]int64{}, bad: map[string]bool{}, unindexedOK: map[string]int64{}}
	})
	return r.scrub
}

// Scrub runs one pass.
func (r *Repository) Scrub(ctx context.Context, opts ScrubOptions) (*ScrubResult, error) {
	st := r.scrubber()
	st.mu.Lock()
	defer st.mu.Unlock()
	res := &ScrubResult{Cursor: opts.Cursor}
	// Listing-diff findings are raised only at the end, if no prune or
	// erase (which delete packs and segments in steps) ran meanwhile.
	var pending []notify.Event
	problem := func(typ, obj, what string) {
		res.Problems = append(res.Problems, Problem{Object: obj, What: what})
		pending = append(pending, notify.Event{Type: typ, Severity: notify.Critical, Object: obj, Message: what})
	}
	quiet := func() (uint64, bool, error) {
		locks, err := r.Locks(ctx)
		if err != nil {
			return 0, false, err
		}
		for _, l := range locks {
			if l.Kind == ExclusiveLock {
				return 0, false, nil
			}
		}
		g, err := r.Generation(ctx)
		return g, true, err
	}
	gen0, ok, err := quiet()
	if err != nil {
		return nil, err
	}
	if !ok {
		res.Skipped = "a prune or erase holds the exclusive lock"
		return res, nil
	}

	// Index segments: new ones are loaded, verified against their name
	// and opened (LoadIndex's checks, raising events the same way); known
	// ones must keep their size. A segment that named live packs may
	// leave the listing only once a segment superseding it is stored (a
	// merge, a prune's rewrite: both write the new segment first); gone
	// without one, the packs it named fall out of the index, and a fresh
	// client misses their blobs.
	prevLive := liveSegments(st.segs)
	if !st.genOK || st.gen != gen0 {
		prevLive = nil
	}
	st.gen, st.genOK = gen0, true
	listedSeg := map[string]bool{}
	loadNew := func(again bool) error {
		var names []string
		sizes := map[string]int64{}
		if err := r.be.List(ctx, remote.Index, func(fi remote.Info) error {
			names = append(names, fi.Handle.Name)
			sizes[fi.Handle.Name] = fi.Size
			return nil
		}); err != nil {
			return fmt.Errorf("list index: %w", err)
		}
		clear(listedSeg)
		for _, n := range names {
			listedSeg[n] = true
			obj := "index/" + n
			if st.segs[n] != nil {
				if sz := st.size[n]; !again && sizes[n] != sz {
					problem(notify.TypeResized, obj, fmt.Sprintf("index segment %s is %d bytes, it was %d when read", shortName(n), sizes[n], sz))
				}
				continue
			}
			b, err := remote.LoadAll(ctx, r.be, remote.Handle{Type: remote.Index, Name: n})
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				continue // deleted meanwhile (a rewrite), or unreachable: next pass
			}
			if crypto.Hash(b).String() != n {
				if !st.bad[n] {
					problem(notify.TypeNameMismatch, obj, "index segment "+shortName(n)+" does not hash to its name: an old segment replayed under a new name, or damage")
				}
				st.bad[n] = true
				continue
			}
			s, err := index.Open(r.key, b)
			if err != nil {
				if !st.bad[n] {
					problem(notify.TypeUnexpected, obj, "index segment "+shortName(n)+" does not authenticate: not written by a holder of the key, or modified")
				}
				st.bad[n] = true
				continue
			}
			// Only what the listing diff needs: the packs and their sizes,
			// not their blobs (held, they would be a second index in memory).
			slim := &index.Segment{Supersedes: s.Supersedes, Packs: make([]index.PackEntry, len(s.Packs))}
			for i, p := range s.Packs {
				slim.Packs[i] = index.PackEntry{ID: p.ID, Size: p.Size}
			}
			st.segs[n] = slim
			st.size[n] = int64(len(b))
		}
		return nil
	}
	// vanished lists the segments live before this pass that left the
	// listing while packs they named are named by no listed segment: a
	// merge's segment carries every pack it replaces, but a second merge
	// names only the first merged segment, not the ones that one replaced,
	// so "superseded by a listed segment" would miss a chain of merges
	// between two passes.
	vanished := func() map[string]int {
		indexed := map[crypto.ID]bool{}
		for n, s := range st.segs {
			if listedSeg[n] {
				for _, p := range s.Packs {
					indexed[p.ID] = true
				}
			}
		}
		out := map[string]int{}
		for n := range prevLive {
			if listedSeg[n] || st.segs[n] == nil {
				continue
			}
			for _, p := range st.segs[n].Packs {
				if !indexed[p.ID] {
					out[n]++
				}
			}
			if out[n] == 0 {
				delete(out, n)
			}
		}
		return out
	}
	if err := loadNew(false); err != nil {
		return nil, err
	}
	if len(vanished()) > 0 {
		// A listing taken while a merge wrote its segment and deleted the
		// old ones may show neither: look again before calling it gone.
		if err := loadNew(true); err != nil {
			return nil, err
		}
		gone := vanished()
		names := slices.Sorted(maps.Keys(gone))
		for _, n := range names {
			problem(notify.TypeMissing, "index/"+n, fmt.Sprintf("index segment %s is missing and no segment replaces it: %d packs it named are no longer indexed", shortName(n), gone[n]))
		}
	}
	for n := range st.segs {
		if !listedSeg[n] {
			delete(st.segs, n)
			delete(st.size, n)
		}
	}
	res.Indexes = len(st.segs)
	superseded := map[string]bool{}
	for _, s := range st.segs {
		for _, id := range s.Supersedes {
			superseded[id.String()] = true
		}
	}
	live := map[crypto.ID]int64{}
	for n, s := range st.segs {
		if superseded[n] {
			continue
		}
		for _, p := range s.Packs {
			live[p.ID] = p.Size
		}
	}

	// Packs: missing, resized, unexpected.
	listed := map[crypto.ID]int64{}
	if err := r.be.List(ctx, remote.Pack, func(fi remote.Info) error {
		id, err := crypto.ParseID(fi.Handle.Name)
		if err != nil {
			problem(notify.TypeUnexpected, "packs/"+fi.Handle.Name, "unexpected object "+fi.Handle.Name+" among the packs")
			return nil
		}
		listed[id] = fi.Size
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list packs: %w", err)
	}
	trashed, err := r.trashedPacks(ctx)
	if err != nil {
		return nil, err
	}
	res.Packs = len(listed)
	for id, size := range live {
		got, ok := listed[id]
		obj := "packs/" + id.String()
		switch {
		case !ok:
			problem(notify.TypeMissing, obj, "pack "+id.Short()+" is missing (the index names it)")
		case got != size:
			problem(notify.TypeResized, obj, fmt.Sprintf("pack %s is %d bytes, the index says %d", id.Short(), got, size))
		}
	}
	for id, size := range listed {
		if _, ok := live[id]; ok || trashed[id] {
			continue
		}
		if st.unindexedOK[id.String()] == size {
			continue
		}
		// Not indexed: ours if it hashes to its name and its header opens
		// (an upload whose segment is not written yet, or an interrupted
		// run's); else the remote added it.
		var found []Problem
		n := r.scrubPack(ctx, id, func(p Problem) { found = append(found, p) })
		res.BytesRead += n
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if len(found) == 0 {
			st.unindexedOK[id.String()] = size
			continue
		}
		problem(notify.TypeUnexpected, "packs/"+id.String(), "pack "+id.Short()+" is not indexed and not a valid pack of this repository: "+found[0].What)
	}

	if gen1, ok, err := quiet(); err != nil {
		return nil, err
	} else if !ok || gen1 != gen0 {
		res.Skipped = "a prune or erase ran during the listing diff"
		res.Problems = nil
		pending = nil
	}
	for _, ev := range pending {
		r.Raise(ev)
	}

	// Snapshots: new ones load (and raise on a bad seal or name).
	// (Raised at once: the listing diff's pending events went out above.)
	snaps, err := r.snapshotsLenient(ctx, func(obj, what string) {
		res.Problems = append(res.Problems, Problem{Object: obj, What: what})
		r.Raise(notify.Event{Type: notify.TypeUnexpected, Severity: notify.Critical, Object: obj, Message: what})
	},
		func(obj, what string) { res.Problems = append(res.Problems, Problem{Object: obj, What: what}) })
	if err != nil {
		return nil, err
	}
	res.Snapshots = snaps
	if err := r.rereadKnown(ctx, st, opts, res); err != nil {
		return nil, err
	}
	if err := r.scrubKeySlots(ctx, res); err != nil {
		return nil, err
	}

	// Sampled full reads, rotating by id.
	var ids []crypto.ID
	for id := range live {
		if _, ok := listed[id]; ok {
			ids = append(ids, id)
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i].String() < ids[j].String() })
	k := ScrubSample(len(ids), opts.Interval, opts.Cycle)
	if opts.All {
		k = len(ids)
	}
	start := sort.Search(len(ids), func(i int) bool { return ids[i].String() > opts.Cursor })
	prog := opts.Progress
	if prog == nil {
		prog = NoProgress{}
	}
	var total int64
	for i := range k {
		total += live[ids[(start+i)%len(ids)]]
	}
	prog.Start("scrub", total)
	for i := range k {
		id := ids[(start+i)%len(ids)]
		var found []Problem
		n := r.scrubPack(ctx, id, func(p Problem) { found = append(found, p) })
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		res.BytesRead += n
		res.PacksRead++
		res.Cursor = id.String()
		prog.Add(live[id])
		for _, p := range found {
			res.Problems = append(res.Problems, p)
			r.Raise(notify.Event{Type: notify.TypeTampered, Severity: notify.Critical, Object: p.Object, Message: "pack " + id.Short() + ": " + p.What})
			break // one event per pack; the rest is in check --read-data
		}
	}
	prog.Done()
	sort.Slice(res.Problems, func(i, j int) bool { return res.Problems[i].Object < res.Problems[j].Object })
	return res, nil
}

// rereadKnown reads again, in the packs' rotation, the index segments and
// snapshots this handle verified before. Each is named by the hash of its
// bytes and never changes: without this, a store that altered one in
// place (same size) after the handle read it would be caught only by a
// client loading it afresh, never by a mount's scrub. A segment or
// snapshot gone meanwhile is the listing diff's and the guard's business.
func (r *Repository) rereadKnown(ctx context.Context, st *scrubState, opts ScrubOptions, res *ScrubResult) error {
	segs := slices.Sorted(maps.Keys(st.segs))
	st.segCursor = rotate(segs, st.segCursor, sampleOf(len(segs), opts), func(n string) {
		if st.bad[n] {
			return
		}
		b, err := remote.LoadAll(ctx, r.be, remote.Handle{Type: remote.Index, Name: n})
		if err != nil {
			return // deleted (a merge) or unreachable: the listing diff's
		}
		res.BytesRead += int64(len(b))
		if crypto.Hash(b).String() != n {
			st.bad[n] = true
			obj, what := "index/"+n, "index segment "+shortName(n)+" changed since it was read: it no longer hashes to its name"
			res.Problems = append(res.Problems, Problem{Object: obj, What: what})
			r.Raise(notify.Event{Type: notify.TypeTampered, Severity: notify.Critical, Object: obj, Message: what})
		}
	})
	r.snapMu.Lock()
	var snaps []string
	for id := range r.snaps {
		snaps = append(snaps, id.String())
	}
	r.snapMu.Unlock()
	slices.Sort(snaps)
	st.snapCursor = rotate(snaps, st.snapCursor, sampleOf(len(snaps), opts), func(n string) {
		id, _ := crypto.ParseID(n)
		// LoadSnapshot reads the remote (not the handle's copy) and
		// raises on bytes that no longer hash to the name or open.
		if _, err := r.LoadSnapshot(ctx, id); err != nil && !errors.Is(err, remote.ErrNotFound) {
			res.Problems = append(res.Problems, Problem{Object: "snapshots/" + n, What: err.Error()})
		}
	})
	return ctx.Err()
}

// scrubKeySlots reads every key slot (a few hundred bytes each) and
// raises one that no longer hashes to its name: its passphrase no longer
// opens it, and its holder would only be told "wrong passphrase".
func (r *Repository) scrubKeySlots(ctx context.Context, res *ScrubResult) error {
	var names []string
	if err := r.be.List(ctx, remote.Key, func(fi remote.Info) error {
		names = append(names, fi.Handle.Name)
		return nil
	}); err != nil {
		return fmt.Errorf("list key slots: %w", err)
	}
	for _, n := range names {
		b, err := remote.LoadAll(ctx, r.be, remote.Handle{Type: remote.Key, Name: n})
		if err != nil {
			continue // removed meanwhile, or unreachable: the next pass
		}
		if crypto.Hash(b).String() != n {
			obj, what := "keys/"+n, "key slot "+shortName(n)+" changed since it was written: it does not hash to its name, and its passphrase no longer opens it"
			res.Problems = append(res.Problems, Problem{Object: obj, What: what})
			r.Raise(notify.Event{Type: notify.TypeTampered, Severity: notify.Critical, Object: obj, Message: what})
		}
	}
	return ctx.Err()
}

// sampleOf is how many of n objects one pass reads in full.
func sampleOf(n int, opts ScrubOptions) int {
	if opts.All {
		return n
	}
	return ScrubSample(n, opts.Interval, opts.Cycle)
}

// rotate calls fn for k names of sorted names, starting after cursor and
// wrapping, and returns the new cursor.
func rotate(names []string, cursor string, k int, fn func(string)) string {
	if len(names) == 0 {
		return cursor
	}
	start := sort.SearchStrings(names, cursor)
	if start < len(names) && names[start] == cursor {
		start++
	}
	for i := range min(k, len(names)) {
		cursor = names[(start+i)%len(names)]
		fn(cursor)
	}
	return cursor
}

// liveSegments names the segments no other segment of segs supersedes.
func liveSegments(segs map[string]*index.Segment) map[string]bool {
	superseded := map[string]bool{}
	for _, s := range segs {
		for _, id := range s.Supersedes {
			superseded[id.String()] = true
		}
	}
	live := map[string]bool{}
	for n := range segs {
		if !superseded[n] {
			live[n] = true
		}
	}
	return live
}

// scrubPack reads one pack in full (check's read) and reports problems.
func (r *Repository) scrubPack(ctx context.Context, id crypto.ID, report func(Problem)) int64 {
	return r.checkPackData(ctx, id, report)
}

// snapshotsLenient loads every snapshot (new ones from the remote),
// reporting those that fail instead of stopping, and counts them.
func (r *Repository) snapshotsLenient(ctx context.Context, bad, failed func(obj, what string)) (int, error) {
	var ids []crypto.ID
	if err := r.be.List(ctx, remote.Snapshot, func(fi remote.Info) error {
		id, err := crypto.ParseID(fi.Handle.Name)
		if err != nil {
			bad("snapshots/"+fi.Handle.Name, "unexpected object "+fi.Handle.Name+" among the snapshots")
			return nil
		}
		ids = append(ids, id)
		return nil
	}); err != nil {
		return 0, fmt.Errorf("list snapshots: %w", err)
	}
	for _, id := range ids {
		r.snapMu.Lock()
		_, ok := r.snaps[id]
		r.snapMu.Unlock()
		if ok {
			continue
		}
		sn, err := r.LoadSnapshot(ctx, id) // raises on a bad seal or name
		if err != nil {
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			failed("snapshots/"+id.String(), err.Error())
			continue
		}
		r.snapMu.Lock()
		r.snaps[id] = sn
		r.snapMu.Unlock()
	}
	return len(ids), nil
}

// ScrubSample is how many of n packs one pass reads so that, one pass
// every interval, every pack is read within cycle (at least one).
func ScrubSample(n int, interval, cycle time.Duration) int {
	if n == 0 {
		return 0
	}
	if cycle <= interval || interval <= 0 {
		return n
	}
	k := int(math.Ceil(float64(n) * float64(interval) / float64(cycle)))
	return max(1, min(k, n))
}

// ScrubCursorFile keeps the rotating read's position in the state
// directory, so a restarted mount or `keepfs scrub` goes on from there.
const ScrubCursorFile = "scrub-cursor"

// LoadScrubCursor returns the cursor kept in dir ("" if none).
func LoadScrubCursor(dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, ScrubCursorFile))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// SaveScrubCursor keeps cursor in dir.
func SaveScrubCursor(dir, cursor string) error {
	tmp := filepath.Join(dir, "."+ScrubCursorFile+".tmp")
	if err := os.WriteFile(tmp, []byte(cursor+"\n"), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, ScrubCursorFile))
}
