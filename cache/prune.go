package cache

import (
	"context"
	"errors"
	"fmt"

	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo"
)

// Prune applies the repository's retention policy and removes the data no
// kept snapshot references, while the mount runs. A snapshot first makes
// the latest snapshot match the live tree; then snapshots and uploads wait
// until prune is done, so the uploader cannot deduplicate against a pack
// that prune is deleting. Chunks committed meanwhile stay local and are
// uploaded by the next snapshot, against the rewritten index.
func (c *Cache) Prune(ctx context.Context, opts repo.PruneOptions) (*repo.PruneResult, error) {
	// A fresh snapshot, even of an unchanged tree: retention judges
	// snapshots by age, and the live tree's data must be in one it keeps.
	// A dry run changes nothing, so it judges the snapshots there are.
	if !opts.DryRun {
		c.snap.Force()
		if _, err := c.Sync(ctx); err != nil {
			return nil, fmt.Errorf("snapshot before prune: %w", err)
		}
	}
	defer c.holdForRewrite()()
	if opts.Now.IsZero() {
		opts.Now = c.opts.Now()
	}
	if c.inPrune != nil {
		c.inPrune()
	}
	res, err := c.r.Prune(ctx, opts)
	if err != nil {
		return nil, err
	}
	if !opts.DryRun && res.Generation != 0 {
		// This mount made the change: nothing to reconcile but the record.
		if err := c.recordGeneration(res.Generation); err != nil {
			c.log.Warn("cannot record the repository generation", "err", err)
		}
	}
	if !opts.DryRun {
		last := c.snap.Last()
		// The last snapshot may have been forgotten by a max-age rule; the
		// next one must not name it as its parent.
		if last != nil {
			if _, err := c.r.Backend().Stat(ctx, remote.Handle{Type: remote.Snapshot, Name: last.ID.String()}); errors.Is(err, remote.ErrNotFound) {
				c.snap.ForgetLast(last) // and take a new snapshot at the next chance
			}
		}
		c.log.Info("pruned", "snapshots_removed", len(res.SnapshotsRemoved), "blobs_removed", res.BlobsRemoved,
			"bytes_removed", res.BytesRemoved, "packs_rewritten", res.PacksRewritten)
		if len(res.SnapshotsRemoved) > 0 {
			// The set of snapshots changed: let .versions drop the forgotten.
			fns, last := c.snap.Callbacks()
			go func() {
				for _, fn := range fns {
					fn(last)
				}
			}()
		}
	}
	return res, nil
}

// holdForRewrite stops snapshots, uploads and eviction while the
// repository's index and snapshots are rewritten under the mount (a prune,
// an erase), and returns how to let them go on. Lock order: the
// scheduler's run (Scheduler.Hold), the
// upload queue's hold, the chunk store's eviction.
func (c *Cache) holdForRewrite() (release func()) {
	releaseSnap := c.snap.Hold()
	releaseUp := c.up.Hold()
	resumeEviction := c.chunks.PauseEviction()
	return func() {
		resumeEviction()
		releaseUp()
		releaseSnap()
	}
}
