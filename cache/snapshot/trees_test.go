package snapshot

import (
	"bytes"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/keepfs/keepfs/cache/meta"
	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/crypto"
)

// memStore is a state directory in memory; failWrites fails that many of
// the next updates.
type memStore struct {
	kv         map[string][]byte
	failWrites int
}

func newMemStore() *memStore { return &memStore{kv: map[string][]byte{}} }

type memTxn struct{ kv map[string][]byte }

func (t memTxn) Has(key []byte) (bool, error) {
	_, ok := t.kv[string(key)]
	return ok, nil
}
func (t memTxn) Set(key, value []byte) error {
	t.kv[string(key)] = bytes.Clone(value)
	return nil
}
func (t memTxn) Delete(key []byte) error {
	delete(t.kv, string(key))
	return nil
}

func (s *memStore) Update(fn func(Txn) error) error {
	if s.failWrites > 0 {
		s.failWrites--
		return errors.New("injected write failure")
	}
	work := maps.Clone(s.kv)
	if err := fn(memTxn{work}); err != nil {
		return err
	}
	s.kv = work
	return nil
}

func (s *memStore) Scan(prefix []byte, values bool, fn func(k, v []byte) error) error {
	keys := slices.Sorted(maps.Keys(s.kv))
	for _, k := range keys {
		if !strings.HasPrefix(k, string(prefix)) {
			continue
		}
		var v []byte
		if values {
			v = s.kv[k]
		}
		if err := fn([]byte(k), v); err != nil {
			return err
		}
	}
	return nil
}

// stored returns the directories the store holds a tree for.
func (s *memStore) stored(t *testing.T) []uint64 {
	t.Helper()
	var out []uint64
	for k := range s.kv {
		if ino, ok := meta.InoFromTreeKey([]byte(k)); ok {
			out = append(out, ino)
		}
	}
	slices.Sort(out)
	return out
}

// nsParents is memNS as Parents.
type nsParents struct{ ns *memNS }

func (p nsParents) Parent(ino uint64) (uint64, bool, error) {
	n, ok := p.ns.inodes[ino]
	if !ok {
		return 0, false, nil
	}
	return n.Parent, true, nil
}

// treeFixture is / with a/b and c, every tree held by the repository.
type treeFixture struct {
	ns      *memNS
	r       *memRepo
	st      *memStore
	a, b, c uint64
	built   map[uint64]Tree
}

func newTreeFixture() *treeFixture {
	f := &treeFixture{ns: newMemNS(), r: newMemRepo(), st: newMemStore()}
	f.a = f.ns.mkdir(meta.RootIno, "a")
	f.b = f.ns.mkdir(f.a, "b")
	f.c = f.ns.mkdir(meta.RootIno, "c")
	f.built = map[uint64]Tree{}
	for _, ino := range []uint64{meta.RootIno, f.a, f.b, f.c} {
		id := crypto.Hash([]byte{byte(ino)})
		f.r.has[id] = true
		f.built[ino] = Tree{ID: id, Stats: repo.SnapshotStats{Dirs: 1}}
	}
	return f
}

func (f *treeFixture) open() *Trees {
	return NewTrees(TreesConfig{Store: f.st, Repository: f.r, Parents: nsParents{f.ns}, Log: quiet()})
}

func cachedDirs(tc *Trees) []uint64 {
	return slices.Sorted(maps.Keys(tc.Copy()))
}

func TestTreesDirChangedDropsItsPathOnly(t *testing.T) {
	f := newTreeFixture()
	tc := f.open()
	tc.Install(f.built)
	if got := f.st.stored(t); len(got) != 4 {
		t.Fatalf("stored %v after Install, want all 4", got)
	}
	if err := tc.DirChanged(f.b); err != nil {
		t.Fatal(err)
	}
	if got, want := cachedDirs(tc), []uint64{f.c}; !slices.Equal(got, want) {
		t.Fatalf("cached %v after a change in a/b, want %v", got, want)
	}
	if err := tc.Save(); err != nil {
		t.Fatal(err)
	}
	if got, want := f.st.stored(t), []uint64{f.c}; !slices.Equal(got, want) {
		t.Fatalf("stored %v after Save, want %v", got, want)
	}
	again := f.open()
	if err := again.Load(true); err != nil {
		t.Fatal(err)
	}
	if got, want := cachedDirs(again), []uint64{f.c}; !slices.Equal(got, want) {
		t.Fatalf("loaded %v, want %v", got, want)
	}
}

func TestTreesChangeDuringWalkIsNotInstalled(t *testing.T) {
	f := newTreeFixture()
	tc := f.open()
	tc.BeginWalk()
	// Uncached, but a walk runs: its trees for b and its ancestors are
	// stale.
	if err := tc.DirChanged(f.b); err != nil {
		t.Fatal(err)
	}
	tc.Install(f.built)
	tc.EndWalk()
	if got, want := cachedDirs(tc), []uint64{f.c}; !slices.Equal(got, want) {
		t.Fatalf("cached %v after a change during the walk, want %v", got, want)
	}

	tc.BeginWalk()
	tc.InvalidateAll()
	tc.Install(f.built)
	tc.EndWalk()
	if n := tc.Len(); n != 0 {
		t.Fatalf("%d trees installed after InvalidateAll during the walk", n)
	}
	if got := f.st.stored(t); len(got) != 0 {
		t.Fatalf("stored %v, want none", got)
	}
}

