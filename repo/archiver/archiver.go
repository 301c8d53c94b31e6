// Package archiver imports a directory tree on disk into a snapshot.
//
// The walk is sequential and deterministic (entries in name order), which
// keeps .gdprignore precedence simple; file contents are chunked, hashed,
// compressed and sealed by a bounded pool of workers. A file whose size,
// mtime, ctime and inode match the parent snapshot and whose chunks are all
// indexed is not read again.
package archiver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/chunker"
	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/pack"
	sparsefile "github.com/keepfs/keepfs/repo/sparse"
	"github.com/keepfs/keepfs/repo/tree"
)

// IgnoreFile is the name of the per-directory exclusion file.
const IgnoreFile = ".gdprignore"

// Excluder decides what stays out of a snapshot; policy/ignore implements it.
// The walk calls AddPatterns for a directory before asking about its entries.
type Excluder interface {
	AddPatterns(dir []string, source string, content []byte)
	Excluded(path []string, isDir bool) bool
}

// Progress receives counts as the import goes.
type Progress interface {
	// Update is called with running totals; it must be cheap.
	Update(files int64, bytes int64)
}

// Options tune an import.
type Options struct {
	Parent   *repo.Snapshot // previous snapshot of the same source, for change detection
	Excluder Excluder       // nil: nothing is excluded
	Progress Progress
	Workers  int
	Now      func() time.Time
}

// Summary reports what an import did.
type Summary struct {
	Snapshot       string   `json:"snapshot"`
	Time           string   `json:"time"`
	Files          int64    `json:"files"`
	Dirs           int64    `json:"dirs"`
	Bytes          int64    `json:"bytes"`
	FilesNew       int64    `json:"files_new"`
	FilesChanged   int64    `json:"files_changed"`
	FilesUnchanged int64    `json:"files_unchanged"`
	Excluded       int64    `json:"excluded"`
	BlobsNew       int      `json:"blobs_new"`
	BytesAdded     int64    `json:"bytes_added"`
	PacksRecovered int      `json:"packs_recovered"`
	Seconds        float64  `json:"seconds"`
	Warnings       []string `json:"warnings,omitempty"`
}

type archiver struct {
	r    *repo.Repository
	opts Options
	sem  chan struct{}

	files, bytes                            atomic.Int64
	dirs, fnew, fchanged, funchanged, excls atomic.Int64

	mu       sync.Mutex
	warnings []string

	// chunkers holds one chunker per core: each owns a 12 MiB scan
	// buffer, so a sync.Pool (emptied by every GC) would reallocate them.
	// Chunking is CPU work, so more chunkers than cores would only cost
	// memory; the other workers read small files meanwhile.
	chunkers chan *chunker.Chunker
	// small is the size below which a file is one chunk (the chunker's
	// minimum): such files are read whole, with one read, into one of
	// smallBufs, and saved as one blob without the chunker.
	small     int64
	smallBufs chan []byte
}

