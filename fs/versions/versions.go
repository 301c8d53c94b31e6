package versions

import (
	"context"
	"encoding/binary"
	"errors"
	"hash/fnv"
	"log/slog"
	"strings"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/pack"
	"github.com/keepfs/keepfs/repo/tree"
)

// Source is what the tree reads from; *repo.Repository implements it.
type Source interface {
	Snapshots(ctx context.Context) ([]*repo.Snapshot, error)
	LoadTree(ctx context.Context, id crypto.ID) (*tree.Tree, error)
	LoadBlob(ctx context.Context, t pack.BlobType, id crypto.ID) ([]byte, error)
	BlobSize(t pack.BlobType, id crypto.ID) (uint32, bool)
}

// RepoSource adapts a repository.
type RepoSource struct{ *repo.Repository }

// Snapshots lists the snapshots. One whose tree the index lacks was
// stored by another client (an import beside the mount) after the index
// was loaded: the segments stored since are picked up, so that it reads
// without a remount.
func (s RepoSource) Snapshots(ctx context.Context) ([]*repo.Snapshot, error) {
	snaps, err := s.Repository.Snapshots(ctx)
	if err != nil {
		return nil, err
	}
	for _, sn := range snaps {
		if !s.Index().Has(pack.Tree, sn.Tree) {
			// Failing, its reads fail as before, with the blob not indexed.
			_, _ = s.PickUpSegments(ctx)
			break
		}
	}
	return snaps, nil
}

// BlobSize is the plaintext length of an indexed blob.
func (s RepoSource) BlobSize(t pack.BlobType, id crypto.ID) (uint32, bool) {
	loc, ok := s.Index().Lookup(t, id)
	return loc.RawLength, ok
}

// Options tune the tree.
type Options struct {
	Logger *slog.Logger
	// ListTTL bounds how long the snapshot list is reused without Refresh.
	ListTTL time.Duration
	// CacheBytes bounds the decoded chunks kept in memory (default 64 MiB).
	CacheBytes int64
	// InvalidateDelay holds back each invalidation Refresh starts (tests
	// of Settle).
	InvalidateDelay time.Duration
}

// snapshot timeouts: contents never change.
const stableTimeout = time.Hour

// Root is the .versions directory.
type Root struct {
	gofs.Inode
	src  Source
	opts Options

	mu     sync.Mutex
	names  []string // unique names, oldest first
	byName map[string]*repo.Snapshot
	loaded time.Time
	blobs  *chunkCache
	inodes map[string]*gofs.Inode // snapshot id -> dir inode, so the kernel sees one inode per snapshot
	// handed is every name the kernel holds a dentry for, with the
	// snapshot it was given: Refresh invalidates those that now resolve
	// elsewhere (latest, prefixes) or nowhere (a pruned snapshot). It
	// grows only with the names people type, so it is not bounded.
	handed  map[string]crypto.ID
	created time.Time

	// Invalidations Refresh started and not yet done; idle is closed
	// while there are none (Settle).
	invalMu sync.Mutex
	invalN  int
	idle    chan struct{}
}

// NewRoot returns the .versions directory over src.
func NewRoot(src Source, opts Options) *Root {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.CacheBytes <= 0 {
		opts.CacheBytes = 64 << 20
	}
	if opts.ListTTL == 0 {
		opts.ListTTL = 10 * time.Second
	}
	return &Root{src: src, opts: opts, blobs: newChunkCache(opts.CacheBytes), inodes: map[string]*gofs.Inode{}, handed: map[string]crypto.ID{}, created: time.Now()}
}

// Refresh drops the cached snapshot list; call it after each new snapshot
// and after a prune.
//
// Names the kernel has cached that now mean another snapshot (latest, a
// prefix) or none are invalidated, so the change shows at once rather than
// after the entry timeout. That happens in the background: Refresh may be
// called while a FUSE request holds the kernel's lock on this directory,
// and an invalidation waits for that lock.
func (r *Root) Refresh() {
	r.mu.Lock()
	r.loaded = time.Time{}
	stale := len(r.handed) > 0
	r.mu.Unlock()
	if stale {
		r.invalMu.Lock()
		if r.invalN == 0 {
			r.idle = make(chan struct{})
		}
		r.invalN++
		r.invalMu.Unlock()
		go func() {
			defer func() {
				r.invalMu.Lock()
				if r.invalN--; r.invalN == 0 {
					close(r.idle)
				}
				r.invalMu.Unlock()
			}()
			if r.opts.InvalidateDelay > 0 {
				time.Sleep(r.opts.InvalidateDelay)
			}
			r.invalidate()
		}()
	}
}

