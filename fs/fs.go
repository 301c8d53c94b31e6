package fs

import (
	"context"
	"errors"
	"fmt"
	stdlog "log"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/keepfs/keepfs/cache"
	"github.com/keepfs/keepfs/cache/namespace"
	"github.com/keepfs/keepfs/repo/tree"
)

// Options tune a mount.
type Options struct {
	AllowOther   bool
	HideVersions bool // leave .versions out of the root listing (lookups still work)
	Debug        bool
	FsName       string // shown as the mount source; the daemon passes its control socket path
	Logger       *slog.Logger
	// WrapRaw, if set, wraps the file system go-fuse serves (the daemon
	// counts and times requests by type with it).
	WrapRaw func(fuse.RawFileSystem) fuse.RawFileSystem
	// OnVersions, if set, is given a function that waits until .versions
	// shows the newest snapshot stored (kernel entries naming an older
	// one invalidated) or ctx ends: the daemon waits for it before a sync
	// returns.
	OnVersions func(settle func(context.Context) error)
}

// VersionsName is the read-only history directory at the root.
const VersionsName = ".versions"

// With the kernel's writeback cache (CAP_WRITEBACK_CACHE) writes land in
// the page cache and reach the mount in large batches, and the kernel keeps
// size and mtime itself while pages are dirty. It also works out O_APPEND
// offsets itself and may write back a page through any handle open for
// writing, so handles here never apply O_APPEND.
func openFlags(flags uint32) uint32 { return flags &^ syscall.O_APPEND }

// capHandleKillPrivV2 is FUSE_HANDLE_KILLPRIV_V2 (go-fuse has no name for it).
const capHandleKillPrivV2 = 1 << 28

// fattrKillSuidgid is FATTR_KILL_SUIDGID of a SETATTR: a chown, or a
// truncate by a caller without CAP_FSETID.
const fattrKillSuidgid = 1 << 11

// liveTimeout is how long the kernel may cache entries and attributes of
// the live tree. All changes come through the kernel, so caching is safe;
// the bound only matters for metadata recovered or changed behind its back.
const liveTimeout = time.Minute

// Mount serves c at mountpoint. The file system type shows as fuse.keepfs;
// the kernel checks permissions (default_permissions), and other users get
// in only with AllowOther.
func Mount(mountpoint string, c *cache.Cache, opts Options) (*fuse.Server, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	fsys := &filesystem{c: c, opts: opts, log: log}
	root := &dirNode{node{fs: fsys, ino: c.Root()}}
	fsys.root = root
	timeout := liveTimeout
	name := opts.FsName
	if name == "" {
		name = "keepfs"
	}
	mo := &gofs.Options{
		MountOptions: fuse.MountOptions{
			Name:         "keepfs",
			FsName:       name,
			AllowOther:   opts.AllowOther,
			Debug:        opts.Debug,
			MaxWrite:     1 << 20,
			MaxReadAhead: 1 << 20,
			// Reads are decrypted into memory, never served from a file
			// descriptor, so go-fuse's splice path cannot apply: for
			// each READ reply it still wrote the header into a pipe,
			// found no descriptor, drained the pipe (splice to
			// /dev/null, FIONREAD) and wrote the reply with writev
			// after all. Four syscalls per 4 KiB random read, not one.
			DisableSplice: true,
			Options:       []string{"default_permissions"},
			DirectMount:   true,
			// Locks stay with the kernel: it handles flock and fcntl
			// locks locally when the file system does not.
			EnableLocks: false,
			// A symlink's target never changes (a new one is a new
			// inode), so the kernel keeps it in its page cache and
			// asks once per inode, not at every path walk through it.
			EnableSymlinkCaching: true,
			// The kernel leaves dropping setuid/setgid and capabilities
			// on write, truncate and chown to us, instead of asking for
			// security.capability before every write.
			ExtraCapabilities: capHandleKillPrivV2 | fuse.CAP_WRITEBACK_CACHE,
		},
		EntryTimeout:    &timeout,
		AttrTimeout:     &timeout,
		NegativeTimeout: &timeout,
		// Mode 0000 is a real mode here, not "unset".
		NullPermissions: true,
		RootStableAttr:  &gofs.StableAttr{Ino: c.Root(), Mode: syscall.S_IFDIR},
		OnAdd: func(ctx context.Context) {
			fsys.versions = root.NewPersistentInode(ctx, newVersionsRoot(c, opts), gofs.StableAttr{Mode: syscall.S_IFDIR})
			root.AddChild(VersionsName, fsys.versions, false)
		},
	}
	if opts.Debug {
		// One line per request and reply, straight to stderr: slog's
		// default handler would wrap each in a record.
		mo.MountOptions.Logger = stdlog.New(os.Stderr, "fuse: ", stdlog.Lmicroseconds)
	}
	c.OnRemoved(fsys.forget)
	var raw fuse.RawFileSystem = newDirlessFS(gofs.NewNodeFS(root, mo))
	if opts.WrapRaw != nil {
		raw = opts.WrapRaw(raw)
	}
	srv, err := fuse.NewServer(raw, mountpoint, &mo.MountOptions)
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", mountpoint, err)
	}
	go srv.Serve()
	if err := srv.WaitMount(); err != nil {
		return nil, fmt.Errorf("mount %s: %w", mountpoint, err)
	}
	raiseReadAhead(mountpoint, log)
	return srv, nil
}

