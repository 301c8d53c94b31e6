package cache

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/pack"
	"github.com/keepfs/keepfs/repo/tree"
)

// faultyCache opens a cache on a fresh state directory over a repository
// whose remote the test can break.
func faultyCache(t *testing.T) (*remote.Mem, *remote.Faulty, string, *Cache) {
	t.Helper()
	mem := remote.NewMem()
	newRepo(t, mem)
	sdir := t.TempDir()
	f := remote.NewFaulty(mem)
	return mem, f, sdir, openCache(t, reopenRepo(t, f), sdir)
}

// crash stops c as a kill would: no commit, snapshot, upload or session
// record; only the process's open files are closed.
func crash(c *Cache) {
	c.stopSnaps()
	<-c.snapsDone
	c.cancel()
	c.wg.Wait()
	c.chunks.Wait()
	c.dbp.Load().db.Close()
	c.chunks.Close()
	c.ix.Close()
	c.lockFile.Close()
}

// loseChunkData removes every chunk kept outside Badger from the state
// directory, as a power loss may: the chunk files and the segments' contents.
func loseChunkData(t *testing.T, dir string) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "chunks", "*", "*"))
	for _, f := range files {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "segments", "*"))
	for _, s := range segs {
		if err := os.Truncate(s, 0); err != nil {
			t.Fatal(err)
		}
	}
	if len(files)+len(segs) == 0 {
		t.Fatal("no chunk kept outside Badger: the test would test nothing")
	}
}

func TestPowerLoss(t *testing.T) {
	ctx := context.Background()
	mem, f, sdir, c := faultyCache(t)
	v1 := randBytes(1, 3<<20)
	writeFile(t, c, c.Root(), "doc", v1)
	if _, err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	// Closed, never uploaded, and then the power goes.
	f.Break()
	v2 := randBytes(2, 3<<20)
	writeFile(t, c, c.Root(), "doc", v2)
	writeFile(t, c, c.Root(), "new", randBytes(3, 100<<10))
	crash(c)
	loseChunkData(t, sdir)

	defer func(old func() string) { bootID = old }(bootID)
	bootID = func() string { return "after-the-reboot" }
	var reports [][2]int64
	c = openCacheWith(t, reopenRepo(t, mem), Options{StateDir: sdir, Progress: func(p Progress) {
		if p.Unit == "bytes" {
			reports = append(reports, [2]int64{p.Done, p.Total})
		}
	}})
	defer c.Close(ctx)
	if c.chunksVerified.Load() == 0 || c.chunksLost.Load() == 0 {
		t.Fatalf("after a reboot: %d chunks checked, %d lost; want both > 0", c.chunksVerified.Load(), c.chunksLost.Load())
	}
	if !c.snap.Pending() {
		t.Fatal("no snapshot pending after the check: status would not list the lost files until something else changes")
	}
	// The check reports its progress from nothing to everything.
	if n := len(reports); n < 2 || reports[0][0] != 0 || reports[n-1][0] != reports[n-1][1] || reports[0][1] < 3<<20 {
		t.Fatalf("progress of the check: %v", reports)
	}
	// The lost content reads as an error, never as other bytes.
	a, err := c.Lookup(ctx, c.Root(), "doc")
	if err != nil {
		t.Fatal(err)
	}
	h, err := c.OpenFile(ctx, a.Ino, uint32(os.O_RDONLY))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.ReadAt(ctx, make([]byte, 4096), 0); err == nil {
		t.Fatal("read of lost content succeeded")
	}
	h.Release(ctx)
	// Backups go on: the lost file keeps its last backed-up version, the
	// one never backed up is left out.
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	sn, err := c.Sync(sctx)
	if err != nil {
		t.Fatalf("sync after the power loss: %v", err)
	}
	r := c.Repository()
	if got := snapshotFile(t, r, sn, "/doc"); !bytes.Equal(got, v1) {
		t.Fatal("the snapshot's /doc is not the last backed-up version")
	}
	if _, err := r.Lookup(ctx, sn.Tree, "/new"); !errors.Is(err, repo.ErrPathNotFound) {
		t.Fatalf("/new, never backed up and lost: %v; want it left out", err)
	}
	// Writing the same bytes again stores them again, not deduplicated
	// against chunk keys that outlived their data; that heals /doc too.
	again := fsyncFile(t, c, c.Root(), "again", v2)
	wantContent(t, c, again, v2, "rewritten content differs")
	wantContent(t, c, a.Ino, v2, "/doc not readable once its content was written again")
	writeFile(t, c, c.Root(), "touch", []byte("changed")) // so the next snapshot is stored
	if sn, err = c.Sync(sctx); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/doc", "/again"} {
		if got := snapshotFile(t, r, sn, p); !bytes.Equal(got, v2) {
			t.Fatalf("the last snapshot's %s differs", p)
		}
	}
}

