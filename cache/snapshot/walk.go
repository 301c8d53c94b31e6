// Package snapshot builds repository trees from the mount's namespace: the
// snapshot walk, which decides what a snapshot holds (DESIGN invariant 7:
// what the ignore rules exclude never leaves the machine), which chunks
// the repository must receive first, and which files lost their content.
//
// It reads the namespace through a small interface (Namespace) that
// package cache implements over one Badger read transaction, and the
// repository through another (Repository), so the walk can be tested with
// in-memory fakes.
package snapshot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"

	"github.com/keepfs/keepfs/cache/meta"
	"github.com/keepfs/keepfs/policy/ignore"
	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/pack"
	"github.com/keepfs/keepfs/repo/tree"
)

// Tree is a directory's tree as a walk built it: its id, the totals below
// it, and the ignore rules it was built under (see Walk.dir): a cached
// tree is used only under the same ones.
type Tree struct {
	ID    crypto.ID
	Stats repo.SnapshotStats
	Rules crypto.ID
}

// Dirent is a name in a directory.
type Dirent struct {
	Name string
	Ino  uint64
	Type tree.Type
}

// Namespace is one consistent, read-only view of the namespace.
type Namespace interface {
	// ReadDir returns the entries of directory ino.
	ReadDir(ino uint64) ([]Dirent, error)
	Inode(ino uint64) (*meta.Inode, error)
	// HasChunk reports whether the state directory keeps chunk id.
	HasChunk(id crypto.ID) (bool, error)
	// ReadFile returns a small file's committed content (an ignore file).
	ReadFile(ctx context.Context, n *meta.Inode) ([]byte, error)
}

// Repository is what the walk needs of the repository.
type Repository interface {
	// Has reports whether the index holds blob id of type t.
	Has(t pack.BlobType, id crypto.ID) bool
	// Lookup returns the node at path in the tree root.
	Lookup(ctx context.Context, root crypto.ID, path string) (*tree.Node, error)
	// BlobID is the keyed hash naming a blob of plaintext b.
	BlobID(b []byte) crypto.ID
}

// Config wires a walk.
type Config struct {
	Namespace  Namespace
	Repository Repository
	// Cached are the trees of the last snapshot still valid, by directory
	// inode; the walk reuses them under the same rules.
	Cached map[uint64]Tree
	// Parent is the last snapshot, for files whose content was lost.
	Parent *repo.Snapshot
	Log    *slog.Logger
	// Inodes and Built, if set, count the inodes the walk reads and the
	// trees it encodes.
	Inodes, Built *atomic.Int64
}

// Walk builds trees from one consistent view of the namespace.
type Walk struct {
	// Trees are the encoded trees the repository lacks, children first.
	Trees [][]byte
	// Need are the chunks the repository must hold before the trees.
	Need []crypto.ID
	// Built are the trees to cache once stored.
	Built map[uint64]Tree
	// Lost are the paths of files whose content was lost, as Status
	// reports them.
	Lost []string

	ns     Namespace
	r      Repository
	ctx    context.Context
	m      *ignore.Matcher
	cached map[uint64]Tree
	seen   map[crypto.ID]bool
	parent *repo.Snapshot
	log    *slog.Logger
	inodes *atomic.Int64
	built  *atomic.Int64
	// unreadable counts ignore files that could not be read, whose
	// directories the snapshot leaves empty.
	unreadable int
}

// New returns a walk of the namespace cfg names.
func New(ctx context.Context, cfg Config) *Walk {
	w := &Walk{ns: cfg.Namespace, r: cfg.Repository, ctx: ctx, m: ignore.New("/"),
		Built: map[uint64]Tree{}, cached: cfg.Cached, seen: map[crypto.ID]bool{}, parent: cfg.Parent,
		log: cfg.Log, inodes: cfg.Inodes, built: cfg.Built}
	if w.log == nil {
		w.log = slog.Default()
	}
	if w.inodes == nil {
		w.inodes = new(atomic.Int64)
	}
	if w.built == nil {
		w.built = new(atomic.Int64)
	}
	return w
}

