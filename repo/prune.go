package repo

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/index"
	"github.com/keepfs/keepfs/repo/pack"
	"github.com/keepfs/keepfs/repo/tree"
)

// PruneOptions tune a prune.
type PruneOptions struct {
	DryRun   bool
	Now      time.Time // the clock; zero means time.Now
	Progress Progress
	// Grace is how long packs found dead stay marked before a later prune
	// deletes them; zero means DefaultGrace.
	Grace time.Duration
	// Lock tunes the exclusive lock Prune takes unless this handle holds
	// one already.
	Lock LockOptions
}

// PruneResult reports what a prune removed (or would remove, with DryRun).
type PruneResult struct {
	Policy           string   `json:"policy"`
	SnapshotsKept    int      `json:"snapshots_kept"`
	SnapshotsRemoved []string `json:"snapshots_removed"`
	BlobsRemoved     int      `json:"blobs_removed"`
	BytesRemoved     int64    `json:"bytes_removed"`
	BlobsRepacked    int      `json:"blobs_repacked"`
	PacksDeleted     int      `json:"packs_deleted"`
	PacksRewritten   int      `json:"packs_rewritten"`
	// PacksMarked are the packs this run found dead (PacksDeleted of them
	// wholly, PacksRewritten in part): a later prune deletes them once
	// DefaultGrace has passed. PacksFreed are packs of earlier runs' marks
	// deleted now.
	PacksMarked int `json:"packs_marked"`
	PacksFreed  int `json:"packs_freed"`
	// IndexMerged counts the index objects merged into one because there
	// were too many (see compactIndex).
	IndexMerged int `json:"index_merged,omitempty"`
	// PartialUploads are the uploads writers left half done (killed or
	// cut off mid-Save) that this run deleted, and their bytes.
	PartialUploads      int    `json:"partial_uploads,omitempty"`
	PartialUploadsBytes int64  `json:"partial_uploads_bytes,omitempty"`
	Generation          uint64 `json:"generation,omitempty"`
	DryRun              bool   `json:"dry_run"`
}