func snapshotFile(t *testing.T, r *repo.Repository, sn *repo.Snapshot, p string) []byte {
	t.Helper()
	node, err := r.Lookup(context.Background(), sn.Tree, p)
	if err != nil {
		t.Fatal(err)
	}
	return restoreNode(t, r, node.Content)
}

// TestNoCheckWithoutReboot: after kill -9 the page cache still holds
// everything, so Open trusts the local chunks; after Close, too.
func TestNoCheckWithoutReboot(t *testing.T) {
	ctx := context.Background()
	mem := remote.NewMem()
	newRepo(t, mem)
	sdir := t.TempDir()
	c := openCache(t, reopenRepo(t, mem), sdir)
	writeFile(t, c, c.Root(), "f", randBytes(4, 1<<20))
	crash(c)
	c = openCache(t, reopenRepo(t, mem), sdir)
	if n := c.chunksVerified.Load(); n != 0 {
		t.Fatalf("%d chunks checked after a crash without reboot", n)
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	defer func(old func() string) { bootID = old }(bootID)
	bootID = func() string { return "after-the-reboot" }
	c = openCache(t, reopenRepo(t, mem), sdir)
	defer c.Close(ctx)
	if n := c.chunksVerified.Load(); n != 0 {
		t.Fatalf("%d chunks checked after a clean close and a reboot", n)
	}
}

// restoreNode reads a file's content from the repository alone.
func restoreNode(t *testing.T, r *repo.Repository, content []crypto.ID) []byte {
	t.Helper()
	var out []byte
	for _, id := range content {
		b, err := r.LoadBlob(context.Background(), pack.Data, id)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b...)
	}
	return out
}

// TestChunkMissingBeforeUpload: a queued chunk whose data vanished from the
// state directory (no power loss needed: a disk error, a careless admin)
// is never named by a snapshot, and does not stop the ones after it.
// Status lists the file until it is rewritten, whatever else changes.
func TestChunkMissingBeforeUpload(t *testing.T) {
	ctx := context.Background()
	_, f, sdir, c := faultyCache(t)
	defer func() {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		c.Close(cctx)
	}()
	d, err := c.Create(ctx, c.Root(), "dir", NewNode{Type: tree.Dir, Mode: 0o755})
	if err != nil {
		t.Fatal(err)
	}
	f.Break()
	writeFile(t, c, d.Ino, "gone", randBytes(5, 3<<20))
	writeFile(t, c, c.Root(), "kept", []byte("small enough for Badger"))
	loseChunkData(t, sdir)
	f.Heal()
	// One sync: its upload finds the loss, and it walks again.
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	sn, err := c.Sync(sctx)
	cancel()
	if err != nil {
		t.Fatalf("sync: %v", err)
	}
	r := c.Repository()
	if _, err := r.Lookup(ctx, sn.Tree, "/dir/gone"); !errors.Is(err, repo.ErrPathNotFound) {
		t.Fatalf("/dir/gone, lost before any backup: %v; want it left out", err)
	}
	if got := snapshotFile(t, r, sn, "/kept"); string(got) != "small enough for Badger" {
		t.Fatalf("/kept: %q", got)
	}
	lost := func(want ...string) {
		t.Helper()
		if got := c.Status().LostFiles; !slices.Equal(got, want) {
			t.Fatalf("status lists lost files %q, want %q", got, want)
		}
	}
	lost("/dir/gone")
	// A snapshot of another change walks /dir again, not its tree from
	// the last snapshot.
	writeFile(t, c, c.Root(), "kept", []byte("changed"))
	if _, err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	lost("/dir/gone")
	writeFile(t, c, d.Ino, "gone", []byte("rewritten"))
	if sn, err = c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	lost()
	if got := snapshotFile(t, r, sn, "/dir/gone"); string(got) != "rewritten" {
		t.Fatalf("/dir/gone after the rewrite: %q", got)
	}
}
