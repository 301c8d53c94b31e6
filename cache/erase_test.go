package cache

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/erase"
	"github.com/keepfs/keepfs/repo/pack"
	"github.com/keepfs/keepfs/repo/tree"
)

// scanFor reports the files under dirs whose raw bytes contain any of pats.
func scanFor(t *testing.T, pats [][]byte, dirs ...string) []string {
	t.Helper()
	var hits []string
	for _, d := range dirs {
		_ = filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
			if err != nil || e.IsDir() {
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return nil
			}
			for _, pat := range pats {
				if bytes.Contains(b, pat) {
					hits = append(hits, p)
					break
				}
			}
			return nil
		})
	}
	return hits
}

// plaintextState turns the local encryption off for t (a test-only
// switch), so that a scan of the state directory finds plaintext.
func plaintextState(t *testing.T) {
	plaintextStateForTests = true
	t.Cleanup(func() { plaintextStateForTests = false })
}

// newMarker returns 48 random hex bytes to plant in data and scan for.
func newMarker() []byte {
	marker := make([]byte, 24)
	_, _ = rand.Read(marker)
	return []byte(hex.EncodeToString(marker))
}

// The proof of an erase: with the local state's encryption turned off, so
// that a raw scan can see what is there, neither the erased content (a
// random marker in incompressible data, and a small file kept inline in
// Badger) nor the erased names are anywhere in the state directory or the
// remote afterwards, while other files are intact. The same scan before
// the erase must find them, or it would prove nothing.
func TestEraseLeavesNothingLocally(t *testing.T) {
	plaintextState(t)
	ctx := context.Background()
	remoteDir := t.TempDir()
	be, err := remote.CreateFile(remoteDir)
	if err != nil {
		t.Fatal(err)
	}
	r := newRepo(t, be)
	state := t.TempDir()
	c := openCacheWith(t, r, Options{StateDir: state})
	defer c.Close(ctx)

	markerHex := newMarker()
	big := randBytes(11, 2<<20)
	copy(big[1<<20:], markerHex) // inside the data, past the first chunk's minimum
	small := append([]byte("note "), markerHex...)
	name := "alice-" + string(markerHex[:12]) + ".bin"
	note := "alice-" + string(markerHex[12:24]) + ".txt"
	other := randBytes(12, 600<<10)

	d, err := c.Create(ctx, c.Root(), "hr", NewNode{Type: tree.Dir, Mode: 0o755})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, c, d.Ino, name, big)
	writeFile(t, c, d.Ino, note, small)
	writeFile(t, c, c.Root(), "bob.bin", other)
	if _, err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	pats := [][]byte{markerHex, []byte(name), []byte(note)}
	if hits := scanFor(t, pats, state); len(hits) == 0 {
		t.Fatal("the scan finds nothing before the erase: it would prove nothing after")
	}

	res, err := c.Erase(ctx, erase.Options{Paths: []string{"/hr/" + name, "/hr/" + note}, RequestID: "T1"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Verification.Result != "passed" || len(res.ErasedBlobs) == 0 {
		t.Fatalf("erase: %+v", res)
	}
	if hits := scanFor(t, pats, state, remoteDir); len(hits) > 0 {
		t.Fatalf("erased data or names still in: %v", hits)
	}
	// Every remaining remote blob decrypts, and none is an erased one.
	r2 := reopenRepo(t, be)
	for _, id := range res.ErasedIDs() {
		if r2.Index().Has(pack.Data, id) {
			t.Fatalf("erased blob %s still indexed", id.Short())
		}
	}
	chk, err := r2.Check(ctx, repo.CheckOptions{ReadData: true})
	if err != nil || len(chk.Problems) != 0 {
		t.Fatalf("check: %v %v", chk.Problems, err)
	}
	if _, err := c.Lookup(ctx, d.Ino, name); err == nil {
		t.Fatal("erased file still in the live tree")
	}
	if got := readFile(t, c, lookupPath(t, c, "bob.bin").Ino); !bytes.Equal(got, other) {
		t.Fatal("other file damaged")
	}
	// The mount goes on working after its store was rebuilt.
	writeFile(t, c, c.Root(), "after", []byte("after the erase"))
	if _, err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
}

// An erase while the mount's files are being written: the writes all land,
// nothing erased comes back.
func TestEraseDuringWrites(t *testing.T) {
	ctx := context.Background()
	be := remote.NewMem()
	r := newRepo(t, be)
	c := openCacheWith(t, r, Options{StateDir: t.TempDir()})
	defer c.Close(ctx)
	victim := randBytes(21, 1<<20)
	writeFile(t, c, c.Root(), "victim", victim)
	if _, err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	written := map[string][]byte{}
	go func() {
		defer close(done)
		for i := 0; i < 40; i++ {
			n := "w" + string(rune('a'+i%26)) + string(rune('a'+i/26))
			b := randBytes(uint64(100+i), 20<<10)
			writeFile(t, c, c.Root(), n, b)
			written[n] = b
			time.Sleep(2 * time.Millisecond)
		}
	}()
	if _, err := c.Erase(ctx, erase.Options{Paths: []string{"/victim"}}); err != nil {
		t.Fatal(err)
	}
	<-done
	if _, err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	for n, b := range written {
		if got := readFile(t, c, lookupPath(t, c, n).Ino); !bytes.Equal(got, b) {
			t.Fatalf("%s differs after the erase", n)
		}
	}
	if _, err := c.Lookup(ctx, c.Root(), "victim"); err == nil {
		t.Fatal("victim back in the live tree")
	}
	r2 := reopenRepo(t, be)
	if r2.Index().Has(pack.Data, r2.Key().BlobID(victim)) {
		t.Fatal("victim's blob survived")
	}
	chk, err := r2.Check(ctx, repo.CheckOptions{ReadData: true})
	if err != nil || chk.Errors() != 0 {
		t.Fatalf("check: %v %v", chk.Problems, err)
	}
}

// Another state directory of the repository (a laptop that was offline)
// drops what an erase elsewhere removed before it serves anything: the
// repository's generation moved on, and it names the erased blobs.
func TestOtherStateDirDropsErased(t *testing.T) {
	ctx := context.Background()
	be := remote.NewMem()
	r := newRepo(t, be)
	stateB := t.TempDir()
	b := openCacheWith(t, r, Options{StateDir: stateB})
	// An earlier version no snapshot held: its chunk has no blob for the
	// erase to name, and stayed in B until a sweep came round to it.
	older := randBytes(30, 700<<10)
	writeFile(t, b, b.Root(), "victim", older)
	victim := randBytes(31, 700<<10)
	writeFile(t, b, b.Root(), "victim", victim)
	writeFile(t, b, b.Root(), "keep", []byte("kept"))
	if _, err := b.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}

	a := openCacheWith(t, reopenRepo(t, be), Options{StateDir: t.TempDir()})
	if _, err := a.Erase(ctx, erase.Options{Paths: []string{"/victim"}}); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}

	b = openCacheWith(t, reopenRepo(t, be), Options{StateDir: stateB})
	defer b.Close(ctx)
	if _, err := b.Lookup(ctx, b.Root(), "victim"); err == nil {
		t.Fatal("the erased file is back from the old state directory")
	}
	if got := readFile(t, b, lookupPath(t, b, "keep").Ino); string(got) != "kept" {
		t.Fatalf("other file: %q", got)
	}
	id := b.r.Key().BlobID(victim)
	if _, err := b.chunks.Load(id); err == nil {
		t.Fatal("the erased chunk is still in the old state directory")
	}
	if _, err := b.chunks.Load(b.r.Key().BlobID(older)); err == nil {
		t.Fatal("the erased file's unsnapshotted version is still in the old state directory")
	}
	// And the next snapshot does not upload it again.
	if _, err := b.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if reopenRepo(t, be).Index().Has(pack.Data, id) {
		t.Fatal("the old state directory uploaded the erased data again")
	}
}

