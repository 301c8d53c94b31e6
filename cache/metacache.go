package cache

import (
	badger "github.com/dgraph-io/badger/v4"

	"github.com/keepfs/keepfs/cache/meta"
	"github.com/keepfs/keepfs/cache/namespace"
)

// The metadata cache (c.meta, namespace.MetaCache) keeps decoded inodes
// and directory entries in memory in front of Badger; see its comment for
// how it stays true, and namespace.Txn for the writes that go through it.
// Here: the cache's write transaction (wtxn) and the reads that fill it.

// wtxn is a write transaction of the state directory: a namespace.Txn
// (inode and entry writes that keep the metadata cache in step; other keys
// through its Badger transaction) and the .gdprignore link marks that the
// cache keeps beside inodes.
type wtxn struct {
	*namespace.Txn
	c *Cache
	// rulesGone lists inodes whose rules mark this transaction deleted;
	// update drops them from Cache.rulesInodes once it commits.
	rulesGone []uint64
}

// badger is the transaction's Badger transaction, for what is not inodes
// or entries.
func (t *wtxn) badger() *badger.Txn { return t.Txn.Txn }

// DelInode deletes ino and its .gdprignore link mark. It stands in front
// of namespace.Txn's so that no inode goes without its mark.
func (t *wtxn) DelInode(ino uint64) error {
	if err := t.Txn.DelInode(ino); err != nil {
		return err
	}
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

// getInode loads inode ino; ErrNotFound if it does not exist.
func (c *Cache) getInode(ino uint64) (*meta.Inode, error) { return c.meta.GetInode(c.view, ino) }

// lookupInode finds name in parent and loads its inode.
func (c *Cache) lookupInode(parent uint64, name string) (uint64, *meta.Inode, error) {
	return c.meta.LookupInode(c.view, parent, name)
}