// readAheadKiB is the kernel's read-ahead window for files of the mount.
// The kernel caps a FUSE mount's window at its 128 KiB default whatever
// the INIT reply asks (MaxReadAhead only lowers it), so a sequential
// reader's requests come one 128 KiB READ at a time, each waiting for the
// last; with a 1 MiB window they come as 1 MiB READs, the next sent while
// the reader copies the last.
const readAheadKiB = 1024

// raiseReadAhead sets the read-ahead window of the mount's backing device
// info in sysfs. Only root may; for anyone else the kernel's default stays.
func raiseReadAhead(mountpoint string, log *slog.Logger) {
	var st syscall.Stat_t
	if err := syscall.Stat(mountpoint, &st); err != nil {
		log.Debug("cannot stat the mount point to raise its read-ahead", "err", err)
		return
	}
	p := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	if err := os.WriteFile(p, []byte(fmt.Sprintf("%d\n", readAheadKiB)), 0); err != nil {
		log.Debug("cannot raise the mount's read-ahead", "path", p, "err", err)
	}
}

type filesystem struct {
	c        *cache.Cache
	opts     Options
	log      *slog.Logger
	root     *dirNode
	versions *gofs.Inode // the .versions tree
}

func (f *filesystem) errno(err error) syscall.Errno { return toErrno(f.log, err) }

// forget tells the kernel that the entry at p (from the root) is gone: the
// cache removed it by itself (an erase), and the kernel may hold it for
// liveTimeout otherwise. Only inodes the kernel has looked up are in the
// tree, and only those need telling.
func (f *filesystem) forget(p string) {
	parts := strings.Split(strings.Trim(p, "/"), "/")
	dir := f.root.EmbeddedInode()
	for _, name := range parts[:len(parts)-1] {
		if dir = dir.GetChild(name); dir == nil {
			return
		}
	}
	name := parts[len(parts)-1]
	if child := dir.GetChild(name); child != nil {
		dir.NotifyDelete(name, child)
		return
	}
	dir.NotifyEntry(name)
}

// node is what every live-tree node type shares.
type node struct {
	gofs.Inode
	fs  *filesystem
	ino uint64
}

type dirNode struct{ node }
type fileNode struct{ node }
type symlinkNode struct{ node }
type specialNode struct{ node }

// fileHandle is one open file description.
type fileHandle struct{ h *cache.Handle }

func fillAttr(a cache.Attr, out *fuse.Attr) {
	out.Ino = a.Ino
	out.Mode = a.UnixMode()
	out.Nlink = a.Nlink
	out.Uid, out.Gid = a.UID, a.GID
	out.Size = a.Size
	out.Blocks = a.Blocks()
	out.Blksize = 1 << 20
	out.Rdev = uint32(a.Rdev)
	out.Atime, out.Atimensec = fuseTime(a.Atime)
	out.Mtime, out.Mtimensec = fuseTime(a.Mtime)
	out.Ctime, out.Ctimensec = fuseTime(a.Ctime)
}

