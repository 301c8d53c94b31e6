package history

import (
	"context"
	"encoding/binary"
	"errors"
	"path"
	"slices"
	"sort"

	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/tree"
)

// Version is one distinct state of a file.
type Version struct {
	Snapshot string    `json:"snapshot"` // name (time) of the first snapshot showing this version
	ID       string    `json:"snapshot_id"`
	Path     string    `json:"path"`
	Size     uint64    `json:"size"`
	Content  string    `json:"content"` // keyed hash of the chunk list, short hex
	MTime    int64     `json:"mtime_ns"`
	content  crypto.ID // full content id, for comparisons
	inode    uint64    // source inode number, when the snapshot recorded one
	node     *tree.Node
}

// ContentID identifies a file's content without revealing it: the keyed
// hash of its chunk ids, and of its holes, each as a zero id (which no
// chunk has) and its length as 8 bytes big-endian. A file without holes
// keeps the id it had before holes existed.
func ContentID(k *crypto.Key, n *tree.Node) crypto.ID {
	b := make([]byte, 0, len(n.Content)*32+len(n.Holes)*40)
	for _, p := range n.Pieces() {
		b = append(b, p.ID[:]...)
		if p.ID.IsNull() {
			b = binary.BigEndian.AppendUint64(b, p.Hole)
		}
	}
	return k.BlobID(b)
}

// Log lists the versions of the file at p in the newest snapshot that has
// it, oldest first. Where the path is missing in an older snapshot, a file
// with the same content elsewhere in that snapshot is taken as its former
// name (a rename), and the search goes on under that name; failing that, a
// file with the same inode number (a rename and an edit between two
// snapshots of a tree that records inode numbers).
func Log(ctx context.Context, r *repo.Repository, p string) ([]Version, error) {
	snaps, err := r.Snapshots(ctx)
	if err != nil {
		return nil, err
	}
	found, err := trace(ctx, r, snaps, p)
	if err != nil {
		return nil, err
	}
	if len(found) == 0 {
		return nil, repo.ErrPathNotFound
	}
	// Oldest first, one entry per change of content or name.
	var out []Version
	for i := len(found) - 1; i >= 0; i-- {
		v := found[i]
		if len(out) > 0 && out[len(out)-1].content == v.content && out[len(out)-1].Path == v.Path {
			continue
		}
		v.Content = v.content.String()[:16]
		out = append(out, v)
	}
	return out, nil
}

// Occurrence is the file as one snapshot holds it.
type Occurrence struct {
	Snapshot *repo.Snapshot
	Path     string
	Node     *tree.Node
}

// Trace lists every snapshot of snaps (oldest first, as Snapshots
// returns them) that holds the file at p in the newest snapshot that has
// it, under the name it had there, following renames as Log does. The
// result is newest first.
func Trace(ctx context.Context, r *repo.Repository, snaps []*repo.Snapshot, p string) ([]Occurrence, error) {
	found, err := trace(ctx, r, snaps, p)
	if err != nil {
		return nil, err
	}
	bySnap := map[crypto.ID]*repo.Snapshot{}
	for _, sn := range snaps {
		bySnap[sn.ID] = sn
	}
	out := make([]Occurrence, len(found))
	for i, v := range found {
		id, _ := crypto.ParseID(v.ID)
		out[i] = Occurrence{Snapshot: bySnap[id], Path: v.Path, Node: v.node}
	}
	return out, nil
}

func trace(ctx context.Context, r *repo.Repository, snaps []*repo.Snapshot, p string) ([]Version, error) {
	p = path.Clean("/" + p)
	var found []Version // newest first
	cur := p
	for i := len(snaps) - 1; i >= 0; i-- {
		sn := snaps[i]
		n, err := r.Lookup(ctx, sn.Tree, cur)
		if err != nil && !errors.Is(err, repo.ErrPathNotFound) {
			return nil, err
		}
		if (n == nil || n.Type != tree.File) && len(found) > 0 {
			// Renamed? Look for the last known content under another name.
			prev := found[len(found)-1]
			np, nn, err := find(ctx, r, sn.Tree, func(n *tree.Node) bool { return ContentID(r.Key(), n) == prev.content })
			if err == nil && nn == nil && prev.inode != 0 {
				np, nn, err = findInChain(ctx, r, sn.Tree, cur, prev.inode)
			}
			if err != nil {
				return nil, err
			}
			if nn != nil {
				cur, n = np, nn
			}
		}
		if n == nil || n.Type != tree.File {
			continue
		}
		found = append(found, Version{Snapshot: sn.Name(), ID: sn.ID.String(), Path: cur, Size: n.Size,
			MTime: n.MTime, content: ContentID(r.Key(), n), inode: n.Inode, node: n})
	}
	return found, nil
}

// findInChain looks for a file with inode number ino in the directories
// on p's parent chain (its own directory first, then up to the root), not
// below them: inode numbers are reused once a file is gone, so a match far
// away is more likely a stranger than the same file renamed.
func findInChain(ctx context.Context, r *repo.Repository, root crypto.ID, p string, ino uint64) (string, *tree.Node, error) {
	for dir := path.Dir(p); ; dir = path.Dir(dir) {
		d, err := r.Lookup(ctx, root, dir)
		if err != nil && !errors.Is(err, repo.ErrPathNotFound) {
			return "", nil, err
		}
		if err == nil && d.Type == tree.Dir {
			t, err := r.LoadTree(ctx, d.Subtree)
			if err != nil {
				return "", nil, err
			}
			for _, n := range t.Nodes {
				if n.Type == tree.File && n.Inode == ino {
					return path.Join(dir, n.Name), n, nil
				}
			}
		}
		if dir == "/" {
			return "", nil, nil
		}
	}
}

