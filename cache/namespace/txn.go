package namespace

import (
	"errors"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/keepfs/keepfs/cache/meta"
	"github.com/keepfs/keepfs/repo/tree"
)

// ErrNotFound: no such inode or directory entry.
var ErrNotFound = errors.New("no such file or directory")

// Getter is what reads need of a Badger transaction.
type Getter interface {
	Get(key []byte) (*badger.Item, error)
}

// DirEntry is one entry of a directory listing.
type DirEntry struct {
	Name string
	Ino  uint64
	Type tree.Type
}

// Txn is a read-write Badger transaction that keeps a MetaCache in step:
// inodes and directory entries are written through its methods, never
// with Set/Delete on their keys directly, and its reads see its own
// writes. Once the transaction has committed, Apply installs its writes
// in the cache. Other keys go through the embedded Badger transaction.
type Txn struct {
	*badger.Txn
	cache  *MetaCache
	writes Writes
	marks  *RulesMarks
	// marksGone lists inodes whose rules mark this transaction deleted;
	// Apply drops them from marks.
	marksGone []uint64
}

// NewTxn wraps txn, whose writes Apply will install in m and marks.
func NewTxn(txn *badger.Txn, m *MetaCache, marks *RulesMarks) *Txn {
	return &Txn{Txn: txn, cache: m, marks: marks}
}

// Apply installs the transaction's inode and entry writes in its cache; call
// it once the transaction has committed, and only then.
func (t *Txn) Apply() {
	t.cache.Apply(t.writes)
	t.marks.forget(t.marksGone)
}

// PutInode writes inode ino.
func (t *Txn) PutInode(ino uint64, n *meta.Inode) error {
	if err := t.Set(meta.InodeKey(ino), meta.EncodeInode(n)); err != nil {
		return err
	}
	t.writes.PutInode(ino, n)
	return nil
}

// NewDir records that ino is a directory this transaction creates, with no
// entries yet.
func (t *Txn) NewDir(ino uint64) { t.writes.NewDir(ino) }

// DelInode deletes inode ino and its rules mark: no inode goes without it.
func (t *Txn) DelInode(ino uint64) error {
	if err := t.Delete(meta.InodeKey(ino)); err != nil {
		return err
	}
	t.writes.DelInode(ino)
	if t.marks.Has(ino) {
		if err := t.Delete(rulesInodeKey(ino)); err != nil {
			return err
		}
		t.marksGone = append(t.marksGone, ino)
	}
	return nil
}

// SetDirent points parent's entry name at ino, of type typ.
func (t *Txn) SetDirent(parent uint64, name string, ino uint64, typ tree.Type) error {
	if err := t.Set(meta.DirentKey(parent, name), meta.EncodeDirent(ino, typ)); err != nil {
		return err
	}
	t.writes.SetDirent(parent, name, ino, typ)
	return nil
}

// DelDirent deletes parent's entry name.
func (t *Txn) DelDirent(parent uint64, name string) error {
	if err := t.Delete(meta.DirentKey(parent, name)); err != nil {
		return err
	}
	t.writes.DelDirent(parent, name)
	return nil
}

// Inode reads ino as this transaction sees it. The cache may stand in for
// Badger because inode writers serialise (package cache's nsMu) and apply
// their writes before the next one starts.
func (t *Txn) Inode(ino uint64) (*meta.Inode, error) {
	if n, deleted, ok := t.writes.Inode(ino); ok {
		if deleted {
			return nil, fmt.Errorf("inode %d: %w", ino, ErrNotFound)
		}
		return n, nil
	}
	if n := t.cache.Inode(ino); n != nil {
		return n, nil
	}
	return GetInode(t.Txn, ino)
}

// Lookup finds name in parent as this transaction sees it.
func (t *Txn) Lookup(parent uint64, name string) (uint64, tree.Type, error) {
	if d, deleted, ok := t.writes.Lookup(parent, name); ok {
		if deleted {
			return 0, 0, ErrNotFound
		}
		return d.Ino, d.Type, nil
	}
	v, ok, absent := t.cache.Dirent(parent, name)
	if ok {
		return v.Ino, v.Type, nil
	}
	if absent {
		return 0, 0, ErrNotFound
	}
	return LookupEntry(t.Txn, parent, name)
}

