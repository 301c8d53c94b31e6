package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// File is a Storage in a local directory (which may itself be a network
// mount). The layout is the one ObjectPath describes.
//
// Durability: Save writes a temporary file in the object's own folder,
// fsyncs it, moves it into place without ever replacing an existing object,
// and fsyncs the folder, so after Save returns the object survives a crash
// and before it returns no partial object is visible under its name.
type File struct {
	root string
}

var _ Storage = (*File)(nil)

const (
	fileMode = 0o600
	dirMode  = 0o700
	// writeSlice bounds how much Save writes between context checks.
	writeSlice = 8 << 20
	// directMin is the size from which Save writes with O_DIRECT (see
	// writeObject): packs, not the small objects (index segments of a few
	// packs, snapshots, locks), which would gain nothing.
	directMin = 1 << 20
	// directAlign is the alignment O_DIRECT asks of memory, offsets and
	// lengths: 4 KiB satisfies every common device and file system (the
	// logical block size is 512 or 4096). Go allocates a large slice (a
	// pack buffer) at the start of its own 8 KiB-aligned span.
	directAlign = 4096
)

// NewFile opens the repository directory dir. A missing directory is an
// error wrapping ErrNotFound, so the caller can suggest `keepfs init`.
func NewFile(dir string) (*File, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("open repository %s: %w", dir, err)
	}
	fi, err := os.Stat(abs)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("open repository %s: %w: %w", abs, ErrNotFound, err)
	}
	if err != nil {
		return nil, fmt.Errorf("open repository %s: %w", abs, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("open repository %s: not a directory", abs)
	}
	return &File{root: abs}, nil
}

// CreateFile makes the directory structure of a new repository in dir
// (creating dir if needed). It refuses, with ErrExists, a directory that
// already holds a repository config.
func CreateFile(dir string) (*File, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("create repository %s: %w", dir, err)
	}
	if err := os.MkdirAll(abs, dirMode); err != nil {
		return nil, fmt.Errorf("create repository %s: %w", abs, err)
	}
	f := &File{root: abs}
	if _, err := os.Lstat(f.path(Handle{Type: Config})); err == nil {
		return nil, fmt.Errorf("create repository %s: %w", abs, ErrExists)
	}
	for _, t := range Types {
		if t == Config {
			continue
		}
		if err := os.Mkdir(filepath.Join(abs, string(t)), dirMode); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("create repository %s: %w", abs, err)
		}
	}
	if err := syncDir(abs); err != nil {
		return nil, fmt.Errorf("create repository %s: %w", abs, err)
	}
	return f, nil
}

// Location implements Storage.
func (f *File) Location() string { return "file://" + f.root }

func (f *File) path(h Handle) string {
	return filepath.Join(f.root, filepath.FromSlash(ObjectPath(h)))
}

// Save implements Storage.
func (f *File) Save(ctx context.Context, h Handle, data []byte) (err error) {
	if err := h.Valid(); err != nil {
		return fmt.Errorf("save: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("save %s: %w", h, err)
	}
	final := f.path(h)
	dir := filepath.Dir(final)
	tmp, err := os.CreateTemp(dir, TempPrefix+"*")
	if errors.Is(err, fs.ErrNotExist) {
		if err := f.mkdirFor(h); err != nil {
			return f.wrap("save", h, err)
		}
		tmp, err = os.CreateTemp(dir, TempPrefix+"*")
	}
	if err != nil {
		return f.wrap("save", h, err)
	}
	tmpName := tmp.Name()
	closed, placed := false, false
	defer func() {
		if !closed {
			_ = tmp.Close()
		}
		if !placed {
			_ = os.Remove(tmpName)
		}
	}()
	if err := writeObject(ctx, tmp, data); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("save %s: %w", h, err)
		}
		return f.wrap("save", h, err)
	}
	if err := tmp.Sync(); err != nil {
		return f.wrap("save", h, err)
	}
	closed = true
	if err := tmp.Close(); err != nil {
		return f.wrap("save", h, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("save %s: %w", h, err)
	}
	if err := renameNoReplace(tmpName, final); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("save %s: %w", h, ErrExists)
		}
		return f.wrap("save", h, err)
	}
	placed = true
	if err := syncDir(dir); err != nil {
		return f.wrap("save", h, err)
	}
	return nil
}

