package snapshot

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/keepfs/keepfs/cache/meta"
	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/pack"
)

// Trees, the tree-id cache, maps a directory to the tree the last snapshot
// walk built for it, for as long as neither its subtree nor the ignore
// rules reaching it from above change. It lives in memory and in the state
// directory (meta.TreeKey), so that the first walk after a restart does
// not reread every unchanged subtree.
//
// The walk relies on one rule: a directory without a cached tree has no
// cached ancestors (DirChanged stops at the first uncached directory). The
// trees a walk builds form whole paths from the root, so installing them
// keeps the rule; the copy in the state directory keeps it by being
// exactly the one in memory whenever the session closes cleanly: built
// trees are written when installed, dropped ones are deleted at the next
// write (gone), and whatever may have made the two differ (a failed write,
// a reset of the whole cache) makes the next write replace the copy with
// memory's (allGone). Load keeps the copy only if the last session ended
// with Save and left the mark TreesValidKey; after a crash the copy may
// miss the invalidations of the changes made since its last write, so it
// is dropped.
//
// Its mutex is a leaf: callers may hold their own locks (package cache
// calls it under Cache.mu) and it calls out to nothing while holding it.
type Trees struct {
	store   Store
	repo    Repository
	parents Parents
	log     *slog.Logger

	mu    sync.Mutex
	trees map[uint64]Tree // dir ino → tree of the last snapshot, if unchanged since
	// invalid are the dirs invalidated while a walk runs (nil: none runs;
	// key 0: everything).
	invalid map[uint64]bool
	// gone and allGone: what left trees since the stored copy was last
	// written.
	gone    map[uint64]bool
	allGone bool
}

// Txn is one read-write transaction on the state directory.
type Txn interface {
	// Has reports whether key is set.
	Has(key []byte) (bool, error)
	Set(key, value []byte) error
	Delete(key []byte) error
}

// Store is the state directory as the tree cache sees it.
type Store interface {
	// Update runs fn in one transaction; fn may run more than once (a
	// conflict retries it), so it must have no other effects.
	Update(fn func(Txn) error) error
	// Scan calls fn with every key under prefix, in order, in one read
	// view, and with its value if values is set (else with nil). key and
	// value are valid only during the call.
	Scan(prefix []byte, values bool, fn func(key, value []byte) error) error
}

// Parents finds where a directory hangs, to drop the ancestors of a stale
// tree.
type Parents interface {
	// Parent returns directory ino's parent; ok is false if ino is gone
	// from the namespace.
	Parent(ino uint64) (parent uint64, ok bool, err error)
}

// TreesConfig wires a tree cache.
type TreesConfig struct {
	Store Store
	// Repository tells which cached trees the repository still holds.
	Repository Repository
	Parents    Parents
	Log        *slog.Logger
}

// NewTrees returns an empty tree cache; Load fills it from the store.
func NewTrees(cfg TreesConfig) *Trees {
	t := &Trees{store: cfg.Store, repo: cfg.Repository, parents: cfg.Parents, log: cfg.Log, trees: map[uint64]Tree{}}
	if t.log == nil {
		t.log = slog.Default()
	}
	return t
}

// TreesValidKey marks the stored copy as complete: Save sets it after the
// last write, Load deletes it. A session of a version that does not keep
// the copy up to date (before it existed) closes without setting it.
var TreesValidKey = meta.StateKey("trees")

// treeKeyBatch bounds the tree keys one transaction changes.
const treeKeyBatch = 4096

func treeRecord(te Tree) *meta.TreeEntry {
	return &meta.TreeEntry{ID: te.ID, Rules: te.Rules, Files: te.Stats.Files, Dirs: te.Stats.Dirs, Bytes: te.Stats.Bytes}
}

// Len is the number of directories with a cached tree.
func (t *Trees) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.trees)
}

// Get returns directory ino's cached tree.
func (t *Trees) Get(ino uint64) (Tree, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	te, ok := t.trees[ino]
	return te, ok
}

// Seed caches te for ino without writing it: for the trees of the snapshot
// a new state directory is rebuilt from, before Load.
func (t *Trees) Seed(ino uint64, te Tree) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.trees[ino] = te
}

// Copy returns the cached trees, for a walk (Config.Cached).
func (t *Trees) Copy() map[uint64]Tree {
	t.mu.Lock()
	defer t.mu.Unlock()
	cached := make(map[uint64]Tree, len(t.trees))
	for k, v := range t.trees {
		cached[k] = v
	}
	return cached
}