// Viewer runs fn in a read-only Badger transaction.
type Viewer func(fn func(*badger.Txn) error) error

// GetInode loads inode ino, from the cache or else through view (filling
// the cache); ErrNotFound if it does not exist.
func (m *MetaCache) GetInode(view Viewer, ino uint64) (*meta.Inode, error) {
	if n := m.Inode(ino); n != nil {
		return n, nil
	}
	gen := m.Generation()
	var n *meta.Inode
	err := view(func(txn *badger.Txn) error {
		var err error
		n, err = GetInode(txn, ino)
		return err
	})
	if err != nil {
		return nil, err
	}
	m.FillInode(gen, ino, n)
	return n, nil
}

// LookupInode finds name in parent and loads its inode, from the cache or
// else through view (filling the cache).
func (m *MetaCache) LookupInode(view Viewer, parent uint64, name string) (uint64, *meta.Inode, error) {
	v, ok, absent := m.Dirent(parent, name)
	if ok {
		if n := m.Inode(v.Ino); n != nil {
			return v.Ino, n, nil
		}
	}
	if absent {
		return 0, nil, ErrNotFound
	}
	gen := m.Generation()
	var ino uint64
	var typ tree.Type
	var n *meta.Inode
	err := view(func(txn *badger.Txn) error {
		var err error
		if ino, typ, err = LookupEntry(txn, parent, name); err != nil {
			return err
		}
		n, err = GetInode(txn, ino)
		return err
	})
	if err != nil {
		return 0, nil, err
	}
	m.FillDirent(gen, parent, name, Dirent{Ino: ino, Type: typ})
	m.FillInode(gen, ino, n)
	return ino, n, nil
}

// GetInode reads inode ino from Badger; ErrNotFound if it does not exist.
func GetInode(txn Getter, ino uint64) (*meta.Inode, error) {
	v, err := value(txn, meta.InodeKey(ino))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, fmt.Errorf("inode %d: %w", ino, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read inode %d: %w", ino, err)
	}
	n, err := meta.DecodeInode(v)
	if err != nil {
		return nil, fmt.Errorf("inode %d: %w", ino, err)
	}
	return n, nil
}

// LookupEntry reads parent's entry name from Badger; ErrNotFound if there
// is none.
func LookupEntry(txn Getter, parent uint64, name string) (uint64, tree.Type, error) {
	v, err := value(txn, meta.DirentKey(parent, name))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, 0, ErrNotFound
	}
	if err != nil {
		return 0, 0, fmt.Errorf("read directory entry: %w", err)
	}
	return meta.DecodeDirent(v)
}

// DirEmpty reports whether directory ino has no entries in Badger.
func DirEmpty(txn *badger.Txn, ino uint64) bool {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: meta.DirentPrefix(ino)})
	defer it.Close()
	it.Rewind()
	return !it.Valid()
}

// ReadDir lists directory ino from Badger, sorted by name (the key order).
func ReadDir(txn *badger.Txn, ino uint64) ([]DirEntry, error) {
	var out []DirEntry
	it := txn.NewIterator(badger.IteratorOptions{Prefix: meta.DirentPrefix(ino), PrefetchValues: true, PrefetchSize: 256})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		v, err := item.ValueCopy(nil)
		if err != nil {
			return nil, err
		}
		cino, t, err := meta.DecodeDirent(v)
		if err != nil {
			return nil, err
		}
		out = append(out, DirEntry{Name: meta.NameFromDirentKey(item.Key()), Ino: cino, Type: t})
	}
	return out, nil
}

func value(txn Getter, key []byte) ([]byte, error) {
	it, err := txn.Get(key)
	if err != nil {
		return nil, err
	}
	return it.ValueCopy(nil)
}
