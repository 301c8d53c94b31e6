package cache

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"slices"
	"strings"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/keepfs/keepfs/cache/meta"
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
	return c.snapshotIfChanged(ctx, true)
}

// snapshotLoop takes the periodic snapshots until ctx (Close) ends it. One
// attempt may take at most a few intervals, so that a remote that is down
// does not hold snapMu forever.
func (c *Cache) snapshotLoop(ctx context.Context, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(c.opts.SnapshotInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if !c.waitQuiet(ctx) {
				return
			}
			sctx, cancel := context.WithTimeout(ctx, max(3*c.opts.SnapshotInterval, 30*time.Second))
			if _, err := c.snapshotIfChanged(sctx, false); err != nil && ctx.Err() == nil {
				c.log.Warn("periodic snapshot failed; will retry", "err", err)
			}
			cancel()
		}
	}
}

// Periodic snapshots wait for snapshotQuiet without changes, so that one
// does not catch a tree half-way through a copy (a file copied before the
// .gdprignore that excludes it), but never for longer than twice the
// interval or snapshotMaxDelay: a writer that never stops still gets
// snapshots.
const (
	snapshotQuiet    = time.Second
	snapshotMaxDelay = time.Minute
)

// waitQuiet waits until no change came for snapshotQuiet, or until the
// longest postponement; false if ctx ended first.
func (c *Cache) waitQuiet(ctx context.Context) bool {
	deadline := time.Now().Add(min(2*c.opts.SnapshotInterval, snapshotMaxDelay))
	for {
		c.mu.Lock()
		wait := snapshotQuiet - time.Since(c.lastChange)
		c.mu.Unlock()
		if wait <= 0 || !time.Now().Add(wait).Before(deadline) {
			return ctx.Err() == nil
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(wait):
		}
	}
}

// snapshotIfChanged stores a snapshot if anything changed since the last
// one (or, with always, if there is no snapshot at all yet).
//
// OnSnapshot callbacks run after snapMu is released, so that they may call
// back into the cache (even Sync) without deadlocking.
func (c *Cache) snapshotIfChanged(ctx context.Context, always bool) (*repo.Snapshot, error) {
	sn, fns, err := c.snapshotLocked(ctx, always)
	if errors.Is(err, errChunkVanished) {
		// The upload found the loss and dropped the chunk's key: a second
		// walk sees the file as lost and backs up everything else.
		sn, fns, err = c.snapshotLocked(ctx, always)
	}
	for _, fn := range fns {
		fn(sn)
	}
	return sn, err
}

func (c *Cache) snapshotLocked(ctx context.Context, always bool) (*repo.Snapshot, []func(*repo.Snapshot), error) {
	if err := c.commitIntents(ctx); err != nil {
		return nil, nil, fmt.Errorf("commit fsynced files: %w", err)
	}
	c.snapMu.Lock()
	defer c.snapMu.Unlock()
	c.mu.Lock()
	seq := c.changeSeq
	last := c.lastSnap
	if seq == c.snapSeq && (last != nil || !always) {
		c.mu.Unlock()
		return last, nil, nil
	}
	c.invalid = map[uint64]bool{}
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.invalid = nil
		c.mu.Unlock()
	}()
	sn, w, err := c.takeSnapshot(ctx, last, seq)
	if err != nil {
		c.setRemoteHealth(err)
		return nil, nil, fmt.Errorf("snapshot: %w", err)
	}
	built := w.Built
	c.mu.Lock()
	lostChanged := !slices.Equal(c.lost, w.Lost)
	c.lost = w.Lost
	c.mu.Unlock()
	if lostChanged {
		// Kept across restarts, so that status lists them before the
		// first snapshot of the next mount.
		v := []byte(strings.Join(w.Lost, "\x00"))
		if err := c.update(func(txn *wtxn) error { return txn.Set(lostKey, v) }); err != nil {
			c.log.Warn("cannot record the lost files", "err", err)
		}
	}
	c.installTrees(built)
	if sn == last {
		// The tree is what the last snapshot already holds.
		c.mu.Lock()
		c.snapSeq = seq
		c.mu.Unlock()
		return last, nil, nil
	}
	c.mu.Lock()
	c.snapSeq = seq
	c.lastSnap = sn
	fns := append([]func(*repo.Snapshot){}, c.onSnap...)
	c.mu.Unlock()
	if err := c.update(func(txn *wtxn) error { return txn.Set(meta.StateKey("lastsnap"), sn.ID[:]) }); err != nil {
		c.log.Warn("cannot record the last snapshot", "err", err)
	}
	c.setRemoteHealth(nil)
	c.log.Info("snapshot stored", "name", sn.Name(), "id", sn.ID.Short(), "blobs_new", sn.Stats.BlobsNew)
	return sn, fns, nil
}

// errChunkVanished: a chunk a snapshot needed went missing from the local
// state before its upload, so that snapshot must not be stored.
var errChunkVanished = fmt.Errorf("went missing from the local state before its upload: %w", errCorruptState)

// lostKey holds Status.LostFiles, NUL-separated (no path holds a NUL).
var lostKey = meta.StateKey("lost")

