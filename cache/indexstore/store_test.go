package indexstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keepfs/keepfs/policy/notify"
	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/index"
	"github.com/keepfs/keepfs/repo/pack"
	"github.com/keepfs/keepfs/repo/repotest"
)

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// countingBackend counts loads of index segments.
type countingBackend struct {
	remote.Storage
	indexLoads atomic.Int64
}

func (b *countingBackend) Load(ctx context.Context, h remote.Handle, off, n int64) ([]byte, error) {
	if h.Type == remote.Index {
		b.indexLoads.Add(1)
	}
	return b.Storage.Load(ctx, h, off, n)
}

// synthSegment stores a segment of np made-up packs (nothing in packs/:
// the index store never reads them) and returns it and its id. Every
// blob of the i-th pack after the first is also in the pack before
// with probability dup, so duplicates are exercised.
func synthSegment(t testing.TB, be remote.Storage, k *crypto.Key, rng *rand.Rand, np, nb int, supersedes []crypto.ID, dup float64) (crypto.ID, *index.Segment) {
	t.Helper()
	s := &index.Segment{Supersedes: supersedes}
	for i := 0; i < np; i++ {
		var p index.PackEntry
		fillRand(rng, p.ID[:])
		var off uint32
		for j := 0; j < nb; j++ {
			b := pack.Blob{Type: pack.Data, Offset: off, Length: 100 + uint32(rng.IntN(1000))}
			if j%5 == 0 {
				b.Type = pack.Tree
			}
			b.RawLength = b.Length - 16
			fillRand(rng, b.ID[:])
			if i > 0 && rng.Float64() < dup {
				prev := s.Packs[i-1].Blobs
				b.Type, b.ID = prev[j%len(prev)].Type, prev[j%len(prev)].ID
			}
			off += b.Length
			p.Blobs = append(p.Blobs, b)
		}
		p.Size = int64(off) + 100
		s.Packs = append(s.Packs, p)
	}
	return saveSegment(t, be, k, s), s
}

func saveSegment(t testing.TB, be remote.Storage, k *crypto.Key, s *index.Segment) crypto.ID {
	t.Helper()
	sealed := s.Seal(k)
	id := crypto.Hash(sealed)
	if err := be.Save(context.Background(), remote.Handle{Type: remote.Index, Name: id.String()}, sealed); err != nil {
		t.Fatal(err)
	}
	return id
}

func fillRand(rng *rand.Rand, b []byte) {
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
}

// storeRepo opens the repository without its index and gives it the
// index store of dir, loaded.
func storeRepo(t testing.TB, be remote.Storage, dir string) (*repo.Repository, *Store) {
	t.Helper()
	r := repotest.OpenWith(t, be, repo.Options{NoIndex: true})
	s, err := Open(dir, r.Key().StateKey(), quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	r.SetIndexStore(s)
	if err := r.LoadIndex(context.Background()); err != nil {
		t.Fatal(err)
	}
	return r, s
}

func storeDir(s *Store) string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.name
}

// sameIndex checks that st answers as an in-memory index of the same
// repository does.
func sameIndex(t *testing.T, be remote.Storage, st index.Store) {
	t.Helper()
	mem := repotest.Open(t, be).Index()
	if got, want := st.Count(), mem.Count(); got != want {
		t.Fatalf("store counts %d blobs, memory %d", got, want)
	}
	mp, sp := mem.Packs(), st.Packs()
	if len(mp) != len(sp) {
		t.Fatalf("store has %d packs, memory %d", len(sp), len(mp))
	}
	holders := map[crypto.ID]map[crypto.ID]pack.Blob{} // blob -> pack -> entry
	for i, p := range mp {
		if sp[i].ID != p.ID || sp[i].Size != p.Size {
			t.Fatalf("pack %d: store %v, memory %v", i, sp[i].ID.Short(), p.ID.Short())
		}
		mb, sb := mem.PackBlobs(p.ID), st.PackBlobs(p.ID)
		if fmt.Sprint(mb) != fmt.Sprint(sb) {
			t.Fatalf("pack %s: blobs differ", p.ID.Short())
		}
		for _, b := range mb {
			if holders[b.ID] == nil {
				holders[b.ID] = map[crypto.ID]pack.Blob{}
			}
			holders[b.ID][p.ID] = b
		}
	}
	n := 0
	mem.Each(func(l index.Location) {
		n++
		got, ok := st.Lookup(l.Type, l.ID)
		if !ok || !st.Has(l.Type, l.ID) {
			t.Fatalf("store lacks %s", l.ID.Short())
		}
		// A duplicated blob may be found in any pack holding it.
		if want, ok := holders[l.ID][got.Pack]; !ok || want != got.Blob {
			t.Fatalf("blob %s: store says %+v, not where it is", l.ID.Short(), got)
		}
	})
	var absent crypto.ID
	absent[0] = 1
	if st.Has(pack.Data, absent) || mem.Has(pack.Data, absent) {
		t.Fatal("a made-up blob is indexed")
	}
	if n == 0 {
		t.Fatal("nothing indexed")
	}
}

