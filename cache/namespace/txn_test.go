package namespace

import (
	"errors"
	"testing"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/keepfs/keepfs/cache/meta"
	"github.com/keepfs/keepfs/repo/tree"
)

func memDB(t *testing.T) *badger.DB {
	t.Helper()
	db, err := badger.Open(badger.DefaultOptions("").WithInMemory(true).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// update runs fn in a Txn and applies its writes to m if it commits.
func update(db *badger.DB, m *MetaCache, fn func(*Txn) error) error {
	var t *Txn
	err := db.Update(func(txn *badger.Txn) error {
		t = NewTxn(txn, m, nil)
		return fn(t)
	})
	if err == nil {
		t.Apply()
	}
	return err
}

// A transaction's reads see its own writes before the commit; the cache
// and Badger see them only after, and a transaction that fails leaves both
// as they were.
func TestTxnWritesThrough(t *testing.T) {
	db, m := memDB(t), NewMetaCache(100)
	view := Viewer(db.View)
	const dir, file = 2, 3
	err := update(db, m, func(txn *Txn) error {
		txn.NewDir(dir)
		if err := txn.PutInode(dir, &meta.Inode{Type: tree.Dir, Nlink: 2}); err != nil {
			return err
		}
		if err := txn.PutInode(file, &meta.Inode{Type: tree.File, Nlink: 1, Size: 7}); err != nil {
			return err
		}
		if err := txn.SetDirent(dir, "a", file, tree.File); err != nil {
			return err
		}
		if ino, _, err := txn.Lookup(dir, "a"); err != nil || ino != file {
			t.Errorf("lookup in the transaction: %d, %v", ino, err)
		}
		if n, err := txn.Inode(file); err != nil || n.Size != 7 {
			t.Errorf("inode in the transaction: %+v, %v", n, err)
		}
		if m.Inode(file) != nil {
			t.Error("the cache holds the inode before the commit")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := m.Inode(file); n == nil || n.Size != 7 {
		t.Fatalf("cache after the commit: %+v", n)
	}
	ino, n, err := m.LookupInode(view, dir, "a")
	if err != nil || ino != file || n.Size != 7 {
		t.Fatalf("LookupInode: %d %+v %v", ino, n, err)
	}
	// dir was created complete: a missing name is known missing.
	if _, _, err := m.LookupInode(view, dir, "b"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing name: %v", err)
	}

	boom := errors.New("boom")
	err = update(db, m, func(txn *Txn) error {
		if err := txn.DelDirent(dir, "a"); err != nil {
			return err
		}
		if err := txn.DelInode(file); err != nil {
			return err
		}
		if _, _, err := txn.Lookup(dir, "a"); !errors.Is(err, ErrNotFound) {
			t.Errorf("deleted entry in the transaction: %v", err)
		}
		if _, err := txn.Inode(file); !errors.Is(err, ErrNotFound) {
			t.Errorf("deleted inode in the transaction: %v", err)
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatal(err)
	}
	if ino, _, err := m.LookupInode(view, dir, "a"); err != nil || ino != file {
		t.Fatalf("after a failed transaction: %d, %v", ino, err)
	}
	if err := db.View(func(txn *badger.Txn) error {
		_, err := GetInode(txn, file)
		return err
	}); err != nil {
		t.Fatalf("Badger after a failed transaction: %v", err)
	}
}

// Reads that miss the cache fill it from Badger, and ReadDir and DirEmpty
// read Badger in key order.
func TestReadsFromBadger(t *testing.T) {
	db := memDB(t)
	if err := update(db, NewMetaCache(100), func(txn *Txn) error {
		for i, name := range []string{"b", "a", "c"} {
			ino := uint64(10 + i)
			if err := txn.PutInode(ino, &meta.Inode{Type: tree.File, Nlink: 1, Size: ino}); err != nil {
				return err
			}
			if err := txn.SetDirent(2, name, ino, tree.File); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	m := NewMetaCache(100) // a fresh cache: every read misses
	n, err := m.GetInode(db.View, 11)
	if err != nil || n.Size != 11 {
		t.Fatalf("GetInode: %+v %v", n, err)
	}
	if m.Inode(11) == nil {
		t.Fatal("GetInode did not fill the cache")
	}
	if _, err := m.GetInode(db.View, 99); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing inode: %v", err)
	}
	if ino, _, err := m.LookupInode(db.View, 2, "c"); err != nil || ino != 12 {
		t.Fatalf("LookupInode: %d %v", ino, err)
	}
	if _, _, err := m.LookupInode(db.View, 2, "d"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing entry: %v", err)
	}
	var list []DirEntry
	var empty2, empty3 bool
	if err := db.View(func(txn *badger.Txn) error {
		var err error
		list, err = ReadDir(txn, 2)
		empty2, empty3 = DirEmpty(txn, 2), DirEmpty(txn, 3)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(list) != 3 || list[0].Name != "a" || list[0].Ino != 11 || list[2].Name != "c" {
		t.Fatalf("ReadDir: %+v", list)
	}
	if empty2 || !empty3 {
		t.Fatalf("DirEmpty: dir 2 %v, dir 3 %v", empty2, empty3)
	}
}
