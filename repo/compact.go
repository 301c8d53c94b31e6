package repo

import (
	"context"
	"errors"
	"fmt"

	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/index"
)

// Index compaction. Every Flush stores a segment, and a mount's uploader
// flushes at every snapshot, so without compaction index/ would grow by
// one object per upload pass. A handle merges the segments it wrote itself
// in this session: that is safe under a shared lock, since no other client
// names or deletes them (prune and erase, which rewrite everything, hold
// the exclusive lock, and Prune merges every segment into one). Other
// clients' segments are merged only by Prune.
//
// A handle keeps its own live segments (own). Once there are more than
// ownMergeAt, it writes one segment naming all their packs that supersedes
// them, then deletes them. A merged segment that names mergedPacks packs
// or more is left alone from then on, so one session leaves at most one
// segment per mergedPacks packs plus ownMergeAt+1. Killed between the
// write and the deletes, the old segments stay behind superseded (readers
// ignore them; the superseding segment keeps naming them until they are
// confirmed gone, and Prune removes them).
var (
	ownMergeAt  = 8
	mergedPacks = 1000
)

// ownSegment is a segment this handle wrote and may still merge.
type ownSegment struct {
	id    crypto.ID
	packs []index.PackEntry
	// supersedes lists the segments it supersedes that may still exist:
	// a merge carries them on, so deleting this segment can never bring
	// back one it hid.
	supersedes []crypto.ID
}

// compactOwn merges this handle's own segments once there are more than
// at. A failure is not the caller's (the packs are indexed either way):
// the segments stay as they are and the next call tries again.
func (r *Repository) compactOwn(ctx context.Context, at int) error {
	r.compactMu.Lock()
	defer r.compactMu.Unlock()
	if len(r.own) <= max(at, 1) {
		return nil
	}
	if err := r.ownStillStored(ctx); err != nil {
		return err
	}
	merged := &index.Segment{}
	for _, s := range r.own {
		merged.Supersedes = append(merged.Supersedes, s.id)
		merged.Supersedes = append(merged.Supersedes, s.supersedes...)
		merged.Packs = append(merged.Packs, s.packs...)
	}
	if err := r.Writable(); err != nil {
		return fmt.Errorf("compact index: %w", err)
	}
	sealed := merged.Seal(r.key)
	id := crypto.Hash(sealed)
	if err := r.be.Save(ctx, remote.Handle{Type: remote.Index, Name: id.String()}, sealed); err != nil && !errors.Is(err, remote.ErrExists) {
		return fmt.Errorf("compact index: %w", err)
	}
	r.segMu.Lock()
	gone := map[crypto.ID]bool{}
	for _, old := range merged.Supersedes {
		gone[old] = true
	}
	kept := r.indexSegments[:0]
	for _, s := range r.indexSegments {
		if !gone[s] {
			kept = append(kept, s)
		}
	}
	r.indexSegments = append(kept, id)
	r.segMu.Unlock()
	if r.persist != nil {
		// The same packs under the merged segment's id, so that a restart
		// does not load it again. Failing, the store is left dirty and the
		// next LoadIndex refills it.
		if err := r.persist.Apply([]index.Held{{ID: id, Segment: merged, Live: true}}, merged.Supersedes); err != nil {
			return fmt.Errorf("compact index: record locally: %w", err)
		}
	}
	r.w.mu.Lock()
	r.w.stats.IndexWritten++
	r.w.stats.IndexMerged += len(r.own)
	r.w.mu.Unlock()
	if r.afterMerge != nil {
		if err := r.afterMerge(); err != nil {
			return err
		}
	}
	var left []crypto.ID
	var rerr error
	for _, old := range merged.Supersedes {
		if err := r.be.Remove(ctx, remote.Handle{Type: remote.Index, Name: old.String()}); err != nil && !errors.Is(err, remote.ErrNotFound) {
			left = append(left, old)
			rerr = fmt.Errorf("remove merged index segment %s: %w", old.Short(), err)
		}
	}
	if len(merged.Packs) >= mergedPacks {
		// Full: never merged again, and its leftovers are Prune's.
		r.own = nil
	} else {
		r.own = []ownSegment{{id: id, packs: merged.Packs, supersedes: left}}
	}
	return rerr
}

// ownStillStored checks that the remote still holds every segment this
// handle wrote (compactMu held). A merge copies their packs from memory:
// were one gone, because the remote went back to an older copy of itself,
// the merged segment would name packs the remote lost, and every client
// would deduplicate against them. Only this handle deletes its own
// segments, so one gone means the remote lost it: the handle forgets its
// segments (the next LoadIndex brings the index in line).
func (r *Repository) ownStillStored(ctx context.Context) error {
	for _, s := range r.own {
		_, err := r.be.Stat(ctx, remote.Handle{Type: remote.Index, Name: s.id.String()})
		if errors.Is(err, remote.ErrNotFound) {
			r.own = nil
			return fmt.Errorf("compact index: segment %s this client stored is gone from the remote; not merged", s.id.Short())
		}
		if err != nil {
			return fmt.Errorf("compact index: %w", err)
		}
	}
	return nil
}

// MergeOwnIndex merges every segment this handle wrote and may still
// merge into one, so that a session (a mount, an import) ends leaving one
// segment per 1,000 packs plus at most one. Callers call it when done
// writing; a failure leaves the segments as they are, which is correct.
func (r *Repository) MergeOwnIndex(ctx context.Context) error {
	return r.compactOwn(ctx, 1)
}

// addOwn records a segment this handle stored.
func (r *Repository) addOwn(id crypto.ID, s *index.Segment) {
	r.compactMu.Lock()
	r.own = append(r.own, ownSegment{id: id, packs: s.Packs})
	r.compactMu.Unlock()
}

// IndexObjects counts the objects in index/, superseded ones included.
func (r *Repository) IndexObjects(ctx context.Context) (int, error) {
	n := 0
	err := r.be.List(ctx, remote.Index, func(remote.Info) error { n++; return nil })
	return n, err
}
