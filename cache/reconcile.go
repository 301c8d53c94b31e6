package cache

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/keepfs/keepfs/cache/meta"
	"github.com/keepfs/keepfs/cache/snapshot"
	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/erase"
	"github.com/keepfs/keepfs/repo/history"
	"github.com/keepfs/keepfs/repo/tree"
)

// A mount holds the repository's mount lock (repo.LockMount: a writer's
// shared lock, refused while another live mount holds one) with the state
// directory's id as its owner. An unreachable remote at start is no
// licence to go without a lock: Open fails, and the caller may retry.
//
// When the lock lapses (the remote could not be reached to refresh it for
// most of the stale time), the repository refuses uploads and snapshots,
// and the mount refuses new writes (ErrReadOnly) while it serves what it
// has; once the lock is taken again, the index is reloaded and reconcile
// runs before anything is written.

var generationKey = meta.StateKey("generation")

func (c *Cache) acquireRemoteLock(ctx context.Context) (*repo.Lock, error) {
	l, err := c.r.LockMount(ctx, repo.LockOptions{Owner: hex.EncodeToString(c.stateID),
		Wait: c.opts.LockWait, OnRelock: c.reconcile, Log: c.log})
	if errors.Is(err, repo.ErrMounted) {
		return nil, err
	}
	if err != nil {
		c.setRemoteHealth(err)
		return nil, fmt.Errorf("cannot take the repository lock: %w", err)
	}
	// A prune may have run between the index's load and the lock: load
	// what changed (for a warm local index, a listing).
	if err := c.r.LoadIndex(ctx); err != nil {
		l.Release(context.WithoutCancel(ctx))
		c.setRemoteHealth(err)
		return nil, fmt.Errorf("load the index under the repository lock: %w", err)
	}
	if err := c.reconcile(ctx); err != nil {
		l.Release(context.WithoutCancel(ctx))
		return nil, err
	}
	return l, nil
}

// reconcile brings the local state in line with a repository that another
// client changed (its generation moved on: a prune or an erase), after the
// index was reloaded: cached trees may name trees that are gone, and the
// last snapshot may have been forgotten. Chunks whose blobs went stay
// local (eviction keeps what the index lacks) and the next snapshot walk
// queues what the tree still needs.
func (c *Cache) reconcile(ctx context.Context) error {
	gen, err := c.r.Generation(ctx)
	if err != nil {
		return err
	}
	var seen uint64
	if err := c.view(func(txn *badger.Txn) error {
		v, err := getValue(txn, generationKey)
		if err == nil && len(v) == 8 {
			seen = binary.BigEndian.Uint64(v)
		} else if err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		return nil
	}); err != nil {
		return fmt.Errorf("read the repository generation seen: %w", err)
	}
	if gen == seen {
		return nil
	}
	c.log.Info("the repository changed since this state directory last saw it; reconciling", "generation", gen, "seen", seen)
	gens, err := c.r.Generations(ctx, seen)
	if err != nil {
		return err
	}
	var erased, files []crypto.ID
	for _, g := range gens {
		erased = append(erased, g.Erased...)
		files = append(files, g.ErasedFiles...)
	}
	if len(erased) > 0 || len(files) > 0 {
		// Another client (or this state directory's, unmounted) erased
		// these: the files here that hold them, or are them, go, and so
		// do the local copies, before anything is served or uploaded
		// again.
		if err := c.dropErased(ctx, erased, files); err != nil {
			return fmt.Errorf("drop erased data: %w", err)
		}
	}
	last := c.snap.DropTrees()
	if last != nil {
		if _, err := c.r.LoadSnapshot(ctx, last.ID); err != nil {
			c.snap.ForgetLast(last)
		}
	}
	return c.recordGeneration(gen)
}

// recordGeneration notes that the local state matches generation gen.
func (c *Cache) recordGeneration(gen uint64) error {
	v := binary.BigEndian.AppendUint64(nil, gen)
	return c.update(func(txn *wtxn) error { return txn.Set(generationKey, v) })
}

