package snapshot

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/keepfs/keepfs/policy/ignore"
	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/tree"
)

// memHost is memNS as the mount.
type memHost struct{ ns *memNS }

func (h memHost) CommitPending(context.Context) error { return nil }
func (h memHost) View() (Namespace, func())           { return h.ns, func() {} }

// memQueue uploads what it is set to at once into r; setErr fails that
// many of the next Sets.
type memQueue struct {
	r       *memWriter
	need    []crypto.ID
	seq     uint64 // of the walk that set need
	stopSeq uint64
	setErr  []error
	held    int
	onDrain func() // if set, called at the start of every drain
}

func (q *memQueue) Set(need []crypto.ID, seq uint64) error {
	if len(q.setErr) > 0 {
		err := q.setErr[0]
		q.setErr = q.setErr[1:]
		return err
	}
	q.need, q.seq = need, seq
	return nil
}

func (q *memQueue) Stop(seq uint64) { q.stopSeq = max(q.stopSeq, seq) }

func (q *memQueue) Drain(context.Context) error {
	if q.onDrain != nil {
		q.onDrain()
	}
	if q.seq < q.stopSeq {
		return errors.New("stopped")
	}
	for _, id := range q.need {
		if !q.r.has[id] {
			q.r.stats.BlobsNew++
			q.r.stats.BytesStored += 100
		}
		q.r.has[id] = true
	}
	q.need = nil
	return nil
}

func (q *memQueue) Wake() {}

func (q *memQueue) Hold() func() {
	q.held++
	return func() { q.held-- }
}

// memWriter is memRepo taking trees and snapshots.
type memWriter struct {
	*memRepo
	snaps []*repo.Snapshot
	saved []repo.SnapshotStats // each snapshot's stats as it was stored
	stats repo.WriteStats
}

func (w *memWriter) SaveTree(_ context.Context, b []byte) error {
	id := chunkID(b)
	if !w.has[id] {
		w.stats.BlobsNew++
	}
	w.has[id] = true
	t, err := tree.Decode(b)
	if err != nil {
		return err
	}
	w.trees[id] = t
	return nil
}

func (w *memWriter) SaveSnapshot(_ context.Context, sn *repo.Snapshot) error {
	sn.ID = crypto.Hash([]byte(fmt.Sprint(len(w.snaps), sn.Tree)))
	w.snaps = append(w.snaps, sn)
	w.saved = append(w.saved, sn.Stats)
	return nil
}

func (w *memWriter) Stats() repo.WriteStats { return w.stats }

type schedFixture struct {
	ns *memNS
	w  *memWriter
	q  *memQueue
	s  *Scheduler
}

func newSchedFixture() *schedFixture {
	f := &schedFixture{ns: newMemNS(), w: &memWriter{memRepo: newMemRepo()}}
	f.q = &memQueue{r: f.w}
	st := newMemStore()
	trees := NewTrees(TreesConfig{Store: st, Repository: f.w, Parents: nsParents{f.ns}, Log: quiet()})
	f.s = NewScheduler(SchedulerConfig{Host: memHost{f.ns}, Queue: f.q, Repository: f.w, Store: st, Trees: trees,
		Interval: time.Hour, Now: time.Now, Log: quiet()})
	return f
}

func (f *schedFixture) sync(t *testing.T) *repo.Snapshot {
	t.Helper()
	sn, err := f.s.Sync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return sn
}

// write puts a file in directory d and counts the change, as a commit
// does.
func (f *schedFixture) write(t *testing.T, d uint64, name, content string) {
	t.Helper()
	f.ns.file(d, name, content)
	if err := f.s.trees.DirChanged(d); err != nil {
		t.Fatal(err)
	}
	f.s.Changed()
}