// Import snapshots dir into r. dir becomes the root of the snapshot.
func Import(ctx context.Context, r *repo.Repository, dir string, opts Options) (*repo.Snapshot, *Summary, error) {
	start := time.Now()
	procs := runtime.GOMAXPROCS(0)
	if opts.Workers <= 0 {
		// Workers wait on file reads (small files are mostly open, read
		// and close) as much as on the CPU: two per core, at least 4.
		opts.Workers = max(4, 2*procs)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, nil, err
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return nil, nil, fmt.Errorf("import: %w", err)
	}
	if !fi.IsDir() {
		return nil, nil, fmt.Errorf("import: %s is not a directory", dir)
	}
	recovered, err := r.RecoverPacks(ctx)
	if err != nil {
		return nil, nil, err
	}
	nchunkers := min(opts.Workers, procs)
	a := &archiver{r: r, opts: opts, sem: make(chan struct{}, opts.Workers), chunkers: make(chan *chunker.Chunker, nchunkers),
		small: int64(r.Config().Chunker.Min), smallBufs: make(chan []byte, opts.Workers)}
	for i := 0; i < nchunkers; i++ {
		a.chunkers <- r.NewChunker()
	}
	before := r.Stats()

	var parentTree *tree.Tree
	if opts.Parent != nil {
		// A parent we cannot read only costs speed.
		parentTree, _ = r.LoadTree(ctx, opts.Parent.Tree)
	}
	root, err := a.saveDir(ctx, abs, nil, parentTree)
	if err != nil {
		return nil, nil, err
	}
	after := r.Stats()
	sn := &repo.Snapshot{Time: opts.Now().UTC(), Tree: root, Source: abs}
	if opts.Parent != nil && !sn.Time.After(opts.Parent.Time) {
		// Snapshot order is time order: never let a clock that stood still
		// (or went back) put a child before its parent.
		sn.Time = opts.Parent.Time.Add(time.Nanosecond)
	}
	sn.Hostname, _ = os.Hostname()
	if opts.Parent != nil {
		p := opts.Parent.ID
		sn.Parent = &p
	}
	sn.Stats = repo.SnapshotStats{Files: a.files.Load(), Dirs: a.dirs.Load(), Bytes: a.bytes.Load(),
		BlobsNew: after.BlobsNew - before.BlobsNew, BytesAdded: after.BytesStored - before.BytesStored}
	if err := r.SaveSnapshot(ctx, sn); err != nil {
		return nil, nil, err
	}
	// The import's own index segments become one; failing that they stay,
	// which is correct (prune merges them).
	_ = r.MergeOwnIndex(ctx)
	sum := &Summary{
		Snapshot: sn.ID.String(), Time: r.NameOf(ctx, sn), Files: sn.Stats.Files, Dirs: sn.Stats.Dirs, Bytes: sn.Stats.Bytes,
		FilesNew: a.fnew.Load(), FilesChanged: a.fchanged.Load(), FilesUnchanged: a.funchanged.Load(),
		Excluded: a.excls.Load(), BlobsNew: sn.Stats.BlobsNew, BytesAdded: sn.Stats.BytesAdded,
		PacksRecovered: recovered, Seconds: time.Since(start).Seconds(), Warnings: a.warnings,
	}
	return sn, sum, nil
}

func (a *archiver) warn(format string, args ...any) {
	a.mu.Lock()
	a.warnings = append(a.warnings, fmt.Sprintf(format, args...))
	a.mu.Unlock()
}

func (a *archiver) progress() {
	if a.opts.Progress != nil {
		a.opts.Progress.Update(a.files.Load(), a.bytes.Load())
	}
}

// saveDir stores the tree of abs (rel are its components below the root)
// and returns its id. Files are saved by workers; the tree is written once
// they all finish, so a tree never names content that is not stored.
func (a *archiver) saveDir(ctx context.Context, abs string, rel []string, parent *tree.Tree) (crypto.ID, error) {
	if err := ctx.Err(); err != nil {
		return crypto.ID{}, err
	}
	a.dirs.Add(1)
	f, err := os.Open(abs)
	if err != nil {
		return crypto.ID{}, fmt.Errorf("open directory: %w", err)
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return crypto.ID{}, fmt.Errorf("read directory %s: %w", abs, err)
	}
	sort.Strings(names)
	if a.opts.Excluder != nil {
		ig := filepath.Join(abs, IgnoreFile)
		if b, err := os.ReadFile(ig); err == nil {
			a.opts.Excluder.AddPatterns(rel, ig, b)
		} else if !errors.Is(err, os.ErrNotExist) {
			return crypto.ID{}, fmt.Errorf("read %s: %w", ig, err)
		}
	}

	var (
		wg    sync.WaitGroup
		errMu sync.Mutex
		ferr  error
	)
	t := &tree.Tree{}
	for _, name := range names {
		p := filepath.Join(abs, name)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue // vanished while we walked
			}
			a.warn("%s: %v", p, err)
			continue
		}
		node := nodeFromStat(name, &st)
		crel := append(append([]string(nil), rel...), name)
		if a.opts.Excluder != nil && a.opts.Excluder.Excluded(crel, node.Type == tree.Dir) {
			a.excls.Add(1)
			continue
		}
		node.Xattrs = readXattrs(p)
		var old *tree.Node
		if parent != nil {
			old = parent.Find(name)
		}
		switch node.Type {
		case tree.Dir:
			var sub *tree.Tree
			if old != nil && old.Type == tree.Dir {
				sub, _ = a.r.LoadTree(ctx, old.Subtree)
			}
			id, err := a.saveDir(ctx, p, crel, sub)
			if err != nil {
				wg.Wait()
				return crypto.ID{}, err
			}
			node.Subtree = id
		case tree.Symlink:
			target, err := os.Readlink(p)
			if err != nil {
				a.warn("%s: %v", p, err)
				continue
			}
			node.LinkTarget = target
		case tree.File:
			a.files.Add(1)
			a.bytes.Add(int64(node.Size))
			if old != nil && unchanged(old, node) && a.allIndexed(old.Content) {
				node.Content, node.Holes = old.Content, old.Holes
				a.funchanged.Add(1)
				a.progress()
				break
			}
			if old != nil {
				a.fchanged.Add(1)
			} else {
				a.fnew.Add(1)
			}
			select {
			case a.sem <- struct{}{}:
			case <-ctx.Done():
				wg.Wait()
				return crypto.ID{}, ctx.Err()
			}
			wg.Add(1)
			go func(node *tree.Node, p string) {
				defer wg.Done()
				defer func() { <-a.sem }()
				if err := a.saveFile(ctx, p, node); err != nil {
					errMu.Lock()
					if ferr == nil {
						ferr = err
					}
					errMu.Unlock()
				}
				a.progress()
			}(node, p)
		}
		t.Nodes = append(t.Nodes, node)
	}
	wg.Wait()
	if ferr != nil {
		return crypto.ID{}, ferr
	}
	// A file that could not be read was dropped with a warning; keep the
	// rest of the tree.
	kept := t.Nodes[:0]
	for _, n := range t.Nodes {
		if n.Type != tree.File || n.Content != nil || n.Holes != nil || n.Size == 0 {
			kept = append(kept, n)
		}
	}
	t.Nodes = kept
	return a.r.SaveTree(ctx, t)
}