// fuseTime splits nanoseconds since the epoch into FUSE's seconds and
// nanoseconds in [0, 1e9): a time before 1970 has negative seconds (Go's
// division truncates towards zero, which put such times up to a second
// off, with a negative nanosecond count).
func fuseTime(ns int64) (uint64, uint32) {
	s, n := ns/1e9, ns%1e9
	if n < 0 {
		s, n = s-1, n+1e9
	}
	return uint64(s), uint32(n)
}

// newChild makes the inode for a as a child of n.
func (n *node) newChild(ctx context.Context, a cache.Attr, out *fuse.EntryOut) *gofs.Inode {
	fillAttr(a, &out.Attr)
	var emb gofs.InodeEmbedder
	switch a.Type {
	case tree.Dir:
		emb = &dirNode{node{fs: n.fs, ino: a.Ino}}
	case tree.File:
		emb = &fileNode{node{fs: n.fs, ino: a.Ino}}
	case tree.Symlink:
		emb = &symlinkNode{node{fs: n.fs, ino: a.Ino}}
	default:
		emb = &specialNode{node{fs: n.fs, ino: a.Ino}}
	}
	return n.NewInode(ctx, emb, gofs.StableAttr{Mode: a.UnixMode() & syscall.S_IFMT, Ino: a.Ino})
}

func caller(ctx context.Context) (uint32, uint32) {
	if c, ok := fuse.FromContext(ctx); ok {
		return c.Uid, c.Gid
	}
	return uint32(syscall.Getuid()), uint32(syscall.Getgid())
}

var _ = (gofs.NodeGetattrer)((*node)(nil))

func (n *node) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	a, err := n.fs.c.GetAttr(ctx, n.ino)
	if err != nil {
		return n.fs.errno(err)
	}
	fillAttr(a, &out.Attr)
	return 0
}

var _ = (gofs.NodeSetattrer)((*node)(nil))

func (n *node) Setattr(ctx context.Context, fh gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	var sa cache.SetAttrIn
	if m, ok := in.GetMode(); ok {
		sa.Mode = &m
	}
	if u, ok := in.GetUID(); ok {
		sa.UID = &u
	}
	if g, ok := in.GetGID(); ok {
		sa.GID = &g
	}
	if s, ok := in.GetSize(); ok {
		sa.Size = &s
	}
	if t, ok := in.GetATime(); ok {
		v := t.UnixNano()
		sa.Atime = &v
	}
	if t, ok := in.GetMTime(); ok {
		v := t.UnixNano()
		sa.Mtime = &v
	}
	sa.KillPriv = in.Valid&fattrKillSuidgid != 0
	a, err := n.fs.c.SetAttr(ctx, n.ino, sa)
	if err != nil {
		return n.fs.errno(err)
	}
	fillAttr(a, &out.Attr)
	// go-fuse leaves a SETATTR reply's timeout at zero, which would make
	// the kernel ask for the attributes again at once.
	out.SetTimeout(liveTimeout)
	return 0
}

var _ = (gofs.NodeGetxattrer)((*node)(nil))

func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	// No POSIX ACLs (see Setxattr): answer without a metadata read, since
	// ls -l asks for them on every file.
	if strings.HasPrefix(attr, "system.posix_acl_") {
		return 0, syscall.EOPNOTSUPP
	}
	v, err := n.fs.c.GetXattr(ctx, n.ino, attr)
	if errors.Is(err, cache.ErrNoAttr) && attr == selinuxXattr {
		// ls -l asks for every file's SELinux label, and stops asking
		// on a file system that answers "unsupported" once. Labels that
		// were set are kept and returned; a missing one is reported
		// that way, which saves a round trip per file in a listing.
		return 0, syscall.EOPNOTSUPP
	}
	if err != nil {
		return 0, n.fs.errno(err)
	}
	if len(dest) == 0 {
		return uint32(len(v)), 0
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

// selinuxXattr holds a file's SELinux label.
const selinuxXattr = "security.selinux"

var _ = (gofs.NodeSetxattrer)((*node)(nil))

func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	// POSIX ACLs are not supported. Storing them as plain xattrs would be
	// wrong: cp -a sets a file's mode through system.posix_acl_access and
	// only falls back to chmod when told ACLs are unsupported.
	if strings.HasPrefix(attr, "system.posix_acl_") {
		return syscall.EOPNOTSUPP
	}
	return n.fs.errno(n.fs.c.SetXattr(ctx, n.ino, attr, data, flags))
}

