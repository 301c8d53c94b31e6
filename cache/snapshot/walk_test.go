package snapshot

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/keepfs/keepfs/cache/meta"
	"github.com/keepfs/keepfs/policy/ignore"
	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/pack"
	"github.com/keepfs/keepfs/repo/tree"
)

// memNS is a namespace in memory. File content is its chunks' bytes in
// data; a chunk is kept locally if local says so.
type memNS struct {
	inodes  map[uint64]*meta.Inode
	dirs    map[uint64][]Dirent
	data    map[crypto.ID][]byte
	local   map[crypto.ID]bool
	badRead map[uint64]error // inode → error reading its content
	next    uint64
}

func newMemNS() *memNS {
	ns := &memNS{inodes: map[uint64]*meta.Inode{}, dirs: map[uint64][]Dirent{},
		data: map[crypto.ID][]byte{}, local: map[crypto.ID]bool{}, badRead: map[uint64]error{}, next: meta.RootIno + 1}
	ns.inodes[meta.RootIno] = &meta.Inode{Type: tree.Dir, Mode: 0o755, Nlink: 2}
	return ns
}

// ReadDir lists in name order, as Badger's keys come.
func (ns *memNS) ReadDir(ino uint64) ([]Dirent, error) {
	return slices.SortedFunc(slices.Values(ns.dirs[ino]), func(a, b Dirent) int { return strings.Compare(a.Name, b.Name) }), nil
}

func (ns *memNS) Inode(ino uint64) (*meta.Inode, error) {
	n, ok := ns.inodes[ino]
	if !ok {
		return nil, fmt.Errorf("inode %d: not found", ino)
	}
	return n, nil
}

func (ns *memNS) HasChunk(id crypto.ID) (bool, error) { return ns.local[id], nil }

func (ns *memNS) ReadFile(_ context.Context, n *meta.Inode) ([]byte, error) {
	for ino, in := range ns.inodes {
		if in == n && ns.badRead[ino] != nil {
			return nil, ns.badRead[ino]
		}
	}
	var out []byte
	for _, ch := range n.Chunks {
		out = append(out, ns.data[ch.ID]...)
	}
	return out, nil
}

func chunkID(b []byte) crypto.ID { return crypto.ID(sha256.Sum256(b)) }

// mkdir adds directory name under parent.
func (ns *memNS) mkdir(parent uint64, name string) uint64 {
	ino := ns.next
	ns.next++
	ns.inodes[ino] = &meta.Inode{Type: tree.Dir, Mode: 0o755, Nlink: 2, Parent: parent, Name: name}
	ns.dirs[parent] = append(ns.dirs[parent], Dirent{Name: name, Ino: ino, Type: tree.Dir})
	return ino
}

// file adds file name under parent holding content as one chunk, kept
// locally.
func (ns *memNS) file(parent uint64, name, content string) uint64 {
	ino := ns.next
	ns.next++
	id := chunkID([]byte(content))
	ns.data[id] = []byte(content)
	ns.local[id] = true
	ns.inodes[ino] = &meta.Inode{Type: tree.File, Mode: 0o644, Nlink: 1, Size: uint64(len(content)), Parent: parent, Name: name,
		Chunks: []meta.Chunk{{ID: id, Len: uint64(len(content))}}}
	ns.dirs[parent] = append(ns.dirs[parent], Dirent{Name: name, Ino: ino, Type: tree.File})
	return ino
}

// memRepo is a repository in memory: the blobs it holds and the trees of
// snapshots for Lookup.
type memRepo struct {
	has   map[crypto.ID]bool
	trees map[crypto.ID]*tree.Tree
}

func newMemRepo() *memRepo {
	return &memRepo{has: map[crypto.ID]bool{}, trees: map[crypto.ID]*tree.Tree{}}
}

func (r *memRepo) Has(_ pack.BlobType, id crypto.ID) bool { return r.has[id] }
func (r *memRepo) BlobID(b []byte) crypto.ID              { return chunkID(b) }

func (r *memRepo) Lookup(_ context.Context, root crypto.ID, path string) (*tree.Node, error) {
	t, ok := r.trees[root]
	if !ok {
		return nil, fmt.Errorf("tree %s: %w", root.Short(), repo.ErrBlobNotFound)
	}
	if n := t.Find(path[1:]); n != nil {
		return n, nil
	}
	return nil, repo.ErrPathNotFound
}