// Prune applies the stored retention policy and then removes every blob no
// kept snapshot references: packs holding only dead blobs are deleted, packs
// holding any dead blob are rewritten without it (no threshold: dead
// personal data is never left behind), and the index is rewritten.
//
// Prune holds the exclusive lock (taking it unless the handle already
// does) and deletes in two phases (see trash.go): the packs it finds dead
// are marked and dropped from the index, and deleted by a prune run at
// least Grace later, which first deletes what earlier runs marked.
//
// Crash safety comes from the order: forget snapshots; write repacked packs;
// mark the old packs; write one index segment that supersedes all others;
// delete the superseded segments. Killed anywhere, the repository passes
// check, and the next prune finishes the work.
func (r *Repository) Prune(ctx context.Context, opts PruneOptions) (*PruneResult, error) {
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	if opts.Progress == nil {
		opts.Progress = NoProgress{}
	}
	if opts.Grace <= 0 {
		opts.Grace = DefaultGrace
	}
	release, err := r.exclusive(ctx, "prune", opts.Lock, opts.DryRun)
	if err != nil {
		return nil, err
	}
	defer release()
	policy, err := r.Retention(ctx)
	if err != nil {
		return nil, err
	}
	// An empty list, not null, in --json output: scripts iterate it.
	res := &PruneResult{Policy: policy.String(), DryRun: opts.DryRun, SnapshotsRemoved: []string{}}
	if !opts.DryRun {
		if res.PacksFreed, err = r.emptyTrash(ctx, opts.Now, opts.Grace, ""); err != nil {
			return nil, err
		}
		if _, err := r.RecoverPacks(ctx); err != nil {
			return nil, err
		}
		// Under the exclusive lock no writer is mid-upload: every partial
		// upload is one a killed or cut-off writer left.
		tr, err := remote.RemoveTemp(ctx, r.be)
		if err != nil {
			return nil, err
		}
		res.PartialUploads, res.PartialUploadsBytes = tr.Objects, tr.Bytes
	}
	snaps, err := r.Snapshots(ctx)
	if err != nil {
		return nil, err
	}
	var kept []*Snapshot
	for _, d := range policy.Apply(snaps, opts.Now) {
		if d.Keep {
			kept = append(kept, d.Snapshot)
		} else {
			res.SnapshotsRemoved = append(res.SnapshotsRemoved, d.Snapshot.Name())
		}
	}
	res.SnapshotsKept = len(kept)
	if !opts.DryRun {
		for _, d := range policy.Apply(snaps, opts.Now) {
			if d.Keep {
				continue
			}
			if err := r.Writable(); err != nil {
				return nil, err
			}
			h := remote.Handle{Type: remote.Snapshot, Name: d.Snapshot.ID.String()}
			if err := r.be.Remove(ctx, h); err != nil && !errors.Is(err, remote.ErrNotFound) {
				return nil, fmt.Errorf("forget snapshot %s: %w", d.Snapshot.Name(), err)
			}
		}
	}
	used, err := r.usedBlobs(ctx, kept)
	if err != nil {
		return nil, err
	}
	if err := r.sweep(ctx, used, opts, res, false); err != nil {
		return nil, err
	}
	if !opts.DryRun && res.PacksMarked == 0 {
		if err := r.compactIndex(ctx, res); err != nil {
			return nil, err
		}
	}
	if !opts.DryRun && (len(res.SnapshotsRemoved) > 0 || res.PacksMarked > 0) {
		if res.Generation, err = r.BumpGeneration(ctx, "prune", nil, nil, opts.Now); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// rewriteIndex stores one segment naming packs, superseding every other
// stored segment, including ones already superseded: deleting a
// superseding segment must never resurrect what it superseded. Then it
// deletes them. The caller holds the exclusive lock. This handle's own
// merges wait, and start afresh after it (its segments are among those
// superseded).
func (r *Repository) rewriteIndex(ctx context.Context, packs []index.PackEntry) error {
	r.compactMu.Lock()
	defer r.compactMu.Unlock()
	r.own = nil
	var old []crypto.ID
	if err := r.be.List(ctx, remote.Index, func(fi remote.Info) error {
		if id, err := crypto.ParseID(fi.Handle.Name); err == nil {
			old = append(old, id)
		}
		return nil
	}); err != nil {
		return fmt.Errorf("list index: %w", err)
	}
	seg := &index.Segment{Supersedes: old, Packs: packs}
	newIdx := index.New()
	if r.persist == nil {
		for _, p := range seg.Packs {
			newIdx.AddPack(p)
		}
	}
	if err := r.Writable(); err != nil {
		return err
	}
	sealed := seg.Seal(r.key)
	segID := crypto.Hash(sealed)
	if err := r.be.Save(ctx, remote.Handle{Type: remote.Index, Name: segID.String()}, sealed); err != nil && !errors.Is(err, remote.ErrExists) {
		return fmt.Errorf("save index: %w", err)
	}
	r.idx.Store(newIdx)
	r.segMu.Lock()
	r.indexSegments = []crypto.ID{segID}
	r.segMu.Unlock()
	for _, id := range old {
		if id == segID {
			continue
		}
		if err := r.be.Remove(ctx, remote.Handle{Type: remote.Index, Name: id.String()}); err != nil && !errors.Is(err, remote.ErrNotFound) {
			return fmt.Errorf("remove superseded index %s: %w", id.Short(), err)
		}
	}
	if r.persist != nil {
		// Under the exclusive lock nobody else writes: bring the store in
		// line (incrementally if no pack left, else by a refill).
		return r.syncPersistent(ctx)
	}
	return nil
}

// compactIndex merges every index segment into one when index/ holds more
// than compactAt(packs) objects: writers merge only their own segments
// (compact.go), so those of many sessions, and leftovers of merges
// killed half-way, are merged here, under the exclusive lock.
func (r *Repository) compactIndex(ctx context.Context, res *PruneResult) error {
	n, err := r.IndexObjects(ctx)
	if err != nil {
		return fmt.Errorf("list index: %w", err)
	}
	packs := r.ix().Packs()
	if n <= compactAt(len(packs)) {
		return nil
	}
	entries := make([]index.PackEntry, len(packs))
	for i, p := range packs {
		entries[i] = index.PackEntry{ID: p.ID, Size: p.Size, Blobs: r.ix().PackBlobs(p.ID)}
	}
	if err := r.rewriteIndex(ctx, entries); err != nil {
		return err
	}
	res.IndexMerged = n
	return nil
}

// compactAt is how many index objects prune leaves alone.
func compactAt(packs int) int { return 32 + packs/mergedPacks }

// exclusive makes sure this handle holds the exclusive lock (taking it
// for the call unless it already does) and that its index is the one in
// the remote now. A dry run reads only and needs no lock.
func (r *Repository) exclusive(ctx context.Context, purpose string, lo LockOptions, dryRun bool) (release func(), err error) {
	release = func() {}
	if dryRun {
		return release, nil
	}
	if !r.holdsExclusive() {
		lo.Kind = ExclusiveLock
		if lo.Purpose == "" {
			lo.Purpose = purpose
		}
		l, err := r.Lock(ctx, lo)
		if err != nil {
			return nil, err
		}
		release = func() { l.Release(context.WithoutCancel(ctx)) }
	}
	if err := r.LoadIndex(ctx); err != nil {
		release()
		return nil, err
	}
	return release, nil
}

// Exclusive takes the exclusive lock for purpose unless this handle holds
// it, and reloads the index; release lets go of what it took.
func (r *Repository) Exclusive(ctx context.Context, purpose string, lo LockOptions) (release func(), err error) {
	return r.exclusive(ctx, purpose, lo, false)
}

func (r *Repository) holdsExclusive() bool {
	r.lockMu.Lock()
	defer r.lockMu.Unlock()
	for _, l := range r.locks {
		if l.opts.Kind == ExclusiveLock {
			return true
		}
	}
	return false
}

// SweepUnused removes every blob that no remaining snapshot references,
// without applying retention, and deletes the packs at once rather than
// marking them. Erasure uses it after rewriting snapshots; it holds the
// exclusive lock and bumps the generation.
func (r *Repository) SweepUnused(ctx context.Context, dryRun bool) (*PruneResult, error) {
	release, err := r.exclusive(ctx, "erase", LockOptions{}, dryRun)
	if err != nil {
		return nil, err
	}
	defer release()
	if !dryRun {
		// An erase killed after marking its packs: they go now, not after
		// a grace period.
		if _, err := r.emptyTrashOf(ctx, "erase"); err != nil {
			return nil, err
		}
		if _, err := r.RecoverPacks(ctx); err != nil {
			return nil, err
		}
	}
	snaps, err := r.Snapshots(ctx)
	if err != nil {
		return nil, err
	}
	used, err := r.usedBlobs(ctx, snaps)
	if err != nil {
		return nil, err
	}
	res := &PruneResult{SnapshotsKept: len(snaps), DryRun: dryRun, SnapshotsRemoved: []string{}}
	return res, r.sweep(ctx, used, PruneOptions{DryRun: dryRun, Progress: NoProgress{}, Now: time.Now()}, res, true)
}

// usedBlobs walks the trees of snaps and collects every blob they name.
func (r *Repository) usedBlobs(ctx context.Context, snaps []*Snapshot) (map[blobKey]bool, error) {
	used := map[blobKey]bool{}
	var walk func(id crypto.ID) error
	walk = func(id crypto.ID) error {
		k := blobKey{pack.Tree, id}
		if used[k] {
			return nil
		}
		used[k] = true
		t, err := r.LoadTree(ctx, id)
		if err != nil {
			// Deleting data because a tree is unreadable would turn a
			// repairable problem into loss: refuse.
			return fmt.Errorf("prune: cannot read tree %s, run `keepfs check`: %w", id.Short(), err)
		}
		for _, n := range t.Nodes {
			switch n.Type {
			case tree.Dir:
				if err := walk(n.Subtree); err != nil {
					return err
				}
			case tree.File:
				for _, c := range n.Content {
					used[blobKey{pack.Data, c}] = true
				}
			}
		}
		return nil
	}
	for _, s := range snaps {
		if err := walk(s.Tree); err != nil {
			return nil, err
		}
	}
	return used, nil
}

func (r *Repository) sweep(ctx context.Context, used map[blobKey]bool, opts PruneOptions, res *PruneResult, deleteNow bool) error {
	type plan struct {
		id   crypto.ID
		live []pack.Blob
	}
	var keep []index.PackEntry
	var rewrite []plan
	var remove []crypto.ID
	for _, p := range r.ix().Packs() {
		blobs := r.ix().PackBlobs(p.ID)
		var live []pack.Blob
		for _, b := range blobs {
			k := blobKey{b.Type, b.ID}
			loc, ok := r.ix().Lookup(b.Type, b.ID)
			// A blob is live in this pack only where the index points: a
			// second copy elsewhere is dead weight.
			if used[k] && ok && loc.Pack == p.ID && loc.Offset == b.Offset {
				live = append(live, b)
				continue
			}
			res.BlobsRemoved++
			res.BytesRemoved += int64(b.Length)
		}
		switch {
		case len(live) == len(blobs):
			keep = append(keep, index.PackEntry{ID: p.ID, Size: p.Size, Blobs: blobs})
		case len(live) == 0:
			remove = append(remove, p.ID)
		default:
			rewrite = append(rewrite, plan{p.ID, live})
		}
	}
	res.PacksDeleted = len(remove)
	res.PacksRewritten = len(rewrite)
	for _, p := range rewrite {
		res.BlobsRepacked += len(p.live)
	}
	if opts.DryRun || (len(remove) == 0 && len(rewrite) == 0) {
		return nil
	}

	var total int64
	for _, p := range rewrite {
		for _, b := range p.live {
			total += int64(b.Length)
		}
	}
	opts.Progress.Start("repack", total)
	r.w.mu.Lock()
	r.w.uploadedLog = []index.PackEntry{}
	r.w.mu.Unlock()
	for _, p := range rewrite {
		h := remote.Handle{Type: remote.Pack, Name: p.id.String()}
		for _, b := range p.live {
			sealed, err := r.be.Load(ctx, h, int64(b.Offset), int64(b.Length))
			if err != nil {
				return fmt.Errorf("repack %s: %w", p.id.Short(), err)
			}
			// Authenticate before copying: repacking must not launder a
			// corrupted blob into a fresh pack.
			if _, err := pack.OpenBlob(r.key, b.Type, b.ID, sealed); err != nil {
				return fmt.Errorf("repack %s: %w (run `keepfs check --read-data`)", p.id.Short(), err)
			}
			if err := r.saveSealed(ctx, b.Type, b.ID, sealed, int(b.RawLength)); err != nil {
				return err
			}
			opts.Progress.Add(int64(b.Length))
		}
	}
	if err := r.Flush(ctx); err != nil {
		return err
	}
	opts.Progress.Done()
	r.w.mu.Lock()
	fresh := r.w.uploadedLog
	r.w.uploadedLog = nil
	r.w.mu.Unlock()

	// Mark before the index stops naming them: killed in between, the
	// packs are still indexed and a later prune leaves them (and finds
	// them dead again).
	var dead []crypto.ID
	dead = append(dead, remove...)
	for _, p := range rewrite {
		dead = append(dead, p.id)
	}
	reason := "prune"
	if deleteNow {
		reason = "erase"
	}
	mark, err := r.markForDeletion(ctx, dead, reason, opts.Now)
	if err != nil {
		return err
	}
	res.PacksMarked = len(dead)

	if err := r.rewriteIndex(ctx, append(keep, fresh...)); err != nil {
		return err
	}
	if deleteNow {
		if _, err := r.emptyTrash(ctx, opts.Now, 0, mark); err != nil {
			return err
		}
	}
	return nil
}