var _ = (gofs.NodeRemovexattrer)((*node)(nil))

func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	return n.fs.errno(n.fs.c.RemoveXattr(ctx, n.ino, attr))
}

var _ = (gofs.NodeListxattrer)((*node)(nil))

func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	names, err := n.fs.c.ListXattr(ctx, n.ino)
	if err != nil {
		return 0, n.fs.errno(err)
	}
	var b []byte
	for _, s := range names {
		b = append(append(b, s...), 0)
	}
	if len(dest) == 0 {
		return uint32(len(b)), 0
	}
	if len(dest) < len(b) {
		return uint32(len(b)), syscall.ERANGE
	}
	return uint32(copy(dest, b)), 0
}

var _ = (gofs.NodeStatfser)((*node)(nil))

func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	st, err := n.fs.c.StatFs(ctx)
	if err != nil {
		return n.fs.errno(err)
	}
	out.Blocks, out.Bfree, out.Bavail = st.Blocks, st.Bfree, st.Bavail
	out.Files, out.Ffree = st.Files, st.Ffree
	out.Bsize, out.Frsize = st.Bsize, st.Bsize
	out.NameLen = st.NameLen
	return 0
}

// isVersions reports whether name in this directory is the reserved
// .versions entry of the root.
func (d *dirNode) isVersions(name string) bool {
	return d.ino == d.fs.c.Root() && name == VersionsName
}

var _ = (gofs.NodeLookuper)((*dirNode)(nil))

func (d *dirNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if d.isVersions(name) && d.fs.versions != nil {
		if ga, ok := d.fs.versions.Operations().(gofs.NodeGetattrer); ok {
			var ao fuse.AttrOut
			ga.Getattr(ctx, nil, &ao)
			out.Attr = ao.Attr
		} else {
			out.Attr.Mode = syscall.S_IFDIR | 0o555
		}
		return d.fs.versions, 0
	}
	a, err := d.fs.c.Lookup(ctx, d.ino, name)
	if err != nil {
		return nil, d.fs.errno(err)
	}
	return d.newChild(ctx, a, out), 0
}

var _ = (gofs.NodeOpendirHandler)((*dirNode)(nil))

// OpendirHandle lets the kernel keep the listing in its page cache
// (FOPEN_CACHE_DIR): a warm ls -R or find then reads no directory from
// here. The kernel drops the cached listing when the directory changes
// through it, and every change to the live tree does.
func (d *dirNode) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	return &dirHandle{d: d}, fuse.FOPEN_CACHE_DIR, 0
}

// dirHandle is an open live directory. Its listing is read at the first
// READDIR and again after a seek to the start (rewinddir), so a reader
// that rewinds sees what changed meanwhile.
type dirHandle struct {
	d  *dirNode
	ds gofs.DirStream
}

var (
	_ = (gofs.FileReaddirenter)((*dirHandle)(nil))
	_ = (gofs.FileSeekdirer)((*dirHandle)(nil))
	_ = (gofs.FileReleasedirer)((*dirHandle)(nil))
)

func (h *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if h.ds == nil {
		ds, errno := h.d.Readdir(ctx)
		if errno != 0 {
			return nil, errno
		}
		h.ds = ds
	}
	if !h.ds.HasNext() {
		return nil, 0
	}
	e, errno := h.ds.Next()
	return &e, errno
}

func (h *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if off == 0 || h.ds == nil {
		ds, errno := h.d.Readdir(ctx)
		if errno != 0 {
			return errno
		}
		h.ds = ds
	}
	if off == 0 {
		return 0
	}
	sd, ok := h.ds.(gofs.FileSeekdirer)
	if !ok {
		return syscall.ENOTSUP
	}
	return sd.Seekdir(ctx, off)
}

