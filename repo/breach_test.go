package repo_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/keepfs/keepfs/policy/notify"
	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/pack"
	"github.com/keepfs/keepfs/repo/repotest"
	"github.com/keepfs/keepfs/repo/tree"
)

func hasEvent(evs []notify.Event, typ, obj string) bool {
	for _, e := range evs {
		if e.Type == typ && (obj == "" || e.Object == obj) {
			return true
		}
	}
	return false
}

func snapshotOf(t *testing.T, r *repo.Repository, data []byte) *repo.Snapshot {
	t.Helper()
	ctx := context.Background()
	id, _, err := r.SaveBlob(ctx, pack.Data, data)
	if err != nil {
		t.Fatal(err)
	}
	root, err := r.SaveTree(ctx, &tree.Tree{Nodes: []*tree.Node{{Name: "f", Type: tree.File, Mode: 0o644, Size: uint64(len(data)), Content: []crypto.ID{id}}}})
	if err != nil {
		t.Fatal(err)
	}
	sn := &repo.Snapshot{Tree: root}
	if err := r.SaveSnapshot(ctx, sn); err != nil {
		t.Fatal(err)
	}
	return sn
}

func only(t *testing.T, be *remote.Mem, typ remote.Type) []remote.Info {
	var out []remote.Info
	_ = be.List(context.Background(), typ, func(fi remote.Info) error { out = append(out, fi); return nil })
	return out
}

func TestBreachSnapshotsChainAndRollback(t *testing.T) {
	ctx := context.Background()
	be, r, s := sinkRepo(t)
	dir := t.TempDir()
	a := snapshotOf(t, r, randBytes(1000))
	if a.Seq != 1 || a.Parent != nil {
		t.Fatalf("first snapshot: seq %d parent %v", a.Seq, a.Parent)
	}
	if _, err := r.Guard(ctx, dir); err != nil {
		t.Fatal(err)
	}
	b := snapshotOf(t, r, randBytes(1000))
	if b.Seq != 2 || b.Parent == nil || *b.Parent != a.ID {
		t.Fatalf("second snapshot: seq %d parent %v", b.Seq, b.Parent)
	}
	if evs, err := r.Guard(ctx, dir); err != nil || len(evs) != 0 {
		t.Fatalf("healthy: %+v %v", evs, err)
	}
	// The remote drops the newest snapshot: a fresh handle (another
	// command) with the same state directory notices.
	if err := be.Remove(ctx, remote.Handle{Type: remote.Snapshot, Name: b.ID.String()}); err != nil {
		t.Fatal(err)
	}
	r2 := reopen(t, be)
	r2.SetEvents(s)
	evs, err := r2.Guard(ctx, dir)
	if err != nil || !hasEvent(evs, notify.TypeRollback, "snapshots/") {
		t.Fatalf("rollback not reported: %+v %v", evs, err)
	}
	// Reported once.
	if evs, _ := r2.Guard(ctx, dir); len(evs) != 0 {
		t.Fatalf("reported again: %+v", evs)
	}
	// A key slot added by someone else.
	other := reopen(t, be)
	if _, err := other.AddKey(ctx, []byte("another")); err != nil {
		t.Fatal(err)
	}
	if evs, _ := r2.Guard(ctx, dir); !hasEvent(evs, notify.TypeKeyAdded, "") {
		t.Fatalf("key slot not reported: %+v", evs)
	}
	// One this client adds and accepts is not.
	if _, err := r2.AddKey(ctx, []byte("mine")); err != nil {
		t.Fatal(err)
	}
	if err := r2.AcceptView(ctx, dir); err != nil {
		t.Fatal(err)
	}
	if evs, _ := r2.Guard(ctx, dir); len(evs) != 0 {
		t.Fatalf("own key reported: %+v", evs)
	}
}

// watchedRepo is a repository with two snapshots whose events go to s.
// sinkRepo is a new repository whose events go to the sink returned.
func sinkRepo(t *testing.T) (*remote.Mem, *repo.Repository, *repotest.Sink) {
	t.Helper()
	be, r := newRepo(t)
	s := &repotest.Sink{}
	r.SetEvents(s)
	return be, r, s
}