func TestSchedulerStoresOnlyWhenChanged(t *testing.T) {
	f := newSchedFixture()
	d := f.ns.mkdir(1, "d")
	f.ns.file(d, "a", "content a")
	first := f.sync(t)
	if len(f.w.snaps) != 1 || f.s.Pending() {
		t.Fatalf("%d snapshots stored, pending %v; want 1, false", len(f.w.snaps), f.s.Pending())
	}
	built, _, _ := f.s.Counters()
	if sn := f.sync(t); sn != first || len(f.w.snaps) != 1 {
		t.Fatal("a Sync with nothing changed stored a snapshot")
	}
	if b, _, _ := f.s.Counters(); b != built {
		t.Fatal("a Sync with nothing changed walked")
	}
	// A change the walk finds the same tree for: no new snapshot.
	f.s.Changed()
	if sn := f.sync(t); sn != first || len(f.w.snaps) != 1 {
		t.Fatal("an unchanged tree was stored again")
	}
	// Unless forced.
	f.s.Force()
	sn := f.sync(t)
	if sn == first || len(f.w.snaps) != 2 || *sn.Parent != first.ID || !sn.Time.After(first.Time.Truncate(time.Second)) {
		t.Fatal("a forced snapshot was not stored after the last")
	}
	f.write(t, d, "b", "content b")
	if third := f.sync(t); len(f.w.snaps) != 3 || third.Tree == sn.Tree || f.s.Last() != third {
		t.Fatal("a change was not stored")
	}
	if f.q.held != 0 {
		t.Fatal("the queue was left held")
	}
}

func TestSchedulerRetriesAVanishedChunk(t *testing.T) {
	f := newSchedFixture()
	f.ns.file(1, "a", "content a")
	f.q.setErr = []error{fmt.Errorf("chunk x: %w", ErrChunkVanished)}
	if sn := f.sync(t); sn == nil || len(f.w.snaps) != 1 {
		t.Fatal("no snapshot after a vanished chunk")
	}
	f.s.Changed()
	f.q.setErr = []error{errors.New("other failure")}
	if _, err := f.s.Sync(context.Background()); err == nil {
		t.Fatal("another error was retried away")
	}
}

func TestSchedulerCallbacksMayCallBack(t *testing.T) {
	f := newSchedFixture()
	f.ns.file(1, "a", "content a")
	var got []*repo.Snapshot
	f.s.OnSnapshot(func(sn *repo.Snapshot) {
		// Would deadlock if callbacks ran with the run lock held.
		again, err := f.s.Sync(context.Background())
		if err != nil || again != sn {
			t.Errorf("Sync from a callback: %v, %v", again, err)
		}
		got = append(got, sn)
	})
	sn := f.sync(t)
	if len(got) != 1 || got[0] != sn {
		t.Fatalf("callbacks heard %v, want the one snapshot", got)
	}
}

func TestSchedulerRestoreCountsAChange(t *testing.T) {
	f := newSchedFixture()
	f.ns.file(1, "a", "content a")
	first := f.sync(t)
	g := newSchedFixture()
	g.ns, g.w, g.q.r = f.ns, f.w, f.w
	g.s.cfg.Host, g.s.cfg.Repository = memHost{f.ns}, f.w
	g.s.Restore(first, []string{"/lost"})
	if !g.s.Pending() || g.s.Last() != first || len(g.s.Lost()) != 1 {
		t.Fatal("Restore did not count a change or keep the state")
	}
	if sn := g.sync(t); sn != first || len(f.w.snaps) != 1 || len(g.s.Lost()) != 0 {
		t.Fatal("the first snapshot after a restart did not compare with the last one")
	}
}

// A .gdprignore that changes while a snapshot's chunks upload stops the
// upload; Sync walks again under the new rules and stores only that walk's
// snapshot, so the excluded file's chunk never reaches the repository. A
// periodic snapshot leaves the new walk to its next period.
func TestSchedulerWalksAgainWhenRulesChange(t *testing.T) {
	for _, periodic := range []bool{false, true} {
		f := newSchedFixture()
		f.ns.file(1, "keep", "kept content")
		f.ns.file(1, "scan.raw", "excluded content")
		secret := chunkID([]byte("excluded content"))
		drains := 0
		f.q.onDrain = func() {
			drains++
			if drains == 1 {
				f.ns.file(1, ignore.FileName, "*.raw\n")
				f.s.RulesChanged()
			}
		}
		sn, err := f.s.ifChanged(context.Background(), true, !periodic)
		if periodic {
			if !errors.Is(err, ErrRulesChanged) || len(f.w.snaps) != 0 || !f.s.Pending() {
				t.Fatalf("periodic: %v, %d snapshots, pending %v; want ErrRulesChanged, none, pending",
					err, len(f.w.snaps), f.s.Pending())
			}
			if sn, err = f.s.Sync(context.Background()); err != nil {
				t.Fatal(err)
			}
		} else if err != nil {
			t.Fatal(err)
		}
		if len(f.w.snaps) != 1 || f.w.has[secret] {
			t.Fatalf("periodic %v: %d snapshots stored, excluded chunk in the repository %v",
				periodic, len(f.w.snaps), f.w.has[secret])
		}
		if got := names(t, f.w.memRepo, sn.Tree); !slices.Equal(got, []string{ignore.FileName, "keep"}) {
			t.Fatalf("periodic %v: snapshot holds %v", periodic, got)
		}
	}
}