func TestIndexStoreLoadsOnlyNewSegments(t *testing.T) {
	ctx := context.Background()
	be := &countingBackend{Storage: remote.NewMem()}
	r0 := repotest.Create(t, be)
	k := r0.Key()
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 5; i++ {
		synthSegment(t, be, k, rng, 3, 20, nil, 0.1)
	}
	dir := t.TempDir()
	r, s := storeRepo(t, be, dir)
	sameIndex(t, be, r.Index())
	filled := storeDir(s)
	s.Close()

	// Three more segments: a restart loads those three only.
	for i := 0; i < 3; i++ {
		synthSegment(t, be, k, rng, 3, 20, nil, 0.1)
	}
	before := be.indexLoads.Load()
	r, s = storeRepo(t, be, dir)
	if n := be.indexLoads.Load() - before; n != 3 {
		t.Fatalf("loaded %d segments, want the 3 new ones", n)
	}
	if storeDir(s) != filled {
		t.Fatal("the store was refilled")
	}
	sameIndex(t, be, r.Index())

	// Nothing new: nothing loaded.
	before = be.indexLoads.Load()
	if err := r.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	if n := be.indexLoads.Load() - before; n != 0 {
		t.Fatalf("loaded %d segments, want none", n)
	}
	// Segments this handle stores go in as they are stored.
	id, _, err := r.SaveBlob(ctx, pack.Data, []byte("stored through the handle"))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if !r.Index().Has(pack.Data, id) {
		t.Fatal("a flushed blob is not in the store")
	}
	before = be.indexLoads.Load()
	if err := r.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	if n := be.indexLoads.Load() - before; n != 0 {
		t.Fatalf("loaded %d segments after its own flush, want none", n)
	}
	sameIndex(t, be, r.Index())
	s.Close()
}