// Root walks the namespace from the root and returns its tree.
func (w *Walk) Root() (Tree, error) {
	return w.dir(meta.RootIno, nil, crypto.ID{})
}

// ignoreFile returns the content of the ignore file at inode ino.
func (w *Walk) ignoreFile(ino uint64) ([]byte, error) {
	n, err := w.ns.Inode(ino)
	if err != nil {
		return nil, err
	}
	return w.ns.ReadFile(w.ctx, n)
}

// lostContent reports whether chunks names data that is neither in the
// repository nor kept locally: lost in a power loss.
func (w *Walk) lostContent(chunks []crypto.ID) (bool, error) {
	for _, id := range chunks {
		if w.seen[id] || w.r.Has(pack.Data, id) {
			continue
		}
		if ok, err := w.ns.HasChunk(id); err != nil {
			return false, err
		} else if !ok {
			return true, nil
		}
	}
	return false, nil
}

// lostFile returns what a snapshot records for a file whose content was
// lost: its version in the last snapshot, or nil (left out) if it had
// none. The remote must never name a blob it does not hold, and one lost
// file must not stop every backup after it.
func (w *Walk) lostFile(path []string) (*tree.Node, error) {
	p := "/" + strings.Join(path, "/")
	w.Lost = append(w.Lost, p)
	if w.parent == nil {
		return nil, nil
	}
	old, err := w.r.Lookup(w.ctx, w.parent.Tree, p)
	if errors.Is(err, repo.ErrPathNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: look up the last backed-up version: %w", p, err)
	}
	if old.Type != tree.File {
		return nil, nil
	}
	return old, nil
}