func unchanged(old, cur *tree.Node) bool {
	return old.Type == tree.File && old.Size == cur.Size && old.MTime == cur.MTime &&
		old.CTime == cur.CTime && old.Inode == cur.Inode
}

func (a *archiver) allIndexed(ids []crypto.ID) bool {
	for _, id := range ids {
		if !a.r.Index().Has(pack.Data, id) {
			return false
		}
	}
	return true
}

// saveFile chunks one file into node.Content. A file that cannot be opened
// is a warning (the snapshot goes on without it); a repository error fails
// the import. Holes of tree.MinHole or more (as SEEK_HOLE finds them) are
// recorded as holes, not read: the data between them is chunked on its own.
func (a *archiver) saveFile(ctx context.Context, p string, node *tree.Node) error {
	if int64(node.Size) < a.small {
		if done, err := a.saveSmall(ctx, p, node); done || err != nil {
			return err
		}
	}
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NOATIME, 0)
	if errors.Is(err, syscall.EPERM) {
		f, err = os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW, 0) // O_NOATIME needs ownership
	}
	if err != nil {
		a.warn("%s: %v", p, err)
		return nil
	}
	defer f.Close()
	var c *chunker.Chunker
	select {
	case c = <-a.chunkers:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { a.chunkers <- c }()
	var pieces []tree.Piece
	var size uint64
	// chunk stores what rd holds, in chunks, and reports how many bytes.
	chunk := func(rd io.Reader) (uint64, bool, error) {
		c.Reset(rd)
		var n uint64
		for {
			if err := ctx.Err(); err != nil {
				return n, false, err
			}
			data, err := c.Next()
			if errors.Is(err, io.EOF) {
				return n, true, nil
			}
			if err != nil {
				a.warn("%s: %v", p, err)
				return n, false, nil
			}
			id, _, err := a.r.SaveBlob(ctx, pack.Data, data)
			if err != nil {
				return n, false, err
			}
			pieces = append(pieces, tree.Piece{ID: id})
			n += uint64(len(data))
		}
	}
	regions, sparse := sparsefile.Regions(f, node.Size)
	if sparse {
		for _, r := range regions {
			if r.Hole {
				pieces = append(pieces, tree.Piece{Hole: r.End - r.Start})
				size += r.End - r.Start
				continue
			}
			n, ok, err := chunk(io.NewSectionReader(f, int64(r.Start), int64(r.End-r.Start)))
			if err != nil || !ok {
				return err
			}
			size += n
			if n != r.End-r.Start {
				sparse = false // changed while read: read it whole instead
				break
			}
		}
		if st, err := f.Stat(); sparse && (err != nil || uint64(st.Size()) != size) {
			sparse = false
		}
	}
	if !sparse {
		pieces, size = pieces[:0], 0
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			a.warn("%s: %v", p, err)
			return nil
		}
		n, ok, err := chunk(f)
		if err != nil || !ok {
			return err
		}
		size = n
	}
	// The file may have changed size while we read it; record what we stored.
	node.Size = size
	node.SetPieces(pieces)
	if node.Content == nil {
		node.Content = []crypto.ID{} // saved, if empty (see the pass that drops unread files)
	}
	return nil
}

