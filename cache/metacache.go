package cache

import (
	"encoding/binary"
	"fmt"
	"sync"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/keepfs/keepfs/cache/meta"
	"github.com/keepfs/keepfs/repo/tree"
)

// metaCache keeps decoded inodes and directory entries in memory. Every
// stat, lookup and getxattr would otherwise read and decrypt a Badger
// value; a warm `ls -lR` is made of little else.
//
// Badger stays the truth. Writers change inodes and entries only through a
// wtxn, which records what it wrote and applies it here once the
// transaction has committed (write-through). Readers that miss fill the
// cache from their own Badger read, which may already be stale by then:
// gen, bumped by every applied write, tells them so, and they skip the fill.
//
// complete holds directories created by this process whose every entry is
// in dirents, so that a name missing there is missing in Badger too: a
// lookup of a new name (every create makes one first) is answered without
// a Badger read, which for a key that does not exist walks every level of
// the tree. A directory starts complete when a wtxn creates it (it is
// empty), stays so because every entry written afterwards goes through a
// wtxn and so into dirents, and stops being so when trim drops entries.
type metaCache struct {
	mu       sync.Mutex
	gen      uint64
	max      int
	inodes   map[uint64]*meta.Inode
	dirents  map[string]direntVal // direntCacheKey(parent, name)
	complete map[uint64]struct{}
}

type direntVal struct {
	ino uint64
	typ tree.Type
}

// metaCacheEntries bounds each map; at ~200 bytes an inode that is some
// 40 MiB for a tree of a quarter of a million files.
const metaCacheEntries = 200_000

func newMetaCache(max int) *metaCache {
	return &metaCache{max: max, inodes: map[uint64]*meta.Inode{}, dirents: map[string]direntVal{},
		complete: map[uint64]struct{}{}}
}

func direntCacheKey(parent uint64, name string) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], parent)
	return string(b[:]) + name
}

// cloneInode copies n's fields. The slices are shared: an inode's chunk
// and xattr lists are replaced, never changed in place.
func cloneInode(n *meta.Inode) *meta.Inode {
	cp := *n
	return &cp
}

func (m *metaCache) generation() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.gen
}

func (m *metaCache) inode(ino uint64) *meta.Inode {
	m.mu.Lock()
	defer m.mu.Unlock()
	if n := m.inodes[ino]; n != nil {
		return cloneInode(n)
	}
	return nil
}

// dirent returns the cached entry name of parent. Without one, absent
// reports whether the name is known not to exist (parent is complete).
func (m *metaCache) dirent(parent uint64, name string) (v direntVal, ok, absent bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok = m.dirents[direntCacheKey(parent, name)]
	if !ok {
		_, absent = m.complete[parent]
	}
	return v, ok, absent
}

// fillInode caches n, read from Badger after gen was observed, unless a
// write was applied since.
func (m *metaCache) fillInode(gen, ino uint64, n *meta.Inode) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.gen == gen {
		m.inodes[ino] = cloneInode(n)
		m.trim()
	}
}

func (m *metaCache) fillDirent(gen, parent uint64, name string, v direntVal) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.gen == gen {
		m.dirents[direntCacheKey(parent, name)] = v
		m.trim()
	}
}

// trim drops arbitrary entries (map order is random) beyond the bound.
func (m *metaCache) trim() {
	if len(m.inodes) > m.max {
		drop := len(m.inodes) - m.max*9/10
		for k := range m.inodes {
			if drop == 0 {
				break
			}
			if k != meta.RootIno {
				delete(m.inodes, k)
				drop--
			}
		}
	}
	if len(m.dirents) > m.max {
		// Entries of any directory may go: none is complete any more.
		clear(m.complete)
		drop := len(m.dirents) - m.max*9/10
		for k := range m.dirents {
			if drop == 0 {
				break
			}
			delete(m.dirents, k)
			drop--
		}
	}
}

// apply installs what a committed transaction wrote.
func (m *metaCache) apply(ops []metaOp) {
	if len(ops) == 0 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.gen++
	for _, op := range ops {
		switch op.kind {
		case opPutInode:
			m.inodes[op.ino] = op.n
		case opDelInode:
			delete(m.inodes, op.ino)
			delete(m.complete, op.ino)
		case opNewDir:
			m.complete[op.ino] = struct{}{}
		case opSetDirent:
			m.dirents[direntCacheKey(op.parent, op.name)] = direntVal{op.ino, op.typ}
		case opDelDirent:
			delete(m.dirents, direntCacheKey(op.parent, op.name))
		}
	}
	m.trim()
}

type opKind uint8

