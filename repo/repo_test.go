package repo_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/pack"
	"github.com/keepfs/keepfs/repo/tree"

	"golang.org/x/sync/errgroup"
)

var pw = []byte("correct horse battery staple")

func newRepo(t *testing.T) (*remote.Mem, *repo.Repository) {
	t.Helper()
	be := remote.NewMem()
	r, err := repo.Create(context.Background(), be, pw, repo.Options{KDF: &crypto.TestKDF})
	if err != nil {
		t.Fatal(err)
	}
	return be, r
}

func reopen(t *testing.T, be remote.Storage) *repo.Repository {
	t.Helper()
	r, err := repo.Open(context.Background(), be, pw, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func TestCreateOpenWrongPassword(t *testing.T) {
	ctx := context.Background()
	be, r := newRepo(t)
	if _, err := repo.Create(ctx, be, pw, repo.Options{KDF: &crypto.TestKDF}); err == nil {
		t.Fatal("second init over an existing repository succeeded")
	}
	_, err := repo.Open(ctx, be, []byte("wrong"), repo.Options{})
	if !errors.Is(err, repo.ErrWrongPassword) {
		t.Fatalf("wrong passphrase: got %v", err)
	}
	r2 := reopen(t, be)
	if r2.Config().ID != r.Config().ID {
		t.Fatal("reopened repository has a different id")
	}
	if _, err := repo.Open(ctx, remote.NewMem(), pw, repo.Options{}); !errors.Is(err, repo.ErrNotRepository) {
		t.Fatalf("empty remote: got %v", err)
	}
}

func TestKeySlots(t *testing.T) {
	ctx := context.Background()
	be, r := newRepo(t)
	id2, err := r.AddKey(ctx, []byte("second"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Open(ctx, be, []byte("second"), repo.Options{}); err != nil {
		t.Fatalf("second passphrase does not open: %v", err)
	}
	keys, err := r.Keys(ctx, []byte("second"))
	if err != nil || len(keys) != 2 {
		t.Fatalf("keys: %v %v", keys, err)
	}
	for _, k := range keys {
		if k.Current != (k.ID == id2) {
			t.Errorf("key %s current=%v", k.ID, k.Current)
		}
	}
	if err := r.RemoveKey(ctx, id2); err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Open(ctx, be, []byte("second"), repo.Options{}); !errors.Is(err, repo.ErrWrongPassword) {
		t.Fatalf("removed slot still opens: %v", err)
	}
	keys, _ = r.Keys(ctx, nil)
	if err := r.RemoveKey(ctx, keys[0].ID); err == nil {
		t.Fatal("removed the last key slot")
	}
}

func TestSaveBlobDedupAndReload(t *testing.T) {
	ctx := context.Background()
	be, r := newRepo(t)
	data := randBytes(100 << 10)
	id, stored, err := r.SaveBlob(ctx, pack.Data, data)
	if err != nil || !stored {
		t.Fatalf("first save: stored=%v err=%v", stored, err)
	}
	if _, stored, _ := r.SaveBlob(ctx, pack.Data, data); stored {
		t.Fatal("duplicate blob stored twice before flush")
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if _, stored, _ := r.SaveBlob(ctx, pack.Data, data); stored {
		t.Fatal("duplicate blob stored twice after flush")
	}
	r2 := reopen(t, be)
	got, err := r2.LoadBlob(ctx, pack.Data, id)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("reload: %v", err)
	}
	if _, err := r2.LoadBlob(ctx, pack.Tree, id); !errors.Is(err, repo.ErrBlobNotFound) {
		t.Fatalf("wrong type found: %v", err)
	}
}

// Packs fill to the configured size and several are uploaded in parallel.
func TestManyPacks(t *testing.T) {
	ctx := context.Background()
	be, r := newRepo(t)
	var ids []crypto.ID
	for i := 0; i < 40; i++ {
		id, _, err := r.SaveBlob(ctx, pack.Data, randBytes(1<<20))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	n := 0
	_ = be.List(ctx, remote.Pack, func(remote.Info) error { n++; return nil })
	if n < 2 {
		t.Fatalf("40 MiB in %d packs", n)
	}
	r2 := reopen(t, be)
	for _, id := range ids {
		if !r2.Index().Has(pack.Data, id) {
			t.Fatalf("blob %s lost", id.Short())
		}
	}
}

// A run killed after uploading packs but before writing their index leaves
// packs that RecoverPacks indexes, so their blobs are not uploaded again.
func TestRecoverPacks(t *testing.T) {
	ctx := context.Background()
	be, r := newRepo(t)
	var ids []crypto.ID
	for i := 0; i < 20; i++ {
		id, _, err := r.SaveBlob(ctx, pack.Data, randBytes(1<<20))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	// No Flush: wait for the background upload of the full pack instead.
	deadline := time.Now().Add(10 * time.Second)
	for r.Stats().PacksWritten == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if r.Stats().PacksWritten == 0 {
		t.Fatal("no pack uploaded")
	}
	r2 := reopen(t, be)
	if r2.Index().Count() != 0 {
		t.Fatal("index exists without flush")
	}
	res, err := r2.Check(ctx, repo.CheckOptions{ReadData: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors() != 0 {
		t.Fatalf("unindexed packs are errors: %v", res.Problems)
	}
	n, err := r2.RecoverPacks(ctx)
	if err != nil || n == 0 {
		t.Fatalf("recovered %d packs: %v", n, err)
	}
	if !r2.Index().Has(pack.Data, ids[0]) {
		t.Fatal("first blob not recovered")
	}
	r3 := reopen(t, be)
	if !r3.Index().Has(pack.Data, ids[0]) {
		t.Fatal("recovery was not persisted")
	}
}

func saveSnapshot(t *testing.T, r *repo.Repository, when time.Time, files map[string][]byte) *repo.Snapshot {
	t.Helper()
	ctx := context.Background()
	tr := &tree.Tree{}
	for name, data := range files {
		id, _, err := r.SaveBlob(ctx, pack.Data, data)
		if err != nil {
			t.Fatal(err)
		}
		tr.Nodes = append(tr.Nodes, &tree.Node{Name: name, Type: tree.File, Mode: 0o644, Size: uint64(len(data)), Content: []crypto.ID{id}})
	}
	tr.Sort()
	root, err := r.SaveTree(ctx, tr)
	if err != nil {
		t.Fatal(err)
	}
	sn := &repo.Snapshot{Time: when, Tree: root}
	if err := r.SaveSnapshot(ctx, sn); err != nil {
		t.Fatal(err)
	}
	return sn
}

// A snapshot just stored is named as the listing names it: the second of
// one second is NAME-1, and the listing labels it so too.
func TestNameOfSharedSecond(t *testing.T) {
	ctx := context.Background()
	_, r := newRepo(t)
	t0 := time.Date(2026, 11, 28, 13, 5, 0, 0, time.UTC)
	first := saveSnapshot(t, r, t0, map[string][]byte{"a.txt": []byte("v1")})
	second := saveSnapshot(t, r, t0.Add(400*time.Millisecond), map[string][]byte{"a.txt": []byte("v2")})
	if n := r.NameOf(ctx, first); n != "2026-11-28T130500Z" {
		t.Errorf("first: %s", n)
	}
	if n := r.NameOf(ctx, second); n != "2026-11-28T130500Z-1" {
		t.Errorf("second: %s, want the -1 suffix", n)
	}
	if second.Name() != second.TimeName() {
		t.Errorf("a snapshot not from a listing is named %s, want its time", second.Name())
	}
	snaps, err := r.Snapshots(ctx)
	if err != nil || len(snaps) != 2 || snaps[1].Name() != "2026-11-28T130500Z-1" || snaps[1].TimeName() != "2026-11-28T130500Z" {
		t.Fatalf("listing: %v %v", snaps, err)
	}
}

func TestSnapshotsAndLookup(t *testing.T) {
	ctx := context.Background()
	be, r := newRepo(t)
	t0 := time.Date(2026, 11, 28, 13, 5, 0, 0, time.UTC)
	saveSnapshot(t, r, t0, map[string][]byte{"a.txt": []byte("v1")})
	saveSnapshot(t, r, t0.Add(2*time.Hour), map[string][]byte{"a.txt": []byte("v2")})
	snaps, err := reopen(t, be).Snapshots(ctx)
	if err != nil || len(snaps) != 2 {
		t.Fatalf("snapshots: %d %v", len(snaps), err)
	}
	if snaps[0].Name() != "2026-11-28T130500Z" {
		t.Fatalf("name %s", snaps[0].Name())
	}
	for _, tc := range []struct {
		at   string
		want int // index into snaps, -1 for none
	}{
		{"latest", 1}, {"2026-11-28T13", 0}, {"2026-11-28", 1}, {"2026-11-28T130500Z", 0},
		{"2026-11-28T130459Z", -1}, {"2026-11-28T14", 0}, {"2026-11-28T15", 1}, {"2025", -1},
	} {
		at, err := repo.ParseTime(tc.at)
		if err != nil {
			t.Fatalf("%s: %v", tc.at, err)
		}
		sn, err := repo.FindSnapshot(snaps, at)
		if tc.want < 0 {
			if !errors.Is(err, repo.ErrNoSnapshot) {
				t.Errorf("%s: want no snapshot, got %v", tc.at, sn)
			}
			continue
		}
		if err != nil || sn != snaps[tc.want] {
			t.Errorf("%s: got %v, %v; want snapshot %d", tc.at, sn, err, tc.want)
		}
	}
	for _, bad := range []string{"yesterday", "2026-13", "2026-11-28T1"} {
		if _, err := repo.ParseTime(bad); err == nil {
			t.Errorf("ParseTime(%q) accepted", bad)
		}
	}
	n, err := r.Lookup(ctx, snaps[1].Tree, "/a.txt")
	if err != nil || n.Size != 2 {
		t.Fatalf("lookup: %v %v", n, err)
	}
	if _, err := r.Lookup(ctx, snaps[1].Tree, "/missing"); !errors.Is(err, repo.ErrPathNotFound) {
		t.Fatalf("missing: %v", err)
	}
	if _, err := r.Lookup(ctx, snaps[1].Tree, "/a.txt/x"); !errors.Is(err, repo.ErrPathNotFound) {
		t.Fatalf("below a file: %v", err)
	}
}

func TestSnapshotRefusesMissingTree(t *testing.T) {
	_, r := newRepo(t)
	err := r.SaveSnapshot(context.Background(), &repo.Snapshot{Time: time.Now(), Tree: crypto.ID{1}})
	if err == nil {
		t.Fatal("snapshot naming a missing tree was saved")
	}
}

func TestCheckFindsProblems(t *testing.T) {
	ctx := context.Background()
	be, r := newRepo(t)
	saveSnapshot(t, r, time.Now(), map[string][]byte{"a": randBytes(3 << 20), "b": []byte(strings.Repeat("x", 1000))})
	res, err := reopen(t, be).Check(ctx, repo.CheckOptions{ReadData: true})
	if err != nil || res.Errors() != 0 || res.Snapshots != 1 || res.Packs == 0 {
		t.Fatalf("sound repository: %+v %v", res, err)
	}

	// The data pack (trees have packs of their own, which the metadata
	// check reads): the biggest.
	var packs []remote.Info
	_ = be.List(ctx, remote.Pack, func(fi remote.Info) error { packs = append(packs, fi); return nil })
	sort.Slice(packs, func(i, j int) bool { return packs[i].Size > packs[j].Size })
	data, _ := remote.LoadAll(ctx, be, packs[0].Handle)
	bad := append([]byte(nil), data...)
	bad[100] ^= 0x80
	be.Replace(packs[0].Handle, bad)
	// Without reading data only sizes are compared: a same-size flip passes.
	res, _ = reopen(t, be).Check(ctx, repo.CheckOptions{})
	if res.Errors() != 0 {
		t.Fatalf("metadata check flagged a same-size change: %v", res.Problems)
	}
	res, _ = reopen(t, be).Check(ctx, repo.CheckOptions{ReadData: true})
	if res.Errors() == 0 || !strings.Contains(res.Problems[0].Object, packs[0].Handle.Name) {
		t.Fatalf("flipped bit not found: %v", res.Problems)
	}

	be.Replace(packs[0].Handle, data[:len(data)-1])
	res, _ = reopen(t, be).Check(ctx, repo.CheckOptions{})
	if res.Errors() == 0 || !strings.Contains(res.Problems[0].What, "size") {
		t.Fatalf("truncated pack not found: %v", res.Problems)
	}
	if err := be.Remove(ctx, packs[0].Handle); err != nil {
		t.Fatal(err)
	}
	res, _ = reopen(t, be).Check(ctx, repo.CheckOptions{})
	found := false
	for _, p := range res.Problems {
		found = found || strings.Contains(p.What, "missing")
	}
	if !found {
		t.Fatalf("missing pack not reported: %v", res.Problems)
	}
}

func TestCheckBadIndexSegment(t *testing.T) {
	ctx := context.Background()
	be, r := newRepo(t)
	saveSnapshot(t, r, time.Now(), map[string][]byte{"a": []byte("hello")})
	var idx []remote.Info
	_ = be.List(ctx, remote.Index, func(fi remote.Info) error { idx = append(idx, fi); return nil })
	data, _ := remote.LoadAll(ctx, be, idx[0].Handle)
	data[len(data)/2] ^= 1
	be.Replace(idx[0].Handle, data)
	if _, err := repo.Open(ctx, be, pw, repo.Options{}); err == nil {
		t.Fatal("open with a corrupt index succeeded")
	}
	r2, err := repo.Open(ctx, be, pw, repo.Options{NoIndex: true})
	if err != nil {
		t.Fatal(err)
	}
	res, err := r2.Check(ctx, repo.CheckOptions{})
	if err != nil || res.Errors() == 0 {
		t.Fatalf("corrupt index not reported: %+v %v", res, err)
	}
}

// A failed pack upload must not leave its blobs looking stored: saving them
// again after the remote returns uploads them.
func TestFailedUploadIsRetried(t *testing.T) {
	ctx := context.Background()
	mem := remote.NewMem()
	if _, err := repo.Create(ctx, mem, pw, repo.Options{KDF: &crypto.TestKDF}); err != nil {
		t.Fatal(err)
	}
	faulty := remote.NewFaulty(mem)
	r, err := repo.Open(ctx, faulty, pw, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	data := randBytes(1000)
	faulty.Break()
	if _, _, err := r.SaveBlob(ctx, pack.Data, data); err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err == nil {
		t.Fatal("flush to a broken remote succeeded")
	}
	faulty.Heal()
	id, stored, err := r.SaveBlob(ctx, pack.Data, data)
	if err != nil || !stored {
		t.Fatalf("resave after failure: stored=%v err=%v", stored, err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := reopen(t, mem).LoadBlob(ctx, pack.Data, id); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("blob after retry: %v", err)
	}
}

// packsOf lists the packs an index holds, as a set of ids.
func packsOf(r *repo.Repository) map[crypto.ID]bool {
	m := map[crypto.ID]bool{}
	for _, p := range r.Index().Packs() {
		m[p.ID] = true
	}
	return m
}

// Uploads heal: three pack saves fail in a row, each Flush reports it, and
// the fourth attempt stores everything. An index segment that cannot be
// stored leaves its packs out of the index (a fresh Open agrees about which
// packs exist) and the next Flush names them without uploading them again.
func TestUploadsHealAfterFailures(t *testing.T) {
	ctx := context.Background()
	mem := remote.NewMem()
	if _, err := repo.Create(ctx, mem, pw, repo.Options{KDF: &crypto.TestKDF}); err != nil {
		t.Fatal(err)
	}
	faulty := remote.NewFaulty(mem)
	r, err := repo.Open(ctx, faulty, pw, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var blobs [][]byte
	for range 3 {
		blobs = append(blobs, randBytes(5000))
	}
	// Three pack saves fail in a row; the caller retries as the mount's
	// uploader does: save everything again, flush again.
	faulty.FailNextSaves(remote.Pack, 3)
	for attempt := 1; ; attempt++ {
		var serr error
		for _, b := range blobs {
			if _, _, err := r.SaveBlob(ctx, pack.Data, b); err != nil {
				serr = err
			}
		}
		ferr := r.Flush(ctx)
		if attempt <= 3 {
			if serr == nil && ferr == nil {
				t.Fatalf("attempt %d succeeded although its pack save failed", attempt)
			}
			if len(packsOf(r)) != 0 {
				t.Fatalf("attempt %d: the index lists packs although none was stored", attempt)
			}
			continue
		}
		if serr != nil || ferr != nil {
			t.Fatalf("attempt %d after the remote healed: save %v, flush %v", attempt, serr, ferr)
		}
		break
	}
	fresh := reopen(t, mem)
	for _, b := range blobs {
		id := fresh.Key().BlobID(b)
		if got, err := fresh.LoadBlob(ctx, pack.Data, id); err != nil || !bytes.Equal(got, b) {
			t.Fatalf("blob %s after healing: %v", id.Short(), err)
		}
	}

	// Now the pack arrives but its index segment does not.
	more := randBytes(7000)
	moreID, _, err := r.SaveBlob(ctx, pack.Data, more)
	if err != nil {
		t.Fatal(err)
	}
	faulty.FailNextSaves(remote.Index, 1)
	if err := r.Flush(ctx); err == nil {
		t.Fatal("flush succeeded although its index segment was not stored")
	}
	if r.Index().Has(pack.Data, moreID) {
		t.Fatal("a blob is indexed although no stored segment names its pack")
	}
	if got, want := packsOf(r), packsOf(reopen(t, mem)); len(got) != len(want) {
		t.Fatalf("after a failed flush the index has %d packs, a fresh open %d", len(got), len(want))
	}
	// Saving it again is no upload: the pack is there, only unnamed.
	packSaves := faulty.Calls(remote.OpSave)
	if _, stored, err := r.SaveBlob(ctx, pack.Data, more); err != nil || stored {
		t.Fatalf("resave of an uploaded, unindexed blob: stored=%v err=%v", stored, err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatalf("retry flush: %v", err)
	}
	if n := faulty.Calls(remote.OpSave) - packSaves; n != 1 {
		t.Fatalf("retry flush made %d saves, want 1 (the index segment only)", n)
	}
	if !r.Index().Has(pack.Data, moreID) {
		t.Fatal("blob not indexed after the retry flush")
	}
	fresh = reopen(t, mem)
	if got, want := packsOf(r), packsOf(fresh); len(got) != len(want) {
		t.Fatalf("after the retry the index has %d packs, a fresh open %d", len(got), len(want))
	}
	if got, err := fresh.LoadBlob(ctx, pack.Data, moreID); err != nil || !bytes.Equal(got, more) {
		t.Fatalf("blob after the retry flush: %v", err)
	}
}

// TestFlushReleasesPackBuffers: between uploads the writer holds no pack
// buffer (16 MiB each, up to UploadConcurrency+1 of them); the next save
// takes one again and its blobs arrive.
func TestFlushReleasesPackBuffers(t *testing.T) {
	ctx := context.Background()
	be, r := newRepo(t)
	if n := repo.PackBuffersHeld(r); n != 0 {
		t.Fatalf("%d pack buffers held before the first save", n)
	}
	save := func(n int) []crypto.ID {
		var ids []crypto.ID
		for range n {
			id, _, err := r.SaveBlob(ctx, pack.Data, randBytes(1<<20))
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		return ids
	}
	// More than two packs, so uploads ran and their buffers were recycled.
	ids := save(40)
	if n := repo.PackBuffersHeld(r); n == 0 {
		t.Fatal("no pack buffer while saving")
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if n := repo.PackBuffersHeld(r); n != 0 {
		t.Fatalf("%d pack buffers held after Flush", n)
	}
	ids = append(ids, save(3)...)
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	r2 := reopen(t, be)
	for _, id := range ids {
		if !r2.Index().Has(pack.Data, id) {
			t.Fatalf("blob %s not in the repository", id.Short())
		}
	}
}

// slowSaves delays every pack upload, so savers queue for the upload slot.
type slowSaves struct{ remote.Storage }

func (s slowSaves) Save(ctx context.Context, h remote.Handle, data []byte) error {
	if h.Type == remote.Pack {
		time.Sleep(20 * time.Millisecond)
	}
	return s.Storage.Save(ctx, h, data)
}

// TestConcurrentSavesKeepPackSize: savers that waited for an upload slot
// while another filled the next pack must not add past the pack size (the
// pack buffer would grow by a copy, and the pack exceed its target).
func TestConcurrentSavesKeepPackSize(t *testing.T) {
	ctx := context.Background()
	be := remote.NewMem()
	if _, err := repo.Create(ctx, be, pw, repo.Options{KDF: &crypto.TestKDF}); err != nil {
		t.Fatal(err)
	}
	r, err := repo.Open(ctx, slowSaves{be}, pw, repo.Options{UploadConcurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	var g errgroup.Group
	for range 8 {
		g.Go(func() error {
			for range 12 {
				if _, _, err := r.SaveBlob(ctx, pack.Data, randBytes(700<<10)); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	limit := int64(r.Config().PackSize) + 64<<10 // the pack buffer's capacity
	n := 0
	if err := be.List(ctx, remote.Pack, func(fi remote.Info) error {
		n++
		if fi.Size > limit {
			t.Errorf("pack %s: %d bytes, more than %d", fi.Handle.Name, fi.Size, limit)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n < 4 {
		t.Fatalf("%d packs for 67 MiB", n)
	}
}

// TestTreesInOwnPacks: tree blobs go to packs of their own, however they
// interleave with data, so a walk of every tree (restore's planning, a
// mount's rebuild) reads a few packs instead of nearly all of them.
func TestTreesInOwnPacks(t *testing.T) {
	ctx := context.Background()
	_, r := newRepo(t)
	var data, trees []crypto.ID
	for i := range 40 {
		id, _, err := r.SaveBlob(ctx, pack.Data, randBytes(1<<20))
		if err != nil {
			t.Fatal(err)
		}
		data = append(data, id)
		tid, _, err := r.SaveBlob(ctx, pack.Tree, randBytes(300+i))
		if err != nil {
			t.Fatal(err)
		}
		trees = append(trees, tid)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	idx := r.Index()
	dataPacks := map[crypto.ID]bool{}
	for _, id := range data {
		loc, ok := idx.Lookup(pack.Data, id)
		if !ok {
			t.Fatalf("data blob %s not indexed", id.Short())
		}
		dataPacks[loc.Pack] = true
	}
	treePacks := map[crypto.ID]bool{}
	for _, id := range trees {
		loc, ok := idx.Lookup(pack.Tree, id)
		if !ok {
			t.Fatalf("tree blob %s not indexed", id.Short())
		}
		if dataPacks[loc.Pack] {
			t.Fatalf("tree blob %s shares pack %s with data", id.Short(), loc.Pack.Short())
		}
		treePacks[loc.Pack] = true
		if _, err := r.LoadBlob(ctx, pack.Tree, id); err != nil {
			t.Fatal(err)
		}
	}
	if len(treePacks) != 1 {
		t.Fatalf("40 small trees in %d packs, want 1", len(treePacks))
	}
	if n := repo.PackBuffersHeld(r); n != 0 {
		t.Fatalf("%d pack buffers held after Flush", n)
	}
}
