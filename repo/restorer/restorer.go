// Package restorer writes files out of a snapshot into a target directory.
//
// Nothing is written outside the target: tree decoding already rejects
// names with "/" or "..", and here every path is created by us with
// O_NOFOLLOW/O_EXCL after removing whatever non-directory stood there, so a
// symlink planted in the target cannot redirect a write.
package restorer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

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
	dst  string
}

type dirMeta struct {
	node *tree.Node
	dst  string
}

type restorer struct {
	r        *repo.Repository
	opts     Options
	root     bool // running as root: restore ownership
	uid, gid uint32
	umask    uint32

	files []fileJob
	dirs  []dirMeta
	links [][2]string // hard links to make after files exist: {existing, new}
	inode map[uint64]string
	total int64

	nfiles, ndirs atomic.Int64
}

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
	rs := &restorer{r: r, opts: opts, root: os.Geteuid() == 0, uid: uint32(os.Geteuid()), gid: uint32(os.Getegid()), inode: map[uint64]string{}}
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
			if err := rs.planDir(ctx, node.Subtree, target); err != nil {
				return nil, err
			}
			continue
		}
		if err := rs.plan(ctx, node, filepath.Join(target, node.Name)); err != nil {
			return nil, err
		}
	}
	opts.Progress.Start("restore", rs.total)
	var bytes atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(opts.Workers)
	for _, j := range rs.files {
		g.Go(func() error {
			n, err := rs.writeFile(gctx, j)
			bytes.Add(n)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	for _, l := range rs.links {
		if err := replaceWith(l[1], func() error { return os.Link(l[0], l[1]) }); err != nil {
			return nil, fmt.Errorf("hard link %s: %w", l[1], err)
		}
	}
	// Directory times last, deepest first, since filling a directory
	// changes its mtime.
	for i := len(rs.dirs) - 1; i >= 0; i-- {
		rs.applyMeta(rs.dirs[i].dst, rs.dirs[i].node)
	}
	opts.Progress.Done()
	return &Summary{Snapshot: sn.ID.String(), Time: sn.Name(), Files: rs.nfiles.Load(), Dirs: rs.ndirs.Load(),
		Links: int64(len(rs.links)), Bytes: bytes.Load(), Seconds: time.Since(start).Seconds()}, nil
}

func (rs *restorer) planDir(ctx context.Context, id [32]byte, dst string) error {
	t, err := rs.r.LoadTree(ctx, id)
	if err != nil {
		return err
	}
	for _, n := range t.Nodes {
		if err := tree.ValidName(n.Name); err != nil {
			return err
		}
		if err := rs.plan(ctx, n, filepath.Join(dst, n.Name)); err != nil {
			return err
		}
	}
	return nil
}

// plan creates directories, symlinks and special files now and queues
// regular files for the workers.
func (rs *restorer) plan(ctx context.Context, n *tree.Node, dst string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	switch n.Type {
	case tree.Dir:
		if fi, err := os.Lstat(dst); err == nil && !fi.IsDir() {
			if err := os.Remove(dst); err != nil {
				return err
			}
		}
		if err := os.Mkdir(dst, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("restore %s: %w", dst, err)
		}
		rs.ndirs.Add(1)
		rs.dirs = append(rs.dirs, dirMeta{n, dst})
		return rs.planDir(ctx, n.Subtree, dst)
	case tree.File:
		if n.Links > 1 {
			if first, ok := rs.inode[n.Inode]; ok {
				rs.links = append(rs.links, [2]string{first, dst})
				return nil
			}
			rs.inode[n.Inode] = dst
		}
		rs.nfiles.Add(1)
		rs.total += int64(n.Size)
		rs.files = append(rs.files, fileJob{n, dst})
		return nil
	case tree.Symlink:
		err := replaceWith(dst, func() error { return os.Symlink(n.LinkTarget, dst) })
		if err != nil {
			return fmt.Errorf("restore %s: %w", dst, err)
		}
		rs.applyMeta(dst, n)
		return nil
	case tree.FIFO, tree.CharDev, tree.BlockDev:
		mode := uint32(unix.S_IFIFO)
		if n.Type == tree.CharDev {
			mode = unix.S_IFCHR
		} else if n.Type == tree.BlockDev {
			mode = unix.S_IFBLK
		}
		err := replaceWith(dst, func() error { return unix.Mknod(dst, mode|n.Mode&0o7777, int(n.Rdev)) })
		if err != nil {
			return fmt.Errorf("restore %s: %w", dst, err)
		}
		rs.applyMeta(dst, n)
	}
	// Sockets cannot be restored meaningfully; they are recreated by their servers.
	return nil
}

// replaceWith removes a non-directory at dst, then runs create.
func replaceWith(dst string, create func() error) error {
	if fi, err := os.Lstat(dst); err == nil {
		if fi.IsDir() {
			return fmt.Errorf("%s is a directory", dst)
		}
		if err := os.Remove(dst); err != nil {
			return err
		}
	}
	return create()
}

func (rs *restorer) writeFile(ctx context.Context, j fileJob) (int64, error) {
	var f *os.File
	err := replaceWith(j.dst, func() error {
		var err error
		f, err = os.OpenFile(j.dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, os.FileMode(j.node.Mode&0o777))
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("restore %s: %w", j.dst, err)
	}
	var off int64
	for _, id := range j.node.Content {
		b, err := rs.r.LoadBlob(ctx, pack.Data, id)
		if err != nil {
			f.Close()
			return off, fmt.Errorf("restore %s: %w", j.dst, err)
		}
		if _, err := f.WriteAt(b, off); err != nil {
			f.Close()
			return off, fmt.Errorf("restore %s: %w", j.dst, err)
		}
		off += int64(len(b))
		rs.opts.Progress.Add(int64(len(b)))
	}
	if err := f.Close(); err != nil {
		return off, fmt.Errorf("restore %s: %w", j.dst, err)
	}
	rs.applyMeta(j.dst, j.node)
	return off, nil
}

// applyMeta sets ownership (as root), mode, xattrs and times. Failures are
// not fatal: the content is what matters and a non-root restore cannot
// chown anyway.
func (rs *restorer) applyMeta(dst string, n *tree.Node) {
	// Skip the calls that would change nothing: restores of many small
	// files are dominated by system calls.
	owned := n.UID == rs.uid && n.GID == rs.gid
	if rs.root && !owned {
		_ = os.Lchown(dst, int(n.UID), int(n.GID))
	}
	// chown clears setuid/setgid, so chmod comes after it; a regular file
	// was created with its mode, which only the umask may have cut.
	createdWithMode := n.Type == tree.File && n.Mode&0o7000 == 0 && n.Mode&rs.umask == 0 && owned
	if n.Type != tree.Symlink && !createdWithMode {
		_ = unix.Chmod(dst, n.Mode&0o7777)
	}
	for _, x := range n.Xattrs {
		_ = unix.Lsetxattr(dst, x.Name, x.Value, 0)
	}
	atime := n.ATime
	if atime == 0 {
		atime = n.MTime // not recorded
	}
	ts := []unix.Timespec{unix.NsecToTimespec(atime), unix.NsecToTimespec(n.MTime)}
	_ = unix.UtimesNanoAt(unix.AT_FDCWD, dst, ts, unix.AT_SYMLINK_NOFOLLOW)
}
