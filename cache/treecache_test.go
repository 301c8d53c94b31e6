package cache

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/keepfs/keepfs/cache/meta"
	"github.com/keepfs/keepfs/cache/snapshot"
	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/pack"
	"github.com/keepfs/keepfs/repo/tree"
)

// scaleTree fills the root with dirs directories d00.. of files files
// each, plus a subdirectory sub of 10 files in each.
func scaleTree(t *testing.T, c *Cache, dirs, files int) {
	t.Helper()
	ctx := context.Background()
	for i := 0; i < dirs; i++ {
		d := mkdir(t, c, c.Root(), fmt.Sprintf("d%02d", i))
		for j := 0; j < files; j++ {
			if _, err := c.Create(ctx, d, fmt.Sprintf("f%03d", j), NewNode{Type: tree.File, Mode: 0o644}); err != nil {
				t.Fatal(err)
			}
		}
		s := mkdir(t, c, d, "sub")
		for j := 0; j < 10; j++ {
			writeFile(t, c, s, fmt.Sprintf("s%d", j), []byte(fmt.Sprintf("file %d/%d", i, j)))
		}
	}
}

func mkdir(t *testing.T, c *Cache, parent uint64, name string) uint64 {
	t.Helper()
	a, err := c.Create(context.Background(), parent, name, NewNode{Type: tree.Dir, Mode: 0o755})
	if err != nil {
		t.Fatal(err)
	}
	return a.Ino
}

func mustSync(t *testing.T, c *Cache) *repo.Snapshot {
	t.Helper()
	sn, err := c.Sync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return sn
}

// walkCost runs fn and returns the trees the snapshot walks it ran built
// and the inodes they read.
func walkCost(c *Cache, fn func()) (trees, inodes int64) {
	t0, i0 := c.Counters().TreesBuilt, c.Counters().WalkInodes
	fn()
	return c.Counters().TreesBuilt - t0, c.Counters().WalkInodes - i0
}

// entries is how many entries the directories at paths hold.
func entries(t *testing.T, c *Cache, paths ...string) int64 {
	t.Helper()
	var n int64
	for _, p := range paths {
		ino := c.Root()
		if p != "/" {
			ino = lookupPath(t, c, p).Ino
		}
		ents, err := c.ReadDir(context.Background(), ino)
		if err != nil {
			t.Fatal(err)
		}
		n += int64(len(ents))
	}
	return n
}

// inSnapshot reports whether path p is in snapshot sn.
func inSnapshot(t *testing.T, c *Cache, sn *repo.Snapshot, p string) bool {
	t.Helper()
	_, err := c.Repository().Lookup(context.Background(), sn.Tree, p)
	if errors.Is(err, repo.ErrPathNotFound) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	return true
}

// editState changes a closed state directory's Badger store directly.
func editState(t *testing.T, r *repo.Repository, dir string, fn func(txn *badger.Txn) error) {
	t.Helper()
	c := &Cache{r: r, log: quietLogger(), opts: Options{StateDir: dir}}
	if err := c.openDB(); err != nil {
		t.Fatal(err)
	}
	db := c.dbp.Load().db
	defer db.Close()
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
}