// readOnly reports why the mount must not take new writes now, if it must
// not: its repository lock lapsed.
func (c *Cache) readOnly() error {
	if c.rlock == nil {
		return nil
	}
	if err := c.rlock.Err(); err != nil {
		return fmt.Errorf("%w: until the repository lock is taken again: %v", ErrReadOnly, err)
	}
	return nil
}

// dropErased unlinks every file whose content names one of ids, or whose
// path and content are one of files (erase.FileID: an erased file all of
// whose content stayed because other files share it), and purges the
// local copies of ids. A file changed since, or another at the same path,
// differs in content and stays.
func (c *Cache) dropErased(ctx context.Context, ids, files []crypto.ID) error {
	set := make(map[crypto.ID]bool, len(ids))
	for _, id := range ids {
		set[id] = true
	}
	fileSet := make(map[crypto.ID]bool, len(files))
	for _, id := range files {
		fileSet[id] = true
	}
	type victim struct {
		ino, parent uint64
		name        string
	}
	var victims []victim
	dirs := map[uint64]string{} // directory paths found so far
	erasedFile := func(n *meta.Inode) bool {
		if len(fileSet) == 0 || n.Type != tree.File {
			return false
		}
		dir, ok := dirs[n.Parent]
		if !ok {
			if dir, ok = c.pathOf(n.Parent); !ok {
				return false
			}
			dirs[n.Parent] = dir
		}
		node := &tree.Node{Type: tree.File}
		node.SetPieces(snapshot.Pieces(n.Chunks))
		k := c.r.Key()
		return fileSet[erase.FileID(k, path.Join(dir, n.Name), history.ContentID(k, node))]
	}
	if err := c.eachInode(func(ino uint64, n *meta.Inode) {
		for _, ch := range n.Chunks {
			if set[ch.ID] {
				victims = append(victims, victim{ino, n.Parent, n.Name})
				return
			}
		}
		if erasedFile(n) {
			victims = append(victims, victim{ino, n.Parent, n.Name})
		}
	}); err != nil {
		return err
	}
	c.mu.Lock()
	removed := c.onRemoved
	c.mu.Unlock()
	for _, v := range victims {
		// Its path, for the kernel, which may hold the entry for the
		// mount's entry timeout otherwise (a relock reconciles while
		// mounted).
		dir, dirOK := c.pathOf(v.parent)
		// Not Unlink: on a relock the lock still counts as lapsed until
		// this reconcile is done, and Unlink would refuse for good.
		if err := c.unlink(v.parent, v.name); err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		if removed != nil && dirOK {
			removed(path.Join(dir, v.name))
		}
		// No name: the log is in the state directory, which holds none.
		c.log.Warn("removed a file that held data an erase outside this mount removed from the repository (the erased file, or a file sharing its content)",
			"ino", v.ino, "ino_parent", v.parent)
	}
	if err := c.purgeChunks(ids); err != nil {
		return err
	}
	// Versions of the files removed here that no snapshot held: see Erase.
	// At Open nothing else runs; at a relock a snapshot may, and the
	// sweep, which then does not run, takes them later.
	if release, ok := c.snap.TryHold(); ok {
		var err error
		if len(victims) > 0 {
			_, _, err = c.sweepHeld(ctx, true)
		}
		release()
		if errors.Is(err, errSweepBusy) {
			c.log.Warn("cannot drop the unsnapshotted versions of the removed files now; a later sweep will", "err", err)
		} else if err != nil {
			return err
		}
	}
	return c.rebuildDB()
}

// pathOf returns the path from the root of directory ino, following the
// parent each inode records; false if the chain does not reach the root.
func (c *Cache) pathOf(ino uint64) (string, bool) {
	var names []string
	for range 4096 {
		if ino == c.Root() {
			slices.Reverse(names)
			return "/" + strings.Join(names, "/"), true
		}
		n, err := c.getInode(ino)
		if err != nil || n.Parent == 0 || n.Parent == ino {
			return "", false
		}
		names = append(names, n.Name)
		ino = n.Parent
	}
	return "", false
}
