package cache

import (
	"fmt"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/keepfs/keepfs/cache/meta"
	"github.com/keepfs/keepfs/cache/namespace"
	"github.com/keepfs/keepfs/repo/tree"
)

// The metadata cache (c.meta, namespace.MetaCache) keeps decoded inodes
// and directory entries in memory in front of Badger; see its comment for
// how it stays true. Here: the transaction that writes through it (wtxn)
// and the reads that fill it.

// wtxn is a read-write transaction that keeps the metadata cache in step:
// inodes and directory entries are written through its methods, never
// with Set/Delete on their keys directly. Its reads see its own writes.
type wtxn struct {
	*badger.Txn
	c   *Cache
	ops namespace.Writes
	// rulesGone lists inodes whose rules mark this transaction deleted;
	// update drops them from Cache.rulesInodes once it commits.
	rulesGone []uint64
}

func (t *wtxn) putInode(ino uint64, n *meta.Inode) error {
	if err := t.Set(meta.InodeKey(ino), meta.EncodeInode(n)); err != nil {
		return err
	}
	t.ops.PutInode(ino, n)
	return nil
}

// newDir records that ino is a directory this transaction creates, with no
// entries yet.
func (t *wtxn) newDir(ino uint64) {
	t.ops.NewDir(ino)
}

func (t *wtxn) delInode(ino uint64) error {
	if err := t.Delete(meta.InodeKey(ino)); err != nil {
		return err
	}
	t.ops.DelInode(ino)
	if t.c.isRulesInode(ino) {
		if err := t.Delete(rulesInodeKey(ino)); err != nil {
			return err
		}
		t.rulesGone = append(t.rulesGone, ino)
	}
	return nil
}

// markRules records that ino, a file with several links, is or was a
// .gdprignore under a name other than the one its inode records, so that a
// change made through any of its names stops uploads (inodeChanged).
func (t *wtxn) markRules(ino uint64) error {
	if err := t.Set(rulesInodeKey(ino), nil); err != nil {
		return err
	}
	// Known at once, before the commit: a mark that does not commit
	// costs at most a needless stop.
	t.c.mu.Lock()
	t.c.rulesInodes[ino] = true
	t.c.mu.Unlock()
	return nil
}

func (t *wtxn) setDirent(parent uint64, name string, ino uint64, typ tree.Type) error {
	if err := t.Set(meta.DirentKey(parent, name), meta.EncodeDirent(ino, typ)); err != nil {
		return err
	}
	t.ops.SetDirent(parent, name, ino, typ)
	return nil
}

func (t *wtxn) delDirent(parent uint64, name string) error {
	if err := t.Delete(meta.DirentKey(parent, name)); err != nil {
		return err
	}
	t.ops.DelDirent(parent, name)
	return nil
}

// inode reads ino as this transaction sees it. The cache may stand in for
// Badger because inode writers serialise on nsMu and apply their writes
// before releasing it.
func (t *wtxn) inode(ino uint64) (*meta.Inode, error) {
	if n, deleted, ok := t.ops.Inode(ino); ok {
		if deleted {
			return nil, fmt.Errorf("inode %d: %w", ino, ErrNotFound)
		}
		return n, nil
	}
	if n := t.c.meta.Inode(ino); n != nil {
		return n, nil
	}
	return getInodeTxn(t.Txn, ino)
}

// lookup finds name in parent as this transaction sees it.
func (t *wtxn) lookup(parent uint64, name string) (uint64, tree.Type, error) {
	if d, deleted, ok := t.ops.Lookup(parent, name); ok {
		if deleted {
			return 0, 0, ErrNotFound
		}
		return d.Ino, d.Type, nil
	}
	v, ok, absent := t.c.meta.Dirent(parent, name)
	if ok {
		return v.Ino, v.Type, nil
	}
	if absent {
		return 0, 0, ErrNotFound
	}
	return lookupTxn(t.Txn, parent, name)
}

// getInode loads inode ino; ErrNotFound if it does not exist.
func (c *Cache) getInode(ino uint64) (*meta.Inode, error) {
	if n := c.meta.Inode(ino); n != nil {
		return n, nil
	}
	gen := c.meta.Generation()
	var n *meta.Inode
	err := c.view(func(txn *badger.Txn) error {
		var err error
		n, err = getInodeTxn(txn, ino)
		return err
	})
	if err != nil {
		return nil, err
	}
	c.meta.FillInode(gen, ino, n)
	return n, nil
}

// lookupInode finds name in parent and loads its inode.
func (c *Cache) lookupInode(parent uint64, name string) (uint64, *meta.Inode, error) {
	v, ok, absent := c.meta.Dirent(parent, name)
	if ok {
		if n := c.meta.Inode(v.Ino); n != nil {
			return v.Ino, n, nil
		}
	}
	if absent {
		return 0, nil, ErrNotFound
	}
	gen := c.meta.Generation()
	var ino uint64
	var typ tree.Type
	var n *meta.Inode
	err := c.view(func(txn *badger.Txn) error {
		var err error
		if ino, typ, err = lookupTxn(txn, parent, name); err != nil {
			return err
		}
		n, err = getInodeTxn(txn, ino)
		return err
	})
	if err != nil {
		return 0, nil, err
	}
	c.meta.FillDirent(gen, parent, name, namespace.Dirent{Ino: ino, Type: typ})
	c.meta.FillInode(gen, ino, n)
	return ino, n, nil
}