// writeObject writes data to the new, empty file tmp, checking ctx
// between slices.
//
// An object of directMin bytes or more (a pack) is written with O_DIRECT,
// all but its last partial block: the device reads the bytes straight from
// data, without the kernel copying them into the page cache first. Save
// fsyncs every object anyway, so the copy bought nothing but a cached
// copy of data written once and rarely read, at the price of evicting
// whatever else the machine had cached; and the copy into freshly
// allocated page-cache pages was the largest single item of an import's
// CPU (issue 18: 0.8 s of about 4.5 s for the benchmark's 540 MB of packs;
// see docs/architecture.md, Backends). A file system that refuses O_DIRECT
// (tmpfs before Linux 6.6, some FUSE and network file systems), a data
// slice that does not start on a block boundary, or a direct write that
// fails with EINVAL fall back to ordinary writes.
func writeObject(ctx context.Context, tmp *os.File, data []byte) error {
	direct := len(data) >= directMin && uintptr(unsafe.Pointer(unsafe.SliceData(data)))%directAlign == 0 &&
		setDirect(tmp, true) == nil
	// Direct writes must be whole blocks: they stop at the last block
	// boundary and the tail is written through the page cache.
	directEnd := len(data) &^ (directAlign - 1)
	for off := 0; off < len(data); {
		if err := ctx.Err(); err != nil {
			return err
		}
		end := min(off+writeSlice, len(data))
		if direct && end > directEnd {
			end = directEnd
		}
		if direct && end <= off {
			if err := setDirect(tmp, false); err != nil {
				return err
			}
			direct = false
			continue
		}
		n, err := tmp.Write(data[off:end])
		off += n
		if err != nil {
			if direct && errors.Is(err, unix.EINVAL) {
				// Refused after all (or a short write left off unaligned):
				// the rest goes through the page cache.
				if err := setDirect(tmp, false); err != nil {
					return err
				}
				direct = false
				continue
			}
			return err
		}
	}
	return nil
}

// setDirect turns O_DIRECT on or off for f's open file description.
func setDirect(f *os.File, on bool) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) {
		fl, err := unix.FcntlInt(fd, unix.F_GETFL, 0)
		if err != nil {
			ferr = err
			return
		}
		if on {
			fl |= unix.O_DIRECT
		} else {
			fl &^= unix.O_DIRECT
		}
		_, ferr = unix.FcntlInt(fd, unix.F_SETFL, fl)
	}); err != nil {
		return err
	}
	if ferr != nil {
		return fmt.Errorf("set O_DIRECT %v on %s: %w", on, f.Name(), ferr)
	}
	return nil
}

// renameNoReplace moves oldpath to newpath, failing with an error wrapping
// fs.ErrExist rather than replacing newpath.
func renameNoReplace(oldpath, newpath string) error {
	err := unix.Renameat2(unix.AT_FDCWD, oldpath, unix.AT_FDCWD, newpath, unix.RENAME_NOREPLACE)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EEXIST):
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: err}
	case !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.ENOTSUP):
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: err}
	}
	// The filesystem lacks RENAME_NOREPLACE (older kernels, some FUSE and
	// network filesystems).
	return linkNoReplace(oldpath, newpath)
}

// linkNoReplace is renameNoReplace by link(2), which is just as exclusive,
// and, where hard links are unsupported too (vfat, some object-store
// mounts), by a check and a rename. That last step can race with a
// concurrent Save of the same name, which the repository never does: names
// are content hashes or random.
func linkNoReplace(oldpath, newpath string) error {
	err := os.Link(oldpath, newpath)
	if err == nil {
		return os.Remove(oldpath)
	}
	if errors.Is(err, fs.ErrExist) || !(errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.ENOSYS)) {
		return err
	}
	if _, err := os.Lstat(newpath); err == nil {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: unix.EEXIST}
	}
	return os.Rename(oldpath, newpath)
}