func watchedRepo(t *testing.T) (*remote.Mem, *repo.Repository, *repotest.Sink) {
	t.Helper()
	be, r, s := sinkRepo(t)
	snapshotOf(t, r, randBytes(5000))
	snapshotOf(t, r, randBytes(5000))
	return be, r, s
}

func TestScrubFindsTamperingDeletionAdditionReplay(t *testing.T) {
	ctx := context.Background()
	be, r, s := watchedRepo(t)
	res, err := r.Scrub(ctx, repo.ScrubOptions{All: true})
	if err != nil || len(res.Problems) != 0 || res.PacksRead == 0 || len(s.Take()) != 0 {
		t.Fatalf("healthy scrub: %+v %v", res, err)
	}
	packs := only(t, be, remote.Pack)
	idx := only(t, be, remote.Index)
	// Tamper with one pack (same size), replay an index segment under a
	// new name, add garbage, delete the other pack.
	p0 := packs[0].Handle
	b, _ := remote.LoadAll(ctx, be, p0)
	b[10] ^= 1
	be.Replace(p0, b)
	seg, _ := remote.LoadAll(ctx, be, idx[0].Handle)
	fake := crypto.Hash([]byte("not this")).String()
	_ = be.Save(ctx, remote.Handle{Type: remote.Index, Name: fake}, seg)
	junk := crypto.Hash([]byte("junk")).String()
	_ = be.Save(ctx, remote.Handle{Type: remote.Pack, Name: junk}, randBytes(3000))
	if _, err = r.Scrub(ctx, repo.ScrubOptions{All: true}); err != nil {
		t.Fatal(err)
	}
	evs := s.Take()
	for _, want := range []struct{ typ, obj string }{
		{notify.TypeTampered, "packs/" + p0.Name},
		{notify.TypeNameMismatch, "index/" + fake},
		{notify.TypeUnexpected, "packs/" + junk},
	} {
		if !hasEvent(evs, want.typ, want.obj) {
			t.Errorf("no %s event for %s: %+v", want.typ, want.obj, evs)
		}
	}
	if len(packs) > 1 {
		_ = be.Remove(ctx, packs[1].Handle)
		if _, err := r.Scrub(ctx, repo.ScrubOptions{}); err != nil {
			t.Fatal(err)
		}
		if evs := s.Take(); !hasEvent(evs, notify.TypeMissing, "packs/"+packs[1].Handle.Name) {
			t.Errorf("deletion not found: %+v", evs)
		}
	}
	// Opening the repository with the replayed segment fails and raises.
	s2 := &repotest.Sink{}
	if _, err := repo.Open(ctx, be, pw, repo.Options{Events: s2}); err == nil || !hasEvent(s2.Take(), notify.TypeNameMismatch, "index/"+fake) {
		t.Fatalf("open with a replayed segment: %v", err)
	}
}