// find searches a whole snapshot for the first file (in path order) that
// match accepts.
func find(ctx context.Context, r *repo.Repository, root crypto.ID, match func(*tree.Node) bool) (string, *tree.Node, error) {
	var walk func(id crypto.ID, dir string) (string, *tree.Node, error)
	walk = func(id crypto.ID, dir string) (string, *tree.Node, error) {
		t, err := r.LoadTree(ctx, id)
		if err != nil {
			return "", nil, err
		}
		for _, n := range t.Nodes {
			switch n.Type {
			case tree.File:
				if match(n) {
					return path.Join(dir, n.Name), n, nil
				}
			case tree.Dir:
				if p, nn, err := walk(n.Subtree, path.Join(dir, n.Name)); err != nil || nn != nil {
					return p, nn, err
				}
			}
		}
		return "", nil, nil
	}
	return walk(root, "/")
}

// Change kinds.
const (
	Added    = "added"
	Removed  = "removed"
	Modified = "modified"
	Renamed  = "renamed"
)

// Change is one difference between two snapshots.
type Change struct {
	Kind string `json:"kind"`
	Path string `json:"path"`
	From string `json:"from,omitempty"` // for renames
	Type string `json:"type"`
}

// Diff lists what changed from snapshot a to b. Identical subtrees are
// skipped without being read; a file removed in one place and added with
// the same content elsewhere is a rename.
func Diff(ctx context.Context, r *repo.Repository, a, b *repo.Snapshot) ([]Change, error) {
	var changes []Change
	removed := map[crypto.ID][]int{}
	var walk func(ta, tb crypto.ID, dir string) error
	// collect lists every entry of a subtree as added or removed.
	var collect func(id crypto.ID, dir, kind string) error
	collect = func(id crypto.ID, dir, kind string) error {
		t, err := r.LoadTree(ctx, id)
		if err != nil {
			return err
		}
		for _, n := range t.Nodes {
			if err := one(r, &changes, removed, collect, n, dir, kind); err != nil {
				return err
			}
		}
		return nil
	}
	walk = func(ta, tb crypto.ID, dir string) error {
		if ta == tb {
			return nil
		}
		x, err := r.LoadTree(ctx, ta)
		if err != nil {
			return err
		}
		y, err := r.LoadTree(ctx, tb)
		if err != nil {
			return err
		}
		i, j := 0, 0
		for i < len(x.Nodes) || j < len(y.Nodes) {
			switch {
			case j == len(y.Nodes) || (i < len(x.Nodes) && x.Nodes[i].Name < y.Nodes[j].Name):
				if err := one(r, &changes, removed, collect, x.Nodes[i], dir, Removed); err != nil {
					return err
				}
				i++
			case i == len(x.Nodes) || y.Nodes[j].Name < x.Nodes[i].Name:
				if err := one(r, &changes, removed, collect, y.Nodes[j], dir, Added); err != nil {
					return err
				}
				j++
			default:
				na, nb := x.Nodes[i], y.Nodes[j]
				p := path.Join(dir, na.Name)
				switch {
				case na.Type == tree.Dir && nb.Type == tree.Dir:
					if err := walk(na.Subtree, nb.Subtree, p); err != nil {
						return err
					}
				case na.Type != nb.Type:
					if err := one(r, &changes, removed, collect, na, dir, Removed); err != nil {
						return err
					}
					if err := one(r, &changes, removed, collect, nb, dir, Added); err != nil {
						return err
					}
				case !sameNode(na, nb):
					changes = append(changes, Change{Kind: Modified, Path: p, Type: nb.Type.String()})
				}
				i++
				j++
			}
		}
		return nil
	}
	if err := walk(a.Tree, b.Tree, "/"); err != nil {
		return nil, err
	}
	// Pair added files with removed files of the same content.
	drop := map[int]bool{}
	for k, c := range changes {
		if c.Kind != Added || c.Type != tree.File.String() {
			continue
		}
		n, err := r.Lookup(ctx, b.Tree, c.Path)
		if err != nil {
			return nil, err
		}
		cid := ContentID(r.Key(), n)
		if idx := removed[cid]; len(idx) > 0 {
			changes[k] = Change{Kind: Renamed, Path: c.Path, From: changes[idx[0]].Path, Type: c.Type}
			drop[idx[0]] = true
			removed[cid] = idx[1:]
		}
	}
	out := changes[:0]
	for k, c := range changes {
		if !drop[k] {
			out = append(out, c)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

func one(r *repo.Repository, changes *[]Change, removed map[crypto.ID][]int, collect func(crypto.ID, string, string) error, n *tree.Node, dir, kind string) error {
	p := path.Join(dir, n.Name)
	*changes = append(*changes, Change{Kind: kind, Path: p, Type: n.Type.String()})
	if kind == Removed && n.Type == tree.File {
		cid := ContentID(r.Key(), n)
		removed[cid] = append(removed[cid], len(*changes)-1)
	}
	if n.Type == tree.Dir {
		return collect(n.Subtree, p, kind)
	}
	return nil
}

func sameNode(a, b *tree.Node) bool {
	if a.Mode != b.Mode || a.UID != b.UID || a.GID != b.GID || a.LinkTarget != b.LinkTarget || a.Size != b.Size {
		return false
	}
	if len(a.Content) != len(b.Content) {
		return false
	}
	for i := range a.Content {
		if a.Content[i] != b.Content[i] {
			return false
		}
	}
	if !slices.Equal(a.Holes, b.Holes) {
		return false
	}
	// A change of times alone is not a modification.
	return true
}