// mkdirFor creates the folders h lives in. It deliberately does not create
// the repository root: if that is missing the repository (or the disk it is
// on) is gone, and recreating it would hide that.
func (f *File) mkdirFor(h Handle) error {
	typeDir := filepath.Join(f.root, string(h.Type))
	if err := mkdirSync(typeDir); err != nil {
		return err
	}
	if h.Type == Pack {
		return mkdirSync(filepath.Join(typeDir, fanOut(h.Name)))
	}
	return nil
}

func mkdirSync(dir string) error {
	err := os.Mkdir(dir, dirMode)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return syncDir(filepath.Dir(dir))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}

// Load implements Storage.
func (f *File) Load(ctx context.Context, h Handle, offset, length int64) ([]byte, error) {
	fd, n, err := f.openRange(ctx, h, offset, length)
	if err != nil {
		return nil, err
	}
	defer fd.Close()
	buf := make([]byte, n)
	if _, err := fd.ReadAt(buf, offset); err != nil {
		// Objects are immutable, so a short read means the file changed
		// under us; report it rather than return fewer bytes.
		return nil, f.wrap("load", h, err)
	}
	return buf, nil
}

// openRange opens h's file and checks the range against its size, which
// it returns resolved (length 0: to the end).
func (f *File) openRange(ctx context.Context, h Handle, offset, length int64) (*os.File, int64, error) {
	if err := h.Valid(); err != nil {
		return nil, 0, fmt.Errorf("load: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, fmt.Errorf("load %s: %w", h, err)
	}
	fd, err := os.Open(f.path(h))
	if err != nil {
		return nil, 0, f.wrap("load", h, err)
	}
	fi, err := fd.Stat()
	if err != nil {
		fd.Close()
		return nil, 0, f.wrap("load", h, err)
	}
	n, err := CheckRange(h, offset, length, fi.Size())
	if err != nil {
		fd.Close()
		return nil, 0, err
	}
	return fd, n, nil
}

// Open implements RangeOpener: the range is read from the file as the
// caller goes, so memory stays at what it reads at a time.
//
// A range of directReadMin bytes or more (a restore's extent of a pack) is
// read with O_DIRECT through a block-aligned buffer of directReadBuf
// bytes: packs are written around the page cache (see writeObject), so a
// restore finds them on the disk either way, and a buffered read would
// make the kernel allocate page-cache pages for them and copy every byte
// once more out of those pages, for a cache of data that is read once.
// Shorter ranges, a range mostly in the page cache already (a pack
// copied in, or read by `check --read-data`: a direct read would go to
// the disk for bytes memory holds), and a file system that refuses
// O_DIRECT take the ordinary path.
func (f *File) Open(ctx context.Context, h Handle, offset, length int64) (io.ReadCloser, error) {
	fd, n, err := f.openRange(ctx, h, offset, length)
	if err != nil {
		return nil, err
	}
	r := &fileRange{f: f, h: h, fd: fd, off: offset, end: offset + n}
	if n >= directReadMin && !mostlyCached(fd, offset, n) && setDirect(fd, true) == nil {
		r.buf = directBufs.Get().(*[]byte)
	} else {
		r.sr = io.NewSectionReader(fd, offset, n)
	}
	return r, nil
}

const (
	// directReadMin is the range length from which Open reads with
	// O_DIRECT, the same threshold as the write side's.
	directReadMin = directMin
	// directReadBuf is what one direct read asks of the disk: large
	// enough that a read costs one request to the device, small enough
	// that a restore's workers (4 per CPU) hold little memory.
	directReadBuf = 1 << 20
)

// mostlyCached reports whether more than half of [off,+n) of fd's file
// is in the page cache, by cachestat(2) (Linux 6.5 on; where it fails the
// answer is no).
func mostlyCached(fd *os.File, off, n int64) bool {
	rc, err := fd.SyscallConn()
	if err != nil {
		return false
	}
	var st unix.Cachestat_t
	var cerr error
	rng := unix.CachestatRange{Off: uint64(off), Len: uint64(n)}
	if err := rc.Control(func(fd uintptr) { cerr = unix.Cachestat(uint(fd), &rng, &st, 0) }); err != nil || cerr != nil {
		return false
	}
	pages := (n + int64(os.Getpagesize()) - 1) / int64(os.Getpagesize())
	return int64(st.Cache)*2 > pages
}

// directBufs holds block-aligned buffers of directReadBuf bytes, so a
// restore does not allocate (and the runtime zero) one per extent.
var directBufs = sync.Pool{New: func() any {
	b := make([]byte, directReadBuf+directAlign)
	skip := (directAlign - int(uintptr(unsafe.Pointer(unsafe.SliceData(b)))%directAlign)) % directAlign
	b = b[skip : skip+directReadBuf : skip+directReadBuf]
	return &b
}}

// fileRange reads [off, end) of an object: through sr, or, if buf is set,
// by direct reads into buf.
type fileRange struct {
	f  *File
	h  Handle
	fd *os.File
	sr *io.SectionReader

	off, end int64   // next byte to hand out, end of the range
	buf      *[]byte // from directBufs; nil on the ordinary path
	data     []byte  // bytes of buf not handed out yet, from off on
}

func (r *fileRange) Read(p []byte) (int, error) {
	if r.sr == nil {
		return r.readDirect(p)
	}
	n, err := r.sr.Read(p)
	if err != nil && err != io.EOF {
		return n, r.f.wrap("load", r.h, err)
	}
	if err == io.EOF && r.sr.Size() > 0 {
		if pos, _ := r.sr.Seek(0, io.SeekCurrent); pos < r.sr.Size() {
			// Objects are immutable: a file that shrank under us is
			// reported, not read short.
			return n, fmt.Errorf("load %s: the file ended at byte %d of %d: %w", r.h, pos, r.sr.Size(), io.ErrUnexpectedEOF)
		}
	}
	return n, err
}

func (r *fileRange) readDirect(p []byte) (int, error) {
	if len(r.data) == 0 {
		if r.off >= r.end {
			return 0, io.EOF
		}
		if err := r.fill(); err != nil {
			return 0, err
		}
		if r.sr != nil {
			return r.Read(p) // direct reads refused: the ordinary path from here
		}
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	r.off += int64(n)
	return n, nil
}

// fill reads the blocks from the one holding off on, up to a buffer or
// the end of the range, with O_DIRECT: offsets and lengths are whole
// blocks, and the last read of a file whose size is not a multiple of the
// block returns what the file holds.
func (r *fileRange) fill() error {
	start := r.off &^ (directAlign - 1)
	want := min(int64(len(*r.buf)), (r.end-start+directAlign-1)&^(directAlign-1))
	b := (*r.buf)[:want]
	got := 0
	for got < len(b) {
		n, err := r.pread(b[got:], start+int64(got))
		if errors.Is(err, unix.EINVAL) && got == 0 {
			// The file system took O_DIRECT but refuses these reads
			// (an alignment it wants larger than a block): read the
			// rest of the range through the page cache.
			if err := setDirect(r.fd, false); err != nil {
				return r.f.wrap("load", r.h, err)
			}
			r.sr = io.NewSectionReader(r.fd, r.off, r.end-r.off)
			r.release()
			return nil
		}
		if err != nil {
			return r.f.wrap("load", r.h, err)
		}
		if n == 0 {
			break
		}
		got += n
		if got%directAlign != 0 {
			break // the file's last, partial block
		}
	}
	have := start + int64(got)
	if have <= r.off {
		// Objects are immutable: a file that shrank under us is
		// reported, not read short.
		return fmt.Errorf("load %s: the file ended at byte %d of %d: %w", r.h, have, r.end, io.ErrUnexpectedEOF)
	}
	r.data = b[r.off-start : min(have, r.end)-start]
	return nil
}

// pread is one pread(2), which os.File.ReadAt is not: after a partial
// last block it would read on from an unaligned offset, which O_DIRECT
// refuses with EINVAL rather than answer with the end of the file.
func (r *fileRange) pread(b []byte, off int64) (int, error) {
	rc, err := r.fd.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var perr error
	if err := rc.Read(func(fd uintptr) bool {
		for {
			n, perr = unix.Pread(int(fd), b, off)
			if perr != unix.EINTR {
				return true
			}
		}
	}); err != nil {
		return 0, err
	}
	return max(n, 0), perr
}

func (r *fileRange) release() {
	if r.buf != nil {
		directBufs.Put(r.buf)
		r.buf, r.data = nil, nil
	}
}

func (r *fileRange) Close() error {
	r.release()
	return r.fd.Close()
}

// Stat implements Storage.
func (f *File) Stat(ctx context.Context, h Handle) (Info, error) {
	if err := h.Valid(); err != nil {
		return Info{}, fmt.Errorf("stat: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return Info{}, fmt.Errorf("stat %s: %w", h, err)
	}
	fi, err := os.Stat(f.path(h))
	if err != nil {
		return Info{}, f.wrap("stat", h, err)
	}
	return Info{Handle: h, Size: fi.Size()}, nil
}

// Remove implements Storage. The folder is fsynced so that an erasure is
// durable once Remove returns.
func (f *File) Remove(ctx context.Context, h Handle) error {
	if err := h.Valid(); err != nil {
		return fmt.Errorf("remove: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("remove %s: %w", h, err)
	}
	p := f.path(h)
	if err := os.Remove(p); err != nil {
		return f.wrap("remove", h, err)
	}
	if err := syncDir(filepath.Dir(p)); err != nil {
		return f.wrap("remove", h, err)
	}
	return nil
}

// List implements Storage.
func (f *File) List(ctx context.Context, t Type, fn func(Info) error) error {
	if err := ValidType(t); err != nil {
		return fmt.Errorf("list: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("list %s: %w", t, err)
	}
	if t == Config {
		fi, err := f.Stat(ctx, Handle{Type: Config})
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("list %s: %w", t, err)
		}
		return fn(fi)
	}
	typeDir := filepath.Join(f.root, string(t))
	dirs := []string{typeDir}
	if t == Pack {
		entries, err := os.ReadDir(typeDir)
		if err != nil {
			return f.listErr(t, err)
		}
		dirs = dirs[:0]
		for _, e := range entries {
			if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
				dirs = append(dirs, filepath.Join(typeDir, e.Name()))
			}
		}
	}
	for _, dir := range dirs {
		entries, err := os.ReadDir(dir)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && dir != typeDir {
				continue // a fan-out folder removed while we listed
			}
			return f.listErr(t, err)
		}
		for _, e := range entries {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("list %s: %w", t, err)
			}
			h := Handle{Type: t, Name: e.Name()}
			if !e.Type().IsRegular() || h.Valid() != nil {
				continue // temporary files and strays are not objects
			}
			fi, err := e.Info()
			if errors.Is(err, fs.ErrNotExist) {
				continue // removed since ReadDir
			}
			if err != nil {
				return f.listErr(t, err)
			}
			if err := fn(Info{Handle: h, Size: fi.Size()}); err != nil {
				return err
			}
		}
	}
	return nil
}

func (f *File) listErr(t Type, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		if _, rerr := os.Stat(f.root); rerr == nil {
			return nil // no object of this type saved yet
		}
		return fmt.Errorf("list %s: repository directory %s is gone: %w: %w", t, f.root, ErrUnreachable, err)
	}
	return fmt.Errorf("list %s: %w", t, classifyOSError(err))
}

// Close implements Storage.
func (f *File) Close() error { return nil }

// wrap adds context to an OS error and maps it onto the remote sentinels.
func (f *File) wrap(op string, h Handle, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		if _, rerr := os.Stat(f.root); rerr != nil {
			return fmt.Errorf("%s %s: repository directory %s is gone: %w: %w", op, h, f.root, ErrUnreachable, err)
		}
		return fmt.Errorf("%s %s: %w: %w", op, h, ErrNotFound, err)
	}
	return fmt.Errorf("%s %s: %w", op, h, classifyOSError(err))
}

// classifyOSError marks errors of a lost network filesystem (NFS, CIFS,
// sshfs under the directory) as ErrUnreachable so that they are retried and
// reported as remote health events.
func classifyOSError(err error) error {
	for _, errno := range []syscall.Errno{unix.ENOTCONN, unix.ESTALE, unix.ETIMEDOUT, unix.EHOSTDOWN, unix.EHOSTUNREACH, unix.ECONNABORTED, unix.ECONNRESET} {
		if errors.Is(err, errno) {
			return fmt.Errorf("%w: %w", ErrUnreachable, err)
		}
	}
	return err
}
