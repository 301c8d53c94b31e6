package cache

import (
	"errors"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/keepfs/keepfs/cache/meta"
	"github.com/keepfs/keepfs/cache/snapshot"
	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/pack"
)

// The tree cache (c.trees) maps a directory to the tree the last snapshot
// walk built for it, for as long as neither its subtree nor the ignore
// rules reaching it from above change. It lives in memory and in Badger
// (meta.TreeKey), so that the first walk after a restart does not reread
// every unchanged subtree.
//
// The walk relies on one rule: a directory without a cached tree has no
// cached ancestors (dirChanged stops at the first uncached directory). The
// trees a walk builds form whole paths from the root, so installing them
// keeps the rule; the copy in Badger keeps it by being exactly the one in
// memory whenever the session closes cleanly: built trees are written when
// installed, dropped ones are deleted at the next write (treesGone), and
// whatever may have made the two differ (a failed write, a reset of the
// whole cache) makes the next write replace the copy with memory's
// (treesAllGone). Open loads the copy only if the last session ended with
// Close and left the mark below; after a crash the copy may miss the
// invalidations of the changes made since its last write, so it is dropped.

// treesValidKey marks Badger's copy as complete: Close sets it after the
// last write, Open deletes it. A session of a version that does not keep
// the copy up to date (before it existed) closes without setting it.
var treesValidKey = meta.StateKey("trees")

// markTreesValid records that Badger's copy is complete (Close).
func (c *Cache) markTreesValid() error {
	err := c.update(func(txn *wtxn) error { return txn.Set(treesValidKey, []byte{1}) })
	if err != nil {
		return fmt.Errorf("record the tree cache: %w", err)
	}
	return nil
}

// treeKeyBatch bounds the tree keys one transaction changes.
const treeKeyBatch = 4096

func treeRecord(te snapshot.Tree) *meta.TreeEntry {
	return &meta.TreeEntry{ID: te.ID, Rules: te.Rules, Files: te.Stats.Files, Dirs: te.Stats.Dirs, Bytes: te.Stats.Bytes}
}

// dropAllTreesLocked empties the tree cache, in memory and (at the next
// write) in Badger. The caller holds mu.
func (c *Cache) dropAllTreesLocked() {
	c.trees = map[uint64]snapshot.Tree{}
	c.treesGone = nil
	c.treesAllGone = true
}

// installTrees caches the trees a walk built, unless what they describe
// changed while it ran, and writes the cache's changes to Badger.
func (c *Cache) installTrees(built map[uint64]snapshot.Tree) {
	c.mu.Lock()
	if c.invalid[0] {
		built = nil
	}
	set := make(map[uint64]snapshot.Tree, len(built))
	for ino, te := range built {
		if !c.invalid[ino] {
			c.trees[ino] = te
			set[ino] = te
		}
	}
	c.mu.Unlock()
	if err := c.persistTrees(set); err != nil {
		c.log.Warn("cannot record the tree cache; the next snapshot after a restart walks everything", "err", err)
	}
}

// persistTrees writes set (entries just installed) and the entries dropped
// since the last write to Badger; when the copy there may differ from
// memory, it is replaced whole.
func (c *Cache) persistTrees(set map[uint64]snapshot.Tree) error {
	c.mu.Lock()
	all := c.treesAllGone
	gone := c.treesGone
	c.treesAllGone, c.treesGone = false, nil
	if all {
		set = make(map[uint64]snapshot.Tree, len(c.trees))
		for ino, te := range c.trees {
			set[ino] = te
		}
	} else {
		for ino, te := range set {
			// Dropped again since it was installed: gone says so.
			if cur, ok := c.trees[ino]; !ok || cur != te {
				delete(set, ino)
			}
		}
	}
	c.mu.Unlock()
	err := c.writeTrees(all, gone, set)
	if err != nil {
		c.mu.Lock()
		c.treesAllGone = true
		c.mu.Unlock()
	}
	return err
}

type treeOp struct {
	key []byte
	v   []byte // nil: delete
}

