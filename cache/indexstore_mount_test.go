package cache

import (
	"context"
	"testing"
	"time"

	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/pack"
	"github.com/keepfs/keepfs/repo/repotest"
)

// A mount starts after another client pruned what it had uploaded: its
// index store is refilled and the files it still has read back.
func TestIndexStoreMountAfterPrune(t *testing.T) {
	ctx := context.Background()
	be := remote.NewMem()
	r := newRepo(t, be)
	dir := t.TempDir()
	clock := newTestClock()
	c := openCacheWith(t, r, Options{StateDir: dir, Now: clock.Now})
	a, b := randBytes(1, 300<<10), randBytes(2, 200<<10)
	writeFile(t, c, c.Root(), "a", a)
	if _, err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Unlink(ctx, c.Root(), "a"); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Hour)
	bi := writeFile(t, c, c.Root(), "b", b)
	if _, err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}

	// Another process prunes: a's snapshot goes, and a's packs with it
	// once the grace period is over.
	other := reopenRepo(t, be)
	if err := other.SetRetention(ctx, repo.Retention{MaxAge: time.Hour}); err != nil {
		t.Fatal(err)
	}
	now := clock.Now()
	for _, at := range []time.Time{now, now.Add(time.Hour)} {
		if _, err := other.Prune(ctx, repo.PruneOptions{Now: at}); err != nil {
			t.Fatal(err)
		}
	}
	gen, err := other.Generation(ctx)
	if err != nil || gen == 0 {
		t.Fatalf("generation %d, %v", gen, err)
	}

	r2 := repotest.OpenWith(t, be, repo.Options{NoIndex: true})
	c2 := openCacheWith(t, r2, Options{StateDir: dir})
	defer c2.Close(ctx)
	if st, _ := c2.ix.State(); st.Generation != gen {
		t.Fatalf("the index store is at generation %d, want %d", st.Generation, gen)
	}
	// The refilled store answers as the remote's index does (the store's
	// own tests compare every entry).
	mem := reopenRepo(t, be).Index()
	if got, want := r2.Index().Count(), mem.Count(); got != want || len(r2.Index().Packs()) != len(mem.Packs()) {
		t.Fatalf("the store holds %d blobs in %d packs, the remote's index %d in %d", got, len(r2.Index().Packs()), want, len(mem.Packs()))
	}
	wantContent(t, c2, bi, b, "b after another client's prune")
	if aid := r.Key().BlobID(a[:1]); r2.Index().Has(pack.Data, aid) {
		t.Fatal("a made-up blob is indexed")
	}
}
