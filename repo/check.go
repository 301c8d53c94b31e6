package repo

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/pack"
	"github.com/keepfs/keepfs/repo/tree"
)

// Problem is one integrity finding.
type Problem struct {
	Object string `json:"object"` // e.g. "packs/ab12…", "snapshot 2026-…"
	What   string `json:"what"`
	// Warning problems do not make the repository unsound (an unindexed pack
	// left by an interrupted run is only wasted space).
	Warning bool `json:"warning,omitempty"`
}

func (p Problem) String() string { return p.Object + ": " + p.What }

// CheckOptions select how deep check goes.
type CheckOptions struct {
	ReadData bool
	Progress Progress
}

// CheckResult summarises a check.
type CheckResult struct {
	Snapshots int `json:"snapshots"`
	Trees     int `json:"trees"`
	Packs     int `json:"packs"`
	Blobs     int `json:"blobs"`
	// PacksPendingDeletion are packs a prune marked, deleted by a later one.
	PacksPendingDeletion int       `json:"packs_pending_deletion"`
	ReadBytes            int64     `json:"read_bytes"`
	Problems             []Problem `json:"problems"`
}

// Errors counts the problems that are not warnings.
func (c *CheckResult) Errors() int {
	n := 0
	for _, p := range c.Problems {
		if !p.Warning {
			n++
		}
	}
	return n
}