func TestTreesLoadNeedsACleanEndAndTheMark(t *testing.T) {
	f := newTreeFixture()
	tc := f.open()
	tc.Install(f.built)
	if err := tc.Save(); err != nil {
		t.Fatal(err)
	}
	// An unclean end: the copy goes, in memory and in the store.
	unclean := f.open()
	if err := unclean.Load(false); err != nil {
		t.Fatal(err)
	}
	if n := unclean.Len(); n != 0 || len(f.st.stored(t)) != 0 {
		t.Fatalf("after an unclean end: %d cached, %v stored", n, f.st.stored(t))
	}

	tc = f.open()
	tc.Install(f.built)
	if err := tc.Save(); err != nil {
		t.Fatal(err)
	}
	if err := f.open().Load(true); err != nil {
		t.Fatal(err)
	}
	// That Load took the mark: a session that ends without Save leaves
	// none, and the next Load drops the copy.
	noMark := f.open()
	if err := noMark.Load(true); err != nil {
		t.Fatal(err)
	}
	if n := noMark.Len(); n != 0 || len(f.st.stored(t)) != 0 {
		t.Fatalf("without the mark: %d cached, %v stored", n, f.st.stored(t))
	}
}

func TestTreesLoadDropsTreesTheRepositoryLost(t *testing.T) {
	f := newTreeFixture()
	tc := f.open()
	tc.Install(f.built)
	if err := tc.Save(); err != nil {
		t.Fatal(err)
	}
	delete(f.r.has, f.built[f.b].ID) // pruned since
	tc = f.open()
	if err := tc.Load(true); err != nil {
		t.Fatal(err)
	}
	if got, want := cachedDirs(tc), []uint64{f.c}; !slices.Equal(got, want) {
		t.Fatalf("cached %v, want %v (b and its ancestors dropped)", got, want)
	}
	if got, want := f.st.stored(t), []uint64{f.c}; !slices.Equal(got, want) {
		t.Fatalf("stored %v, want %v", got, want)
	}
}

func TestTreesLoadDropsADamagedCopy(t *testing.T) {
	f := newTreeFixture()
	tc := f.open()
	tc.Install(f.built)
	if err := tc.Save(); err != nil {
		t.Fatal(err)
	}
	f.st.kv[string(meta.TreeKey(f.c))] = []byte{1, 2, 3}
	tc = f.open()
	if err := tc.Load(true); err != nil {
		t.Fatal(err)
	}
	if n := tc.Len(); n != 0 || len(f.st.stored(t)) != 0 {
		t.Fatalf("beside a damaged record: %d cached, %v stored", n, f.st.stored(t))
	}
}

func TestTreesFailedWriteReplacesTheWholeCopy(t *testing.T) {
	f := newTreeFixture()
	tc := f.open()
	tc.Install(f.built)
	// The drop of c's tree (and the root's) fails to reach the store,
	// which still holds them once the next write succeeds unless that
	// write replaces everything.
	if err := tc.DirChanged(f.c); err != nil {
		t.Fatal(err)
	}
	f.st.failWrites = 1
	tc.Install(nil)
	if got := f.st.stored(t); len(got) != 4 {
		t.Fatalf("stored %v after the failed write, want all 4 still", got)
	}
	if err := tc.Save(); err != nil {
		t.Fatal(err)
	}
	if got, want := f.st.stored(t), []uint64{f.a, f.b}; !slices.Equal(got, want) {
		t.Fatalf("stored %v, want %v", got, want)
	}
}

func TestTreesSeededTreesSurviveLoad(t *testing.T) {
	f := newTreeFixture()
	tc := f.open()
	for ino, te := range f.built {
		tc.Seed(ino, te)
	}
	if len(f.st.stored(t)) != 0 {
		t.Fatal("Seed wrote to the store")
	}
	// A new state directory has no mark: what was seeded stays, and is
	// what the store holds after.
	if err := tc.Load(true); err != nil {
		t.Fatal(err)
	}
	if n := tc.Len(); n != 4 || len(f.st.stored(t)) != 4 {
		t.Fatalf("after Load of a new state directory: %d cached, %v stored; want 4 and 4", n, f.st.stored(t))
	}
}

func TestTreesDirChangedFailsOnAGoneAncestor(t *testing.T) {
	f := newTreeFixture()
	tc := f.open()
	tc.Install(f.built)
	delete(f.ns.inodes, f.a)
	if err := tc.DirChanged(f.b); err == nil {
		t.Fatal("DirChanged found no error with a's inode gone")
	}
}
