package namespace

import (
	"encoding/binary"
	"fmt"
	"sync"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/keepfs/keepfs/cache/meta"
)

// A change to a .gdprignore must stop uploads at once, and an inode
// records one name only: the one it was created or last renamed under. A
// hard link can make a .gdprignore of a file that records another name, or
// leave a .gdprignore's content reachable under a second name that a
// rename then records. Such inodes are marked, in Badger and in
// RulesMarks, so that a write through any name stops uploads. Marks are
// rare (hard links to rule files), so all of them are loaded at open; one
// outlives the .gdprignore name it was made for until the inode goes,
// which costs at most a needless stop.

var rulesInodePrefix = meta.StateKey("rules-inode/")

func rulesInodeKey(ino uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(nil), rulesInodePrefix...), ino)
}

// RulesMarks is the set of marked inodes.
type RulesMarks struct {
	mu  sync.Mutex
	set map[uint64]bool
}

// LoadRulesMarks reads every mark.
func LoadRulesMarks(view Viewer) (*RulesMarks, error) {
	m := &RulesMarks{set: map[uint64]bool{}}
	err := view(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.PrefetchValues = false
		o.Prefix = rulesInodePrefix
		it := txn.NewIterator(o)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			if len(k) == len(rulesInodePrefix)+8 {
				m.set[binary.BigEndian.Uint64(k[len(rulesInodePrefix):])] = true
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the .gdprignore link marks: %w", err)
	}
	return m, nil
}

// Has reports whether ino is marked.
func (m *RulesMarks) Has(ino uint64) bool {
	if m == nil {
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.set[ino]
}

func (m *RulesMarks) add(ino uint64) {
	m.mu.Lock()
	m.set[ino] = true
	m.mu.Unlock()
}

func (m *RulesMarks) forget(inos []uint64) {
	if m == nil || len(inos) == 0 {
		return
	}
	m.mu.Lock()
	for _, ino := range inos {
		delete(m.set, ino)
	}
	m.mu.Unlock()
}

// markRules records that ino, a file with several links, is or was a
// .gdprignore under a name other than the one its inode records.
func (t *Txn) markRules(ino uint64) error {
	if err := t.Set(rulesInodeKey(ino), nil); err != nil {
		return err
	}
	// Known at once, before the commit: a mark that does not commit
	// costs at most a needless stop.
	t.marks.add(ino)
	return nil
}