// BeginWalk starts recording the directories that change while a walk
// runs, so that Install leaves out the trees they make stale; EndWalk
// stops it. One walk runs at a time.
func (t *Trees) BeginWalk() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.invalid = map[uint64]bool{}
}

// EndWalk ends what BeginWalk started.
func (t *Trees) EndWalk() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.invalid = nil
}

// InvalidateAll empties the cache as DropAll does and makes a running
// walk's trees stale: for a change that may reach any directory.
func (t *Trees) InvalidateAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.dropAllLocked()
	if t.invalid != nil {
		t.invalid[0] = true // 0: everything
	}
}

// DropAll empties the cache, in memory and (at the next write) in the
// store: for trees the repository may no longer hold.
func (t *Trees) DropAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.dropAllLocked()
}

func (t *Trees) dropAllLocked() {
	t.trees = map[uint64]Tree{}
	t.gone = nil
	t.allGone = true
}

// DirChanged drops the cached trees of dir and its ancestors. An error
// (an ancestor could not be read) leaves the cache in need of
// InvalidateAll.
func (t *Trees) DirChanged(dir uint64) error {
	for i := 0; i < 4096 && dir != 0; i++ {
		t.mu.Lock()
		_, cached := t.trees[dir]
		if cached {
			delete(t.trees, dir)
			if t.gone == nil {
				t.gone = map[uint64]bool{}
			}
			t.gone[dir] = true
		}
		running := t.invalid != nil
		if running {
			t.invalid[dir] = true
		}
		t.mu.Unlock()
		// Without a walk in flight, an uncached directory has no cached
		// ancestors (trees are installed for whole paths).
		if (!cached && !running) || dir == meta.RootIno {
			return nil
		}
		parent, ok, err := t.parents.Parent(dir)
		if err == nil && !ok {
			err = fmt.Errorf("directory %d: gone from the namespace", dir)
		}
		if err != nil {
			return fmt.Errorf("find the ancestors of a changed directory: %w", err)
		}
		dir = parent
	}
	return nil
}

// Install caches the trees a walk built, unless what they describe changed
// while it ran, and writes the cache's changes to the store.
func (t *Trees) Install(built map[uint64]Tree) {
	t.mu.Lock()
	if t.invalid[0] {
		built = nil
	}
	set := make(map[uint64]Tree, len(built))
	for ino, te := range built {
		if !t.invalid[ino] {
			t.trees[ino] = te
			set[ino] = te
		}
	}
	t.mu.Unlock()
	if err := t.persist(set); err != nil {
		t.log.Warn("cannot record the tree cache; the next snapshot after a restart walks everything", "err", err)
	}
}

// Save writes what changed since the last write and marks the stored copy
// complete, for the next Load (at a clean close).
func (t *Trees) Save() error {
	if err := t.persist(nil); err != nil {
		return err
	}
	err := t.store.Update(func(txn Txn) error { return txn.Set(TreesValidKey, []byte{1}) })
	if err != nil {
		return fmt.Errorf("record the tree cache: %w", err)
	}
	return nil
}

// persist writes set (entries just installed) and the entries dropped
// since the last write to the store; when the copy there may differ from
// memory, it is replaced whole.
func (t *Trees) persist(set map[uint64]Tree) error {
	t.mu.Lock()
	all := t.allGone
	gone := t.gone
	t.allGone, t.gone = false, nil
	if all {
		set = make(map[uint64]Tree, len(t.trees))
		for ino, te := range t.trees {
			set[ino] = te
		}
	} else {
		for ino, te := range set {
			// Dropped again since it was installed: gone says so.
			if cur, ok := t.trees[ino]; !ok || cur != te {
				delete(set, ino)
			}
		}
	}
	t.mu.Unlock()
	err := t.write(all, gone, set)
	if err != nil {
		t.mu.Lock()
		t.allGone = true
		t.mu.Unlock()
	}
	return err
}

type treeOp struct {
	key []byte
	v   []byte // nil: delete
}

