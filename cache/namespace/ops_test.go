package namespace

import (
	"errors"
	"testing"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/keepfs/keepfs/cache/meta"
	"github.com/keepfs/keepfs/policy/ignore"
	"github.com/keepfs/keepfs/repo/tree"
)

// opsFixture is a namespace with a root directory, in an in-memory Badger.
type opsFixture struct {
	t     *testing.T
	db    *badger.DB
	m     *MetaCache
	marks *RulesMarks
	next  uint64
}

const root = meta.RootIno

func newOps(t *testing.T) *opsFixture {
	f := &opsFixture{t: t, db: memDB(t), m: NewMetaCache(100), next: root + 1}
	var err error
	if f.marks, err = LoadRulesMarks(f.db.View); err != nil {
		t.Fatal(err)
	}
	f.do(func(txn *Txn) error {
		txn.NewDir(root)
		return txn.PutInode(root, &meta.Inode{Type: tree.Dir, Mode: 0o755, Nlink: 2})
	})
	return f
}

func (f *opsFixture) try(fn func(*Txn) error) error {
	var t *Txn
	err := f.db.Update(func(txn *badger.Txn) error {
		t = NewTxn(txn, f.m, f.marks)
		return fn(t)
	})
	if err == nil {
		t.Apply()
	}
	return err
}

func (f *opsFixture) do(fn func(*Txn) error) {
	f.t.Helper()
	if err := f.try(fn); err != nil {
		f.t.Fatal(err)
	}
}

func (f *opsFixture) alloc() (uint64, error) { f.next++; return f.next - 1, nil }

func (f *opsFixture) create(parent uint64, name string, typ tree.Type) Attr {
	f.t.Helper()
	var a Attr
	f.do(func(txn *Txn) (err error) {
		a, err = txn.Create(parent, name, NewNode{Type: typ, Mode: 0o644}, f.alloc, 1)
		return err
	})
	return a
}

func (f *opsFixture) inode(ino uint64) *meta.Inode {
	f.t.Helper()
	n, err := GetInode(mustView(f), ino)
	if err != nil {
		f.t.Fatal(err)
	}
	return n
}

func mustView(f *opsFixture) *badger.Txn {
	txn := f.db.NewTransaction(false)
	f.t.Cleanup(txn.Discard)
	return txn
}

// Link counts and parents follow creates, links, renames over a linked
// file and removals, as Badger holds them.
func TestOpsKeepLinkCounts(t *testing.T) {
	f := newOps(t)
	d := f.create(root, "d", tree.Dir)
	if n := f.inode(root); n.Nlink != 3 {
		t.Fatalf("root links after mkdir: %d, want 3", n.Nlink)
	}
	a := f.create(root, "a", tree.File)
	b := f.create(d.Ino, "b", tree.File)
	f.do(func(txn *Txn) error { _, err := txn.Link(a.Ino, d.Ino, "a2", 2); return err })
	if n := f.inode(a.Ino); n.Nlink != 2 {
		t.Fatalf("links after link: %d", n.Nlink)
	}
	var linked bool
	f.do(func(txn *Txn) (err error) {
		linked, err = txn.Rename(d.Ino, "b", root, "a", 0, 3)
		return err
	})
	if !linked {
		t.Error("replacing one of two links did not report other links")
	}
	if n := f.inode(a.Ino); n.Nlink != 1 {
		t.Errorf("replaced file's links: %d, want 1", n.Nlink)
	}
	if n := f.inode(b.Ino); n.Parent != root || n.Name != "a" || n.Ctime != 3 {
		t.Errorf("moved file: parent %d name %q ctime %d", n.Parent, n.Name, n.Ctime)
	}
	if err := f.try(func(txn *Txn) error { return txn.Rmdir(root, "d", 4) }); !errors.Is(err, ErrNotEmpty) {
		t.Errorf("rmdir of a non-empty directory: %v", err)
	}
	f.do(func(txn *Txn) error { _, err := txn.Unlink(d.Ino, "a2", 4); return err })
	f.do(func(txn *Txn) error { return txn.Rmdir(root, "d", 5) })
	if n := f.inode(root); n.Nlink != 2 || n.Mtime != 5 {
		t.Errorf("root after rmdir: links %d mtime %d", n.Nlink, n.Mtime)
	}
	if err := f.try(func(txn *Txn) error {
		_, err := txn.Create(root, "a", NewNode{Type: tree.File}, f.alloc, 6)
		return err
	}); !errors.Is(err, ErrExists) {
		t.Errorf("create over an entry: %v", err)
	}
	if err := f.try(func(txn *Txn) error {
		_, err := txn.Create(root, "x/y", NewNode{Type: tree.File}, f.alloc, 6)
		return err
	}); !errors.Is(err, ErrInvalid) {
		t.Errorf("create of a name with a slash: %v", err)
	}
}