func TestIndexStoreSupersededSegments(t *testing.T) {
	ctx := context.Background()
	be := remote.NewMem()
	r0 := repotest.Create(t, be)
	k := r0.Key()
	rng := rand.New(rand.NewPCG(3, 4))
	var ids []crypto.ID
	var all []index.PackEntry
	for i := 0; i < 4; i++ {
		id, s := synthSegment(t, be, k, rng, 2, 10, nil, 0.2)
		ids = append(ids, id)
		all = append(all, s.Packs...)
	}
	dir := t.TempDir()
	r, s := storeRepo(t, be, dir)
	filled := storeDir(s)

	// A merge: one segment naming the packs of the first three and
	// superseding them, the old ones still listed (a merge under way).
	merged := saveSegment(t, be, k, &index.Segment{Supersedes: ids[:3], Packs: all[:6]})
	if err := r.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := s.State()
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids[:3] {
		if live, ok := st.Segments[id]; !ok || live {
			t.Fatalf("superseded segment %s: held %v, live %v", id.Short(), ok, live)
		}
	}
	if !st.Segments[merged] || !st.Segments[ids[3]] {
		t.Fatal("live segments not held as live")
	}
	if storeDir(s) != filled {
		t.Fatal("a merge made the store refill")
	}
	sameIndex(t, be, s)
	// A fresh store, seeing the superseded and superseding segments at
	// once, indexes the same and remembers the superseded ones.
	r2, s2 := storeRepo(t, be, t.TempDir())
	sameIndex(t, be, r2.Index())
	if st, _ := s2.State(); len(st.Segments) != 5 || st.Segments[ids[0]] {
		t.Fatalf("a fresh store holds %v", st.Segments)
	}
	s2.Close()

	// The merge finishes: the old segments go, and so do their records.
	for _, id := range ids[:3] {
		if err := be.Remove(ctx, remote.Handle{Type: remote.Index, Name: id.String()}); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	st, _ = s.State()
	if len(st.Segments) != 2 {
		t.Fatalf("holds %d segments, want 2", len(st.Segments))
	}
	if storeDir(s) != filled {
		t.Fatal("a merge made the store refill")
	}
	sameIndex(t, be, s)

	s.Close()

	// A segment that takes packs out of the index (a prune's rewrite)
	// cannot be applied: the store is refilled, and the packs are gone.
	r, s = storeRepo(t, be, dir)
	var names []crypto.ID
	_ = be.List(ctx, remote.Index, func(fi remote.Info) error {
		id, _ := crypto.ParseID(fi.Handle.Name)
		names = append(names, id)
		return nil
	})
	saveSegment(t, be, k, &index.Segment{Supersedes: names, Packs: all[:2]})
	for _, id := range names {
		_ = be.Remove(ctx, remote.Handle{Type: remote.Index, Name: id.String()})
	}
	before := storeDir(s)
	if err := r.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	if storeDir(s) == before {
		t.Fatal("packs left the index without a refill")
	}
	if s.HasPack(all[5].ID) || !s.HasPack(all[1].ID) {
		t.Fatal("the refilled store does not match the rewrite")
	}
	sameIndex(t, be, s)
	s.Close()
}

func TestIndexStoreRefills(t *testing.T) {
	ctx := context.Background()
	be := &countingBackend{Storage: remote.NewMem()}
	r0 := repotest.Create(t, be)
	k := r0.Key()
	rng := rand.New(rand.NewPCG(5, 6))
	for i := 0; i < 4; i++ {
		synthSegment(t, be, k, rng, 2, 10, nil, 0)
	}
	dir := t.TempDir()
	_, s := storeRepo(t, be, dir)
	s.Close()

	// Another client's prune or erase moved the generation on.
	gen, err := r0.BumpGeneration(ctx, "test", nil, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	before := be.indexLoads.Load()
	r, s := storeRepo(t, be, dir)
	if n := be.indexLoads.Load() - before; n != 4 {
		t.Fatalf("after a generation change loaded %d segments, want all 4", n)
	}
	st, _ := s.State()
	if st.Generation != gen || st.Dirty || !st.Filled {
		t.Fatalf("state after refill: %+v", st)
	}
	sameIndex(t, be, r.Index())

	// A change interrupted: the dirty mark makes the next load refill.
	if err := s.setMeta(ixDirty, []byte{1}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	before = be.indexLoads.Load()
	r, s = storeRepo(t, be, dir)
	if n := be.indexLoads.Load() - before; n != 4 {
		t.Fatalf("a dirty store loaded %d segments, want all 4", n)
	}
	if st, _ := s.State(); st.Dirty {
		t.Fatal("still dirty after the refill")
	}
	sameIndex(t, be, r.Index())

	// Lookups go on against the old content while a refill runs.
	id0 := s.Packs()[0].ID
	blob := s.PackBlobs(id0)[0]
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if !s.Has(blob.Type, blob.ID) {
				t.Error("a blob vanished during a refill")
				return
			}
		}
	}()
	gen, err = r0.BumpGeneration(ctx, "test", nil, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := r.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	if st, _ := s.State(); st.Generation != gen {
		t.Fatalf("generation %d after a refill, want %d", st.Generation, gen)
	}
	s.Close()
}

// segRig is a repository holding n synthetic segments (ids, with their
// packs in order in packs) and a store-backed handle r on it whose events
// go to sink; creator is the handle that made the repository, another
// client.
type segRig struct {
	be      *remote.Mem
	k       *crypto.Key
	rng     *rand.Rand
	creator *repo.Repository
	ids     []crypto.ID
	packs   []index.PackEntry
	r       *repo.Repository
	s       *Store
	sink    *repotest.Sink
}

func newSegRig(t *testing.T, seed uint64, n int) *segRig {
	t.Helper()
	g := &segRig{be: remote.NewMem(), rng: rand.New(rand.NewPCG(seed, seed+1)), sink: &repotest.Sink{}}
	g.creator = repotest.Create(t, g.be)
	g.k = g.creator.Key()
	for range n {
		g.add(t)
	}
	g.r, g.s = storeRepo(t, g.be, t.TempDir())
	t.Cleanup(func() { g.s.Close() })
	g.r.SetEvents(g.sink)
	return g
}

// add stores one more synthetic segment of two packs.
func (g *segRig) add(t *testing.T) (crypto.ID, *index.Segment) {
	t.Helper()
	id, s := synthSegment(t, g.be, g.k, g.rng, 2, 10, nil, 0)
	g.ids = append(g.ids, id)
	g.packs = append(g.packs, s.Packs...)
	return id, s
}

// TestIndexStoreSegmentDeletedRaises: a live segment gone from the
// listing with no segment superseding it, at the same generation (no
// prune or erase), was deleted by the store, not by a writer (which
// stores the superseding segment first): the packs it named leave the
// index, so loading raises object-missing. A merge does not.
func TestIndexStoreSegmentDeletedRaises(t *testing.T) {
	ctx := context.Background()
	g := newSegRig(t, 5, 4)
	be, k, r, sink, ids, all := g.be, g.k, g.r, g.sink, g.ids, g.packs
	// A merge of the first two, then their deletion: quiet.
	saveSegment(t, be, k, &index.Segment{Supersedes: ids[:2], Packs: all[:4]})
	if err := r.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids[:2] {
		_ = be.Remove(ctx, remote.Handle{Type: remote.Index, Name: id.String()})
	}
	if err := r.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	if evs := sink.Take(); len(evs) != 0 {
		t.Fatalf("a merge raised %+v", evs)
	}
	// Two merges between loads, the second naming only the first (as a
	// writer's own merges do): ids[2] is gone with no listed segment
	// superseding it, but its packs are all still named: quiet.
	m1 := saveSegment(t, be, k, &index.Segment{Supersedes: ids[2:3], Packs: all[4:6]})
	_ = be.Remove(ctx, remote.Handle{Type: remote.Index, Name: ids[2].String()})
	saveSegment(t, be, k, &index.Segment{Supersedes: []crypto.ID{m1}, Packs: all[4:6]})
	_ = be.Remove(ctx, remote.Handle{Type: remote.Index, Name: m1.String()})
	if err := r.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	if evs := sink.Take(); len(evs) != 0 {
		t.Fatalf("a chain of merges raised %+v", evs)
	}
	// The store deletes a live segment.
	_ = be.Remove(ctx, remote.Handle{Type: remote.Index, Name: ids[3].String()})
	if err := r.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	evs := sink.Take()
	if len(evs) != 1 || evs[0].Type != notify.TypeMissing || evs[0].Object != "index/"+ids[3].String() {
		t.Fatalf("deleted segment raised %+v", evs)
	}
}

// TestIndexStoreOwnRewriteQuiet: this handle's own prune or erase (the
// generation step it made itself, BumpGeneration) may delete segments no
// stored segment names (a second rewrite supersedes only what is still
// stored): no event.
func TestIndexStoreOwnRewriteQuiet(t *testing.T) {
	ctx := context.Background()
	g := newSegRig(t, 7, 2)
	be, k, r, sink, ids, all := g.be, g.k, g.r, g.sink, g.ids, g.packs
	saveSegment(t, be, k, &index.Segment{Packs: all})
	for _, id := range ids {
		_ = be.Remove(ctx, remote.Handle{Type: remote.Index, Name: id.String()})
	}
	if _, err := r.BumpGeneration(ctx, "test", nil, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	if evs := sink.Take(); len(evs) != 0 {
		t.Fatalf("an own rewrite raised %+v", evs)
	}
}

// TestPickUpSegmentsIntoStore: segments another client stored after the
// load are added to the store, superseded ones left out, and a later full
// load agrees with an in-memory index, with no event.
func TestPickUpSegmentsIntoStore(t *testing.T) {
	ctx := context.Background()
	g := newSegRig(t, 9, 1)
	be, k, r, s, sink := g.be, g.k, g.r, g.s, g.sink
	a, sa := g.add(t)
	b, sb := g.add(t)
	merged := saveSegment(t, be, k, &index.Segment{Supersedes: []crypto.ID{a, b}, Packs: append(append([]index.PackEntry{}, sa.Packs...), sb.Packs...)})
	_ = be.Remove(ctx, remote.Handle{Type: remote.Index, Name: a.String()})
	c, sc := g.add(t)
	if s.HasPack(sc.Packs[0].ID) || s.HasPack(sa.Packs[0].ID) {
		t.Fatal("packs stored after the load are indexed before any pick-up")
	}
	n, err := r.PickUpSegments(ctx)
	if err != nil || n != 2 {
		t.Fatalf("pick-up: %d, %v; want the merged segment and %s", n, err, c.Short())
	}
	st, err := s.State()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := st.Segments[b]; ok {
		t.Fatal("a superseded segment was picked up")
	}
	if !st.Segments[merged] || !st.Segments[c] {
		t.Fatalf("segments held after the pick-up: %v", st.Segments)
	}
	for _, p := range append(append(sa.Packs, sb.Packs...), sc.Packs...) {
		if !s.HasPack(p.ID) {
			t.Fatalf("pack %s not indexed after the pick-up", p.ID.Short())
		}
	}
	_ = be.Remove(ctx, remote.Handle{Type: remote.Index, Name: b.String()})
	if err := r.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	sameIndex(t, be, s)
	if evs := sink.Take(); len(evs) != 0 {
		t.Fatalf("events: %+v", evs)
	}

	// Once a prune or erase moved the generation, segments listed may
	// name packs it deletes: nothing is picked up until a full load.
	if _, err := g.creator.BumpGeneration(ctx, "test", nil, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	_, sd := g.add(t)
	if n, err := r.PickUpSegments(ctx); err != nil || n != 0 || s.HasPack(sd.Packs[0].ID) {
		t.Fatalf("pick-up after the generation moved: %d, %v; want nothing", n, err)
	}
	if err := r.LoadIndex(ctx); err != nil || !s.HasPack(sd.Packs[0].ID) {
		t.Fatalf("a full load: %v", err)
	}
}

// TestReloadIndexLeavesOutBadSegments: a segment replayed under another
// name fails LoadIndex (and raises); ReloadIndex, a mount's reload after a
// rollback, leaves it out and loads the rest, in an incremental load and
// in a refill alike, so the mount can go on bringing itself in line.
func TestReloadIndexLeavesOutBadSegments(t *testing.T) {
	ctx := context.Background()
	g := newSegRig(t, 11, 2)
	be, r, sink := g.be, g.r, g.sink
	if err := r.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	fresh, s := g.add(t)
	seg, _ := remote.LoadAll(ctx, be, remote.Handle{Type: remote.Index, Name: g.ids[0].String()})
	replay := strings.Repeat("cd", 32)
	if err := be.Save(ctx, remote.Handle{Type: remote.Index, Name: replay}, seg); err != nil {
		t.Fatal(err)
	}
	if err := r.LoadIndex(ctx); !errors.Is(err, repo.ErrNameMismatch) {
		t.Fatalf("LoadIndex beside a replayed segment: %v", err)
	}
	if evs := sink.Take(); len(evs) == 0 || evs[0].Type != notify.TypeNameMismatch {
		t.Fatalf("events %+v", evs)
	}
	for _, refill := range []bool{false, true} {
		if refill {
			// The segment before the last gone: its packs leave the index,
			// so the store is refilled from the listing.
			_ = be.Remove(ctx, remote.Handle{Type: remote.Index, Name: g.ids[1].String()})
		}
		if err := r.ReloadIndex(ctx); err != nil {
			t.Fatalf("refill %v: %v", refill, err)
		}
		if !r.Index().Has(s.Packs[0].Blobs[0].Type, s.Packs[0].Blobs[0].ID) {
			t.Fatalf("refill %v: the good segment %s was not loaded", refill, fresh.Short())
		}
		st, err := g.s.State()
		if err != nil {
			t.Fatal(err)
		}
		for id := range st.Segments {
			if id.String() == replay {
				t.Fatalf("refill %v: the replayed segment is held", refill)
			}
		}
		if _, ok := st.Segments[fresh]; !ok {
			t.Fatalf("refill %v: the good segment is not held", refill)
		}
	}
	// LoadIndex is strict again.
	if err := r.LoadIndex(ctx); !errors.Is(err, repo.ErrNameMismatch) {
		t.Fatalf("LoadIndex after ReloadIndex: %v", err)
	}
}