// Check verifies the repository: every indexed pack exists with the right
// size, every snapshot's trees load and every blob they name is indexed;
// with ReadData, every pack is read in full and every blob authenticated
// and hashed. It reports problems rather than stopping at the first.
func (r *Repository) Check(ctx context.Context, opts CheckOptions) (*CheckResult, error) {
	res := &CheckResult{}
	var mu sync.Mutex
	report := func(p Problem) {
		mu.Lock()
		res.Problems = append(res.Problems, p)
		mu.Unlock()
	}

	// Index segments that fail to open are problems, not fatal errors.
	if err := r.checkIndex(ctx, report); err != nil {
		return nil, err
	}

	listed := map[crypto.ID]int64{}
	if err := r.be.List(ctx, remote.Pack, func(fi remote.Info) error {
		id, err := crypto.ParseID(fi.Handle.Name)
		if err != nil {
			report(Problem{Object: "packs/" + fi.Handle.Name, What: "unexpected object name", Warning: true})
			return nil
		}
		listed[id] = fi.Size
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list packs: %w", err)
	}
	indexed := r.ix().Packs()
	res.Packs = len(indexed)
	res.Blobs = r.ix().Count()
	for _, p := range indexed {
		size, ok := listed[p.ID]
		switch {
		case !ok:
			report(Problem{Object: "packs/" + p.ID.String(), What: "missing (named by the index)"})
		case size != p.Size:
			report(Problem{Object: "packs/" + p.ID.String(), What: fmt.Sprintf("size %d, index says %d", size, p.Size)})
		}
		delete(listed, p.ID)
	}
	trashed, err := r.trashedPacks(ctx)
	if err != nil {
		report(Problem{Object: "trash/", What: err.Error()})
	}
	for id := range listed {
		if trashed[id] {
			res.PacksPendingDeletion++
			continue
		}
		report(Problem{Object: "packs/" + id.String(), What: "not indexed (left by an interrupted run; the next import reuses it)", Warning: true})
	}

	snaps, err := r.snapshotsForCheck(ctx, report)
	if err != nil {
		return nil, err
	}
	res.Snapshots = len(snaps)
	seen := map[crypto.ID]bool{}
	for _, sn := range snaps {
		r.checkTree(ctx, sn, sn.Tree, "/", seen, report)
	}
	res.Trees = len(seen)

	if opts.ReadData {
		prog := opts.Progress
		if prog == nil {
			prog = NoProgress{}
		}
		var total int64
		for _, p := range indexed {
			total += p.Size
		}
		prog.Start("read-data", total)
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(2)
		for _, p := range indexed {
			g.Go(func() error {
				n := r.checkPackData(gctx, p.ID, report)
				mu.Lock()
				res.ReadBytes += n
				mu.Unlock()
				prog.Add(p.Size)
				return gctx.Err()
			})
		}
		if err := g.Wait(); err != nil {
			return nil, err
		}
		prog.Done()
	}
	sort.Slice(res.Problems, func(i, j int) bool { return res.Problems[i].Object < res.Problems[j].Object })
	return res, nil
}

func (r *Repository) checkIndex(ctx context.Context, report func(Problem)) error {
	// LoadIndex fails as a whole on one bad segment; re-read one by one so
	// every bad segment is named and the good ones still count.
	err := r.LoadIndex(ctx)
	if err == nil {
		return nil
	}
	var names []string
	if lerr := r.be.List(ctx, remote.Index, func(fi remote.Info) error {
		names = append(names, fi.Handle.Name)
		return nil
	}); lerr != nil {
		return fmt.Errorf("list index: %w", lerr)
	}
	for _, n := range names {
		b, err := remote.LoadAll(ctx, r.be, remote.Handle{Type: remote.Index, Name: n})
		if err == nil {
			if crypto.Hash(b).String() != n {
				err = errors.New("content does not match its name (modified)")
			} else {
				err = r.addSegment(b)
			}
		}
		if err != nil {
			report(Problem{Object: "index/" + n, What: err.Error()})
		}
	}
	return nil
}

func (r *Repository) snapshotsForCheck(ctx context.Context, report func(Problem)) ([]*Snapshot, error) {
	var out []*Snapshot
	err := r.be.List(ctx, remote.Snapshot, func(fi remote.Info) error {
		id, err := crypto.ParseID(fi.Handle.Name)
		if err != nil {
			report(Problem{Object: "snapshots/" + fi.Handle.Name, What: "unexpected object name", Warning: true})
			return nil
		}
		sn, err := r.LoadSnapshot(ctx, id)
		if err != nil {
			report(Problem{Object: "snapshots/" + fi.Handle.Name, What: err.Error()})
			return nil
		}
		out = append(out, sn)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	SortSnapshots(out)
	return out, nil
}

func (r *Repository) checkTree(ctx context.Context, sn *Snapshot, id crypto.ID, p string, seen map[crypto.ID]bool, report func(Problem)) {
	if seen[id] {
		return
	}
	seen[id] = true
	obj := "snapshot " + sn.Name() + " (" + sn.ID.Short() + ")"
	t, err := r.LoadTree(ctx, id)
	if err != nil {
		report(Problem{Object: obj, What: fmt.Sprintf("tree of %s: %v", p, err)})
		return
	}
	for _, n := range t.Nodes {
		switch n.Type {
		case tree.Dir:
			r.checkTree(ctx, sn, n.Subtree, p+n.Name+"/", seen, report)
		case tree.File:
			for _, c := range n.Content {
				if !r.ix().Has(pack.Data, c) {
					report(Problem{Object: obj, What: fmt.Sprintf("%s%s: data blob %s missing", p, n.Name, c.Short())})
				}
			}
		}
	}
}

// checkPackData reads a whole pack and authenticates everything in it.
func (r *Repository) checkPackData(ctx context.Context, id crypto.ID, report func(Problem)) int64 {
	obj := "packs/" + id.String()
	data, err := remote.LoadAll(ctx, r.be, remote.Handle{Type: remote.Pack, Name: id.String()})
	if err != nil {
		if errors.Is(err, remote.ErrNotFound) {
			return 0 // already reported as missing
		}
		report(Problem{Object: obj, What: "read: " + err.Error()})
		return 0
	}
	if crypto.Hash(data) != id {
		report(Problem{Object: obj, What: "content does not match its name (modified)"})
	}
	blobs, err := pack.ParsePack(r.key, data)
	if err != nil {
		report(Problem{Object: obj, What: err.Error()})
		return int64(len(data))
	}
	bad := 0
	for _, b := range blobs {
		if _, err := pack.OpenBlob(r.key, b.Type, b.ID, data[b.Offset:b.Offset+b.Length]); err != nil {
			bad++
			if bad <= 5 {
				report(Problem{Object: obj, What: err.Error()})
			}
		}
		if loc, ok := r.ix().Lookup(b.Type, b.ID); ok && loc.Pack == id && (loc.Offset != b.Offset || loc.Length != b.Length) {
			report(Problem{Object: obj, What: fmt.Sprintf("blob %s: index and pack header disagree", b.ID.Short())})
		}
	}
	if bad > 5 {
		report(Problem{Object: obj, What: fmt.Sprintf("%d more corrupt blobs", bad-5)})
	}
	return int64(len(data))
}

// Progress receives progress of long operations; only cmd renders it.
type Progress interface {
	Start(what string, total int64)
	Add(n int64)
	Done()
}

// NoProgress discards progress.
type NoProgress struct{}

func (NoProgress) Start(string, int64) {}
func (NoProgress) Add(int64)           {}
func (NoProgress) Done()               {}