func (h *dirHandle) Releasedir(ctx context.Context, releaseFlags uint32) {
	if h.ds != nil {
		h.ds.Close()
	}
}

var _ = (gofs.NodeReaddirer)((*dirNode)(nil))

func (d *dirNode) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	ents, err := d.fs.c.ReadDir(ctx, d.ino)
	if err != nil {
		return nil, d.fs.errno(err)
	}
	out := make([]fuse.DirEntry, 0, len(ents)+1)
	if d.ino == d.fs.c.Root() && d.fs.versions != nil && !d.fs.opts.HideVersions {
		out = append(out, fuse.DirEntry{Name: VersionsName, Mode: syscall.S_IFDIR, Ino: d.fs.versions.StableAttr().Ino})
	}
	for _, e := range ents {
		if d.isVersions(e.Name) && d.fs.versions != nil {
			continue // shadowed by the history tree
		}
		out = append(out, fuse.DirEntry{Name: e.Name, Ino: e.Ino, Mode: cache.Attr{Type: e.Type}.UnixMode()})
	}
	return gofs.NewListDirStream(out), 0
}

func (d *dirNode) create(ctx context.Context, name string, nn cache.NewNode, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if d.isVersions(name) {
		return nil, syscall.EEXIST
	}
	nn.UID, nn.GID = caller(ctx)
	a, err := d.fs.c.Create(ctx, d.ino, name, nn)
	if err != nil {
		return nil, d.fs.errno(err)
	}
	return d.newChild(ctx, a, out), 0
}

var _ = (gofs.NodeMkdirer)((*dirNode)(nil))

func (d *dirNode) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return d.create(ctx, name, cache.NewNode{Type: tree.Dir, Mode: mode & 0o7777}, out)
}

var _ = (gofs.NodeMknoder)((*dirNode)(nil))

func (d *dirNode) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return d.create(ctx, name, cache.NewNode{Type: namespace.TypeFromMode(mode), Mode: mode & 0o7777, Rdev: uint64(dev)}, out)
}

var _ = (gofs.NodeSymlinker)((*dirNode)(nil))

func (d *dirNode) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return d.create(ctx, name, cache.NewNode{Type: tree.Symlink, Target: target}, out)
}

var _ = (gofs.NodeCreater)((*dirNode)(nil))

func (d *dirNode) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	in, errno := d.create(ctx, name, cache.NewNode{Type: tree.File, Mode: mode & 0o7777}, out)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	// The file is new: O_TRUNC has nothing to do (and must not touch
	// the times the kernel just cached).
	h, err := d.fs.c.OpenFile(ctx, out.Attr.Ino, openFlags(flags)&^syscall.O_TRUNC)
	if err != nil {
		return nil, nil, 0, d.fs.errno(err)
	}
	return in, &fileHandle{h}, fuse.FOPEN_KEEP_CACHE, 0
}

var _ = (gofs.NodeLinker)((*dirNode)(nil))

func (d *dirNode) Link(ctx context.Context, target gofs.InodeEmbedder, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if d.isVersions(name) {
		return nil, syscall.EEXIST
	}
	t, ok := target.(interface{ liveIno() uint64 })
	if !ok {
		return nil, syscall.EXDEV
	}
	a, err := d.fs.c.Link(ctx, t.liveIno(), d.ino, name)
	if err != nil {
		return nil, d.fs.errno(err)
	}
	return d.newChild(ctx, a, out), 0
}

func (n *node) liveIno() uint64 { return n.ino }

var _ = (gofs.NodeUnlinker)((*dirNode)(nil))

func (d *dirNode) Unlink(ctx context.Context, name string) syscall.Errno {
	if d.isVersions(name) {
		return syscall.EROFS
	}
	return d.fs.errno(d.fs.c.Unlink(ctx, d.ino, name))
}

var _ = (gofs.NodeRmdirer)((*dirNode)(nil))

func (d *dirNode) Rmdir(ctx context.Context, name string) syscall.Errno {
	if d.isVersions(name) {
		return syscall.EROFS
	}
	return d.fs.errno(d.fs.c.Rmdir(ctx, d.ino, name))
}