// Settle waits until the invalidations Refresh started are done, so that
// no name the kernel holds still means an older snapshot, or until ctx
// ends: a sync that returns before then leaves .versions/latest showing
// the previous snapshot, or a walk of it mixing the two. Not from a FUSE
// request on .versions (see Refresh).
func (r *Root) Settle(ctx context.Context) error {
	r.invalMu.Lock()
	idle, busy := r.idle, r.invalN > 0
	r.invalMu.Unlock()
	if !busy {
		return nil
	}
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// invalidate drops kernel entries whose name resolves differently now.
func (r *Root) invalidate() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, _, err := r.list(ctx); err != nil {
		return
	}
	r.mu.Lock()
	handed := make(map[string]crypto.ID, len(r.handed))
	for n, id := range r.handed {
		handed[n] = id
	}
	r.mu.Unlock()
	for name, id := range handed {
		if sn, err := r.resolve(ctx, name); err == nil && sn.ID == id {
			continue
		}
		r.mu.Lock()
		delete(r.handed, name)
		r.mu.Unlock()
		r.NotifyEntry(name)
	}
}

// names gives snapshots unique names (repo.UniqueNames) and maps them back.
func names(snaps []*repo.Snapshot) ([]string, map[string]*repo.Snapshot) {
	out := repo.UniqueNames(snaps)
	by := make(map[string]*repo.Snapshot, len(snaps))
	for i, n := range out {
		by[n] = snaps[i]
	}
	return out, by
}

func (r *Root) list(ctx context.Context) ([]string, map[string]*repo.Snapshot, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.loaded.IsZero() && time.Since(r.loaded) < r.opts.ListTTL {
		return r.names, r.byName, nil
	}
	snaps, err := r.src.Snapshots(ctx)
	if err != nil {
		if r.names != nil {
			// Keep serving what we know while the remote is away.
			r.opts.Logger.Warn("listing snapshots", "err", err)
			return r.names, r.byName, nil
		}
		return nil, nil, err
	}
	r.names, r.byName = names(snaps)
	r.loaded = time.Now()
	return r.names, r.byName, nil
}

// resolve maps a name in .versions to a snapshot.
func (r *Root) resolve(ctx context.Context, name string) (*repo.Snapshot, error) {
	ns, by, err := r.list(ctx)
	if err != nil {
		return nil, err
	}
	if s, ok := by[name]; ok {
		return s, nil
	}
	if name == "latest" {
		if len(ns) == 0 {
			return nil, repo.ErrNoSnapshot
		}
		return by[ns[len(ns)-1]], nil
	}
	if !strings.HasPrefix(name, "1") && !strings.HasPrefix(name, "2") {
		return nil, repo.ErrNoSnapshot
	}
	at, err := repo.ParseTimePrefix(name)
	if err != nil {
		return nil, repo.ErrNoSnapshot
	}
	snaps := make([]*repo.Snapshot, 0, len(ns))
	for _, n := range ns {
		snaps = append(snaps, by[n])
	}
	return repo.FindSnapshot(snaps, at)
}

var _ = (gofs.NodeReaddirer)((*Root)(nil))

// Readdir lists every snapshot and latest.
func (r *Root) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	ns, by, err := r.list(ctx)
	if err != nil {
		return nil, r.errno(err)
	}
	out := make([]fuse.DirEntry, 0, len(ns)+1)
	for _, n := range ns {
		out = append(out, fuse.DirEntry{Name: n, Mode: syscall.S_IFDIR, Ino: snapIno(by[n])})
	}
	if len(ns) > 0 {
		out = append(out, fuse.DirEntry{Name: "latest", Mode: syscall.S_IFDIR, Ino: snapIno(by[ns[len(ns)-1]])})
	}
	return gofs.NewListDirStream(out), 0
}