func closeCache(t *testing.T, c *Cache) {
	t.Helper()
	if err := c.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func changeFile(t *testing.T, c *Cache, p string, data []byte) {
	t.Helper()
	a := lookupPath(t, c, p)
	ctx := context.Background()
	h, err := c.OpenFile(ctx, a.Ino, uint32(os.O_WRONLY|os.O_TRUNC))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.WriteAt(ctx, data, 0); err != nil {
		t.Fatal(err)
	}
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestOneFileChangeWalksOnePath: after one file changes, the snapshot walk
// reads only the entries of the directories on its path, builds only
// their trees, and the repository gains only those trees and the data.
func TestOneFileChangeWalksOnePath(t *testing.T) {
	ctx := context.Background()
	c := openCache(t, newRepo(t, remote.NewMem()), t.TempDir())
	defer c.Close(ctx)
	scaleTree(t, c, 20, 50)
	first := mustSync(t, c)
	changeFile(t, c, "/d07/sub/s3", []byte("changed"))
	want := entries(t, c, "/", "/d07", "/d07/sub")
	var sn *repo.Snapshot
	trees, inodes := walkCost(c, func() { sn = mustSync(t, c) })
	if trees != 3 || inodes != want {
		t.Fatalf("one change under /d07/sub: %d trees built, %d inodes read; want 3 and %d", trees, inodes, want)
	}
	if sn.Stats.BlobsNew != 4 {
		t.Fatalf("%d blobs uploaded, want 4 (the trees on the path and the file's chunk)", sn.Stats.BlobsNew)
	}
	if got := snapshotFile(t, c.Repository(), sn, "/d07/sub/s3"); string(got) != "changed" {
		t.Fatalf("snapshot holds %q", got)
	}
	n1, _ := c.Repository().Lookup(ctx, first.Tree, "/d08")
	n2, _ := c.Repository().Lookup(ctx, sn.Tree, "/d08")
	if n1.Subtree != n2.Subtree || sn.Stats.Files != first.Stats.Files || sn.Stats.Dirs != first.Stats.Dirs {
		t.Fatal("an unchanged subtree or the statistics changed")
	}
}

// TestTreeCacheSurvivesRestart: after a clean Close the next Open knows
// every tree, so a change walks only its path; after an unclean end the
// cache is dropped and the first walk reads everything.
func TestTreeCacheSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	be := remote.NewMem()
	dir := t.TempDir()
	c := openCache(t, newRepo(t, be), dir)
	scaleTree(t, c, 20, 50)
	first := mustSync(t, c)
	total := c.Counters().WalkInodes
	closeCache(t, c)

	c = openCache(t, reopenRepo(t, be), dir)
	if c.trees.Len() != 41 {
		t.Fatalf("%d trees cached after a clean restart, want 41", c.trees.Len())
	}
	var sn *repo.Snapshot
	if trees, inodes := walkCost(c, func() { sn = mustSync(t, c) }); trees != 0 || inodes != 0 || sn.ID != first.ID {
		t.Fatalf("first walk after a clean restart: %d trees, %d inodes, snapshot %s (want 0, 0, %s)", trees, inodes, sn.ID.Short(), first.ID.Short())
	}
	changeFile(t, c, "/d11/sub/s0", []byte("after restart"))
	want := entries(t, c, "/", "/d11", "/d11/sub")
	trees, inodes := walkCost(c, func() { sn = mustSync(t, c) })
	if trees != 3 || inodes != want {
		t.Fatalf("one change after a restart: %d trees built, %d inodes read; want 3 and %d", trees, inodes, want)
	}
	if got := snapshotFile(t, c.Repository(), sn, "/d11/sub/s0"); string(got) != "after restart" {
		t.Fatalf("snapshot holds %q", got)
	}
	closeCache(t, c)

	// A session closed by a version that did not keep the copy (the
	// mark is missing): the cache goes.
	editState(t, reopenRepo(t, be), dir, func(txn *badger.Txn) error { return txn.Delete(snapshot.TreesValidKey) })
	c = openCache(t, reopenRepo(t, be), dir)
	if c.trees.Len() != 0 {
		t.Fatalf("%d trees cached after a session that left no mark", c.trees.Len())
	}
	closeCache(t, c)

	// The session left open (kill -9 on this boot): the cache goes.
	editState(t, reopenRepo(t, be), dir, func(txn *badger.Txn) error {
		return txn.Set(sessionKey, append([]byte{sessionOpen}, bootID()...))
	})
	c = openCache(t, reopenRepo(t, be), dir)
	defer c.Close(ctx)
	if c.trees.Len() != 0 {
		t.Fatalf("%d trees cached after an unclean end", c.trees.Len())
	}
	trees, inodes = walkCost(c, func() { sn = mustSync(t, c) })
	if trees != 41 || inodes != total {
		t.Fatalf("first walk after an unclean end: %d trees, %d inodes; want 41 and %d", trees, inodes, total)
	}
	if got := snapshotFile(t, c.Repository(), sn, "/d11/sub/s0"); string(got) != "after restart" {
		t.Fatalf("snapshot holds %q", got)
	}
}

// TestTreeCacheDroppedWhenTreesGone: a cached tree the repository no
// longer holds (pruned, erased) is dropped at Open with its ancestors, and
// the next walk builds them again; a damaged record drops the cache.
func TestTreeCacheDroppedWhenTreesGone(t *testing.T) {
	be := remote.NewMem()
	dir := t.TempDir()
	c := openCache(t, newRepo(t, be), dir)
	scaleTree(t, c, 5, 3)
	first := mustSync(t, c)
	d3 := lookupPath(t, c, "/d03").Ino
	d3sub := lookupPath(t, c, "/d03/sub").Ino
	d1 := lookupPath(t, c, "/d01").Ino
	closeCache(t, c)

	gone := meta.EncodeTreeEntry(&meta.TreeEntry{ID: crypto.Hash([]byte("a tree pruned since")), Files: 3, Dirs: 1})
	editState(t, reopenRepo(t, be), dir, func(txn *badger.Txn) error { return txn.Set(meta.TreeKey(d3sub), gone) })
	c = openCache(t, reopenRepo(t, be), dir)
	for _, ino := range []uint64{d3sub, d3, meta.RootIno} {
		if _, ok := c.trees.Get(ino); ok {
			t.Fatalf("inode %d still cached", ino)
		}
	}
	if _, ok := c.trees.Get(d1); !ok {
		t.Fatal("an unaffected tree was dropped")
	}
	var sn *repo.Snapshot
	if trees, _ := walkCost(c, func() { sn = mustSync(t, c) }); trees != 3 || sn.Tree != first.Tree {
		t.Fatalf("walk after the drop: %d trees, root %s; want 3 and %s", trees, sn.Tree.Short(), first.Tree.Short())
	}
	closeCache(t, c)
	// Badger's copy was corrected too.
	c = openCache(t, reopenRepo(t, be), dir)
	if c.trees.Len() != 11 {
		t.Fatalf("%d trees cached, want 11", c.trees.Len())
	}
	closeCache(t, c)

	editState(t, reopenRepo(t, be), dir, func(txn *badger.Txn) error { return txn.Set(meta.TreeKey(d1), []byte{1, 2, 3}) })
	c = openCache(t, reopenRepo(t, be), dir)
	defer c.Close(context.Background())
	if c.trees.Len() != 0 {
		t.Fatalf("%d trees cached beside a damaged record", c.trees.Len())
	}
	if sn := mustSync(t, c); sn.Tree != first.Tree {
		t.Fatal("the tree changed")
	}
}

// TestIgnoreChangeRebuildsSubtree: a .gdprignore that changes rebuilds its
// own directory's subtree and the path to it, nothing else, and what it
// excludes is never uploaded.
func TestIgnoreChangeRebuildsSubtree(t *testing.T) {
	ctx := context.Background()
	c := openCache(t, newRepo(t, remote.NewMem()), t.TempDir())
	defer c.Close(ctx)
	scaleTree(t, c, 10, 5)
	writeFile(t, c, lookupPath(t, c, "/d07/sub").Ino, "a.secret", []byte("secret a"))
	writeFile(t, c, lookupPath(t, c, "/d03").Ino, "b.secret", []byte("secret b"))
	writeFile(t, c, lookupPath(t, c, "/d07").Ino, ".gdprignore", []byte("*.secret\n"))
	sn := mustSync(t, c)
	if inSnapshot(t, c, sn, "/d07/sub/a.secret") || !inSnapshot(t, c, sn, "/d03/b.secret") {
		t.Fatal("rules not applied")
	}

	changeFile(t, c, "/d07/.gdprignore", []byte("# nothing\n"))
	if trees, _ := walkCost(c, func() { sn = mustSync(t, c) }); trees != 3 {
		t.Fatalf("an ignore file change built %d trees, want 3 (/, /d07, /d07/sub)", trees)
	}
	if !inSnapshot(t, c, sn, "/d07/sub/a.secret") {
		t.Fatal("a.secret still excluded after its rule went")
	}

	// A new ignore file in /d09, and a new file it excludes.
	sub := lookupPath(t, c, "/d09/sub").Ino
	writeFile(t, c, sub, "x.secret", []byte("uploaded before the rule"))
	mustSync(t, c)
	writeFile(t, c, lookupPath(t, c, "/d09").Ino, ".gdprignore", []byte("*.secret\n"))
	fresh := writeFile(t, c, sub, "new.secret", randBytes(31, 4096))
	if trees, _ := walkCost(c, func() { sn = mustSync(t, c) }); trees != 3 {
		t.Fatalf("a new ignore file built %d trees, want 3", trees)
	}
	if inSnapshot(t, c, sn, "/d09/sub/x.secret") || inSnapshot(t, c, sn, "/d09/sub/new.secret") {
		t.Fatal("files the new rule excludes are in the snapshot")
	}
	n, _ := c.getInode(fresh)
	for _, ch := range n.Chunks {
		if c.Repository().Index().Has(pack.Data, ch.ID) {
			t.Fatal("an excluded file was uploaded")
		}
	}
	// Removing the ignore file rebuilds its subtree too.
	if err := c.Unlink(ctx, lookupPath(t, c, "/d07").Ino, ".gdprignore"); err != nil {
		t.Fatal(err)
	}
	if trees, _ := walkCost(c, func() { sn = mustSync(t, c) }); trees != 3 {
		t.Fatalf("a removed ignore file built %d trees, want 3", trees)
	}
}

// TestIgnoreChangeAfterRestart: the rules a cached tree was built under
// survive a restart, so an ignore file changed after one rebuilds its own
// subtree only, and its rules apply.
func TestIgnoreChangeAfterRestart(t *testing.T) {
	ctx := context.Background()
	be := remote.NewMem()
	dir := t.TempDir()
	c := openCache(t, newRepo(t, be), dir)
	scaleTree(t, c, 10, 5)
	writeFile(t, c, lookupPath(t, c, "/d07/sub").Ino, "a.secret", []byte("secret a"))
	writeFile(t, c, lookupPath(t, c, "/d07").Ino, ".gdprignore", []byte("*.secret\n"))
	mustSync(t, c)
	closeCache(t, c)

	c = openCache(t, reopenRepo(t, be), dir)
	defer c.Close(ctx)
	changeFile(t, c, "/d07/.gdprignore", []byte("*.other\n"))
	want := entries(t, c, "/", "/d07", "/d07/sub") + 1 // and the ignore file's content
	var sn *repo.Snapshot
	if trees, inodes := walkCost(c, func() { sn = mustSync(t, c) }); trees != 3 || inodes != want {
		t.Fatalf("an ignore change after a restart: %d trees, %d inodes; want 3 and %d", trees, inodes, want)
	}
	if !inSnapshot(t, c, sn, "/d07/sub/a.secret") {
		t.Fatal("a.secret still excluded after its rule went")
	}
	changeFile(t, c, "/d07/.gdprignore", []byte("*.secret\n"))
	fresh := writeFile(t, c, lookupPath(t, c, "/d07/sub").Ino, "b.secret", randBytes(32, 4096))
	sn = mustSync(t, c)
	if inSnapshot(t, c, sn, "/d07/sub/a.secret") || inSnapshot(t, c, sn, "/d07/sub/b.secret") {
		t.Fatal("excluded files in the snapshot")
	}
	n, _ := c.getInode(fresh)
	if c.Repository().Index().Has(pack.Data, n.Chunks[0].ID) {
		t.Fatal("an excluded file was uploaded")
	}
}

// TestMovedDirFollowsNewRules: a directory moved under other ignore rules
// (or to a path the same rules match otherwise) follows them, also across
// a restart.
func TestMovedDirFollowsNewRules(t *testing.T) {
	ctx := context.Background()
	be := remote.NewMem()
	dir := t.TempDir()
	c := openCache(t, newRepo(t, be), dir)
	a := mkdir(t, c, c.Root(), "a")
	b := mkdir(t, c, c.Root(), "b")
	writeFile(t, c, a, ".gdprignore", []byte("*.secret\nsub/*.anch\n"))
	d := mkdir(t, c, b, "d")
	dd := mkdir(t, c, d, "deeper")
	xs := writeFile(t, c, dd, "x.secret", randBytes(41, 4096))
	writeFile(t, c, dd, "keep", []byte("kept"))
	sub := mkdir(t, c, a, "sub")
	writeFile(t, c, sub, "y.anch", []byte("anchored"))
	sn := mustSync(t, c)
	if !inSnapshot(t, c, sn, "/b/d/deeper/x.secret") || inSnapshot(t, c, sn, "/a/sub/y.anch") {
		t.Fatal("rules not applied")
	}
	n, _ := c.getInode(xs)
	chunk := n.Chunks[0].ID

	// Into /a: *.secret applies below it.
	if err := c.Rename(ctx, b, "d", a, "d", 0); err != nil {
		t.Fatal(err)
	}
	// Deeper in /a: sub/*.anch is anchored at /a and no longer matches.
	other := mkdir(t, c, a, "other")
	if err := c.Rename(ctx, a, "sub", other, "sub", 0); err != nil {
		t.Fatal(err)
	}
	sn = mustSync(t, c)
	if inSnapshot(t, c, sn, "/a/d/deeper/x.secret") || !inSnapshot(t, c, sn, "/a/d/deeper/keep") {
		t.Fatal("a directory moved under *.secret kept its old rules")
	}
	if !inSnapshot(t, c, sn, "/a/other/sub/y.anch") {
		t.Fatal("an anchored pattern still matches a directory moved deeper")
	}
	closeCache(t, c)

	// Out again after a restart: included again.
	c = openCache(t, reopenRepo(t, be), dir)
	defer c.Close(ctx)
	if err := c.Rename(ctx, a, "d", b, "d", 0); err != nil {
		t.Fatal(err)
	}
	if err := c.Rename(ctx, other, "sub", a, "sub", 0); err != nil {
		t.Fatal(err)
	}
	sn = mustSync(t, c)
	if !inSnapshot(t, c, sn, "/b/d/deeper/x.secret") || inSnapshot(t, c, sn, "/a/sub/y.anch") {
		t.Fatal("directories moved back after a restart kept the rules of where they were")
	}
	if !c.Repository().Index().Has(pack.Data, chunk) {
		t.Fatal("x.secret's chunk not uploaded")
	}
}

// TestUnlinkOfHardLinkUpdatesOtherTree: a tree records a hard-linked
// file's link count, so dropping one link (unlink, or a rename over it)
// changes the trees of the directories holding the others.
func TestUnlinkOfHardLinkUpdatesOtherTree(t *testing.T) {
	ctx := context.Background()
	c := openCache(t, newRepo(t, remote.NewMem()), t.TempDir())
	defer c.Close(ctx)
	a := mkdir(t, c, c.Root(), "a")
	b := mkdir(t, c, c.Root(), "b")
	mkdir(t, c, c.Root(), "c")
	f := writeFile(t, c, a, "f", []byte("linked"))
	if _, err := c.Link(ctx, f, b, "g"); err != nil {
		t.Fatal(err)
	}
	links := func(sn *repo.Snapshot, p string) uint64 {
		t.Helper()
		n, err := c.Repository().Lookup(ctx, sn.Tree, p)
		if err != nil {
			t.Fatal(err)
		}
		return n.Links
	}
	if l := links(mustSync(t, c), "/b/g"); l != 2 {
		t.Fatalf("/b/g has %d links, want 2", l)
	}
	if err := c.Unlink(ctx, a, "f"); err != nil {
		t.Fatal(err)
	}
	if l := links(mustSync(t, c), "/b/g"); l != 1 {
		t.Fatalf("after unlinking /a/f, /b/g has %d links, want 1", l)
	}
	if _, err := c.Link(ctx, f, a, "f2"); err != nil {
		t.Fatal(err)
	}
	writeFile(t, c, a, "other", []byte("other"))
	if l := links(mustSync(t, c), "/b/g"); l != 2 {
		t.Fatalf("/b/g has %d links, want 2", l)
	}
	if err := c.Rename(ctx, a, "other", a, "f2", 0); err != nil {
		t.Fatal(err)
	}
	if l := links(mustSync(t, c), "/b/g"); l != 1 {
		t.Fatalf("after a rename over /a/f2, /b/g has %d links, want 1", l)
	}
}