// saveSmall stores a file smaller than the chunker's minimum, which the
// chunker would return as one chunk, as one blob: opened and read with
// one read each (no chunker, no hole search: a hole is at least
// tree.MinHole, more than such a file holds), so a small file costs
// open, read and close. done is false when the file grew past the limit
// while it was read (saveFile then reads it the usual way).
func (a *archiver) saveSmall(ctx context.Context, p string, node *tree.Node) (done bool, err error) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NOATIME|unix.O_CLOEXEC, 0)
	if err == unix.EPERM {
		fd, err = unix.Open(p, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0) // O_NOATIME needs ownership
	}
	if err != nil {
		a.warn("%s: %v", p, &os.PathError{Op: "open", Path: p, Err: err})
		return true, nil
	}
	defer unix.Close(fd)
	var buf []byte
	select {
	case buf = <-a.smallBufs:
	default:
		buf = make([]byte, a.small)
	}
	defer func() { a.smallBufs <- buf }()
	// Read to the end, or until the buffer is full (the file grew past the
	// limit). A read that returns the size lstat saw is taken as the whole
	// file, which saves the read that would return 0.
	n := 0
	for n < len(buf) {
		m, err := unix.Read(fd, buf[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			a.warn("%s: %v", p, &os.PathError{Op: "read", Path: p, Err: err})
			return true, nil
		}
		n += m
		if m == 0 || (n == int(node.Size) && n > 0) {
			break
		}
	}
	if n == len(buf) {
		return false, nil
	}
	node.Size = uint64(n)
	node.Content = []crypto.ID{} // saved, if empty (see the pass that drops unread files)
	if n == 0 {
		return true, nil
	}
	id, _, err := a.r.SaveBlob(ctx, pack.Data, buf[:n])
	if err != nil {
		return true, err
	}
	node.SetPieces([]tree.Piece{{ID: id}})
	return true, nil
}

func nodeFromStat(name string, st *unix.Stat_t) *tree.Node {
	n := &tree.Node{
		Name: name, Mode: st.Mode & 0o7777, UID: st.Uid, GID: st.Gid,
		// Access times are not recorded: reading a tree changes them, and
		// recording them would make every import of an unchanged tree new.
		MTime: st.Mtim.Nano(), CTime: st.Ctim.Nano(),
		Inode: st.Ino, Links: uint64(st.Nlink),
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		n.Type, n.Size = tree.File, uint64(st.Size)
	case unix.S_IFDIR:
		n.Type = tree.Dir
	case unix.S_IFLNK:
		n.Type, n.Size = tree.Symlink, uint64(st.Size)
	case unix.S_IFIFO:
		n.Type = tree.FIFO
	case unix.S_IFCHR:
		n.Type, n.Rdev = tree.CharDev, st.Rdev
	case unix.S_IFBLK:
		n.Type, n.Rdev = tree.BlockDev, st.Rdev
	default:
		n.Type = tree.Socket
	}
	return n
}

func readXattrs(p string) []tree.Xattr {
	sz, err := unix.Llistxattr(p, nil)
	if err != nil || sz <= 0 {
		return nil
	}
	buf := make([]byte, sz)
	sz, err = unix.Llistxattr(p, buf)
	if err != nil {
		return nil
	}
	var out []tree.Xattr
	for _, name := range splitNull(buf[:sz]) {
		vsz, err := unix.Lgetxattr(p, name, nil)
		if err != nil {
			continue
		}
		val := make([]byte, vsz)
		if vsz > 0 {
			if vsz, err = unix.Lgetxattr(p, name, val); err != nil {
				continue
			}
		}
		out = append(out, tree.Xattr{Name: name, Value: val[:vsz]})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func splitNull(b []byte) []string {
	var out []string
	start := 0
	for i, c := range b {
		if c == 0 {
			if i > start {
				out = append(out, string(b[start:i]))
			}
			start = i + 1
		}
	}
	return out
}