// dir returns the tree of directory ino at path, from the cache when the
// directory has not changed since the last snapshot and the ignore rules
// that reach it from above are the ones its tree was built under.
//
// rules identifies those rules: zero while no ignore file is in force,
// else a keyed hash chained from the topmost ignore file's content down
// through every directory name and every ignore file on the way (see
// subRules, childRules). A .gdprignore that changes, appears or goes
// changes the rules of its whole subtree, and only of it; a directory
// moved to where other rules apply, or to a path that the same rules
// match differently, gets rules its cached tree was not built under.
func (w *Walk) dir(ino uint64, path []string, rules crypto.ID) (Tree, error) {
	if err := w.ctx.Err(); err != nil {
		return Tree{}, err
	}
	// Patterns only matter below this directory, so a cached one
	// needs neither its entries nor its ignore file.
	if te, ok := w.cached[ino]; ok && te.Rules == rules {
		return te, nil
	}
	lostBefore, unreadableBefore := len(w.Lost), w.unreadable
	ents, err := w.ns.ReadDir(ino)
	if err != nil {
		return Tree{}, err
	}
	// The ignore file must be known before any entry is decided, and
	// deeper files come after shallower ones (the walk is depth-first).
	unreadable := false
	sub := rules // the rules in force below this directory
	for _, e := range ents {
		if e.Name == ignore.FileName && e.Type == tree.File {
			w.inodes.Add(1)
			content, err := w.ignoreFile(e.Ino)
			if err != nil {
				// Unreadable rules exclude: nothing of this directory
				// goes into the snapshot (nor, so, to the remote).
				// Only a remote that is down or a cancelled snapshot
				// fails it instead, to be retried.
				if w.ctx.Err() != nil || errors.Is(err, remote.ErrUnreachable) {
					return Tree{}, fmt.Errorf("read %s: %w", ignore.FileName, err)
				}
				w.log.Error("cannot read a "+ignore.FileName+"; the snapshot leaves out everything in its directory",
					"dir", "/"+strings.Join(path, "/"), "err", err)
				unreadable = true
				w.unreadable++
				continue
			}
			w.m.AddPatterns(path, "/"+strings.Join(append(append([]string{}, path...), ignore.FileName), "/"), content)
			sub = w.subRules(rules, content)
		}
	}
	t := &tree.Tree{}
	st := repo.SnapshotStats{Dirs: 1}
	for _, e := range ents {
		crel := append(append([]string(nil), path...), e.Name)
		if unreadable || w.m.Match(crel, e.Type == tree.Dir).Ignored {
			continue
		}
		w.inodes.Add(1)
		n, err := w.ns.Inode(e.Ino)
		if err != nil {
			return Tree{}, err
		}
		node := &tree.Node{Name: e.Name, Type: n.Type, Mode: n.Mode, UID: n.UID, GID: n.GID, Size: n.Size,
			MTime: n.Mtime, ATime: n.Atime, CTime: n.Ctime, Rdev: n.Rdev, LinkTarget: n.Target, Xattrs: n.Xattrs,
			Links: uint64(n.Nlink)}
		if n.Type != tree.Dir && n.Nlink > 1 {
			// FIFOs, devices and symlinks have hard links too.
			node.Inode = e.Ino
		}
		switch n.Type {
		case tree.Dir:
			child, err := w.dir(e.Ino, crel, w.childRules(sub, e.Name))
			if err != nil {
				return Tree{}, err
			}
			node.Subtree = child.ID
			node.Size = 0
			st.Dirs += child.Stats.Dirs
			st.Files += child.Stats.Files
			st.Bytes += child.Stats.Bytes
		case tree.File:
			node.SetPieces(Pieces(n.Chunks))
			if lost, err := w.lostContent(node.Content); err != nil {
				return Tree{}, err
			} else if lost {
				if node, err = w.lostFile(crel); err != nil {
					return Tree{}, err
				}
				if node == nil {
					continue
				}
				node.Name = e.Name
			}
			for _, id := range node.Content {
				if !w.seen[id] && !w.r.Has(pack.Data, id) {
					w.Need = append(w.Need, id)
				}
				w.seen[id] = true
			}
			st.Files++
			st.Bytes += int64(node.Size)
		}
		t.Nodes = append(t.Nodes, node)
	}
	b, err := t.Encode()
	if err != nil {
		return Tree{}, err
	}
	w.built.Add(1)
	id := w.r.BlobID(b)
	if !w.r.Has(pack.Tree, id) {
		w.Trees = append(w.Trees, b)
	}
	te := Tree{ID: id, Stats: st, Rules: rules}
	if len(w.Lost) == lostBefore && w.unreadable == unreadableBefore {
		// A tree holding a lost file is walked again by every snapshot,
		// so Status keeps listing the file until it is rewritten or gone;
		// one below an unreadable ignore file too, until it reads again.
		w.Built[ino] = te
	}
	return te, nil
}

// subRules returns the rules in force below a directory whose own ignore
// file holds content, given rules, those in force above it.
func (w *Walk) subRules(rules crypto.ID, content []byte) crypto.ID {
	b := make([]byte, 0, 8+len(rules)+len(content))
	b = append(b, "ignore\x00"...)
	b = append(b, rules[:]...)
	return w.r.BlobID(append(b, content...))
}

// childRules returns the rules of subdirectory name of a directory with
// rules sub below it. Without rules the path does not matter; with them
// it does (anchored patterns), so it goes into the hash.
func (w *Walk) childRules(sub crypto.ID, name string) crypto.ID {
	if sub.IsNull() {
		return sub
	}
	b := make([]byte, 0, 8+len(sub)+len(name))
	b = append(b, "child\x00\x00"...)
	b = append(b, sub[:]...)
	return w.r.BlobID(append(b, name...))
}

// Pieces converts a chunk list to a tree's pieces (holes keep their length).
func Pieces(chunks []meta.Chunk) []tree.Piece {
	out := make([]tree.Piece, len(chunks))
	for i, ch := range chunks {
		if ch.IsHole() {
			out[i].Hole = ch.Len
		} else {
			out[i].ID = ch.ID
		}
	}
	return out
}