// A remote that cannot be reached when a mount starts is no licence to go
// without a lock: Open fails, saying why.
func TestOpenRefusesWithoutLock(t *testing.T) {
	ctx := context.Background()
	mem := remote.NewMem()
	newRepo(t, mem)
	f := remote.NewFaulty(mem)
	r := reopenRepo(t, f)
	state := t.TempDir()
	// A state directory that needs nothing from the remote to start.
	c := openCacheWith(t, r, Options{StateDir: state})
	writeFile(t, c, c.Root(), "f", []byte("local"))
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	f.Break()
	c, err := Open(ctx, r, Options{StateDir: state, Logger: quietLogger()})
	if err == nil {
		c.Close(ctx)
		t.Fatal("a mount started without the repository lock")
	}
	if !strings.Contains(err.Error(), "repository lock") {
		t.Fatalf("Open failed for another reason: %v", err)
	}
}

// An erase run while a state directory was not mounted rewrites the
// snapshot it knew as its last and deletes that one: the next mount takes
// the rewrite as its last snapshot (Status, the next snapshot's parent),
// not none.
func TestLastSnapshotFollowsEraseRewrite(t *testing.T) {
	ctx := context.Background()
	be := remote.NewMem()
	state := t.TempDir()
	c := openCacheWith(t, newRepo(t, be), Options{StateDir: state})
	writeFile(t, c, c.Root(), "victim", []byte("erase me"))
	writeFile(t, c, c.Root(), "keep", []byte("kept"))
	old, err := c.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}

	if _, err := erase.Erase(ctx, reopenRepo(t, be), erase.Options{Paths: []string{"/victim"}}); err != nil {
		t.Fatal(err)
	}
	snaps, err := reopenRepo(t, be).Snapshots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(snaps) != 1 || snaps[0].Rewrites == nil || *snaps[0].Rewrites != old.ID {
		t.Fatalf("after the erase: %d snapshots, want one rewriting %s", len(snaps), old.ID.Short())
	}
	rewrite := snaps[0]

	c = openCacheWith(t, reopenRepo(t, be), Options{StateDir: state})
	defer c.Close(ctx)
	if got := c.Status().LastSnapshotID; got != rewrite.ID.String() {
		t.Fatalf("last snapshot after the erase: %q, want the rewrite %s", got, rewrite.ID.Short())
	}
	writeFile(t, c, c.Root(), "new", []byte("after"))
	sn, err := c.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if sn.Parent == nil || *sn.Parent != rewrite.ID {
		t.Fatalf("next snapshot's parent: %v, want the rewrite %s", sn.Parent, rewrite.ID.Short())
	}
}

