package cache

import (
	"context"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"sync"
	"testing"

	badger "github.com/dgraph-io/badger/v4"
	"golang.org/x/sys/unix"

	"github.com/keepfs/keepfs/cache/meta"
	"github.com/keepfs/keepfs/cache/namespace"
	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo/tree"
)

// Many writers and readers: after each write returns, every reader sees it
// (or a later value), never an older one.
func TestMetaCacheConcurrent(t *testing.T) {
	ctx := context.Background()
	c := openCache(t, newRepo(t, remote.NewMem()), t.TempDir())
	defer c.Close(ctx)
	const files, rounds = 4, 200
	var inos []uint64
	for i := range files {
		a, err := c.Create(ctx, c.Root(), fmt.Sprintf("f%d", i), NewNode{Type: tree.File, Mode: 0})
		if err != nil {
			t.Fatal(err)
		}
		inos = append(inos, a.Ino)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for _, ino := range inos {
		wg.Add(2)
		done := make(chan struct{})
		var mu sync.Mutex
		written := uint32(0)
		go func() { // writer: mode counts up
			defer wg.Done()
			defer close(done)
			for m := uint32(1); m <= rounds; m++ {
				mode := m & 0o777
				if _, err := c.SetAttr(ctx, ino, SetAttrIn{Mode: &mode}); err != nil {
					errs <- err
					return
				}
				mu.Lock()
				written = m
				mu.Unlock()
			}
		}()
		go func() { // reader: never behind the last completed write
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				mu.Lock()
				w := written
				mu.Unlock()
				a, err := c.GetAttr(ctx, ino)
				if err != nil {
					errs <- err
					return
				}
				if w > 0 && a.Mode < w&0o777 && w <= 0o777 {
					errs <- fmt.Errorf("inode %d: mode %o after %o was written", ino, a.Mode, w)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, ino := range inos {
		// What the cache says is what Badger holds.
		a, err := c.GetAttr(ctx, ino)
		var n *meta.Inode
		if err == nil {
			err = c.view(func(txn *badger.Txn) error {
				var err error
				n, err = namespace.GetInode(txn, ino)
				return err
			})
		}
		if err != nil || a.Mode != rounds&0o777 || n.Mode != a.Mode {
			t.Fatalf("after the writes: mode %o, stored %+v, %v", a.Mode, n, err)
		}
	}
}

// Attributes set on an open file are visible at once and written with its
// commit; setuid goes on an unprivileged write, on chown and on truncate
// by an unprivileged caller, and file capabilities go on any write.
func TestOpenFileAttrsAndKillPriv(t *testing.T) {
	ctx := context.Background()
	be := remote.NewMem()
	dir := t.TempDir()
	c := openCache(t, newRepo(t, be), dir)
	a, h := createOpen(t, c, c.Root(), "f")
	if _, err := h.WriteAt(ctx, []byte("hello"), 0); err != nil {
		t.Fatal(err)
	}
	mode, uid, gid := uint32(0o6755), uint32(1000), uint32(1001)
	mtime, atime := int64(1e18), int64(2e18)
	if _, err := c.SetAttr(ctx, a.Ino, SetAttrIn{Mode: &mode, UID: &uid, GID: &gid, Mtime: &mtime, Atime: &atime}); err != nil {
		t.Fatal(err)
	}
	got, err := c.GetAttr(ctx, a.Ino)
	if err != nil {
		t.Fatal(err)
	}
	if got.Mode != mode || got.UID != uid || got.GID != gid || got.Mtime != mtime || got.Atime != atime || got.Size != 5 {
		t.Fatalf("attributes of the open file: %+v", got)
	}
	// A privileged write keeps setuid; an unprivileged one drops it, and
	// setgid too since the file is group-executable.
	if err := c.KillPriv(ctx, a.Ino, false); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.GetAttr(ctx, a.Ino); got.Mode != mode {
		t.Fatalf("privileged write changed the mode to %o", got.Mode)
	}
	if err := c.KillPriv(ctx, a.Ino, true); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.GetAttr(ctx, a.Ino); got.Mode != 0o755 {
		t.Fatalf("after an unprivileged write: mode %o, want 755", got.Mode)
	}
	if err := c.SetXattr(ctx, a.Ino, namespace.CapabilityXattr, []byte("cap"), 0); err != nil {
		t.Fatal(err)
	}
	if err := c.KillPriv(ctx, a.Ino, false); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetXattr(ctx, a.Ino, namespace.CapabilityXattr); err != ErrNoAttr {
		t.Fatalf("capabilities survived a write: %v", err)
	}
	if err := h.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}

	// Not open: chown with KillPriv drops setuid right away.
	mode = 0o4755
	if _, err := c.SetAttr(ctx, a.Ino, SetAttrIn{Mode: &mode}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetAttr(ctx, a.Ino, SetAttrIn{UID: &uid, KillPriv: true}); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.GetAttr(ctx, a.Ino); got.Mode != 0o755 {
		t.Fatalf("after chown: mode %o, want 755", got.Mode)
	}
	dirMode := uint32(0o2775)
	d, err := c.Create(ctx, c.Root(), "d", NewNode{Type: tree.Dir, Mode: dirMode})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetAttr(ctx, d.Ino, SetAttrIn{UID: &uid, KillPriv: true}); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.GetAttr(ctx, d.Ino); got.Mode&unix.S_ISGID == 0 {
		t.Fatal("chown of a directory dropped its setgid bit")
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}

	// Everything reached the state directory.
	c = openCache(t, reopenRepo(t, be), dir)
	defer c.Close(ctx)
	got = lookupPath(t, c, "f")
	if got.Mode != 0o755 || got.UID != uid || got.GID != gid || got.Size != 5 {
		t.Fatalf("after reopening: %+v", got)
	}
	if string(readFile(t, c, got.Ino)) != "hello" {
		t.Fatal("content lost")
	}
}

// A directory created through a wtxn is complete: a name missing from the
// cache is known missing, until trim drops entries or the directory goes.
// Lookups in directories this process created agree with Badger through
// creates, links, renames in and out, unlinks and rmdirs, and after the
// cache dropped entries (trim): the known misses never hide an entry.
func TestCompleteDirLookupsMatchBadger(t *testing.T) {
	ctx := context.Background()
	c := openCache(t, newRepo(t, remote.NewMem()), t.TempDir())
	defer c.Close(ctx)
	c.meta = namespace.NewMetaCache(8) // small, so that trims happen
	var dirs []uint64
	for i := range 3 {
		a, err := c.Create(ctx, c.Root(), fmt.Sprintf("d%d", i), NewNode{Type: tree.Dir, Mode: 0o755})
		if err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, a.Ino)
	}
	names := []string{"a", "b", "c", "d", "e", "f"}
	rng := mrand.New(mrand.NewPCG(1, 2))
	check := func(step int) {
		t.Helper()
		for _, d := range dirs {
			for _, name := range names {
				got, err := c.Lookup(ctx, d, name)
				var want uint64
				werr := c.view(func(txn *badger.Txn) error {
					var err error
					want, _, err = namespace.LookupEntry(txn, d, name)
					return err
				})
				if errors.Is(werr, ErrNotFound) != errors.Is(err, ErrNotFound) || err == nil && got.Ino != want {
					t.Fatalf("step %d: lookup %d/%s: %+v %v, Badger has %d %v", step, d, name, got, err, want, werr)
				}
			}
		}
	}
	for step := range 600 {
		d, d2 := dirs[rng.IntN(len(dirs))], dirs[rng.IntN(len(dirs))]
		name, name2 := names[rng.IntN(len(names))], names[rng.IntN(len(names))]
		var err error
		switch rng.IntN(6) {
		case 0, 1:
			_, err = c.Create(ctx, d, name, NewNode{Type: tree.File, Mode: 0o644})
		case 2:
			_, err = c.Create(ctx, d, name, NewNode{Type: tree.Dir, Mode: 0o755})
		case 3:
			err = c.Rename(ctx, d, name, d2, name2, 0)
		case 4:
			if err = c.Unlink(ctx, d, name); errors.Is(err, ErrIsDir) {
				err = c.Rmdir(ctx, d, name)
			}
		case 5:
			var a Attr
			if a, err = c.Lookup(ctx, d, name); err == nil && a.Type == tree.File {
				_, err = c.Link(ctx, a.Ino, d2, name2)
			}
		}
		_ = err // EEXIST, ENOENT, ENOTEMPTY...: the model is Badger
		check(step)
	}
}