// store takes in a walk's trees as the snapshot would.
func (r *memRepo) store(w *Walk) {
	for _, b := range w.Trees {
		r.has[chunkID(b)] = true
		t, err := tree.Decode(b)
		if err != nil {
			panic(err)
		}
		r.trees[chunkID(b)] = t
	}
	for _, id := range w.Need {
		r.has[id] = true
	}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func walk(t *testing.T, ns *memNS, r *memRepo, cached map[uint64]Tree, parent *repo.Snapshot) (*Walk, Tree) {
	t.Helper()
	w := New(context.Background(), Config{Namespace: ns, Repository: r, Cached: cached, Parent: parent, Log: quiet()})
	root, err := w.Root()
	if err != nil {
		t.Fatal(err)
	}
	return w, root
}

func names(t *testing.T, r *memRepo, id crypto.ID) []string {
	t.Helper()
	tr, ok := r.trees[id]
	if !ok {
		t.Fatalf("tree %s not stored", id.Short())
	}
	var out []string
	for _, n := range tr.Nodes {
		out = append(out, n.Name)
	}
	return out
}

// Excluded files are neither named in a tree nor their chunks needed
// (DESIGN invariant 7); included ones are, once each.
func TestWalkExcludesIgnored(t *testing.T) {
	ns, r := newMemNS(), newMemRepo()
	ns.file(meta.RootIno, ignore.FileName, "*.raw\n")
	ns.file(meta.RootIno, "scan.raw", "secret")
	d := ns.mkdir(meta.RootIno, "docs")
	ns.file(d, "a.txt", "same")
	ns.file(d, "b.txt", "same")
	ns.file(d, "c.raw", "secret too")
	w, root := walk(t, ns, r, nil, nil)
	r.store(w)
	if got := names(t, r, root.ID); !slices.Equal(got, []string{ignore.FileName, "docs"}) {
		t.Fatalf("root holds %v", got)
	}
	if got := names(t, r, r.trees[root.ID].Nodes[1].Subtree); !slices.Equal(got, []string{"a.txt", "b.txt"}) {
		t.Fatalf("docs holds %v", got)
	}
	want := []crypto.ID{chunkID([]byte("*.raw\n")), chunkID([]byte("same"))}
	if !slices.Equal(w.Need, want) {
		t.Fatalf("needs %d chunks, want the ignore file's and the shared one", len(w.Need))
	}
	if root.Stats.Files != 3 || root.Stats.Dirs != 2 {
		t.Fatalf("stats %+v", root.Stats)
	}
	if len(w.Built) != 2 {
		t.Fatalf("built %d trees to cache, want 2", len(w.Built))
	}
}

// A cached tree is reused under the rules it was built under, and not once
// the ignore rules above it change.
func TestWalkReusesCachedTreesUnderTheSameRules(t *testing.T) {
	ns, r := newMemNS(), newMemRepo()
	ign := ns.file(meta.RootIno, ignore.FileName, "*.tmp\n")
	d := ns.mkdir(meta.RootIno, "d")
	ns.file(d, "x.tmp", "tmp")
	ns.file(d, "y.raw", "raw")
	w, _ := walk(t, ns, r, nil, nil)
	r.store(w)
	w2, _ := walk(t, ns, r, w.Built, nil)
	if len(w2.Trees) != 0 || len(w2.Need) != 0 {
		t.Fatalf("an unchanged namespace built %d new trees, needs %d chunks", len(w2.Trees), len(w2.Need))
	}
	// New rules: the cached tree of d was built under the old ones.
	content := "*.raw\n"
	id := chunkID([]byte(content))
	ns.data[id] = []byte(content)
	ns.local[id] = true
	ns.inodes[ign].Chunks = []meta.Chunk{{ID: id, Len: uint64(len(content))}}
	cached := map[uint64]Tree{d: w.Built[d]} // the root's changed with its ignore file
	w3, root := walk(t, ns, r, cached, nil)
	r.store(w3)
	sub := r.trees[root.ID].Nodes[1].Subtree
	if got := names(t, r, sub); !slices.Equal(got, []string{"x.tmp"}) {
		t.Fatalf("under new rules d holds %v, want [x.tmp]", got)
	}
}

// A file whose content is neither in the repository nor kept locally keeps
// its version of the last snapshot, or is left out without one, and is
// reported lost; its directory's tree is not cached.
func TestWalkLostContent(t *testing.T) {
	ns, r := newMemNS(), newMemRepo()
	a := ns.file(meta.RootIno, "a", "old a")
	ns.file(meta.RootIno, "b", "b")
	w, root := walk(t, ns, r, nil, nil)
	r.store(w)
	parent := &repo.Snapshot{Tree: root.ID}
	// a is rewritten, then its new chunk is lost.
	lost := chunkID([]byte("new a"))
	ns.inodes[a].Chunks = []meta.Chunk{{ID: lost, Len: 5}}
	fresh := ns.file(meta.RootIno, "c", "c")
	ns.inodes[fresh].Chunks = []meta.Chunk{{ID: chunkID([]byte("gone c")), Len: 6}}
	w2, root2 := walk(t, ns, r, nil, parent)
	r.store(w2)
	if !slices.Equal(w2.Lost, []string{"/a", "/c"}) {
		t.Fatalf("lost %v, want /a and /c", w2.Lost)
	}
	tr := r.trees[root2.ID]
	if got := names(t, r, root2.ID); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("root holds %v, want a (its old version) and b", got)
	}
	if tr.Nodes[0].Content[0] != chunkID([]byte("old a")) {
		t.Fatal("the lost file does not keep its last backed-up content")
	}
	if slices.Contains(w2.Need, lost) {
		t.Fatal("the walk needs a chunk that is nowhere")
	}
	if _, ok := w2.Built[meta.RootIno]; ok {
		t.Fatal("a tree holding a lost file was cached")
	}
}

// An unreadable ignore file leaves its directory empty (nothing it might
// have excluded leaves), uncached; a remote that is down fails the walk.
func TestWalkUnreadableIgnoreFile(t *testing.T) {
	ns, r := newMemNS(), newMemRepo()
	d := ns.mkdir(meta.RootIno, "d")
	ign := ns.file(d, ignore.FileName, "*\n")
	ns.file(d, "secret", "s")
	ns.badRead[ign] = errors.New("bad block")
	w, _ := walk(t, ns, r, nil, nil)
	r.store(w)
	if _, ok := w.Built[d]; ok {
		t.Fatal("the tree of a directory with an unreadable ignore file was cached")
	}
	if len(w.Need) != 0 {
		t.Fatalf("needs %d chunks from a directory whose rules could not be read", len(w.Need))
	}
	ns.badRead[ign] = fmt.Errorf("fetch: %w", remote.ErrUnreachable)
	if _, err := New(context.Background(), Config{Namespace: ns, Repository: r, Log: quiet()}).Root(); !errors.Is(err, remote.ErrUnreachable) {
		t.Fatalf("walk with the remote down: %v", err)
	}
}