// A hard link made to or from a .gdprignore name marks the inode, the mark
// is in Badger for the next open, and deleting the inode drops it.
func TestLinkToRulesMarksInode(t *testing.T) {
	f := newOps(t)
	a := f.create(root, "notes", tree.File)
	plain := f.create(root, "plain", tree.File)
	f.do(func(txn *Txn) error { _, err := txn.Link(plain.Ino, root, "plain2", 1); return err })
	f.do(func(txn *Txn) error { _, err := txn.Link(a.Ino, root, ignore.FileName, 1); return err })
	if !f.marks.Has(a.Ino) || f.marks.Has(plain.Ino) {
		t.Fatalf("marks after links: rules file %v, plain %v", f.marks.Has(a.Ino), f.marks.Has(plain.Ino))
	}
	loaded, err := LoadRulesMarks(f.db.View)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Has(a.Ino) || loaded.Has(plain.Ino) {
		t.Fatalf("marks read back: rules file %v, plain %v", loaded.Has(a.Ino), loaded.Has(plain.Ino))
	}
	f.do(func(txn *Txn) error { return txn.DelInode(a.Ino) })
	if f.marks.Has(a.Ino) {
		t.Error("mark outlived its inode in memory")
	}
	if loaded, _ = LoadRulesMarks(f.db.View); loaded.Has(a.Ino) {
		t.Error("mark outlived its inode in Badger")
	}
}

// Renaming a .gdprignore that has another link away from that name marks
// it: the other name may still be a .gdprignore.
func TestRenameAwayFromRulesMarksLinkedInode(t *testing.T) {
	f := newOps(t)
	a := f.create(root, ignore.FileName, tree.File)
	d := f.create(root, "d", tree.Dir)
	f.do(func(txn *Txn) error { _, err := txn.Link(a.Ino, d.Ino, "copy", 1); return err })
	f.marks = &RulesMarks{set: map[uint64]bool{}} // forget the link's mark
	f.do(func(txn *Txn) error { _, err := txn.Rename(root, ignore.FileName, root, "old", 0, 2); return err })
	if !f.marks.Has(a.Ino) {
		t.Error("a linked .gdprignore renamed away is not marked")
	}
}

// Attribute changes: setgid inheritance, kill-priv, and the xattr flags.
func TestOpsAttributes(t *testing.T) {
	f := newOps(t)
	mode := uint32(0o2775)
	f.do(func(txn *Txn) error { _, err := txn.SetAttr(root, SetAttrIn{Mode: &mode}, 1); return err })
	sub := f.create(root, "sub", tree.Dir)
	if sub.Mode&0o2000 == 0 {
		t.Errorf("a directory in a setgid directory lost setgid: %o", sub.Mode)
	}
	file := f.create(root, "f", tree.File)
	f.do(func(txn *Txn) error { return txn.SetXattr(file.Ino, CapabilityXattr, []byte("cap"), XattrCreate, 2) })
	if err := f.try(func(txn *Txn) error { return txn.SetXattr(file.Ino, CapabilityXattr, []byte("x"), XattrCreate, 2) }); !errors.Is(err, ErrExists) {
		t.Errorf("create of an existing attribute: %v", err)
	}
	suid := uint32(0o4755)
	f.do(func(txn *Txn) error { _, err := txn.SetAttr(file.Ino, SetAttrIn{Mode: &suid}, 3); return err })
	f.do(func(txn *Txn) error { _, err := txn.SetAttr(file.Ino, SetAttrIn{KillPriv: true}, 4); return err })
	n := f.inode(file.Ino)
	if n.Mode != 0o755 || HasCapability(n) {
		t.Errorf("after kill-priv: mode %o, capability %v", n.Mode, HasCapability(n))
	}
	if err := f.try(func(txn *Txn) error { return txn.RemoveXattr(file.Ino, CapabilityXattr, 5) }); !errors.Is(err, ErrNoAttr) {
		t.Errorf("remove of a missing attribute: %v", err)
	}
}

// Every node type maps to its S_IFMT bits and back.
func TestTypeModeRoundTrip(t *testing.T) {
	for _, typ := range []tree.Type{tree.File, tree.Dir, tree.Symlink, tree.FIFO, tree.CharDev, tree.BlockDev, tree.Socket} {
		a := Attr{Type: typ, Mode: 0o644}
		if got := TypeFromMode(a.UnixMode()); got != typ {
			t.Errorf("type %v: mode %o maps back to %v", typ, a.UnixMode(), got)
		}
	}
	if m := (Attr{Type: tree.Dir, Mode: 0o755}).UnixMode(); m != 0o40755 {
		t.Errorf("directory mode %o, want 040755", m)
	}
}