var _ = (gofs.NodeRenamer)((*dirNode)(nil))

func (d *dirNode) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	np, ok := newParent.(*dirNode)
	if !ok {
		return syscall.EXDEV
	}
	if d.isVersions(name) || np.isVersions(newName) {
		return syscall.EROFS
	}
	return d.fs.errno(d.fs.c.Rename(ctx, d.ino, name, np.ino, newName, flags))
}

var _ = (gofs.NodeFsyncer)((*dirNode)(nil))

// Fsync on a directory: namespace changes are durable once Badger syncs,
// which every file commit does; there is nothing pending per directory.
func (d *dirNode) Fsync(ctx context.Context, fh gofs.FileHandle, flags uint32) syscall.Errno {
	return 0
}

var _ = (gofs.NodeReadlinker)((*symlinkNode)(nil))

func (s *symlinkNode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	t, err := s.fs.c.Readlink(ctx, s.ino)
	if err != nil {
		return nil, s.fs.errno(err)
	}
	return []byte(t), 0
}

var _ = (gofs.NodeOpener)((*fileNode)(nil))

func (f *fileNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	h, err := f.fs.c.OpenFile(ctx, f.ino, openFlags(flags))
	if err != nil {
		return nil, 0, f.fs.errno(err)
	}
	// All writes come through this mount, so the kernel's page cache
	// stays valid across opens.
	return &fileHandle{h}, fuse.FOPEN_KEEP_CACHE, 0
}

var _ = (gofs.NodeReader)((*fileNode)(nil))

func (f *fileNode) Read(ctx context.Context, fh gofs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h, ok := fh.(*fileHandle)
	if !ok {
		return nil, syscall.EBADF
	}
	n, err := h.h.ReadAt(ctx, dest, off)
	if err != nil {
		return nil, f.fs.errno(err)
	}
	return fuse.ReadResultData(dest[:n]), 0
}

var _ = (gofs.NodeWriter)((*fileNode)(nil))

func (f *fileNode) Write(ctx context.Context, fh gofs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	h, ok := fh.(*fileHandle)
	if !ok {
		return 0, syscall.EBADF
	}
	n, err := h.h.WriteAt(ctx, data, off)
	if err != nil {
		return 0, f.fs.errno(err)
	}
	// The kernel would flag a writer without CAP_FSETID
	// (FUSE_WRITE_KILL_SUIDGID), but go-fuse does not pass the flag on;
	// root is the caller that has it.
	uid, _ := caller(ctx)
	if err := f.fs.c.KillPriv(ctx, f.ino, uid != 0); err != nil {
		return 0, f.fs.errno(err)
	}
	return uint32(n), 0
}

var _ = (gofs.NodeFlusher)((*fileNode)(nil))

func (f *fileNode) Flush(ctx context.Context, fh gofs.FileHandle) syscall.Errno {
	h, ok := fh.(*fileHandle)
	if !ok {
		return 0
	}
	return f.fs.errno(h.h.Flush(ctx))
}

var _ = (gofs.NodeFsyncer)((*fileNode)(nil))

func (f *fileNode) Fsync(ctx context.Context, fh gofs.FileHandle, flags uint32) syscall.Errno {
	h, ok := fh.(*fileHandle)
	if !ok {
		return 0
	}
	return f.fs.errno(h.h.Fsync(ctx))
}

var _ = (gofs.NodeReleaser)((*fileNode)(nil))

func (f *fileNode) Release(ctx context.Context, fh gofs.FileHandle) syscall.Errno {
	h, ok := fh.(*fileHandle)
	if !ok {
		return 0
	}
	return f.fs.errno(h.h.Release(ctx))
}

var _ = (gofs.NodeAllocater)((*fileNode)(nil))

