package namespace

import (
	"fmt"
	"testing"

	"github.com/keepfs/keepfs/cache/meta"
	"github.com/keepfs/keepfs/repo/tree"
)

// A reader that missed the cache and read Badger before a write must not
// install what it read once the write has been applied.
func TestMetaCacheStaleFill(t *testing.T) {
	m := NewMetaCache(10)
	gen := m.Generation()
	old := &meta.Inode{Type: tree.File, Mode: 0o600}
	var w Writes
	w.PutInode(7, &meta.Inode{Type: tree.File, Mode: 0o644})
	m.Apply(w)
	m.FillInode(gen, 7, old)
	if n := m.Inode(7); n == nil || n.Mode != 0o644 {
		t.Fatalf("stale fill replaced the written inode: %+v", n)
	}
	m.FillDirent(gen, 1, "x", Dirent{Ino: 9})
	if _, ok, _ := m.Dirent(1, "x"); ok {
		t.Fatal("stale dirent fill installed")
	}
	// A fill with the current generation is kept; a copy is handed out.
	m.FillInode(m.Generation(), 8, old)
	n := m.Inode(8)
	n.Mode = 0o777
	if m.Inode(8).Mode != 0o600 {
		t.Fatal("a caller's change reached the cached inode")
	}
	// The bound holds.
	for i := uint64(100); i < 200; i++ {
		m.FillInode(m.Generation(), i, old)
	}
	if len(m.inodes) > 10 {
		t.Fatalf("%d cached inodes, bound 10", len(m.inodes))
	}
}

func TestMetaCacheCompleteDir(t *testing.T) {
	m := NewMetaCache(10)
	if _, _, absent := m.Dirent(5, "a"); absent {
		t.Fatal("a directory the cache never saw created counts as complete")
	}
	apply := func(fn func(w *Writes)) {
		var w Writes
		fn(&w)
		m.Apply(w)
	}
	apply(func(w *Writes) { w.NewDir(5) })
	if _, ok, absent := m.Dirent(5, "a"); ok || !absent {
		t.Fatalf("new directory: ok %v absent %v, want a known miss", ok, absent)
	}
	apply(func(w *Writes) { w.SetDirent(5, "a", 6, tree.File) })
	if v, ok, _ := m.Dirent(5, "a"); !ok || v.Ino != 6 {
		t.Fatalf("entry written into a complete directory: %+v %v", v, ok)
	}
	apply(func(w *Writes) { w.DelDirent(5, "a") })
	if _, ok, absent := m.Dirent(5, "a"); ok || !absent {
		t.Fatal("a removed entry is not a known miss")
	}
	// Trim may drop any entry: no directory is complete afterwards.
	for i := range 20 {
		apply(func(w *Writes) { w.SetDirent(5, fmt.Sprint(i), uint64(100+i), tree.File) })
	}
	if _, _, absent := m.Dirent(5, "gone"); absent {
		t.Fatal("a trimmed directory still counts as complete")
	}
	apply(func(w *Writes) { w.NewDir(7); w.DelInode(7) })
	if _, _, absent := m.Dirent(7, "x"); absent {
		t.Fatal("a deleted directory still counts as complete")
	}
}

// A transaction's reads see its own last write of an inode or an entry.
func TestWritesReadTheirOwn(t *testing.T) {
	var w Writes
	if _, _, ok := w.Inode(3); ok {
		t.Fatal("an unwritten inode found")
	}
	n := &meta.Inode{Type: tree.File, Mode: 0o600}
	w.PutInode(3, n)
	n.Mode = 0o777 // the caller's later change is not the write
	w.SetDirent(1, "f", 3, tree.File)
	if got, deleted, ok := w.Inode(3); !ok || deleted || got.Mode != 0o600 {
		t.Fatalf("inode 3: %+v deleted %v ok %v", got, deleted, ok)
	}
	got, _, _ := w.Inode(3)
	got.Mode = 0o111
	if again, _, _ := w.Inode(3); again.Mode != 0o600 {
		t.Fatal("a reader's change reached the recorded write")
	}
	if d, deleted, ok := w.Lookup(1, "f"); !ok || deleted || d != (Dirent{3, tree.File}) {
		t.Fatalf("entry f: %+v deleted %v ok %v", d, deleted, ok)
	}
	w.DelDirent(1, "f")
	w.DelInode(3)
	if _, deleted, ok := w.Inode(3); !ok || !deleted {
		t.Fatal("a deleted inode not seen deleted")
	}
	if _, deleted, ok := w.Lookup(1, "f"); !ok || !deleted {
		t.Fatal("a deleted entry not seen deleted")
	}
	if _, _, ok := w.Lookup(1, "g"); ok {
		t.Fatal("an unwritten entry found")
	}
}
