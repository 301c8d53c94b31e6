package cache

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strings"

	"github.com/keepfs/keepfs/cache/chunkstore"
	"github.com/keepfs/keepfs/cache/meta"
	"github.com/keepfs/keepfs/cache/namespace"
	"github.com/keepfs/keepfs/cache/snapshot"
	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/erase"
	"github.com/keepfs/keepfs/repo/tree"
)

// Erase erases paths from the repository while the mount runs (see
// package erase), and from the mount: unless opts.KeepCurrent, the files
// the newest snapshot held under an erased path or as a copy leave the
// live tree too, and the local copies of every erased blob are purged
// (chunk keys and queue entries, chunk files, segment records wiped).
//
// It first stores a snapshot, so that what was closed before is in the
// repository and erased with the rest; then snapshots, uploads and
// eviction wait until it is done, as for Prune.
func (c *Cache) Erase(ctx context.Context, opts erase.Options) (*erase.Result, error) {
	if !opts.DryRun {
		if _, err := c.Sync(ctx); err != nil {
			return nil, fmt.Errorf("snapshot before erase: %w", err)
		}
	}
	defer c.holdForRewrite()()
	last := c.snap.Last()
	res, err := erase.Erase(ctx, c.r, opts)
	if err != nil || opts.DryRun {
		return res, err
	}
	if !opts.KeepCurrent && last != nil {
		for _, v := range append(append([]erase.Version{}, res.Versions...), res.Copies...) {
			if v.SnapshotID != last.ID {
				continue
			}
			if err := c.removePath(ctx, v.Path); err != nil && !errors.Is(err, ErrNotFound) {
				return res, fmt.Errorf("remove %s from the live tree: %w", v.Path, err)
			}
		}
		for _, p := range opts.Paths {
			// A directory erased whole, or a file no snapshot showed yet.
			if err := c.removePath(ctx, path.Clean("/"+p)); err != nil && !errors.Is(err, ErrNotFound) {
				return res, fmt.Errorf("remove %s from the live tree: %w", p, err)
			}
		}
	}
	if err := c.purgeChunks(res.ErasedIDs()); err != nil {
		return res, err
	}
	// Versions of the erased files that no snapshot held (rewritten
	// before the next one) have no blob the erase could name: they go
	// with every other dead chunk, before the store is rebuilt without
	// their keys. Writers that leave no gap fail the erase at the end,
	// once everything else is done, for the admin to run it again.
	_, _, swept := c.sweepHeld(ctx, true)
	if swept != nil && !errors.Is(swept, errSweepBusy) {
		return res, fmt.Errorf("drop unsnapshotted versions: %w", swept)
	}
	// Deleted keys (names, inline chunks) stay in Badger's files until
	// compaction: rebuild the store so that none of it stays readable.
	if err := c.rebuildDB(); err != nil {
		return res, err
	}
	// The snapshots were rewritten: cached tree ids and the last snapshot
	// are stale.
	snaps, err := c.r.Snapshots(ctx)
	if err != nil {
		return res, err
	}
	var newest *repo.Snapshot
	if len(snaps) > 0 {
		newest = snaps[len(snaps)-1]
	}
	fns := c.snap.Rewritten(newest)
	if newest != nil {
		if err := c.update(func(txn *wtxn) error { return txn.Set(snapshot.LastKey, newest.ID[:]) }); err != nil {
			return res, err
		}
	}
	if err := c.recordGeneration(res.Generation); err != nil {
		return res, err
	}
	go func() {
		for _, fn := range fns {
			fn(newest)
		}
	}()
	c.log.Info("erased", "request", opts.RequestID, "versions", len(res.Versions), "copies", len(res.Copies),
		"blobs_removed", res.BlobsRemoved, "packs_rewritten", res.PacksRewritten)
	if swept != nil {
		return res, fmt.Errorf("erased from the repository, but versions never snapshotted may be left in this state directory (run the erase again): %w", swept)
	}
	return res, nil
}

// removePath unlinks the file at p (a path from the mount's root), or a
// whole directory tree.
func (c *Cache) removePath(ctx context.Context, p string) error {
	parts := strings.Split(strings.Trim(p, "/"), "/")
	if len(parts) == 0 || parts[0] == "" {
		return ErrInvalid
	}
	dir := c.Root()
	for _, name := range parts[:len(parts)-1] {
		a, err := c.Lookup(ctx, dir, name)
		if err != nil {
			return err
		}
		dir = a.Ino
	}
	name := parts[len(parts)-1]
	a, err := c.Lookup(ctx, dir, name)
	if err != nil {
		return err
	}
	defer func() {
		c.mu.Lock()
		fn := c.onRemoved
		c.mu.Unlock()
		if fn != nil {
			fn(p)
		}
	}()
	if a.Type != tree.Dir {
		if err := c.Unlink(ctx, dir, name); err != nil {
			return err
		}
		return c.scrubUnlinked(a.Ino)
	}
	ents, err := c.ReadDir(ctx, a.Ino)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if e.Name == "." || e.Name == ".." {
			continue
		}
		if err := c.removePath(ctx, p+"/"+e.Name); err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
	}
	return c.Rmdir(ctx, dir, name)
}

// purgeChunks drops the local copies of ids: their keys, queue entries,
// chunk files and (wiped) segment records.
func (c *Cache) purgeChunks(ids []crypto.ID) error {
	for _, id := range ids {
		err := c.chunks.Purge(id, func(txn chunkstore.Txn) error {
			return txn.Delete(meta.QueueKey(id))
		})
		if err != nil {
			return fmt.Errorf("purge erased chunk %s: %w", id.Short(), err)
		}
		c.up.Forget(id)
	}
	return nil
}

// scrubUnlinked empties an erased file's inode if no name is left for it:
// the record stays until the kernel forgets the inode, and must not keep
// the erased name or content until then.
func (c *Cache) scrubUnlinked(ino uint64) error {
	return c.update(func(txn *wtxn) error {
		n, err := namespace.GetInode(txn, ino)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil || n.Nlink > 0 {
			return err
		}
		n.Name, n.Chunks, n.Size, n.Xattrs = "", nil, 0, nil
		return txn.PutInode(ino, n)
	})
}
