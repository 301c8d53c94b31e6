// Package restorer writes files out of a snapshot into a target directory.
//
// Nothing is written or changed outside the target, even by root and even
// when a symlink is planted or swapped into the target while the restore
// runs: tree decoding rejects names with "/" or "..", and every operation
// works on a directory fd opened beneath the target with openat2
// (RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS), then on one name in it with an *at
// call that does not follow a symlink: files are created with
// O_CREAT|O_EXCL|O_NOFOLLOW after removing whatever non-directory stood
// there, ownership, mode, xattrs and times of files and directories are set
// through their own fds, and of symlinks and special files with
// AT_SYMLINK_NOFOLLOW (a symlink's mode is never set).
package restorer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/pack"
	"github.com/keepfs/keepfs/repo/tree"
)

// Progress receives restored byte counts.
type Progress interface {
	Start(what string, total int64)
	Add(n int64)
	Done()
}

// Options tune a restore.
type Options struct {
	Workers  int
	Progress Progress
}

// Summary reports what was restored.
type Summary struct {
	Snapshot string  `json:"snapshot"`
	Time     string  `json:"time"`
	Files    int64   `json:"files"`
	Dirs     int64   `json:"dirs"`
	Links    int64   `json:"hardlinks"`
	Bytes    int64   `json:"bytes"`
	Seconds  float64 `json:"seconds"`
}

type fileJob struct {
	node *tree.Node
	rel  string // slash path below the target
}

type dirMeta struct {
	node *tree.Node
	rel  string
}

type restorer struct {
	r        *repo.Repository
	opts     Options
	root     bool // running as root: restore ownership
	uid, gid uint32
	umask    uint32

	target string // absolute, for messages
	rootFD int    // the target directory; every path is resolved beneath it

	files []fileJob
	dirs  []dirMeta
	links [][2]string // hard links to make after files exist: {existing, new} (rel)
	inode map[uint64]string
	total int64

	nfiles, ndirs atomic.Int64
	open          atomic.Int64 // partly written files open (see maxOpen)
}

// afterPlan, when set (tests), runs between planning and writing files.
var afterPlan func()

