package cache

import (
	"errors"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/keepfs/keepfs/cache/snapshot"
)

// newTrees wires the tree-id cache (snapshot.Trees) to the state directory,
// the repository and the namespace. Its invalidation hooks are
// dirChanged and invalidateAllTrees (namespace.go); a walk's trees are
// installed by the snapshot scheduler, and prune, erase and a retaken lock drop
// them all.
func (c *Cache) newTrees() *snapshot.Trees {
	return snapshot.NewTrees(snapshot.TreesConfig{
		Store:      treeStore{c},
		Repository: walkRepo{c.r},
		Parents:    treeParents{c},
		Log:        c.log,
	})
}

// treeStore runs the tree cache's transactions as every other update (see
// Cache.update).
type treeStore struct{ c *Cache }

func (s treeStore) Update(fn func(snapshot.Txn) error) error {
	return s.c.update(func(t *wtxn) error { return fn(treeTxn{t}) })
}

func (s treeStore) Scan(prefix []byte, values bool, fn func(k, v []byte) error) error {
	return s.c.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: values, PrefetchSize: 256})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var v []byte
			if values {
				var err error
				if v, err = it.Item().ValueCopy(nil); err != nil {
					return err
				}
			}
			if err := fn(it.Item().Key(), v); err != nil {
				return err
			}
		}
		return nil
	})
}

type treeTxn struct{ *wtxn }

func (t treeTxn) Has(key []byte) (bool, error) {
	_, err := t.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	return err == nil, err
}

// treeParents finds a directory's parent in the namespace.
type treeParents struct{ c *Cache }

func (p treeParents) Parent(ino uint64) (uint64, bool, error) {
	n, err := p.c.getInode(ino)
	if errors.Is(err, ErrNotFound) {
		return 0, false, nil
	} else if err != nil {
		return 0, false, err
	}
	return n.Parent, true, nil
}