var _ = (gofs.NodeLookuper)((*Root)(nil))

// Lookup resolves snapshot names, latest and time prefixes.
func (r *Root) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	sn, err := r.resolve(ctx, name)
	if err != nil {
		return nil, r.errno(err)
	}
	// Root names can change meaning: latest and prefixes move as snapshots
	// arrive, and prune removes snapshots. Refresh invalidates changed
	// names at once; the timeout bounds staleness when nobody calls it
	// (snapshots taken or pruned elsewhere). Without any entry caching
	// every path walk through .versions would ask about its first
	// component again.
	out.SetEntryTimeout(r.opts.ListTTL)
	out.SetAttrTimeout(stableTimeout)
	root := &tree.Node{Name: name, Type: tree.Dir, Mode: 0o555, Subtree: sn.Tree, MTime: sn.Time.UnixNano(), CTime: sn.Time.UnixNano()}
	d := &dirNode{node: node{entry: entry{r: r, sn: sn, n: root}}}
	d.fill(&out.Attr)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.handed[name] = sn.ID
	key := sn.ID.String()
	if ino, ok := r.inodes[key]; ok {
		return ino, 0
	}
	ino := r.NewPersistentInode(ctx, d, gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: snapIno(sn)})
	r.inodes[key] = ino
	return ino, 0
}

var _ = (gofs.NodeGetattrer)((*Root)(nil))

// Getattr: a read-only directory whose times are the newest snapshot's,
// when its listing last changed (or when it was made, before it knows of
// any). It answers from the list it has: a stat must not wait for the
// remote.
func (r *Root) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFDIR | 0o555
	out.Nlink = 2
	r.mu.Lock()
	t := r.created
	if n := len(r.names); n > 0 {
		t = r.byName[r.names[n-1]].Time
	}
	r.mu.Unlock()
	out.SetTimes(&t, &t, &t)
	out.SetTimeout(time.Second)
	return 0
}

func (r *Root) errno(err error) syscall.Errno { return toErrno(r.opts.Logger, err) }

// toErrno maps repository errors: missing → ENOENT, integrity failure →
// EIO (never wrong bytes), cancellation → EINTR.
func toErrno(log *slog.Logger, err error) syscall.Errno {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, repo.ErrNoSnapshot), errors.Is(err, repo.ErrPathNotFound):
		return syscall.ENOENT
	case errors.Is(err, context.Canceled):
		return syscall.EINTR
	}
	if errors.Is(err, pack.ErrCorrupt) || errors.Is(err, crypto.ErrAuth) {
		log.Error("integrity failure reading a snapshot", "err", err)
	} else {
		log.Error("reading a snapshot", "err", err)
	}
	return syscall.EIO
}

func snapIno(sn *repo.Snapshot) uint64 { return pathIno(sn, "/") }

// pathIno gives every (snapshot, path) a stable inode number, in a range
// far from the live tree's sequential numbers.
func pathIno(sn *repo.Snapshot, p string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write(sn.ID[:])
	_, _ = h.Write([]byte(p))
	return h.Sum64() | 1<<63
}

// entry is what every node inside a snapshot knows about itself.
type entry struct {
	r    *Root
	sn   *repo.Snapshot
	n    *tree.Node
	path string
}

// node is the shared part of every entry inside a snapshot.
type node struct {
	gofs.Inode
	entry
}

