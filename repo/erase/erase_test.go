package erase_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/erase"
	"github.com/keepfs/keepfs/repo/pack"
	"github.com/keepfs/keepfs/repo/repotest"
	"github.com/keepfs/keepfs/repo/tree"
)

var pw = []byte("erase test words")

func randBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// save stores a snapshot of files ("dir/name" → content) at when.
func save(t *testing.T, r *repo.Repository, when time.Time, files map[string][]byte, parent *repo.Snapshot) *repo.Snapshot {
	t.Helper()
	ctx := context.Background()
	dirs := map[string]*tree.Tree{"/": {}}
	var mk func(d string) *tree.Tree
	mk = func(d string) *tree.Tree {
		if tr, ok := dirs[d]; ok {
			return tr
		}
		tr := &tree.Tree{}
		dirs[d] = tr
		mk(path.Dir(d))
		return tr
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		data := files[n]
		id, _, err := r.SaveBlob(ctx, pack.Data, data)
		if err != nil {
			t.Fatal(err)
		}
		p := "/" + n
		mk(path.Dir(p)).Nodes = append(mk(path.Dir(p)).Nodes, &tree.Node{Name: path.Base(p), Type: tree.File, Mode: 0o644,
			Size: uint64(len(data)), Content: []crypto.ID{id}})
	}
	// Save children before their parents.
	keys := make([]string, 0, len(dirs))
	for d := range dirs {
		keys = append(keys, d)
	}
	ids := map[string]crypto.ID{}
	for len(ids) < len(dirs) {
		for _, d := range keys {
			if _, done := ids[d]; done {
				continue
			}
			ready := true
			for c := range dirs {
				if c != d && c != "/" && path.Dir(c) == d {
					if _, ok := ids[c]; !ok {
						ready = false
					}
				}
			}
			if !ready {
				continue
			}
			tr := dirs[d]
			for c := range dirs {
				if c != d && c != "/" && path.Dir(c) == d {
					tr.Nodes = append(tr.Nodes, &tree.Node{Name: path.Base(c), Type: tree.Dir, Mode: 0o755, Subtree: ids[c]})
				}
			}
			tr.Sort()
			id, err := r.SaveTree(ctx, tr)
			if err != nil {
				t.Fatal(err)
			}
			ids[d] = id
		}
	}
	sn := &repo.Snapshot{Time: when, Tree: ids["/"], Hostname: "h"}
	if parent != nil {
		p := parent.ID
		sn.Parent = &p
	}
	if err := r.SaveSnapshot(ctx, sn); err != nil {
		t.Fatal(err)
	}
	return sn
}

