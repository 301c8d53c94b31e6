package cache

import (
	"context"
	"errors"
	"fmt"
	"os"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/keepfs/keepfs/cache/meta"
	"github.com/keepfs/keepfs/cache/namespace"
	"github.com/keepfs/keepfs/cache/snapshot"
	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/pack"
	"github.com/keepfs/keepfs/repo/tree"
)

// Sync takes a snapshot of everything committed (every file closed or
// fsynced before the call) and returns once the remote holds it. With
// nothing changed since the last snapshot, it returns that one.
func (c *Cache) Sync(ctx context.Context) (*repo.Snapshot, error) {
	defer c.up.Urgent()() // the caller waits for the upload
	return c.snap.Sync(ctx)
}

// newScheduler wires the snapshot scheduler (snapshot.Scheduler) to the
// mount, the upload queue, the repository and the state directory.
func (c *Cache) newScheduler() *snapshot.Scheduler {
	return snapshot.NewScheduler(snapshot.SchedulerConfig{
		Host:       snapHost{c},
		Queue:      c.up,
		Repository: walkRepo{c.r},
		Store:      treeStore{c},
		Trees:      c.trees,
		Interval:   c.opts.SnapshotInterval,
		Now:        c.opts.Now,
		Contact:    c.setRemoteHealth,
		Vanished:   errChunkVanished,
		ParentGone: c.parentGone,
		// Uploaded chunks stay pinned until a stored snapshot names them.
		Stored: func() { c.chunks.Unpin() },
		Log:    c.log,
	})
}

// errChunkVanished: a chunk a snapshot needed went missing from the local
// state before its upload, so that snapshot must not be stored.
var errChunkVanished = fmt.Errorf("%w: %w", snapshot.ErrChunkVanished, errCorruptState)

// snapHost is the mount as a snapshot sees it.
type snapHost struct{ c *Cache }

func (h snapHost) CommitPending(ctx context.Context) error { return h.c.commitIntents(ctx) }

func (h snapHost) View() (snapshot.Namespace, func()) {
	d := h.c.dbAcquire()
	txn := d.db.NewTransaction(false)
	return txnNamespace{h.c, txn}, func() {
		txn.Discard()
		d.release()
	}
}

// readAll returns a small file's committed content.
func (c *Cache) readAll(ctx context.Context, n *meta.Inode) ([]byte, error) {
	var out []byte
	for _, ch := range n.Chunks {
		if ch.IsHole() {
			if ch.Len > 1<<20 {
				return nil, fmt.Errorf("%d-byte hole in a file read whole: %w", ch.Len, ErrInvalid)
			}
			out = append(out, make([]byte, ch.Len)...)
			continue
		}
		b, err := c.chunks.Get(ctx, ch.ID)
		if err != nil {
			return nil, err
		}
		out = append(out, b...)
	}
	return out, nil
}