func (n *entry) fill(a *fuse.Attr) {
	a.Mode = n.n.Mode & 0o7777
	switch n.n.Type {
	case tree.Dir:
		a.Mode |= syscall.S_IFDIR
		a.Nlink = 2
	case tree.Symlink:
		a.Mode |= syscall.S_IFLNK
		a.Size = uint64(len(n.n.LinkTarget))
	case tree.FIFO:
		a.Mode |= syscall.S_IFIFO
	case tree.CharDev:
		a.Mode |= syscall.S_IFCHR
		a.Rdev = uint32(n.n.Rdev)
	case tree.BlockDev:
		a.Mode |= syscall.S_IFBLK
		a.Rdev = uint32(n.n.Rdev)
	case tree.Socket:
		a.Mode |= syscall.S_IFSOCK
	default:
		a.Mode |= syscall.S_IFREG
		a.Size = n.n.Size
	}
	if n.n.Type != tree.Dir {
		a.Nlink = uint32(max(n.n.Links, 1))
	}
	a.Uid, a.Gid = n.n.UID, n.n.GID
	var holes uint64
	for _, h := range n.n.Holes {
		holes += h.Len
	}
	// st_blocks counts what is not a hole (go-fuse would count the size
	// unless Blksize is set).
	a.Blocks, a.Blksize = (a.Size-min(holes, a.Size)+511)/512, 4096
	mt := time.Unix(0, n.n.MTime)
	ct := time.Unix(0, n.n.CTime)
	at := mt
	if n.n.ATime != 0 {
		at = time.Unix(0, n.n.ATime)
	}
	a.SetTimes(&at, &mt, &ct)
	a.Ino = pathIno(n.sn, n.path)
	if n.n.Type != tree.Dir && n.n.Links > 1 && n.n.Inode != 0 {
		// Hard links share a number, as they did in the live tree:
		// cp -a, tar and rsync -H find them by it.
		a.Ino = linkIno(n.sn, n.n.Inode)
	}
}

// linkIno numbers the hard links of the snapshot's inode ino (paths start
// with "/", so the two never hash the same input).
func linkIno(sn *repo.Snapshot, ino uint64) uint64 {
	h := fnv.New64a()
	_, _ = h.Write(sn.ID[:])
	_, _ = h.Write(binary.BigEndian.AppendUint64([]byte("link:"), ino))
	return h.Sum64() | 1<<63
}

var _ = (gofs.NodeGetattrer)((*node)(nil))

func (n *node) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.fill(&out.Attr)
	out.SetTimeout(stableTimeout)
	return 0
}

var _ = (gofs.NodeGetxattrer)((*node)(nil))

// Getxattr answers from the tree node. ls -l asks for every file's
// SELinux label and POSIX ACL; coreutils stops asking on a device that
// answers "unsupported" (EOPNOTSUPP) once, while ENODATA makes it ask for
// every file again, a FUSE round trip each (the kernel caches no missing
// xattrs). So ACLs, which keepfs does not store, are unsupported, and so
// is a label the file does not have, as the live tree answers: with
// ENODATA, ls -lR of a snapshot took 5x the time of the live tree.
// Other missing names are ENODATA.
func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	for _, x := range n.n.Xattrs {
		if x.Name == attr {
			if len(dest) == 0 {
				return uint32(len(x.Value)), 0
			}
			if len(dest) < len(x.Value) {
				return uint32(len(x.Value)), syscall.ERANGE
			}
			return uint32(copy(dest, x.Value)), 0
		}
	}
	if attr == selinuxXattr || strings.HasPrefix(attr, "system.posix_acl_") {
		return 0, syscall.EOPNOTSUPP
	}
	return 0, syscall.ENODATA
}

// selinuxXattr holds a file's SELinux label.
const selinuxXattr = "security.selinux"

var _ = (gofs.NodeListxattrer)((*node)(nil))

func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	var b []byte
	for _, x := range n.n.Xattrs {
		b = append(append(b, x.Name...), 0)
	}
	if len(dest) < len(b) {
		return uint32(len(b)), syscall.ERANGE
	}
	return uint32(copy(dest, b)), 0
}

// Every change is refused: history is read-only.
var (
	_ = (gofs.NodeSetattrer)((*node)(nil))
	_ = (gofs.NodeSetxattrer)((*node)(nil))
	_ = (gofs.NodeRemovexattrer)((*node)(nil))
)

func (n *node) Setattr(ctx context.Context, fh gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return syscall.EROFS
}
func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return syscall.EROFS
}
func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno { return syscall.EROFS }

type dirNode struct{ node }

var _ = (gofs.NodeLookuper)((*dirNode)(nil))