// Allocate supports plain fallocate (mode 0): the file grows to cover the
// range; nothing is reserved, as the data lives in chunks anyway. With
// FALLOC_FL_KEEP_SIZE alone it does nothing. FALLOC_FL_PUNCH_HOLE (always
// with KEEP_SIZE) and FALLOC_FL_ZERO_RANGE make the range read as zeros,
// stored as holes (see cache.Handle.Zero). The kernel writes the file's
// dirty pages from off on back and waits for them before it sends the
// request, and drops its pages of the range once it succeeded, so none of
// them can bring old bytes back. Other modes (COLLAPSE_RANGE, INSERT_RANGE,
// UNSHARE_RANGE) get EOPNOTSUPP.
func (f *fileNode) Allocate(ctx context.Context, fh gofs.FileHandle, off uint64, size uint64, mode uint32) syscall.Errno {
	const (
		keepSize  = unix.FALLOC_FL_KEEP_SIZE // reserve only, which is a no-op here
		punchHole = unix.FALLOC_FL_PUNCH_HOLE
		zeroRange = unix.FALLOC_FL_ZERO_RANGE
	)
	switch mode {
	case 0:
	case keepSize:
		return 0
	case punchHole | keepSize, zeroRange, zeroRange | keepSize:
		h, ok := fh.(*fileHandle)
		if !ok {
			return syscall.EBADF
		}
		return f.fs.errno(h.h.Zero(ctx, off, size, mode&keepSize != 0))
	default:
		return syscall.EOPNOTSUPP
	}
	a, err := f.fs.c.GetAttr(ctx, f.ino)
	if err != nil {
		return f.fs.errno(err)
	}
	if end := off + size; end > a.Size {
		// The kernel updates the mtime after a fallocate that grew the
		// file and sends it when its clock moved; the daemon keeps what
		// the kernel last sent (see cache.Handle.WriteAt).
		mtime := a.Mtime
		if _, err := f.fs.c.SetAttr(ctx, f.ino, cache.SetAttrIn{Size: &end, Mtime: &mtime}); err != nil {
			return f.fs.errno(err)
		}
	}
	return 0
}

var _ = (gofs.NodeLseeker)((*fileNode)(nil))

// Lseek answers SEEK_DATA and SEEK_HOLE from the file's holes (see
// cache.Lseek).
func (f *fileNode) Lseek(ctx context.Context, fh gofs.FileHandle, off uint64, whence uint32) (uint64, syscall.Errno) {
	if (whence == unix.SEEK_DATA || whence == unix.SEEK_HOLE) && f.fs.c.OpenForWriting(f.ino) {
		// Under the writeback cache the kernel may hold written pages
		// of a file open for writing that the cache has not seen, and
		// it does not write them back before an LSEEK: they would be
		// answered as a hole, and cp (which asks, since the mount
		// reports no blocks for them) copied zeros from a log another
		// process was writing. Invalidating the kernel's pages from off
		// on makes it write the dirty ones back first (it launders
		// them); clean ones are read again when needed.
		f.NotifyContent(int64(off), 0)
	}
	pos, err := f.fs.c.Lseek(ctx, f.ino, off, whence)
	if err != nil {
		return 0, f.fs.errno(err)
	}
	return pos, 0
}

var _ = (gofs.NodeOnForgetter)((*node)(nil))

// OnForget: the kernel dropped its last reference; an unlinked inode goes.
func (n *node) OnForget() { n.fs.c.Forget(n.ino) }

var _ = (gofs.NodeTmpfiler)((*dirNode)(nil))

func (d *dirNode) Tmpfile(ctx context.Context, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	uid, gid := caller(ctx)
	a, err := d.fs.c.CreateUnlinked(ctx, d.ino, cache.NewNode{Type: tree.File, Mode: mode & 0o7777, UID: uid, GID: gid})
	if err != nil {
		return nil, nil, 0, d.fs.errno(err)
	}
	h, err := d.fs.c.OpenFile(ctx, a.Ino, openFlags(flags)&^syscall.O_TRUNC)
	if err != nil {
		return nil, nil, 0, d.fs.errno(err)
	}
	fillAttr(a, &out.Attr)
	in := d.NewInode(ctx, &fileNode{node{fs: d.fs, ino: a.Ino}}, gofs.StableAttr{Mode: syscall.S_IFREG, Ino: a.Ino})
	return in, &fileHandle{h}, fuse.FOPEN_KEEP_CACHE, 0
}