// A snapshot's stats, stored with it, count the data its drain uploaded as
// well as its trees.
func TestSchedulerCountsDrainedData(t *testing.T) {
	f := newSchedFixture()
	f.ns.file(1, "a", "content a")
	f.ns.file(1, "b", "content b")
	sn := f.sync(t)
	// Two chunks and the root's tree.
	if sn.Stats.BlobsNew != 3 || sn.Stats.BytesAdded != 200 {
		t.Fatalf("stats %+v; want 3 new blobs, 200 bytes of data", sn.Stats)
	}
	if stored := f.w.saved[len(f.w.saved)-1]; stored != sn.Stats {
		t.Fatalf("stored stats %+v, returned %+v", stored, sn.Stats)
	}
}

// Snapshots are named by the second, and a point in time resolves to the
// newest snapshot at or before it: a snapshot stamped later than the
// moment its content was cut would hide, at the times in between, every
// file closed there. Back-to-back syncs must not push the stamps ahead of
// the clock.
func TestSchedulerBackToBackSyncsAreNotStampedAhead(t *testing.T) {
	f := newSchedFixture()
	d := f.ns.mkdir(1, "d")
	var prev *repo.Snapshot
	for i := range 4 {
		f.write(t, d, fmt.Sprint("f", i), fmt.Sprint("content ", i))
		before := time.Now()
		sn := f.sync(t)
		if sn.Time.After(time.Now()) || sn.Time.Before(before) {
			t.Fatalf("sync %d: stamped %s, taken between %s and %s", i, sn.Time.Format(time.RFC3339Nano),
				before.UTC().Format(time.RFC3339Nano), time.Now().UTC().Format(time.RFC3339Nano))
		}
		if prev != nil && !sn.Time.After(prev.Time) {
			t.Fatalf("sync %d: stamped %s, not after the previous %s", i, sn.Time.Format(time.RFC3339Nano), prev.Time.Format(time.RFC3339Nano))
		}
		prev = sn
	}
}

// Snapshots of one second keep their own times (named NAME, NAME-1 …):
// the second is neither pushed a second ahead of the clock nor waited
// out. A clock that stands still still gives a child a later time.
func TestSchedulerSameSecondSnapshotsKeepTheirTimes(t *testing.T) {
	f := newSchedFixture()
	now := time.Date(2026, 12, 5, 8, 0, 0, 0, time.UTC)
	f.s.cfg.Now = func() time.Time { return now }
	d := f.ns.mkdir(1, "d")
	var prev *repo.Snapshot
	for i := range 3 {
		f.write(t, d, fmt.Sprint("f", i), fmt.Sprint("content ", i))
		sn := f.sync(t)
		want := now
		if prev != nil {
			want = prev.Time.Add(time.Nanosecond)
		}
		if !sn.Time.Equal(want) {
			t.Fatalf("sync %d: stamped %s, want %s", i, sn.Time.Format(time.RFC3339Nano), want.Format(time.RFC3339Nano))
		}
		prev = sn
	}
	if got := repo.UniqueNames(f.w.snaps); !slices.Equal(got, []string{"2026-12-05T080000Z", "2026-12-05T080000Z-1", "2026-12-05T080000Z-2"}) {
		t.Fatalf("names %v", got)
	}
}

// The stamp is when the walk cut the namespace, not when the upload that
// follows ended: a file closed during a long upload is not in the
// snapshot, so the snapshot must not claim a time after that close.
func TestSchedulerStampsTheCutNotTheDrain(t *testing.T) {
	f := newSchedFixture()
	now := time.Date(2026, 12, 5, 8, 0, 0, 0, time.UTC)
	f.s.cfg.Now = func() time.Time { return now }
	f.q.onDrain = func() { now = now.Add(10 * time.Minute) }
	f.ns.file(1, "a", "content a")
	cut := now
	if sn := f.sync(t); !sn.Time.Equal(cut) {
		t.Fatalf("stamped %s, the walk cut at %s", sn.Time.Format(time.RFC3339Nano), cut.Format(time.RFC3339Nano))
	}
}