func (d *dirNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	t, err := d.r.src.LoadTree(ctx, d.n.Subtree)
	if err != nil {
		return nil, d.r.errno(err)
	}
	c := t.Find(name)
	if c == nil {
		return nil, syscall.ENOENT
	}
	child := entry{r: d.r, sn: d.sn, n: c, path: d.path + "/" + name}
	child.fill(&out.Attr)
	out.SetEntryTimeout(stableTimeout)
	out.SetAttrTimeout(stableTimeout)
	var emb gofs.InodeEmbedder
	switch c.Type {
	case tree.Dir:
		emb = &dirNode{node{entry: child}}
	case tree.File:
		emb = &fileNode{node: node{entry: child}}
	case tree.Symlink:
		emb = &linkNode{node{entry: child}}
	default:
		emb = &node{entry: child}
	}
	return d.NewInode(ctx, emb, gofs.StableAttr{Mode: out.Attr.Mode & syscall.S_IFMT, Ino: out.Attr.Ino}), 0
}

// entries lists the directory's children in tree (name) order.
func (d *dirNode) entries(ctx context.Context) ([]fuse.DirEntry, syscall.Errno) {
	t, err := d.r.src.LoadTree(ctx, d.n.Subtree)
	if err != nil {
		return nil, d.r.errno(err)
	}
	out := make([]fuse.DirEntry, 0, len(t.Nodes))
	for _, c := range t.Nodes {
		tmp := entry{sn: d.sn, n: c, path: d.path + "/" + c.Name}
		var a fuse.Attr
		tmp.fill(&a)
		out = append(out, fuse.DirEntry{Name: c.Name, Mode: a.Mode & syscall.S_IFMT, Ino: a.Ino})
	}
	return out, 0
}

var _ = (gofs.NodeReaddirer)((*dirNode)(nil))

func (d *dirNode) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	ents, errno := d.entries(ctx)
	if errno != 0 {
		return nil, errno
	}
	return gofs.NewListDirStream(ents), 0
}

var _ = (gofs.NodeOpendirHandler)((*dirNode)(nil))

// OpendirHandle asks the kernel to cache the listing (FOPEN_CACHE_DIR):
// a snapshot directory never changes, so a second `ls -lR` is served
// without a READDIRPLUS and its per-entry lookups.
func (d *dirNode) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	return &dirHandle{d: d}, fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE, 0
}

// dirHandle streams a snapshot directory; offsets are entry positions
// (1-based, 0 = start), so seeking back is exact.
type dirHandle struct {
	d *dirNode

	mu   sync.Mutex // guards the fields below
	ents []fuse.DirEntry
	read bool
	pos  int
}

var (
	_ = (gofs.FileReaddirenter)((*dirHandle)(nil))
	_ = (gofs.FileSeekdirer)((*dirHandle)(nil))
)

func (h *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.read {
		ents, errno := h.d.entries(ctx)
		if errno != 0 {
			return nil, errno
		}
		h.ents, h.read = ents, true
	}
	if h.pos >= len(h.ents) {
		return nil, 0
	}
	de := h.ents[h.pos]
	h.pos++
	de.Off = uint64(h.pos)
	return &de, 0
}

func (h *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.pos = int(min(off, uint64(len(h.ents))))
	if !h.read {
		h.pos = int(off) // checked against the listing once it is read
	}
	return 0
}

var (
	_ = (gofs.NodeCreater)((*dirNode)(nil))
	_ = (gofs.NodeMkdirer)((*dirNode)(nil))
	_ = (gofs.NodeMknoder)((*dirNode)(nil))
	_ = (gofs.NodeSymlinker)((*dirNode)(nil))
	_ = (gofs.NodeLinker)((*dirNode)(nil))
	_ = (gofs.NodeUnlinker)((*dirNode)(nil))
	_ = (gofs.NodeRmdirer)((*dirNode)(nil))
	_ = (gofs.NodeRenamer)((*dirNode)(nil))
)

func (d *dirNode) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EROFS
}
func (d *dirNode) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}
func (d *dirNode) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}
func (d *dirNode) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}
func (d *dirNode) Link(ctx context.Context, target gofs.InodeEmbedder, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}
func (d *dirNode) Unlink(ctx context.Context, name string) syscall.Errno { return syscall.EROFS }
func (d *dirNode) Rmdir(ctx context.Context, name string) syscall.Errno  { return syscall.EROFS }
func (d *dirNode) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	return syscall.EROFS
}

type linkNode struct{ node }

var _ = (gofs.NodeReadlinker)((*linkNode)(nil))

func (l *linkNode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	return []byte(l.n.LinkTarget), 0
}