func (c *Cache) writeTrees(all bool, gone map[uint64]bool, set map[uint64]snapshot.Tree) error {
	var ops []treeOp
	if all {
		keys, err := c.treeKeys()
		if err != nil {
			return err
		}
		for _, k := range keys {
			if ino, ok := meta.InoFromTreeKey(k); !ok || !hasEntry(set, ino) {
				ops = append(ops, treeOp{key: k})
			}
		}
	} else {
		for ino := range gone {
			if !hasEntry(set, ino) {
				ops = append(ops, treeOp{key: meta.TreeKey(ino)})
			}
		}
	}
	for ino, te := range set {
		ops = append(ops, treeOp{meta.TreeKey(ino), meta.EncodeTreeEntry(treeRecord(te))})
	}
	for len(ops) > 0 {
		batch := ops[:min(len(ops), treeKeyBatch)]
		ops = ops[len(batch):]
		err := c.update(func(txn *wtxn) error {
			for _, op := range batch {
				var err error
				if op.v == nil {
					err = txn.Delete(op.key)
				} else {
					err = txn.Set(op.key, op.v)
				}
				if err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("write the tree cache: %w", err)
		}
	}
	return nil
}

func hasEntry(set map[uint64]snapshot.Tree, ino uint64) bool {
	_, ok := set[ino]
	return ok
}

// treeKeys lists the tree keys in Badger.
func (c *Cache) treeKeys() ([][]byte, error) {
	var keys [][]byte
	err := c.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: meta.TreePrefix()})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			keys = append(keys, it.Item().KeyCopy(nil))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list the tree cache: %w", err)
	}
	return keys, nil
}

// loadTrees fills the tree cache from Badger at Open if the last session
// closed cleanly and left the copy complete, and drops it otherwise. Entries whose tree the
// repository no longer holds (a prune or an erase since) go, and with them
// the entries of their ancestors.
func (c *Cache) loadTrees() error {
	valid := false
	err := c.update(func(txn *wtxn) error {
		_, err := txn.Get(treesValidKey)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		} else if err != nil {
			return err
		}
		valid = true
		return txn.Delete(treesValidKey)
	})
	if err != nil {
		return fmt.Errorf("read the tree cache: %w", err)
	}
	if !c.cleanStart || !valid {
		c.mu.Lock()
		// Whatever the bootstrap cached is all Badger may hold.
		c.treesAllGone = true
		c.mu.Unlock()
		return c.persistTrees(nil)
	}
	loaded := map[uint64]snapshot.Tree{}
	bad := false
	err = c.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: meta.TreePrefix(), PrefetchValues: true, PrefetchSize: 256})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			ino, ok := meta.InoFromTreeKey(it.Item().Key())
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			e, derr := meta.DecodeTreeEntry(v)
			if !ok || derr != nil {
				bad = true
				return nil
			}
			loaded[ino] = snapshot.Tree{ID: e.ID, Rules: e.Rules, Stats: repo.SnapshotStats{Files: e.Files, Dirs: e.Dirs, Bytes: e.Bytes}}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("read the tree cache: %w", err)
	}
	if bad {
		c.log.Warn("the tree cache in the state directory is damaged; the next snapshot walks everything")
		loaded = map[uint64]snapshot.Tree{}
	}
	dropped := 0
	for ino, te := range loaded {
		if c.r.Index().Has(pack.Tree, te.ID) {
			continue
		}
		// The directory and every ancestor: an uncached directory has no
		// cached ancestors.
		for i := 0; i < 4096 && ino != 0; i++ {
			if _, ok := loaded[ino]; ok {
				delete(loaded, ino)
				dropped++
			}
			if ino == meta.RootIno {
				break
			}
			n, err := c.getInode(ino)
			if errors.Is(err, ErrNotFound) {
				// Gone from the namespace: so is its tree from the walk.
				break
			} else if err != nil {
				return err
			}
			ino = n.Parent
		}
	}
	if dropped > 0 {
		c.log.Info("cached trees the repository no longer holds were dropped", "dirs", dropped)
	}
	c.mu.Lock()
	for ino, te := range c.trees { // the bootstrap's, if it ran
		loaded[ino] = te
	}
	c.trees = loaded
	c.treesAllGone = bad || dropped > 0
	c.mu.Unlock()
	if bad || dropped > 0 {
		return c.persistTrees(nil)
	}
	return nil
}