// pendingHost commits, at the next CommitPending, what an fsync promised:
// a change counted only once the snapshot has begun.
type pendingHost struct {
	memHost
	commit func()
}

func (h *pendingHost) CommitPending(context.Context) error {
	if h.commit != nil {
		h.commit()
		h.commit = nil
	}
	return nil
}

// A change counted by the snapshot's own commit of pending fsyncs, right
// after a snapshot in the same second, must not get the snapshot stamped
// ahead of the clock either.
func TestSchedulerChangeFromPendingCommitIsNotStampedAhead(t *testing.T) {
	f := newSchedFixture()
	h := &pendingHost{memHost: memHost{f.ns}}
	f.s.cfg.Host = h
	d := f.ns.mkdir(1, "d")
	f.ns.file(d, "a", "content a")
	first := f.sync(t)
	h.commit = func() {
		f.ns.file(d, "b", "fsynced b")
		if err := f.s.trees.DirChanged(d); err != nil {
			t.Error(err)
		}
		f.s.Changed()
	}
	sn := f.sync(t)
	if sn == first {
		t.Fatal("the committed fsync was not snapshotted")
	}
	if now := time.Now(); sn.Time.After(now) || !sn.Time.After(first.Time) {
		t.Fatalf("stamped %s at %s, after %s", sn.Time.Format(time.RFC3339Nano), now.UTC().Format(time.RFC3339Nano), first.Time.Format(time.RFC3339Nano))
	}
}

// A snapshot whose parent the remote lost (it went back to an older copy
// of itself) is not stored on the walk that deduplicated against the
// stale index: ParentGone brings the mount in line, and the walk taken
// again stores a snapshot without that parent.
func TestSchedulerParentGoneWalksAgain(t *testing.T) {
	f := newSchedFixture()
	d := f.ns.mkdir(1, "d")
	var asked []*repo.Snapshot
	lost := map[crypto.ID]bool{}
	f.s.cfg.ParentGone = func(_ context.Context, p *repo.Snapshot) (bool, error) {
		asked = append(asked, p)
		if !lost[p.ID] {
			return false, nil
		}
		f.s.DropTrees()
		f.s.ForgetLast(p)
		return true, nil
	}
	f.write(t, d, "a", "one")
	first := f.sync(t)
	if len(asked) != 0 {
		t.Fatalf("asked about a parent for the first snapshot: %v", asked)
	}
	f.write(t, d, "b", "two")
	second := f.sync(t)
	if len(asked) != 1 || asked[0] != first || second.Parent == nil || *second.Parent != first.ID {
		t.Fatalf("second snapshot: asked %v, parent %v", asked, second.Parent)
	}
	lost[second.ID] = true
	f.s.Force()
	stored := len(f.w.snaps)
	third := f.sync(t)
	if len(asked) != 2 || asked[1] != second {
		t.Fatalf("asked %v", asked)
	}
	if third == second || third.Parent != nil || len(f.w.snaps) != stored+1 {
		t.Fatalf("third snapshot %+v (parent %v), %d stored", third, third.Parent, len(f.w.snaps)-stored)
	}
}

// A Sync with nothing changed returns the last snapshot, unless the remote
// lost it: then the tree is stored again. A periodic pass with nothing
// changed does not ask.
func TestSchedulerSyncOfUnchangedTreeChecksTheLast(t *testing.T) {
	f := newSchedFixture()
	d := f.ns.mkdir(1, "d")
	f.write(t, d, "a", "one")
	first := f.sync(t)
	asked := 0
	gone := false
	f.s.cfg.ParentGone = func(_ context.Context, p *repo.Snapshot) (bool, error) {
		asked++
		if !gone {
			return false, nil
		}
		gone = false
		f.s.DropTrees()
		f.s.ForgetLast(p)
		return true, nil
	}
	if sn, err := f.s.ifChanged(context.Background(), false, false); err != nil || sn != first || asked != 0 {
		t.Fatalf("periodic pass: %v, %v, asked %d", sn, err, asked)
	}
	if sn := f.sync(t); sn != first || asked != 1 {
		t.Fatalf("sync of an unchanged tree: %v, asked %d", sn, asked)
	}
	gone = true
	stored := len(f.w.snaps)
	if sn := f.sync(t); sn == first || len(f.w.snaps) != stored+1 || asked != 2 {
		t.Fatalf("sync once the last is gone: %v, %d stored, asked %d", sn, len(f.w.snaps)-stored, asked)
	}
}