// An erase run while unmounted (or by another client) of a file whose
// content another file shares removes no blob; the file must still leave
// the live tree at the next mount instead of coming back in its next
// snapshot. Only the erased file goes: its copy under another name, and a
// file at the erased path with other content (another client's), stay.
func TestEraseOfSharedContentReachesTheLiveTree(t *testing.T) {
	ctx := context.Background()
	be := remote.NewMem()
	stateA, stateB := t.TempDir(), t.TempDir()
	same := []byte("the same content in two files")
	c := openCacheWith(t, newRepo(t, be), Options{StateDir: stateA})
	writeFile(t, c, c.Root(), "victim", same)
	writeFile(t, c, c.Root(), "copy", same)
	if _, err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// Client B's live tree has its own /victim, with other content, not
	// in any snapshot yet (B stops as a kill would).
	c = openCacheWith(t, reopenRepo(t, be), Options{StateDir: stateB})
	if err := c.Unlink(ctx, c.Root(), "victim"); err != nil {
		t.Fatal(err)
	}
	writeFile(t, c, c.Root(), "victim", []byte("B's own file of that name"))
	crash(c)

	res, err := erase.Erase(ctx, reopenRepo(t, be), erase.Options{Paths: []string{"/victim"},
		Lock: repo.LockOptions{ForceUnlock: true}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.KeptShared) == 0 {
		t.Fatal("set-up: the erase kept no chunk for the copy")
	}

	c = openCacheWith(t, reopenRepo(t, be), Options{StateDir: stateA})
	if _, err := c.Lookup(ctx, c.Root(), "victim"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the erased file is still in the live tree: %v", err)
	}
	if got := readFile(t, c, lookupPath(t, c, "copy").Ino); string(got) != string(same) {
		t.Fatalf("the copy: %q", got)
	}
	sn, err := c.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.r.Lookup(ctx, sn.Tree, "/victim"); !errors.Is(err, repo.ErrPathNotFound) {
		t.Fatalf("the next snapshot holds the erased file again: %v", err)
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}

	c = openCacheWith(t, reopenRepo(t, be), Options{StateDir: stateB})
	defer c.Close(ctx)
	if got := readFile(t, c, lookupPath(t, c, "victim").Ino); string(got) != "B's own file of that name" {
		t.Fatalf("B's file at the erased path: %q", got)
	}
}

// TestEraseWipesEvictedSegmentRecords: an erased file whose small chunks
// were evicted before the erase. Eviction only uncounted their segment
// records, so the bytes stayed in the segment file, where the erase (which
// wipes the records c keys name) could not reach them.
func TestEraseWipesEvictedSegmentRecords(t *testing.T) {
	plaintextState(t)
	ctx := context.Background()
	be := remote.NewMem()
	state := t.TempDir()
	c := openCacheWith(t, newRepo(t, be), Options{StateDir: state, CacheSize: 1})
	defer c.Close(ctx)
	markerHex := newMarker()
	small := randBytes(21, 40<<10)
	copy(small[20<<10:], markerHex)
	writeFile(t, c, c.Root(), "alice.txt", small)
	writeFile(t, c, c.Root(), "bob.txt", randBytes(22, 40<<10)) // keeps the segment alive
	pats := [][]byte{markerHex}
	if hits := scanFor(t, pats, state); len(hits) == 0 {
		t.Fatal("the scan finds nothing before the erase: it would prove nothing after")
	}
	if _, err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	writeFile(t, c, c.Root(), "carol.txt", randBytes(23, 40<<10)) // a commit evicts
	if c.chunks.CleanBytes() != 0 {
		t.Fatalf("%d clean bytes kept with a 1-byte cache", c.chunks.CleanBytes())
	}
	if _, err := c.Erase(ctx, erase.Options{Paths: []string{"/alice.txt"}, RequestID: "T"}); err != nil {
		t.Fatal(err)
	}
	if hits := scanFor(t, pats, state); len(hits) > 0 {
		t.Fatalf("erased bytes still in %v", hits)
	}
}

// TestEraseDropsUnsnapshottedVersions: a version of an erased file that no
// snapshot ever held (rewritten before the next one) has no blob for the
// erase to name, and its chunk stayed in the state directory until a
// sweep came round to it.
func TestEraseDropsUnsnapshottedVersions(t *testing.T) {
	plaintextState(t)
	ctx := context.Background()
	state := t.TempDir()
	c := openCacheWith(t, newRepo(t, remote.NewMem()), Options{StateDir: state})
	defer c.Close(ctx)
	var pats [][]byte
	for i := range 3 {
		markerHex := newMarker()
		pats = append(pats, markerHex)
		for _, size := range []int{40 << 10, 1 << 20} { // in a segment, in a file
			data := randBytes(uint64(30+i), size)
			copy(data[size/2:], markerHex)
			writeFile(t, c, c.Root(), fmt.Sprintf("alice-%d.bin", size), data)
		}
	}
	if _, err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if hits := scanFor(t, pats[:2], state); len(hits) == 0 {
		t.Fatal("the scan finds no unsnapshotted version before the erase: it would prove nothing after")
	}
	if _, err := c.Erase(ctx, erase.Options{Paths: []string{"/alice-40960.bin", "/alice-1048576.bin"}, RequestID: "T"}); err != nil {
		t.Fatal(err)
	}
	if hits := scanFor(t, pats, state); len(hits) > 0 {
		t.Fatalf("erased bytes still in %v", hits)
	}
}
