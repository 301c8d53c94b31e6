package repo_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/pack"
	"github.com/keepfs/keepfs/repo/tree"
)

// uploadPasses saves one new blob and flushes, n times: one pack and one
// index segment per pass, as a mount's uploader does at every snapshot.
// It checks after each pass that index/ holds at most bound(packs) objects.
func uploadPasses(t *testing.T, r *repo.Repository, n int, tag string, bound func(packs int) int) []crypto.ID {
	t.Helper()
	ctx := context.Background()
	var ids []crypto.ID
	for i := 0; i < n; i++ {
		id, _, err := r.SaveBlob(ctx, pack.Data, []byte(fmt.Sprintf("%s blob %d", tag, i)))
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
		if bound == nil {
			continue
		}
		objs, err := r.IndexObjects(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if packs := len(r.Index().Packs()); objs > bound(packs) {
			t.Fatalf("after %d upload passes (%d packs): %d index objects, bound %d", i+1, packs, objs, bound(packs))
		}
	}
	return ids
}

// snapshotNaming stores a snapshot whose one file names every blob in ids,
// so check reads them all.
func snapshotNaming(t *testing.T, r *repo.Repository, ids []crypto.ID) {
	t.Helper()
	ctx := context.Background()
	tid, err := r.SaveTree(ctx, &tree.Tree{Nodes: []*tree.Node{{Name: "f", Type: tree.File, Mode: 0o644, Content: ids}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.SaveSnapshot(ctx, &repo.Snapshot{Time: time.Now(), Tree: tid}); err != nil {
		t.Fatal(err)
	}
}

// wantIndexed fails unless a fresh handle on be indexes every blob of ids
// and check finds nothing wrong.
func wantIndexed(t *testing.T, be remote.Storage, ids []crypto.ID, packs int) {
	t.Helper()
	ctx := context.Background()
	fresh := reopen(t, be)
	for _, id := range ids {
		if !fresh.Index().Has(pack.Data, id) {
			t.Fatalf("a fresh handle does not index blob %s", id.Short())
		}
	}
	if got := len(fresh.Index().Packs()); got != packs {
		t.Fatalf("a fresh handle indexes %d packs, want %d", got, packs)
	}
	res, err := fresh.Check(ctx, repo.CheckOptions{ReadData: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range res.Problems {
		if !p.Warning {
			t.Fatalf("check: %s: %s", p.Object, p.What)
		}
	}
}

// Many small upload passes leave index/ bounded: at most one object per
// mergedPacks packs plus a constant, however many passes ran, and a fresh
// handle sees the same index.
func TestIndexCompaction(t *testing.T) {
	be, r := newRepo(t)
	// The defaults: 300 passes stay within the constant (9 objects).
	ids := uploadPasses(t, r, 300, "a", func(int) int { return 9 })
	// Full merged segments are left alone: at most one per 20 packs more.
	restore := repo.SetIndexCompaction(8, 20)
	ids = append(ids, uploadPasses(t, r, 150, "b", func(packs int) int { return (packs-300)/20 + 10 })...)
	restore()
	if st := r.Stats(); st.IndexMerged == 0 {
		t.Fatalf("stats count no merged segment: %+v", st)
	}
	snapshotNaming(t, r, ids)
	wantIndexed(t, be, ids, 451) // and the tree's pack
	ctx := context.Background()
	// A prune leaves so few objects alone...
	if res, err := r.Prune(ctx, repo.PruneOptions{}); err != nil || res.IndexMerged != 0 {
		t.Fatalf("prune: %+v, %v", res, err)
	}
	// ...but merges everyone's segments into one once there are more than
	// 32 + packs/1000: sessions that merged only their own (here, ones
	// that merged nothing) leave many.
	defer repo.SetIndexCompaction(1<<30, 1000)()
	other := reopen(t, be)
	ids = append(ids, uploadPasses(t, other, 40, "c", nil)...)
	snapshotNaming(t, other, ids) // all live: the prune has nothing to delete
	if n, _ := r.IndexObjects(ctx); n <= 32 {
		t.Fatalf("only %d index objects before the prune", n)
	}
	res, err := r.Prune(ctx, repo.PruneOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := r.IndexObjects(ctx); n != 1 || res.IndexMerged <= 32 {
		t.Fatalf("%d index objects after prune (it merged %d)", n, res.IndexMerged)
	}
	wantIndexed(t, be, ids, 492)
}

// Killed between storing a merged segment and deleting the ones it
// supersedes, the repository is still correct: the old segments are
// ignored, a fresh handle sees the same index, check passes, and writing
// goes on; prune removes the leftovers.
func TestIndexCompactionCrash(t *testing.T) {
	be, r := newRepo(t)
	killed := errors.New("killed")
	repo.SetAfterMerge(r, func() error { return killed })
	ids := uploadPasses(t, r, 9, "a", nil) // the 9th segment triggers a merge
	if n, _ := r.IndexObjects(context.Background()); n != 10 {
		t.Fatalf("%d index objects after the interrupted merge, want 9 + 1 merged", n)
	}
	wantIndexed(t, be, ids, 9)
	// The next session goes on writing and merging its own segments.
	r2 := reopen(t, be)
	ids = append(ids, uploadPasses(t, r2, 30, "b", nil)...)
	if n, _ := r2.IndexObjects(context.Background()); n > 10+9 {
		t.Fatalf("%d index objects", n)
	}
	snapshotNaming(t, r2, ids)
	wantIndexed(t, be, ids, 40) // and the tree's pack
}

// listStale lists index/ as it was at its first listing, once: a reader
// that listed before another client merged its segments.
type listStale struct {
	remote.Storage
	once  sync.Once
	names []string
}

func (l *listStale) List(ctx context.Context, t remote.Type, fn func(remote.Info) error) error {
	if t != remote.Index || l.names == nil {
		return l.Storage.List(ctx, t, fn)
	}
	var stale []string
	l.once.Do(func() { stale = l.names })
	if stale == nil {
		return l.Storage.List(ctx, t, fn)
	}
	for _, n := range stale {
		if err := fn(remote.Info{Handle: remote.Handle{Type: remote.Index, Name: n}}); err != nil {
			return err
		}
	}
	return nil
}

// A reader whose listing of index/ predates a merge finds segments gone
// when it loads them, and lists again rather than failing.
func TestLoadIndexAfterConcurrentMerge(t *testing.T) {
	be, r := newRepo(t)
	ids := uploadPasses(t, r, 8, "a", nil)
	ls := &listStale{Storage: be}
	if err := be.List(context.Background(), remote.Index, func(fi remote.Info) error {
		ls.names = append(ls.names, fi.Handle.Name)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// The 9th segment merges the 8 listed above; Open then loads the
	// index from the stale listing first.
	ids = append(ids, uploadPasses(t, r, 1, "b", nil)...)
	reader := reopen(t, ls)
	for _, id := range ids {
		if !reader.Index().Has(pack.Data, id) {
			t.Fatalf("blob %s missing", id.Short())
		}
	}
}

// A session that is done merges what is left of its own segments into
// one.
func TestMergeOwnIndex(t *testing.T) {
	be, r := newRepo(t)
	ids := uploadPasses(t, r, 5, "a", nil)
	if n, _ := r.IndexObjects(context.Background()); n != 5 {
		t.Fatalf("%d index objects after 5 passes", n)
	}
	if err := r.MergeOwnIndex(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n, _ := r.IndexObjects(context.Background()); n != 1 {
		t.Fatalf("%d index objects after MergeOwnIndex", n)
	}
	snapshotNaming(t, r, ids)
	wantIndexed(t, be, ids, 6)
}

// A merge copies its own segments' packs from memory: once the remote
// lost one of them (it went back to an older copy of itself), merging
// would name packs it lost, so the handle merges nothing and forgets
// its segments.
func TestMergeOwnIndexRefusesLostSegments(t *testing.T) {
	ctx := context.Background()
	be, r := newRepo(t)
	var before []string
	_ = be.List(ctx, remote.Index, func(fi remote.Info) error { before = append(before, fi.Handle.Name); return nil })
	uploadPasses(t, r, 3, "a", nil)
	var own []string
	_ = be.List(ctx, remote.Index, func(fi remote.Info) error {
		for _, b := range before {
			if b == fi.Handle.Name {
				return nil
			}
		}
		own = append(own, fi.Handle.Name)
		return nil
	})
	if len(own) != 3 {
		t.Fatalf("%d segments of the handle's own, want 3", len(own))
	}
	if err := be.Remove(ctx, remote.Handle{Type: remote.Index, Name: own[1]}); err != nil {
		t.Fatal(err)
	}
	if err := r.MergeOwnIndex(ctx); err == nil {
		t.Fatal("merged with one of its segments gone from the remote")
	}
	if n, _ := r.IndexObjects(ctx); n != len(before)+2 {
		t.Fatalf("%d index objects after the refused merge, want %d", n, len(before)+2)
	}
	// Forgotten: a later merge does not bring the lost packs back.
	if err := r.MergeOwnIndex(ctx); err != nil {
		t.Fatal(err)
	}
	if n, _ := r.IndexObjects(ctx); n != len(before)+2 {
		t.Fatalf("%d index objects after a second merge, want %d", n, len(before)+2)
	}
}
