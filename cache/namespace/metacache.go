// Package namespace holds the mount's namespace (inodes and directory
// entries) as package cache keeps it in Badger: the in-memory metadata
// cache in front of Badger (MetaCache, with its read-through loads), the
// write transaction that keeps it in step (Txn, recording its writes in
// Writes), the reads of inodes, entries and listings, and the namespace
// operations as one transaction applies them (ops.go: create, link,
// unlink, rename, setattr, xattrs: what they check and write), with the
// .gdprignore link marks they keep (RulesMarks). Package cache serialises
// the operations, allocates inode numbers, and tells the snapshotter and
// the kernel what changed (cache/namespace.go).
package namespace

import (
	"encoding/binary"
	"sync"

	"github.com/keepfs/keepfs/cache/meta"
	"github.com/keepfs/keepfs/repo/tree"
)

// MetaCache keeps decoded inodes and directory entries in memory. Every
// stat, lookup and getxattr would otherwise read and decrypt a Badger
// value; a warm `ls -lR` is made of little else.
//
// Badger stays the truth. Writers change inodes and entries only through a
// transaction that records what it wrote (Writes) and applies it here once
// the transaction has committed (write-through). Readers that miss fill
// the cache from their own Badger read, which may already be stale by
// then: gen, bumped by every applied write, tells them so, and they skip
// the fill.
//
// complete holds directories created by this process whose every entry is
// in dirents, so that a name missing there is missing in Badger too: a
// lookup of a new name (every create makes one first) is answered without
// a Badger read, which for a key that does not exist walks every level of
// the tree. A directory starts complete when a transaction creates it (it
// is empty), stays so because every entry written afterwards goes through
// a transaction and so into dirents, and stops being so when trim drops
// entries.
type MetaCache struct {
	mu       sync.Mutex
	gen      uint64
	max      int
	inodes   map[uint64]*meta.Inode
	dirents  map[string]Dirent // direntCacheKey(parent, name)
	complete map[uint64]struct{}
}

// Dirent is where a directory entry points.
type Dirent struct {
	Ino  uint64
	Type tree.Type
}

// MetaCacheEntries bounds each map; at ~200 bytes an inode that is some
// 40 MiB for a tree of a quarter of a million files.
const MetaCacheEntries = 200_000

// NewMetaCache returns an empty cache of at most max inodes and max
// entries.
func NewMetaCache(max int) *MetaCache {
	return &MetaCache{max: max, inodes: map[uint64]*meta.Inode{}, dirents: map[string]Dirent{},
		complete: map[uint64]struct{}{}}
}

func direntCacheKey(parent uint64, name string) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], parent)
	return string(b[:]) + name
}

// CloneInode copies n's fields. The slices are shared: an inode's chunk
// and xattr lists are replaced, never changed in place.
func CloneInode(n *meta.Inode) *meta.Inode {
	cp := *n
	return &cp
}

// Generation is the count of writes applied, for FillInode and FillDirent.
func (m *MetaCache) Generation() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.gen
}

// Inode returns a copy of the cached inode ino, nil if it is not cached.
func (m *MetaCache) Inode(ino uint64) *meta.Inode {
	m.mu.Lock()
	defer m.mu.Unlock()
	if n := m.inodes[ino]; n != nil {
		return CloneInode(n)
	}
	return nil
}

// Dirent returns the cached entry name of parent. Without one, absent
// reports whether the name is known not to exist (parent is complete).
func (m *MetaCache) Dirent(parent uint64, name string) (v Dirent, ok, absent bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok = m.dirents[direntCacheKey(parent, name)]
	if !ok {
		_, absent = m.complete[parent]
	}
	return v, ok, absent
}

// FillInode caches n, read from Badger after gen was observed, unless a
// write was applied since.
func (m *MetaCache) FillInode(gen, ino uint64, n *meta.Inode) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.gen == gen {
		m.inodes[ino] = CloneInode(n)
		m.trim()
	}
}

// FillDirent caches entry name of parent as FillInode caches an inode.
func (m *MetaCache) FillDirent(gen, parent uint64, name string, v Dirent) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.gen == gen {
		m.dirents[direntCacheKey(parent, name)] = v
		m.trim()
	}
}

// trim drops arbitrary entries (map order is random) beyond the bound.
func (m *MetaCache) trim() {
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

// Apply installs what a committed transaction wrote.
func (m *MetaCache) Apply(w Writes) {
	if len(w) == 0 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.gen++
	for _, op := range w {
		switch op.kind {
		case opPutInode:
			m.inodes[op.ino] = op.n
		case opDelInode:
			delete(m.inodes, op.ino)
			delete(m.complete, op.ino)
		case opNewDir:
			m.complete[op.ino] = struct{}{}
		case opSetDirent:
			m.dirents[direntCacheKey(op.parent, op.name)] = Dirent{op.ino, op.typ}
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
	opNewDir // a directory created empty: see MetaCache.complete
)

// op is one inode or directory-entry write of a transaction.
type op struct {
	kind   opKind
	ino    uint64
	n      *meta.Inode // opPutInode: a private copy
	parent uint64
	name   string
	typ    tree.Type
}

// Writes are the inode and directory-entry writes of one transaction, in
// order: what MetaCache.Apply installs once it committed, and what the
// transaction's own reads see first.
type Writes []op

// PutInode records that ino was written as n (copied).
func (w *Writes) PutInode(ino uint64, n *meta.Inode) {
	*w = append(*w, op{kind: opPutInode, ino: ino, n: CloneInode(n)})
}

// NewDir records that ino is a directory the transaction creates, with no
// entries yet.
func (w *Writes) NewDir(ino uint64) { *w = append(*w, op{kind: opNewDir, ino: ino}) }

// DelInode records that ino was deleted.
func (w *Writes) DelInode(ino uint64) { *w = append(*w, op{kind: opDelInode, ino: ino}) }

// SetDirent records that entry name of parent was set to ino of type typ.
func (w *Writes) SetDirent(parent uint64, name string, ino uint64, typ tree.Type) {
	*w = append(*w, op{kind: opSetDirent, parent: parent, name: name, ino: ino, typ: typ})
}

// DelDirent records that entry name of parent was deleted.
func (w *Writes) DelDirent(parent uint64, name string) {
	*w = append(*w, op{kind: opDelDirent, parent: parent, name: name})
}

// Inode returns the last write of ino: a copy of it (n), or that it was
// deleted; ok is false if the transaction did not write it.
func (w Writes) Inode(ino uint64) (n *meta.Inode, deleted, ok bool) {
	for i := len(w) - 1; i >= 0; i-- {
		op := &w[i]
		if op.ino != ino {
			continue
		}
		switch op.kind {
		case opPutInode:
			return CloneInode(op.n), false, true
		case opDelInode:
			return nil, true, true
		}
	}
	return nil, false, false
}

// Lookup returns the last write of entry name of parent: where it points,
// or that it was deleted; ok is false if the transaction did not write it.
func (w Writes) Lookup(parent uint64, name string) (d Dirent, deleted, ok bool) {
	for i := len(w) - 1; i >= 0; i-- {
		op := &w[i]
		if op.parent != parent || op.name != name {
			continue
		}
		switch op.kind {
		case opSetDirent:
			return Dirent{op.ino, op.typ}, false, true
		case opDelDirent:
			return Dirent{}, true, true
		}
	}
	return Dirent{}, false, false
}