// bootstrap fills an empty state directory: an empty root, or the latest
// snapshot of the repository (metadata only; data comes on read).
func (c *Cache) bootstrap(ctx context.Context) error {
	snaps, err := c.r.Snapshots(ctx)
	if err != nil {
		return fmt.Errorf("list snapshots to rebuild the local state: %w", err)
	}
	now := c.now()
	root := &meta.Inode{Type: tree.Dir, Mode: 0o755, UID: uint32(os.Getuid()), GID: uint32(os.Getgid()),
		Nlink: 2, Atime: now, Mtime: now, Ctime: now}
	if len(snaps) == 0 {
		return c.update(func(txn *wtxn) error { return txn.PutInode(meta.RootIno, root) })
	}
	latest := snaps[len(snaps)-1]
	d := c.dbAcquire()
	defer d.release()
	wb := d.db.NewWriteBatch()
	defer wb.Cancel()
	links := map[uint64]uint64{} // snapshot inode → local inode, for hard links
	// Each directory is a tree blob fetched from the remote: over SFTP a
	// big tree takes a while.
	progress := c.progressReporter("rebuilding the local state from snapshot "+latest.Name(), "directories", latest.Stats.Dirs)
	var dirs int64
	progress(0, false)
	var walk func(id crypto.ID, dir uint64, dn *meta.Inode) (repo.SnapshotStats, error)
	walk = func(id crypto.ID, dir uint64, dn *meta.Inode) (repo.SnapshotStats, error) {
		t, err := c.r.LoadTree(ctx, id)
		if err != nil {
			return repo.SnapshotStats{}, err
		}
		dirs++
		progress(dirs, false)
		st := repo.SnapshotStats{Dirs: 1}
		for _, nd := range t.Nodes {
			if nd.Type != tree.Dir && nd.Links > 1 && nd.Inode != 0 {
				if ino, ok := links[nd.Inode]; ok {
					if err := wb.Set(meta.DirentKey(dir, nd.Name), meta.EncodeDirent(ino, nd.Type)); err != nil {
						return st, err
					}
					if nd.Type == tree.File {
						st.Files++
						st.Bytes += int64(nd.Size)
					}
					continue
				}
			}
			ino, err := c.allocIno()
			if err != nil {
				return st, err
			}
			n := &meta.Inode{Type: nd.Type, Mode: nd.Mode, UID: nd.UID, GID: nd.GID, Nlink: 1, Size: nd.Size,
				Rdev: nd.Rdev, Atime: nd.ATime, Mtime: nd.MTime, Ctime: nd.CTime, Parent: dir, Name: nd.Name,
				Target: nd.LinkTarget, Xattrs: nd.Xattrs}
			switch nd.Type {
			case tree.Dir:
				n.Nlink = 2
				dn.Nlink++
				sub, err := walk(nd.Subtree, ino, n)
				if err != nil {
					return st, err
				}
				c.trees.Seed(ino, snapshot.Tree{ID: nd.Subtree, Stats: sub})
				st.Dirs += sub.Dirs
				st.Files += sub.Files
				st.Bytes += sub.Bytes
			case tree.File:
				for _, p := range nd.Pieces() {
					if p.ID.IsNull() {
						n.Chunks = append(n.Chunks, meta.Chunk{Len: p.Hole})
						continue
					}
					loc, ok := c.r.Index().Lookup(pack.Data, p.ID)
					if !ok {
						return st, fmt.Errorf("snapshot %s names chunk %s which the index lacks: %w", latest.ID.Short(), p.ID.Short(), repo.ErrBlobNotFound)
					}
					n.Chunks = append(n.Chunks, meta.Chunk{ID: p.ID, Len: uint64(loc.RawLength)})
				}
				st.Files++
				st.Bytes += int64(nd.Size)
			}
			if nd.Type != tree.Dir && nd.Links > 1 && nd.Inode != 0 {
				// FIFOs, devices and symlinks have hard links too.
				links[nd.Inode] = ino
				n.Nlink = uint32(nd.Links)
			}
			if err := wb.Set(meta.InodeKey(ino), meta.EncodeInode(n)); err != nil {
				return st, err
			}
			if err := wb.Set(meta.DirentKey(dir, nd.Name), meta.EncodeDirent(ino, nd.Type)); err != nil {
				return st, err
			}
		}
		return st, nil
	}
	st, err := walk(latest.Tree, meta.RootIno, root)
	if err != nil {
		return fmt.Errorf("rebuild from snapshot %s: %w", latest.Name(), err)
	}
	progress(dirs, true)
	c.trees.Seed(meta.RootIno, snapshot.Tree{ID: latest.Tree, Stats: st})
	if err := wb.Set(meta.InodeKey(meta.RootIno), meta.EncodeInode(root)); err != nil {
		return err
	}
	if err := wb.Set(snapshot.LastKey, latest.ID[:]); err != nil {
		return err
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("rebuild from snapshot %s: %w", latest.Name(), err)
	}
	c.log.Info("local state rebuilt from the remote", "snapshot", latest.Name(), "files", st.Files)
	return c.sync()
}

// txnNamespace is the namespace as one Badger read transaction sees it,
// for a snapshot walk.
type txnNamespace struct {
	c   *Cache
	txn *badger.Txn
}

func (n txnNamespace) ReadDir(ino uint64) ([]snapshot.Dirent, error) {
	ents, err := namespace.ReadDir(n.txn, ino)
	if err != nil {
		return nil, err
	}
	out := make([]snapshot.Dirent, len(ents))
	for i, e := range ents {
		out[i] = snapshot.Dirent(e)
	}
	return out, nil
}

func (n txnNamespace) Inode(ino uint64) (*meta.Inode, error) { return namespace.GetInode(n.txn, ino) }

func (n txnNamespace) HasChunk(id crypto.ID) (bool, error) {
	_, err := n.txn.Get(meta.ChunkKey(id))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	return err == nil, err
}

func (n txnNamespace) ReadFile(ctx context.Context, in *meta.Inode) ([]byte, error) {
	return n.c.readAll(ctx, in)
}

// walkRepo is the repository as a snapshot sees it.
type walkRepo struct{ r *repo.Repository }

func (w walkRepo) Has(t pack.BlobType, id crypto.ID) bool { return w.r.Index().Has(t, id) }
func (w walkRepo) Lookup(ctx context.Context, root crypto.ID, path string) (*tree.Node, error) {
	return w.r.Lookup(ctx, root, path)
}
func (w walkRepo) BlobID(b []byte) crypto.ID { return w.r.Key().BlobID(b) }

func (w walkRepo) SaveTree(ctx context.Context, b []byte) error {
	_, _, err := w.r.SaveBlob(ctx, pack.Tree, b)
	return err
}

func (w walkRepo) SaveSnapshot(ctx context.Context, sn *repo.Snapshot) error {
	return w.r.SaveSnapshot(ctx, sn)
}

func (w walkRepo) Stats() repo.WriteStats { return w.r.Stats() }