// takeSnapshot stores a snapshot of the namespace, or returns parent if
// nothing changed since; the walk tells which trees it built and which
// files it found lost. seq is the change count the walk covers at least.
func (c *Cache) takeSnapshot(ctx context.Context, parent *repo.Snapshot, seq uint64) (*repo.Snapshot, *snapshot.Walk, error) {
	c.mu.Lock()
	cached := make(map[uint64]snapshot.Tree, len(c.trees))
	for k, v := range c.trees {
		cached[k] = v
	}
	c.mu.Unlock()
	d := c.dbAcquire()
	defer d.release()
	txn := d.db.NewTransaction(false)
	w := snapshot.New(ctx, snapshot.Config{Namespace: txnNamespace{c, txn}, Repository: walkRepo{c.r},
		Cached: cached, Parent: parent, Log: c.log, Inodes: &c.walkInodes, Built: &c.treesBuilt})
	root, err := w.Root()
	txn.Discard()
	if err != nil {
		return nil, nil, err
	}
	if len(w.Lost) > 0 {
		c.log.Error("files whose content was lost keep their last backed-up version in the snapshot (left out if they had none); rewrite or delete them", "files", len(w.Lost), "first", w.Lost[0])
	}
	// Chunks first: the queue becomes exactly what this walk decided the
	// repository needs, then drains. Commits never queue, so this is the
	// only way a chunk is ever uploaded (DESIGN invariant 7).
	if err := c.up.Set(w.Need, seq); err != nil {
		return nil, nil, err
	}
	c.mu.Lock()
	force := c.forceSnap
	c.forceSnap = false
	c.mu.Unlock()
	if parent != nil && root.ID == parent.Tree && len(w.Need) == 0 && !force {
		return parent, w, nil
	}
	if err := c.up.Drain(ctx); err != nil {
		// The uploader retries in the background for as long as nothing
		// changes; a change has the next snapshot decide again.
		c.up.Wake()
		return nil, nil, err
	}
	for _, id := range w.Need {
		// Dropped by the uploader as missing locally: the remote must
		// never name a blob it does not hold. The next snapshot sees the
		// chunk as lost (lostContent).
		if !c.r.Index().Has(pack.Data, id) {
			return nil, nil, fmt.Errorf("chunk %s: %w", id.Short(), errChunkVanished)
		}
	}
	defer c.up.Hold()()
	before := c.r.Stats()
	for _, b := range w.Trees {
		if _, _, err := c.r.SaveBlob(ctx, pack.Tree, b); err != nil {
			return nil, nil, err
		}
		c.treesUploaded.Add(1)
	}
	sn := &repo.Snapshot{Time: c.opts.Now().UTC(), Tree: root.ID, Source: "keepfs mount", Stats: root.Stats}
	sn.Hostname, _ = os.Hostname()
	if u, err := user.Current(); err == nil {
		sn.Username = u.Username
	}
	if parent != nil {
		p := parent.ID
		sn.Parent = &p
		// .versions names snapshots by the second: keep the names of a
		// mount's snapshots distinct and increasing.
		if p := parent.Time.Truncate(time.Second); !sn.Time.Truncate(time.Second).After(p) {
			sn.Time = p.Add(time.Second)
		}
	}
	if err := c.r.SaveSnapshot(ctx, sn); err != nil {
		return nil, nil, err
	}
	after := c.r.Stats()
	sn.Stats.BlobsNew = after.BlobsNew - before.BlobsNew
	sn.Stats.BytesAdded = after.BytesStored - before.BytesStored
	return sn, w, nil
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
		b, err := c.getChunk(ctx, ch.ID)
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
		return c.update(func(txn *wtxn) error { return txn.putInode(meta.RootIno, root) })
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
			if nd.Type == tree.File && nd.Links > 1 && nd.Inode != 0 {
				if ino, ok := links[nd.Inode]; ok {
					if err := wb.Set(meta.DirentKey(dir, nd.Name), meta.EncodeDirent(ino, nd.Type)); err != nil {
						return st, err
					}
					st.Files++
					st.Bytes += int64(nd.Size)
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
				c.trees[ino] = snapshot.Tree{ID: nd.Subtree, Stats: sub}
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
				if nd.Links > 1 && nd.Inode != 0 {
					links[nd.Inode] = ino
					n.Nlink = uint32(nd.Links)
				}
				st.Files++
				st.Bytes += int64(nd.Size)
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
	c.trees[meta.RootIno] = snapshot.Tree{ID: latest.Tree, Stats: st}
	if err := wb.Set(meta.InodeKey(meta.RootIno), meta.EncodeInode(root)); err != nil {
		return err
	}
	if err := wb.Set(meta.StateKey("lastsnap"), latest.ID[:]); err != nil {
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
	ents, err := readDirTxn(n.txn, ino)
	if err != nil {
		return nil, err
	}
	out := make([]snapshot.Dirent, len(ents))
	for i, e := range ents {
		out[i] = snapshot.Dirent(e)
	}
	return out, nil
}

func (n txnNamespace) Inode(ino uint64) (*meta.Inode, error) { return getInodeTxn(n.txn, ino) }

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

// walkRepo is the repository as a snapshot walk sees it.
type walkRepo struct{ r *repo.Repository }

func (w walkRepo) Has(t pack.BlobType, id crypto.ID) bool { return w.r.Index().Has(t, id) }
func (w walkRepo) Lookup(ctx context.Context, root crypto.ID, path string) (*tree.Node, error) {
	return w.r.Lookup(ctx, root, path)
}
func (w walkRepo) BlobID(b []byte) crypto.ID { return w.r.Key().BlobID(b) }