// TestScrubFindsIndexSegmentDeletedOrResized: an index segment deleted
// with no segment superseding it takes its packs out of the index (a
// fresh client then misses their blobs; the packs themselves still hash
// and open, so the pack diff takes them for an interrupted upload); one
// appended to keeps its name. Both are found by the next pass, while a
// merge by another writer (new segment first, then the deletes) is not.
func TestScrubFindsIndexSegmentDeletedOrResized(t *testing.T) {
	ctx := context.Background()
	be, r, s := sinkRepo(t)
	snapshotOf(t, r, randBytes(5000))
	if _, err := r.Scrub(ctx, repo.ScrubOptions{}); err != nil {
		t.Fatal(err)
	}
	// Another writer stores two segments and merges them (as an import
	// or a mount does at its end): no event.
	w := reopen(t, be)
	snapshotOf(t, w, randBytes(5000))
	snapshotOf(t, w, randBytes(5000))
	if _, err := r.Scrub(ctx, repo.ScrubOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := w.MergeOwnIndex(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := r.Scrub(ctx, repo.ScrubOptions{})
	if err != nil || len(res.Problems) != 0 {
		t.Fatalf("scrub after a merge: %+v %v", res, err)
	}
	if evs := s.Take(); len(evs) != 0 {
		t.Fatalf("a merge raised %+v", evs)
	}
	segs := only(t, be, remote.Index)
	if len(segs) < 2 {
		t.Fatalf("%d index segments", len(segs))
	}
	// One segment deleted, another appended to.
	gone, grown := segs[0].Handle, segs[1].Handle
	if err := be.Remove(ctx, gone); err != nil {
		t.Fatal(err)
	}
	b, _ := remote.LoadAll(ctx, be, grown)
	be.Replace(grown, append(b, 0))
	res, err = r.Scrub(ctx, repo.ScrubOptions{})
	if err != nil {
		t.Fatal(err)
	}
	evs := s.Take()
	if !hasEvent(evs, notify.TypeMissing, "index/"+gone.Name) || !hasEvent(evs, notify.TypeResized, "index/"+grown.Name) {
		t.Fatalf("deleted and resized segments: %+v (problems %+v)", evs, res.Problems)
	}
}

// TestScrubQuietAfterMergeChain: between two passes another writer merges
// its own segments twice; the second merge supersedes the first merged
// segment, not the segments that one replaced, so a segment the first
// pass saw is gone with no listed segment naming it. Its packs are all
// still indexed (by the second merge): no event.
func TestScrubQuietAfterMergeChain(t *testing.T) {
	defer repo.SetIndexCompaction(2, 1000)()
	ctx := context.Background()
	be, r, s := sinkRepo(t)
	w := reopen(t, be)
	snapshotOf(t, w, randBytes(5000))
	if _, err := r.Scrub(ctx, repo.ScrubOptions{}); err != nil {
		t.Fatal(err)
	}
	seen := only(t, be, remote.Index)
	for range 6 { // merges at the 3rd and 5th own segment
		snapshotOf(t, w, randBytes(5000))
	}
	for _, fi := range seen {
		if _, err := be.Stat(ctx, fi.Handle); err == nil {
			t.Fatalf("segment %s still stored: no merge chain to test", fi.Handle.Name)
		}
	}
	res, err := r.Scrub(ctx, repo.ScrubOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if evs := s.Take(); len(evs) != 0 || len(res.Problems) != 0 {
		t.Fatalf("merges raised %+v (problems %+v)", evs, res.Problems)
	}
}

// TestScrubQuietAfterRewritesElsewhere: prunes by another client between
// two passes rewrite the index twice; the second rewrite supersedes only
// the segments still stored, so segments the first pass saw are gone with
// no segment naming them. The generation moved: no event.
func TestScrubQuietAfterRewritesElsewhere(t *testing.T) {
	ctx := context.Background()
	be, r, s := watchedRepo(t)
	if _, err := r.Scrub(ctx, repo.ScrubOptions{}); err != nil {
		t.Fatal(err)
	}
	w := reopen(t, be)
	if err := w.SetRetention(ctx, repo.Retention{MaxAge: time.Hour}); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for i := 1; i <= 2; i++ {
		snapshotOf(t, w, randBytes(5000))
		if _, err := w.Prune(ctx, repo.PruneOptions{Now: now.Add(time.Duration(2*i) * time.Hour), Grace: time.Nanosecond}); err != nil {
			t.Fatal(err)
		}
	}
	res, err := r.Scrub(ctx, repo.ScrubOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if evs := s.Take(); len(evs) != 0 {
		t.Fatalf("prunes elsewhere raised %+v (problems %+v)", evs, res.Problems)
	}
}

// TestBreachRollbackOfOwnSnapshotWithoutGuard: a handle with a view dir
// (a mount, an import) stores a snapshot and ends with no Guard after it
// (a mount's Guard runs once per scrub interval); the remote then drops
// that snapshot. The next command's Guard must see a rollback: the view
// followed the client's own snapshots.
func TestBreachRollbackOfOwnSnapshotWithoutGuard(t *testing.T) {
	ctx := context.Background()
	be, r := newRepo(t)
	dir := t.TempDir()
	snapshotOf(t, r, randBytes(1000))
	if _, err := r.Guard(ctx, dir); err != nil {
		t.Fatal(err)
	}
	r.SetViewDir(dir)
	b := snapshotOf(t, r, randBytes(1000))
	if err := be.Remove(ctx, remote.Handle{Type: remote.Snapshot, Name: b.ID.String()}); err != nil {
		t.Fatal(err)
	}
	r2 := reopen(t, be)
	s := &repotest.Sink{}
	r2.SetEvents(s)
	evs, err := r2.Guard(ctx, dir)
	if err != nil || !hasEvent(evs, notify.TypeRollback, "snapshots/") {
		t.Fatalf("rollback of the client's own snapshot not reported: %+v %v", evs, err)
	}
	// Its own snapshots do not make a healthy remote look rolled back,
	// nor does a view dir without a view yet get a partial one.
	be2, w := newRepo(t)
	dir2 := t.TempDir()
	w.SetViewDir(dir2)
	snapshotOf(t, w, randBytes(1000))
	if v, _ := repo.LoadView(dir2); v.RepoID != "" {
		t.Fatalf("a partial view was written: %+v", v)
	}
	if _, err := w.Guard(ctx, dir2); err != nil {
		t.Fatal(err)
	}
	snapshotOf(t, w, randBytes(1000))
	snapshotOf(t, w, randBytes(1000))
	if evs, err := reopen(t, be2).Guard(ctx, dir2); err != nil || len(evs) != 0 {
		t.Fatalf("healthy: %+v %v", evs, err)
	}
}

// guardedHead is a repository with two snapshots, the second its head b,
// that a guard with its view in dir has seen; the tests reopen it, as
// another client would.
func guardedHead(t *testing.T) (be *remote.Mem, dir string, b *repo.Snapshot) {
	t.Helper()
	be, r := newRepo(t)
	dir = t.TempDir()
	snapshotOf(t, r, randBytes(1000))
	b = snapshotOf(t, r, randBytes(1000))
	if _, err := r.Guard(context.Background(), dir); err != nil {
		t.Fatal(err)
	}
	return be, dir, b
}

// TestBreachForgedGenerationDoesNotExcuseRollback: the generation is
// what excuses deleted snapshots (a prune or erase), so an object the
// store made up in generation/ must not count: the dropped head is still
// a rollback, and the forgery is raised.
func TestBreachForgedGenerationDoesNotExcuseRollback(t *testing.T) {
	ctx := context.Background()
	be, dir, b := guardedHead(t)
	if err := be.Remove(ctx, remote.Handle{Type: remote.Snapshot, Name: b.ID.String()}); err != nil {
		t.Fatal(err)
	}
	forged := "0000000000000001"
	if err := be.Save(ctx, remote.Handle{Type: remote.Generation, Name: forged}, randBytes(100)); err != nil {
		t.Fatal(err)
	}
	r2 := reopen(t, be)
	s := &repotest.Sink{}
	r2.SetEvents(s)
	if g, err := r2.Generation(ctx); err != nil || g != 0 {
		t.Fatalf("generation %d, %v; want 0 (the forged one ignored)", g, err)
	}
	evs, err := r2.Guard(ctx, dir)
	if err != nil || !hasEvent(evs, notify.TypeRollback, "snapshots/") {
		t.Fatalf("rollback behind a forged generation not reported: %+v %v", evs, err)
	}
	if !hasEvent(s.Take(), notify.TypeUnexpected, "generation/"+forged) {
		t.Fatal("the forged generation object was not raised")
	}
	// A made-up name does not block the next real step, which counts.
	if n, err := r2.BumpGeneration(ctx, "test", nil, nil, time.Now()); err != nil || n != 2 {
		t.Fatalf("bump past the forged name: %d %v", n, err)
	}
	if g, err := r2.Generation(ctx); err != nil || g != 2 {
		t.Fatalf("generation %d, %v; want 2", g, err)
	}
}

// TestScrubNotBlindedByJunkDeletionMark: an object the store puts in
// trash/ made every scrub pass (and prune) fail, so nothing else was
// detected any more. It is raised and left out; the scrub goes on and
// still finds a deleted pack.
func TestScrubNotBlindedByJunkDeletionMark(t *testing.T) {
	ctx := context.Background()
	be, r, s := sinkRepo(t)
	snapshotOf(t, r, randBytes(5000))
	junk := crypto.Hash([]byte("a mark")).String()
	if err := be.Save(ctx, remote.Handle{Type: remote.Trash, Name: junk}, randBytes(300)); err != nil {
		t.Fatal(err)
	}
	packs := only(t, be, remote.Pack)
	if err := be.Remove(ctx, packs[0].Handle); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Scrub(ctx, repo.ScrubOptions{}); err != nil {
		t.Fatalf("scrub with a junk deletion mark: %v", err)
	}
	evs := s.Take()
	if !hasEvent(evs, notify.TypeMissing, "packs/"+packs[0].Handle.Name) || !hasEvent(evs, notify.TypeNameMismatch, "trash/"+junk) {
		t.Fatalf("events: %+v", evs)
	}
}

// TestJunkInSnapshotsDoesNotBlindTheGuard: a file the store puts in
// snapshots/ under a name that is no id made every snapshot listing
// fail: restore, `snapshots`, and the guard (a warning only), so a
// rollback behind it went unreported, and the scrub found it but raised
// nothing. It is raised and left out.
func TestJunkInSnapshotsDoesNotBlindTheGuard(t *testing.T) {
	ctx := context.Background()
	be, dir, b := guardedHead(t)
	if err := be.Save(ctx, remote.Handle{Type: remote.Snapshot, Name: "notahash"}, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := be.Remove(ctx, remote.Handle{Type: remote.Snapshot, Name: b.ID.String()}); err != nil {
		t.Fatal(err)
	}
	r2 := reopen(t, be)
	s := &repotest.Sink{}
	r2.SetEvents(s)
	if snaps, err := r2.Snapshots(ctx); err != nil || len(snaps) != 1 {
		t.Fatalf("snapshots: %d, %v", len(snaps), err)
	}
	evs, err := r2.Guard(ctx, dir)
	if err != nil || !hasEvent(evs, notify.TypeRollback, "snapshots/") {
		t.Fatalf("rollback behind junk: %+v %v", evs, err)
	}
	s.Take()
	if _, err := r2.Scrub(ctx, repo.ScrubOptions{}); err != nil {
		t.Fatal(err)
	}
	if evs := s.Take(); !hasEvent(evs, notify.TypeUnexpected, "snapshots/notahash") {
		t.Fatalf("scrub events: %+v", evs)
	}
}

// TestBreachUnknownHostReportedOnce: a lock by a host this client never
// saw write is reported; the host is known from then on, so that one
// that only prunes (a lock of a new name every run) is not reported at
// every run.
func TestBreachUnknownHostReportedOnce(t *testing.T) {
	ctx := context.Background()
	be, r := newRepo(t)
	dir := t.TempDir()
	if _, err := r.Guard(ctx, dir); err != nil {
		t.Fatal(err)
	}
	for run := 0; run < 2; run++ {
		name, err := repo.WriteLockObject(ctx, r, repo.LockInfo{Kind: repo.ExclusiveLock, Purpose: "prune", Owner: "admin",
			Host: "admin-box", PID: 1, Created: time.Now(), Time: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		evs, err := r.Guard(ctx, dir)
		if err != nil {
			t.Fatal(err)
		}
		var unknown int
		for _, ev := range evs {
			if ev.Type == notify.TypeUnknownLock {
				unknown++
			}
		}
		if want := 1 - run; unknown != want {
			t.Fatalf("run %d: %d unknown-host events, want %d: %+v", run, unknown, want, evs)
		}
		_ = be.Remove(ctx, remote.Handle{Type: remote.Lock, Name: name})
	}
}

// TestBreachJunkLockRaised: a lock object that does not authenticate
// locks nothing, and is raised rather than skipped in silence.
func TestBreachJunkLockRaised(t *testing.T) {
	ctx := context.Background()
	be, r, s := sinkRepo(t)
	junk := strings.Repeat("ab", 16)
	if err := be.Save(ctx, remote.Handle{Type: remote.Lock, Name: junk}, randBytes(200)); err != nil {
		t.Fatal(err)
	}
	locks, err := r.Locks(ctx)
	if err != nil || len(locks) != 0 {
		t.Fatalf("locks %+v, %v", locks, err)
	}
	evs := s.Take()
	if len(evs) != 1 || evs[0].Type != notify.TypeUnexpected || evs[0].Object != "locks/"+junk {
		t.Fatalf("events %+v", evs)
	}
	// It locks nothing.
	l, err := r.Lock(ctx, repo.LockOptions{Kind: repo.ExclusiveLock, Purpose: "prune", NoRefresh: true})
	if err != nil {
		t.Fatal(err)
	}
	l.Release(ctx)
}

// TestScrubRereadsKnownSegmentsAndSnapshots: an index segment or a
// snapshot this handle already verified, then changed in place by the
// store (same size), is caught by a later pass, not only by a client that
// loads it afresh; and one pass reads only its share of them.
func TestScrubRereadsKnownSegmentsAndSnapshots(t *testing.T) {
	ctx := context.Background()
	be, r, s := watchedRepo(t)
	if _, err := r.Scrub(ctx, repo.ScrubOptions{All: true}); err != nil || len(s.Take()) != 0 {
		t.Fatalf("healthy scrub: %v", err)
	}
	for _, typ := range []remote.Type{remote.Index, remote.Snapshot} {
		h := only(t, be, typ)[0].Handle
		b, _ := remote.LoadAll(ctx, be, h)
		b[len(b)/2] ^= 1
		be.Replace(h, b)
		obj := map[remote.Type]string{remote.Index: "index/", remote.Snapshot: "snapshots/"}[typ] + h.Name
		// A pass reading one object of each kind finds it within as many
		// passes as there are objects.
		n := len(only(t, be, typ))
		var got []notify.Event
		for pass := 0; pass < n && len(got) == 0; pass++ {
			if _, err := r.Scrub(ctx, repo.ScrubOptions{Interval: time.Second, Cycle: time.Hour}); err != nil {
				t.Fatal(err)
			}
			for _, e := range s.Take() {
				if e.Object == obj {
					got = append(got, e)
				}
			}
		}
		if len(got) == 0 {
			t.Fatalf("%s changed in place (same size): no event within %d passes", obj, n)
		}
	}
}

// TestBreachDamagedKeySlot: a key slot changed in place no longer opens
// with its passphrase. Its holder is told that a slot is damaged, not
// only "wrong passphrase", another key still opens, and the scrub raises
// the slot.
func TestBreachDamagedKeySlot(t *testing.T) {
	ctx := context.Background()
	be, r := newRepo(t)
	first := only(t, be, remote.Key)[0].Handle
	second := []byte("a second passphrase")
	if _, err := r.AddKey(ctx, second); err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Open(ctx, be, []byte("not it"), repo.Options{}); err != repo.ErrWrongPassword {
		t.Fatalf("wrong passphrase, slots intact: %v", err)
	}
	b, _ := remote.LoadAll(ctx, be, first)
	slot, err := crypto.ParseSlot(b)
	if err != nil {
		t.Fatal(err)
	}
	slot.Sealed[0] ^= 1
	if b, err = slot.Marshal(); err != nil {
		t.Fatal(err)
	}
	be.Replace(first, b)
	_, err = repo.Open(ctx, be, pw, repo.Options{})
	if !errors.Is(err, repo.ErrWrongPassword) || !strings.Contains(err.Error(), "damaged") || !strings.Contains(err.Error(), first.Name[:12]) {
		t.Fatalf("the damaged slot's passphrase: %v", err)
	}
	r2, err := repo.Open(ctx, be, second, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s := &repotest.Sink{}
	r2.SetEvents(s)
	if _, err := r2.Scrub(ctx, repo.ScrubOptions{All: true}); err != nil {
		t.Fatal(err)
	}
	evs := s.Take()
	if len(evs) != 1 || evs[0].Type != notify.TypeTampered || evs[0].Object != "keys/"+first.Name {
		t.Fatalf("scrub events %+v", evs)
	}
}
