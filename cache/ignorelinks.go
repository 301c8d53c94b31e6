package cache

import (
	"encoding/binary"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/keepfs/keepfs/cache/meta"
)

// A change to a .gdprignore must stop uploads at once (inodeChanged), and
// an inode records one name only: the one it was created or last renamed
// under. A hard link can make a .gdprignore of a file that records another
// name, or leave a .gdprignore's content reachable under a second name that
// a rename then records. Such inodes are marked, in Badger and in
// rulesInodes, so that a write through any name stops uploads. Marks are
// rare (hard links to rule files), so all of them are loaded at open; one
// outlives the .gdprignore name it was made for until the inode goes,
// which costs at most a needless stop.

var rulesInodePrefix = meta.StateKey("rules-inode/")

func rulesInodeKey(ino uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(nil), rulesInodePrefix...), ino)
}

// loadRulesInodes reads every mark into rulesInodes.
func (c *Cache) loadRulesInodes() error {
	set := map[uint64]bool{}
	err := c.view(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.PrefetchValues = false
		o.Prefix = rulesInodePrefix
		it := txn.NewIterator(o)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			if len(k) == len(rulesInodePrefix)+8 {
				set[binary.BigEndian.Uint64(k[len(rulesInodePrefix):])] = true
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("read the .gdprignore link marks: %w", err)
	}
	c.mu.Lock()
	c.rulesInodes = set
	c.mu.Unlock()
	return nil
}

func (c *Cache) isRulesInode(ino uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rulesInodes[ino]
}

func (c *Cache) forgetRulesInodes(inos []uint64) {
	if len(inos) == 0 {
		return
	}
	c.mu.Lock()
	for _, ino := range inos {
		delete(c.rulesInodes, ino)
	}
	c.mu.Unlock()
}