const (
	opPutInode opKind = iota
	opDelInode
	opSetDirent
	opDelDirent
	opNewDir // a directory created empty: see metaCache.complete
)

// metaOp is one inode or directory-entry write of a transaction.
type metaOp struct {
	kind   opKind
	ino    uint64
	n      *meta.Inode // opPutInode: a private copy
	parent uint64
	name   string
	typ    tree.Type
}

// wtxn is a read-write transaction that keeps the metadata cache in step:
// inodes and directory entries are written through its methods, never
// with Set/Delete on their keys directly. Its reads see its own writes.
type wtxn struct {
	*badger.Txn
	c   *Cache
	ops []metaOp
}

func (t *wtxn) putInode(ino uint64, n *meta.Inode) error {
	if err := t.Set(meta.InodeKey(ino), meta.EncodeInode(n)); err != nil {
		return err
	}
	t.ops = append(t.ops, metaOp{kind: opPutInode, ino: ino, n: cloneInode(n)})
	return nil
}

// newDir records that ino is a directory this transaction creates, with no
// entries yet.
func (t *wtxn) newDir(ino uint64) {
	t.ops = append(t.ops, metaOp{kind: opNewDir, ino: ino})
}

func (t *wtxn) delInode(ino uint64) error {
	if err := t.Delete(meta.InodeKey(ino)); err != nil {
		return err
	}
	t.ops = append(t.ops, metaOp{kind: opDelInode, ino: ino})
	return nil
}

func (t *wtxn) setDirent(parent uint64, name string, ino uint64, typ tree.Type) error {
	if err := t.Set(meta.DirentKey(parent, name), meta.EncodeDirent(ino, typ)); err != nil {
		return err
	}
	t.ops = append(t.ops, metaOp{kind: opSetDirent, parent: parent, name: name, ino: ino, typ: typ})
	return nil
}

func (t *wtxn) delDirent(parent uint64, name string) error {
	if err := t.Delete(meta.DirentKey(parent, name)); err != nil {
		return err
	}
	t.ops = append(t.ops, metaOp{kind: opDelDirent, parent: parent, name: name})
	return nil
}

// inode reads ino as this transaction sees it. The cache may stand in for
// Badger because inode writers serialise on nsMu and apply their writes
// before releasing it.
func (t *wtxn) inode(ino uint64) (*meta.Inode, error) {
	for i := len(t.ops) - 1; i >= 0; i-- {
		op := &t.ops[i]
		if op.ino != ino {
			continue
		}
		switch op.kind {
		case opPutInode:
			return cloneInode(op.n), nil
		case opDelInode:
			return nil, fmt.Errorf("inode %d: %w", ino, ErrNotFound)
		}
	}
	if n := t.c.meta.inode(ino); n != nil {
		return n, nil
	}
	return getInodeTxn(t.Txn, ino)
}

// lookup finds name in parent as this transaction sees it.
func (t *wtxn) lookup(parent uint64, name string) (uint64, tree.Type, error) {
	for i := len(t.ops) - 1; i >= 0; i-- {
		op := &t.ops[i]
		if op.parent != parent || op.name != name {
			continue
		}
		switch op.kind {
		case opSetDirent:
			return op.ino, op.typ, nil
		case opDelDirent:
			return 0, 0, ErrNotFound
		}
	}
	v, ok, absent := t.c.meta.dirent(parent, name)
	if ok {
		return v.ino, v.typ, nil
	}
	if absent {
		return 0, 0, ErrNotFound
	}
	return lookupTxn(t.Txn, parent, name)
}

// getInode loads inode ino; ErrNotFound if it does not exist.
func (c *Cache) getInode(ino uint64) (*meta.Inode, error) {
	if n := c.meta.inode(ino); n != nil {
		return n, nil
	}
	gen := c.meta.generation()
	var n *meta.Inode
	err := c.view(func(txn *badger.Txn) error {
		var err error
		n, err = getInodeTxn(txn, ino)
		return err
	})
	if err != nil {
		return nil, err
	}
	c.meta.fillInode(gen, ino, n)
	return n, nil
}

// lookupInode finds name in parent and loads its inode.
func (c *Cache) lookupInode(parent uint64, name string) (uint64, *meta.Inode, error) {
	v, ok, absent := c.meta.dirent(parent, name)
	if ok {
		if n := c.meta.inode(v.ino); n != nil {
			return v.ino, n, nil
		}
	}
	if absent {
		return 0, nil, ErrNotFound
	}
	gen := c.meta.generation()
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
	c.meta.fillDirent(gen, parent, name, direntVal{ino, typ})
	c.meta.fillInode(gen, ino, n)
	return ino, n, nil
}
