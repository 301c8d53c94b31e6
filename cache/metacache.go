package cache

import (
	"github.com/keepfs/keepfs/cache/meta"
	"github.com/keepfs/keepfs/cache/namespace"
)

// The metadata cache (c.meta, namespace.MetaCache) keeps decoded inodes
// and directory entries in memory in front of Badger; see its comment for
// how it stays true, and namespace.Txn for the writes that go through it.
// Here: the cache's write transaction (wtxn) and the reads that fill it.

// wtxn is a write transaction of the state directory: a namespace.Txn,
// whose inode and entry writes keep the metadata cache in step; other keys
// go through its Badger transaction.
type wtxn struct{ *namespace.Txn }

// getInode loads inode ino; ErrNotFound if it does not exist.
func (c *Cache) getInode(ino uint64) (*meta.Inode, error) { return c.meta.GetInode(c.view, ino) }

// lookupInode finds name in parent and loads its inode.
func (c *Cache) lookupInode(parent uint64, name string) (uint64, *meta.Inode, error) {
	return c.meta.LookupInode(c.view, parent, name)
}