func TestEraseEveryVersionRenameAndCopy(t *testing.T) {
	ctx := context.Background()
	mem := remote.NewMem()
	r, err := repo.Create(ctx, mem, pw, repo.Options{KDF: &crypto.TestKDF})
	if err != nil {
		t.Fatal(err)
	}
	victim, other, shared := randBytes(300<<10), randBytes(300<<10), randBytes(1000)
	t0 := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	s1 := save(t, r, t0, map[string][]byte{"hr/alice/scan.bin": victim, "hr/bob/scan.bin": other, "hr/alice/note": shared}, nil)
	s2 := save(t, r, t0.Add(time.Hour), map[string][]byte{"hr/alice/id.bin": victim, "hr/bob/scan.bin": other, "hr/alice/note": shared}, s1)
	save(t, r, t0.Add(2*time.Hour), map[string][]byte{"hr/alice/id.bin": victim, "shared/copy.bin": victim, "hr/bob/scan.bin": other, "hr/bob/note": shared}, s2)

	dry, err := erase.Erase(ctx, r, erase.Options{Paths: []string{"/hr/alice/id.bin"}, WithCopies: true, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(dry.Versions) != 3 || len(dry.Copies) != 1 || !strings.Contains(dry.Versions[0].Path, "scan.bin") {
		t.Fatalf("dry run: versions %+v copies %+v", dry.Versions, dry.Copies)
	}
	snapsBefore, _ := r.Snapshots(ctx)

	res, err := erase.Erase(ctx, r, erase.Options{Paths: []string{"/hr/alice/id.bin"}, WithCopies: true, RequestID: "R1"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Verification.Result != "passed" || len(res.Rewritten) != 3 || res.Generation == 0 || len(res.ErasedBlobs) != 1 {
		t.Fatalf("result: %+v", res)
	}
	r2, err := repo.Open(ctx, mem, pw, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	snaps, err := r2.Snapshots(ctx)
	if err != nil || len(snaps) != len(snapsBefore) {
		t.Fatalf("snapshots after: %d (%v), before %d", len(snaps), err, len(snapsBefore))
	}
	for i, sn := range snaps {
		if !sn.Time.Equal(snapsBefore[i].Time) || sn.Hostname != "h" {
			t.Fatalf("snapshot %d lost its time or host", i)
		}
		for _, p := range []string{"/hr/alice/scan.bin", "/hr/alice/id.bin", "/shared/copy.bin"} {
			if _, err := r2.Lookup(ctx, sn.Tree, p); !errors.Is(err, repo.ErrPathNotFound) {
				t.Fatalf("%s still in %s: %v", p, sn.Name(), err)
			}
		}
		n, err := r2.Lookup(ctx, sn.Tree, "/hr/bob/scan.bin")
		if err != nil {
			t.Fatal(err)
		}
		b, err := r2.LoadBlob(ctx, pack.Data, n.Content[0])
		if err != nil || !bytes.Equal(b, other) {
			t.Fatalf("bob's file damaged: %v", err)
		}
	}
	// No object in the remote decrypts to the victim's blob.
	id := r2.Key().BlobID(victim)
	if r2.Index().Has(pack.Data, id) {
		t.Fatal("erased blob still indexed")
	}
	var found bool
	_ = mem.List(ctx, remote.Pack, func(fi remote.Info) error {
		b, _ := remote.LoadAll(ctx, mem, fi.Handle)
		if ps, err := pack.ParsePack(r2.Key(), b); err == nil {
			for _, bl := range ps {
				if bl.ID == id {
					found = true
				}
			}
		}
		return nil
	})
	if found {
		t.Fatal("a pack still holds the erased blob")
	}
	chk, err := r2.Check(ctx, repo.CheckOptions{ReadData: true})
	if err != nil || len(chk.Problems) != 0 {
		t.Fatalf("check after erase: %v %v", chk.Problems, err)
	}
	// Erasing again is a no-op error: nothing holds it any more.
	if _, err := erase.Erase(ctx, r2, erase.Options{Paths: []string{"/hr/alice/id.bin"}}); !errors.Is(err, erase.ErrNothing) {
		t.Fatalf("second erase: %v", err)
	}
}

// crashing fails every Save and Remove after the first n, as a process
// killed at that point would stop writing.
type crashing struct {
	remote.Storage
	mu sync.Mutex // uploads run concurrently (a data and a tree pack)
	n  int
}

var errCrash = errors.New("crashed")

func (c *crashing) take() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n <= 0 {
		return false
	}
	c.n--
	return true
}

func (c *crashing) Save(ctx context.Context, h remote.Handle, b []byte) error {
	if !c.take() {
		return errCrash
	}
	return c.Storage.Save(ctx, h, b)
}

func (c *crashing) Remove(ctx context.Context, h remote.Handle) error {
	if !c.take() {
		return errCrash
	}
	return c.Storage.Remove(ctx, h)
}

// Killed after any number of writes, the repository is sound (check
// passes: no snapshot names a missing blob), and erasing again ends in the
// same state as an erase that was never interrupted.
func TestEraseCrashAnywhere(t *testing.T) {
	ctx := context.Background()
	for n := 0; n < 40; n++ {
		mem := remote.NewMem()
		r, err := repo.Create(ctx, mem, pw, repo.Options{KDF: &crypto.TestKDF})
		if err != nil {
			t.Fatal(err)
		}
		victim, other := randBytes(200<<10), randBytes(200<<10)
		t0 := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
		s1 := save(t, r, t0, map[string][]byte{"a/victim": victim, "b/other": other}, nil)
		s2 := save(t, r, t0.Add(time.Hour), map[string][]byte{"a/renamed": victim, "b/other": other}, s1)
		save(t, r, t0.Add(2*time.Hour), map[string][]byte{"a/renamed": victim, "b/other": other, "c": randBytes(10)}, s2)

		cr, err := repo.Open(ctx, &crashing{Storage: mem, n: n}, pw, repo.Options{})
		if err != nil {
			t.Fatal(err)
		}
		_, crashErr := erase.Erase(ctx, cr, erase.Options{Paths: []string{"/a/renamed"}})
		r2, err := repo.Open(ctx, mem, pw, repo.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if chk, err := r2.Check(ctx, repo.CheckOptions{ReadData: true}); err != nil || chk.Errors() != 0 {
			t.Fatalf("crash after %d writes: check: %v %v", n, chk.Problems, err)
		}
		if crashErr != nil {
			if _, err := erase.Erase(ctx, r2, erase.Options{Paths: []string{"/a/renamed"}}); err != nil && !errors.Is(err, erase.ErrNothing) {
				t.Fatalf("crash after %d writes: erase again: %v", n, err)
			}
		}
		r3, err := repo.Open(ctx, mem, pw, repo.Options{})
		if err != nil {
			t.Fatal(err)
		}
		snaps, err := r3.Snapshots(ctx)
		if err != nil || len(snaps) != 3 {
			t.Fatalf("crash after %d writes: %d snapshots (%v), want 3", n, len(snaps), err)
		}
		for _, sn := range snaps {
			for _, p := range []string{"/a/victim", "/a/renamed"} {
				if _, err := r3.Lookup(ctx, sn.Tree, p); !errors.Is(err, repo.ErrPathNotFound) {
					t.Fatalf("crash after %d writes: %s still in %s", n, p, sn.Name())
				}
			}
			if _, err := r3.Lookup(ctx, sn.Tree, "/b/other"); err != nil {
				t.Fatalf("crash after %d writes: other file gone from %s", n, sn.Name())
			}
		}
		if r3.Index().Has(pack.Data, r3.Key().BlobID(victim)) {
			t.Fatalf("crash after %d writes: erased blob indexed", n)
		}
		if chk, err := r3.Check(ctx, repo.CheckOptions{ReadData: true}); err != nil || len(chk.Problems) != 0 {
			t.Fatalf("crash after %d writes: final check: %v %v", n, chk.Problems, err)
		}
		if crashErr == nil {
			return // past the last write: every crash point was tried
		}
	}
	t.Fatal("the erase was still writing after 40 writes")
}

// An erase deletes partial uploads that interrupted writers left: one may
// hold the erased person's blobs (encrypted), no listing shows it, and
// the receipt counts them.
func TestEraseRemovesPartialUploads(t *testing.T) {
	ctx := context.Background()
	dir, r := repotest.CreateFile(t)
	save(t, r, time.Now(), map[string][]byte{"hr/alice/scan.bin": randBytes(1000), "keep": randBytes(1000)}, nil)
	// A pack upload a killed mount left half written.
	stray := filepath.Join(dir, "packs", remote.TempPrefix+"half")
	if err := os.WriteFile(stray, randBytes(64<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	dry, err := erase.Erase(ctx, r, erase.Options{Paths: []string{"/hr/alice/scan.bin"}, DryRun: true})
	if err != nil || dry.PartialUploads != 0 {
		t.Fatalf("dry run: %d partial uploads, %v", dry.PartialUploads, err)
	}
	if _, err := os.Stat(stray); err != nil {
		t.Fatalf("the dry run touched the partial upload: %v", err)
	}
	res, err := erase.Erase(ctx, r, erase.Options{Paths: []string{"/hr/alice/scan.bin"}})
	if err != nil {
		t.Fatal(err)
	}
	if res.PartialUploads != 1 {
		t.Fatalf("receipt counts %d partial uploads, want 1", res.PartialUploads)
	}
	if _, err := os.Stat(stray); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("partial upload after the erase: %v", err)
	}
}