// Restore restores each path of sn (slash paths; "/" is the whole tree)
// into target. A directory or file is restored under its own name; "/"
// restores the root's entries directly into target.
func Restore(ctx context.Context, r *repo.Repository, sn *repo.Snapshot, paths []string, target string, opts Options) (*Summary, error) {
	start := time.Now()
	if opts.Workers <= 0 {
		// Restores of many small files wait on the file system more than on
		// the CPU, so run more workers than cores.
		opts.Workers = runtime.GOMAXPROCS(0) * 4
	}
	if opts.Progress == nil {
		opts.Progress = repo.NoProgress{}
	}
	target, err := filepath.Abs(target)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(target, 0o700); err != nil {
		return nil, fmt.Errorf("create target: %w", err)
	}
	// The target itself is the caller's choice, symlinks and all; only
	// what lies beneath it is resolved without following any.
	rootFD, err := unix.Open(target, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open target: %w", &os.PathError{Op: "open", Path: target, Err: err})
	}
	defer unix.Close(rootFD)
	rs := &restorer{r: r, opts: opts, root: os.Geteuid() == 0, uid: uint32(os.Geteuid()), gid: uint32(os.Getegid()),
		inode: map[uint64]string{}, target: target, rootFD: rootFD}
	// Learn the umask (there is no way to read it without setting it) so
	// that files can be created with their final mode when it survives.
	rs.umask = uint32(unix.Umask(0o022))
	unix.Umask(int(rs.umask))
	for _, p := range paths {
		node, err := r.Lookup(ctx, sn.Tree, p)
		if err != nil {
			return nil, err
		}
		if path.Clean("/"+p) == "/" {
			if err := rs.planDir(ctx, node.Subtree, ""); err != nil {
				return nil, err
			}
			continue
		}
		if err := tree.ValidName(node.Name); err != nil {
			return nil, err
		}
		if err := rs.plan(ctx, node, node.Name); err != nil {
			return nil, err
		}
	}
	if afterPlan != nil {
		afterPlan()
	}
	opts.Progress.Start("restore", rs.total)
	var bytes atomic.Int64
	// Extents stream past the read-ahead; a file written alone asks for
	// exactly its blobs, which a window would pad with bytes nobody reads.
	g, gctx := errgroup.WithContext(remote.WithoutReadAhead(ctx))
	g.SetLimit(opts.Workers)
	extents, outs, rest := rs.extents()
	for _, e := range extents {
		g.Go(func() error {
			n, err := rs.writeExtent(gctx, e)
			bytes.Add(n)
			return err
		})
	}
	for _, j := range rest {
		g.Go(func() error {
			n, err := rs.writeFile(gctx, j)
			bytes.Add(n)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		closeOuts(outs)
		return nil, err
	}
	for _, l := range rs.links {
		if err := rs.link(l[0], l[1]); err != nil {
			return nil, fmt.Errorf("hard link %s: %w", rs.dst(l[1]), err)
		}
	}
	// Directory times last, deepest first, since filling a directory
	// changes its mtime.
	for i := len(rs.dirs) - 1; i >= 0; i-- {
		d := rs.dirs[i]
		fd, err := rs.openBeneath(d.rel, unix.O_RDONLY|unix.O_DIRECTORY)
		if err != nil {
			return nil, fmt.Errorf("restore %s: %w", rs.dst(d.rel), err)
		}
		rs.applyMeta(fd, -1, "", d.node)
		unix.Close(fd)
	}
	opts.Progress.Done()
	return &Summary{Snapshot: sn.ID.String(), Time: sn.Name(), Files: rs.nfiles.Load(), Dirs: rs.ndirs.Load(),
		Links: int64(len(rs.links)), Bytes: bytes.Load(), Seconds: time.Since(start).Seconds()}, nil
}

// dst is rel's path on disk, for messages.
func (rs *restorer) dst(rel string) string { return filepath.Join(rs.target, filepath.FromSlash(rel)) }

// errEscape is wrapped when a path below the target no longer resolves
// without symlinks: something was swapped in while the restore ran.
var errEscape = errors.New("a symlink, mount point or file took a directory's place in the restore target while restoring; refusing to follow it")

// openBeneath opens rel (a slash path below the target; "" is the target)
// without following any symlink, in any component, and without leaving the
// target (openat2 RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS). Kernels without
// openat2 (before 5.6) get the same by walking one O_NOFOLLOW component at
// a time.
func (rs *restorer) openBeneath(rel string, flags int) (int, error) {
	if rel == "" {
		rel = "."
	}
	how := unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC | unix.O_NOFOLLOW),
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	for try := 0; ; try++ {
		fd, err := unix.Openat2(rs.rootFD, rel, &how)
		switch {
		case err == nil:
			return fd, nil
		case err == unix.EAGAIN && try < 16: // a concurrent rename; retry
			continue
		case err == unix.ENOSYS:
			return walkBeneath(rs.rootFD, rel, flags)
		case err == unix.ELOOP || err == unix.EXDEV || err == unix.ENOTDIR:
			return -1, fmt.Errorf("%s: %w", rel, errEscape)
		}
		return -1, &os.PathError{Op: "openat2", Path: rel, Err: err}
	}
}

// walkBeneath is openBeneath without openat2.
func walkBeneath(root int, rel string, flags int) (int, error) {
	fd, err := unix.Openat(root, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	parts := strings.Split(rel, "/")
	for i, c := range parts {
		if c == "." || c == "" {
			continue
		}
		if c == ".." {
			unix.Close(fd)
			return -1, fmt.Errorf("%s: %w", rel, errEscape)
		}
		fl := unix.O_RDONLY | unix.O_DIRECTORY
		if i == len(parts)-1 {
			fl = flags
		}
		nfd, err := unix.Openat(fd, c, fl|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		if err == unix.ELOOP || err == unix.ENOTDIR {
			return -1, fmt.Errorf("%s: %w", rel, errEscape)
		}
		if err != nil {
			return -1, &os.PathError{Op: "openat", Path: rel, Err: err}
		}
		fd = nfd
	}
	return fd, nil
}

// parent opens rel's directory beneath the target and returns it with
// rel's last name.
func (rs *restorer) parent(rel string) (int, string, error) {
	dir, name := path.Split(rel)
	fd, err := rs.openBeneath(strings.TrimSuffix(dir, "/"), unix.O_RDONLY|unix.O_DIRECTORY)
	return fd, name, err
}

func (rs *restorer) planDir(ctx context.Context, id [32]byte, rel string) error {
	t, err := rs.r.LoadTree(ctx, id)
	if err != nil {
		return err
	}
	for _, n := range t.Nodes {
		if err := tree.ValidName(n.Name); err != nil {
			return err
		}
		if err := rs.plan(ctx, n, path.Join(rel, n.Name)); err != nil {
			return err
		}
	}
	return nil
}

// plan creates directories, symlinks and special files now and queues
// regular files for the workers.
func (rs *restorer) plan(ctx context.Context, n *tree.Node, rel string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if n.Type != tree.Dir && n.Type != tree.Socket && n.Links > 1 && n.Inode != 0 {
		// A hard link of a file, FIFO, device or symlink restored
		// already is linked once the files exist (sockets are not
		// restored). Only by a recorded inode: older mount snapshots
		// counted the links of symlinks and FIFOs but recorded none.
		if first, ok := rs.inode[n.Inode]; ok {
			rs.links = append(rs.links, [2]string{first, rel})
			return nil
		}
		rs.inode[n.Inode] = rel
	}
	switch n.Type {
	case tree.Dir:
		if err := rs.mkdir(rel); err != nil {
			return fmt.Errorf("restore %s: %w", rs.dst(rel), err)
		}
		rs.ndirs.Add(1)
		rs.dirs = append(rs.dirs, dirMeta{n, rel})
		return rs.planDir(ctx, n.Subtree, rel)
	case tree.File:
		rs.nfiles.Add(1)
		rs.total += int64(n.Size)
		rs.files = append(rs.files, fileJob{n, rel})
		return nil
	case tree.Symlink:
		err := rs.create(rel, n, func(pfd int, name string) error { return unix.Symlinkat(n.LinkTarget, pfd, name) })
		if err != nil {
			return fmt.Errorf("restore %s: %w", rs.dst(rel), err)
		}
		return nil
	case tree.FIFO, tree.CharDev, tree.BlockDev:
		mode := uint32(unix.S_IFIFO)
		if n.Type == tree.CharDev {
			mode = unix.S_IFCHR
		} else if n.Type == tree.BlockDev {
			mode = unix.S_IFBLK
		}
		err := rs.create(rel, n, func(pfd int, name string) error { return unix.Mknodat(pfd, name, mode|n.Mode&0o7777, int(n.Rdev)) })
		if err != nil {
			return fmt.Errorf("restore %s: %w", rs.dst(rel), err)
		}
	}
	// Sockets cannot be restored meaningfully; they are recreated by their servers.
	return nil
}

// mkdir makes directory rel, replacing a non-directory there.
func (rs *restorer) mkdir(rel string) error {
	pfd, name, err := rs.parent(rel)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	var st unix.Stat_t
	if err := unix.Fstatat(pfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil && st.Mode&unix.S_IFMT != unix.S_IFDIR {
		if err := unix.Unlinkat(pfd, name, 0); err != nil {
			return err
		}
	}
	if err := unix.Mkdirat(pfd, name, 0o700); err != nil && err != unix.EEXIST {
		return err
	}
	return nil
}

// create makes a symlink or special file at rel with mk, replacing a
// non-directory there, and applies n's metadata without following it.
func (rs *restorer) create(rel string, n *tree.Node, mk func(pfd int, name string) error) error {
	pfd, name, err := rs.parent(rel)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	if err := removeNonDir(pfd, name); err != nil {
		return err
	}
	if err := mk(pfd, name); err != nil {
		return err
	}
	rs.applyMeta(-1, pfd, name, n)
	return nil
}

// removeNonDir removes a non-directory at name in pfd.
func removeNonDir(pfd int, name string) error {
	var st unix.Stat_t
	if err := unix.Fstatat(pfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil {
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			return fmt.Errorf("%s is a directory", name)
		}
		if err := unix.Unlinkat(pfd, name, 0); err != nil && err != unix.ENOENT {
			return err
		}
	}
	return nil
}

// link hard-links rel old (restored earlier) at rel new. linkat without
// AT_SYMLINK_FOLLOW links a symlink itself, never its target.
func (rs *restorer) link(old, new string) error {
	opfd, oname, err := rs.parent(old)
	if err != nil {
		return err
	}
	defer unix.Close(opfd)
	npfd, nname, err := rs.parent(new)
	if err != nil {
		return err
	}
	defer unix.Close(npfd)
	if err := removeNonDir(npfd, nname); err != nil {
		return err
	}
	return unix.Linkat(opfd, oname, npfd, nname, 0)
}

// writeFile writes one file that extents do not: one without blobs, or
// with a blob the index does not know (LoadBlob reports it).
func (rs *restorer) writeFile(ctx context.Context, j fileJob) (int64, error) {
	dst := rs.dst(j.rel)
	f, err := rs.createFile(j)
	if err != nil {
		return 0, err
	}
	var off int64
	for _, p := range j.node.Pieces() {
		if p.ID.IsNull() {
			// A hole stays a hole: skipped, and the file's size set at
			// the end if it ends in one.
			off += int64(p.Hole)
			rs.opts.Progress.Add(int64(p.Hole))
			continue
		}
		b, err := rs.r.LoadBlob(ctx, pack.Data, p.ID)
		if err != nil {
			f.Close()
			return off, fmt.Errorf("restore %s: %w", dst, err)
		}
		if _, err := f.WriteAt(b, off); err != nil {
			f.Close()
			return off, fmt.Errorf("restore %s: %w", dst, err)
		}
		off += int64(len(b))
		rs.opts.Progress.Add(int64(len(b)))
	}
	if len(j.node.Holes) > 0 {
		if err := f.Truncate(off); err != nil {
			f.Close()
			return off, fmt.Errorf("restore %s: %w", dst, err)
		}
	}
	// Metadata through the file's own fd, after the last write (which
	// would change mtime), before close.
	rs.applyMeta(int(f.Fd()), -1, "", j.node)
	if err := f.Close(); err != nil {
		return off, fmt.Errorf("restore %s: %w", dst, err)
	}
	return off, nil
}

// createFile creates j's file, empty, replacing a non-directory there.
func (rs *restorer) createFile(j fileJob) (*os.File, error) {
	dst := rs.dst(j.rel)
	pfd, name, err := rs.parent(j.rel)
	if err != nil {
		return nil, fmt.Errorf("restore %s: %w", dst, err)
	}
	// Created first, and whatever stood there removed only if that fails:
	// a restore into a fresh target then costs no stat per file (20,000
	// of them on the benchmark). O_EXCL|O_NOFOLLOW fails on a symlink too.
	flags := unix.O_WRONLY | unix.O_CREAT | unix.O_EXCL | unix.O_NOFOLLOW | unix.O_CLOEXEC
	fd, err := unix.Openat(pfd, name, flags, j.node.Mode&0o777)
	if err == unix.EEXIST {
		if err = removeNonDir(pfd, name); err == nil {
			fd, err = unix.Openat(pfd, name, flags, j.node.Mode&0o777)
		}
	}
	unix.Close(pfd)
	if err != nil {
		return nil, fmt.Errorf("restore %s: %w", dst, err)
	}
	return os.NewFile(uintptr(fd), dst), nil
}

// applyMeta sets ownership (as root), mode, xattrs and times, through fd
// when it is >= 0 (files and directories), else on name in directory pfd
// without following a symlink (symlinks and special files). Failures are
// not fatal: the content is what matters and a non-root restore cannot
// chown anyway.
func (rs *restorer) applyMeta(fd, pfd int, name string, n *tree.Node) {
	// Skip the calls that would change nothing: restores of many small
	// files are dominated by system calls.
	owned := n.UID == rs.uid && n.GID == rs.gid
	if rs.root && !owned {
		if fd >= 0 {
			_ = unix.Fchown(fd, int(n.UID), int(n.GID))
		} else {
			_ = unix.Fchownat(pfd, name, int(n.UID), int(n.GID), unix.AT_SYMLINK_NOFOLLOW)
		}
	}
	// chown clears setuid/setgid, so chmod comes after it; a regular file
	// was created with its mode, which only the umask may have cut.
	createdWithMode := n.Type == tree.File && n.Mode&0o7000 == 0 && n.Mode&rs.umask == 0 && owned
	if n.Type != tree.Symlink && !createdWithMode {
		if fd >= 0 {
			_ = unix.Fchmod(fd, n.Mode&0o7777)
		} else {
			_ = chmodNoFollow(pfd, name, n.Mode&0o7777)
		}
	}
	for _, x := range n.Xattrs {
		if fd >= 0 {
			_ = unix.Fsetxattr(fd, x.Name, x.Value, 0)
		} else {
			// The magic link names pfd itself; name is not followed.
			_ = unix.Lsetxattr(fmt.Sprintf("/proc/self/fd/%d/%s", pfd, name), x.Name, x.Value, 0)
		}
	}
	atime := n.ATime
	if atime == 0 {
		atime = n.MTime // not recorded
	}
	ts := []unix.Timespec{unix.NsecToTimespec(atime), unix.NsecToTimespec(n.MTime)}
	if fd >= 0 {
		_ = futimens(fd, ts)
	} else {
		_ = unix.UtimesNanoAt(pfd, name, ts, unix.AT_SYMLINK_NOFOLLOW)
	}
}

// chmodNoFollow sets the mode of name in pfd unless it is a symlink:
// fchmodat2 with AT_SYMLINK_NOFOLLOW (Linux 6.6), else through an O_PATH
// fd of exactly that inode.
func chmodNoFollow(pfd int, name string, mode uint32) error {
	if err := unix.Fchmodat(pfd, name, mode, unix.AT_SYMLINK_NOFOLLOW); err == nil {
		return nil
	}
	fd, err := unix.Openat(pfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		return nil
	}
	return unix.Chmod(fmt.Sprintf("/proc/self/fd/%d", fd), mode)
}

// futimens sets fd's access and modification times (utimensat with a
// NULL path), to the nanosecond.
func futimens(fd int, ts []unix.Timespec) error {
	_, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}