func (t *Trees) write(all bool, gone map[uint64]bool, set map[uint64]Tree) error {
	var ops []treeOp
	if all {
		keys, err := t.keys()
		if err != nil {
			return err
		}
		for _, k := range keys {
			if ino, ok := meta.InoFromTreeKey(k); !ok || !hasEntry(set, ino) {
				ops = append(ops, treeOp{key: k})
			}
		}
	} else {
		for ino := range gone {
			if !hasEntry(set, ino) {
				ops = append(ops, treeOp{key: meta.TreeKey(ino)})
			}
		}
	}
	for ino, te := range set {
		ops = append(ops, treeOp{meta.TreeKey(ino), meta.EncodeTreeEntry(treeRecord(te))})
	}
	for len(ops) > 0 {
		batch := ops[:min(len(ops), treeKeyBatch)]
		ops = ops[len(batch):]
		err := t.store.Update(func(txn Txn) error {
			for _, op := range batch {
				var err error
				if op.v == nil {
					err = txn.Delete(op.key)
				} else {
					err = txn.Set(op.key, op.v)
				}
				if err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("write the tree cache: %w", err)
		}
	}
	return nil
}

func hasEntry(set map[uint64]Tree, ino uint64) bool {
	_, ok := set[ino]
	return ok
}

// keys lists the tree keys in the store.
func (t *Trees) keys() ([][]byte, error) {
	var keys [][]byte
	err := t.store.Scan(meta.TreePrefix(), false, func(k, _ []byte) error {
		keys = append(keys, append([]byte(nil), k...))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list the tree cache: %w", err)
	}
	return keys, nil
}

// errDamaged stops the scan of a damaged tree record.
var errDamaged = errors.New("damaged tree record")

// Load fills the cache from the store at Open if the last session closed
// cleanly (clean) and left the copy complete, and drops it otherwise.
// Entries whose tree the repository no longer holds (a prune or an erase
// since) go, and with them the entries of their ancestors. Trees seeded
// before (Seed) are kept.
func (t *Trees) Load(clean bool) error {
	valid := false
	err := t.store.Update(func(txn Txn) error {
		ok, err := txn.Has(TreesValidKey)
		if err != nil || !ok {
			valid = false
			return err
		}
		valid = true
		return txn.Delete(TreesValidKey)
	})
	if err != nil {
		return fmt.Errorf("read the tree cache: %w", err)
	}
	if !clean || !valid {
		t.mu.Lock()
		// Whatever was seeded is all the store may hold.
		t.allGone = true
		t.mu.Unlock()
		return t.persist(nil)
	}
	loaded := map[uint64]Tree{}
	bad := false
	err = t.store.Scan(meta.TreePrefix(), true, func(k, v []byte) error {
		ino, ok := meta.InoFromTreeKey(k)
		e, derr := meta.DecodeTreeEntry(v)
		if !ok || derr != nil {
			return errDamaged
		}
		loaded[ino] = Tree{ID: e.ID, Rules: e.Rules, Stats: repo.SnapshotStats{Files: e.Files, Dirs: e.Dirs, Bytes: e.Bytes}}
		return nil
	})
	if errors.Is(err, errDamaged) {
		bad, err = true, nil
	}
	if err != nil {
		return fmt.Errorf("read the tree cache: %w", err)
	}
	if bad {
		t.log.Warn("the tree cache in the state directory is damaged; the next snapshot walks everything")
		loaded = map[uint64]Tree{}
	}
	dropped := 0
	for ino, te := range loaded {
		if t.repo.Has(pack.Tree, te.ID) {
			continue
		}
		// The directory and every ancestor: an uncached directory has no
		// cached ancestors.
		for i := 0; i < 4096 && ino != 0; i++ {
			if _, ok := loaded[ino]; ok {
				delete(loaded, ino)
				dropped++
			}
			if ino == meta.RootIno {
				break
			}
			parent, ok, err := t.parents.Parent(ino)
			if err != nil {
				return fmt.Errorf("read the tree cache: %w", err)
			}
			if !ok {
				// Gone from the namespace: so is its tree from the walk.
				break
			}
			ino = parent
		}
	}
	if dropped > 0 {
		t.log.Info("cached trees the repository no longer holds were dropped", "dirs", dropped)
	}
	t.mu.Lock()
	for ino, te := range t.trees { // the seeded ones, if any
		loaded[ino] = te
	}
	t.trees = loaded
	t.allGone = bad || dropped > 0
	t.mu.Unlock()
	if bad || dropped > 0 {
		return t.persist(nil)
	}
	return nil
}
