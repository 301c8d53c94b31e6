package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/keepfs/keepfs/cache/chunkstore"
	"github.com/keepfs/keepfs/cache/meta"
	"github.com/keepfs/keepfs/cache/namespace"
	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/tree"
)

// openFile is the in-memory state of a file with open handles: its
// committed chunk list and the writes since the last commit.
type openFile struct {
	c   *Cache
	ino uint64

	refs    int // guarded by Cache.mu
	writers int // handles open for writing, guarded by Cache.mu

	// intent: an fsync's intent record names this file's uncommitted
	// changes (changed with mu held, read with Cache.mu too).
	intent     atomic.Bool
	committing atomic.Bool                   // a background commit holds mu, its record up to date
	bgStarted  atomic.Pointer[chan struct{}] // closed once the last background commit set committing
	bgCommit   bool                          // a background commit is on its way (guarded by mu)

	mu      sync.Mutex // guards the fields below
	chunks  []meta.Chunk
	offs    []uint64 // start offset of each chunk
	size    uint64   // current size, including uncommitted changes
	mtime   int64
	ctime   int64
	changed bool // size/times/attrs differ from the inode record
	attrs   pendingAttrs
	dirty   extents // bytes that differ from the committed chunks
	written extents // bytes held by staging; dirty but not written reads as zero
	points  []uint64
	stage   *staging
	lastEnd uint64 // end of the last read, to detect sequential reads
	raNext  int    // first chunk a sequential reader has not asked the kernel to read ahead
	pfNext  int    // 1 + the chunk a sequential reader last had prefetched; 0 for none

	dirtyBytes atomic.Int64

	// shown is what overlayLocked applies, captured while a commit holds
	// mu (nil otherwise): stat(2), lookups and listings read it rather
	// than wait for the commit, which holds mu for as long as the new
	// bytes take to chunk and store, seconds for a big file.
	shown atomic.Pointer[attrOverlay]
	// readable: a commit holds mu, and reads may go ahead holding swap
	// shared, since what the file reads as does not change until the
	// commit takes swap to swap in its chunks and empty the staging.
	readable atomic.Bool
	swap     sync.RWMutex
	// commits counts commits that hold mu or wait for it (lockCommit): a
	// reader that finds mu taken by one waits for it to let readers in,
	// not for the whole commit (see ReadAt).
	commits atomic.Int32
}

// lockCommit takes mu for a commit; unlockCommit gives it back.
func (f *openFile) lockCommit() {
	f.commits.Add(1)
	f.mu.Lock()
}

func (f *openFile) unlockCommit() {
	f.mu.Unlock()
	f.commits.Add(-1)
}

// readerWait is how often a reader looks again while a commit holds mu
// but has not let readers in yet: the steps before it does take
// microseconds (a flush's) to an fsync of the staging file (a background
// commit's record), and the commit itself can take seconds.
const readerWait = 100 * time.Microsecond

// lockRead takes mu for a read, or reads during a commit (done: n and err
// are the read's). Waiting on mu while a commit holds it before letting
// readers in would make the reader wait for the whole commit.
func (f *openFile) lockRead(ctx context.Context, p []byte, off uint64) (n int, done bool, err error) {
	for !f.mu.TryLock() {
		if n, ok, err := f.readDuringCommit(ctx, p, off); ok {
			return n, true, err
		}
		if f.commits.Load() == 0 {
			// A writer or an attribute change: brief.
			f.mu.Lock()
			return 0, false, nil
		}
		select {
		case <-ctx.Done():
			return 0, true, ctx.Err()
		case <-time.After(readerWait):
		}
	}
	return 0, false, nil
}

// attrOverlay is the in-memory size, times and attribute changes of a
// dirty open file.
type attrOverlay struct {
	size         uint64
	mtime, ctime int64
	attrs        pendingAttrs
}

// pendingAttrs are attribute changes to an open file that its next
// commit writes, in the same transaction as its content: tar, cp -a and
// rsync set times, owner and mode on every file just before closing it.
type pendingAttrs struct {
	mode, uid, gid *uint32
	atime          *int64
}

func (p *pendingAttrs) apply(n *meta.Inode) {
	if p.mode != nil {
		n.Mode = *p.mode
	}
	if p.uid != nil {
		n.UID = *p.uid
	}
	if p.gid != nil {
		n.GID = *p.gid
	}
	if p.atime != nil {
		n.Atime = *p.atime
	}
}

// Handle is one open file description.
type Handle struct {
	c      *Cache
	f      *openFile
	append bool
	write  bool
}

// Ino returns the inode number the handle is open on.
func (h *Handle) Ino() uint64 { return h.f.ino }

// OpenFile opens a regular file. O_TRUNC truncates; O_APPEND writes at the end.
func (c *Cache) OpenFile(ctx context.Context, ino uint64, flags uint32) (*Handle, error) {
	if flags&unix.O_ACCMODE != unix.O_RDONLY || flags&unix.O_TRUNC != 0 {
		// Handles open already keep writing: the kernel may still hold
		// their dirty pages, and refusing those would lose them.
		if err := c.readOnly(); err != nil {
			return nil, err
		}
	}
	f, err := c.acquire(ctx, ino)
	if err != nil {
		return nil, err
	}
	h := &Handle{c: c, f: f, append: flags&unix.O_APPEND != 0, write: flags&unix.O_ACCMODE != unix.O_RDONLY}
	if h.write {
		c.mu.Lock()
		f.writers++
		c.mu.Unlock()
	}
	if flags&unix.O_TRUNC != 0 && h.write {
		if err := f.truncate(ctx, 0); err != nil {
			h.Release(ctx)
			return nil, err
		}
	}
	return h, nil
}

// acquire returns the open state of ino, loading it on first use.
func (c *Cache) acquire(ctx context.Context, ino uint64) (*openFile, error) {
	c.mu.Lock()
	if f := c.open[ino]; f != nil {
		f.refs++
		c.mu.Unlock()
		return f, nil
	}
	c.mu.Unlock()
	// nsMu orders the open against unlink and rename: either they see
	// the file open and keep its inode, or the open sees it gone.
	c.nsMu.Lock()
	defer c.nsMu.Unlock()
	n, err := c.getInode(ino)
	if err != nil {
		return nil, err
	}
	if n.Type == tree.Dir {
		return nil, ErrIsDir
	}
	if n.Type != tree.File {
		return nil, ErrInvalid
	}
	f := &openFile{c: c, ino: ino, size: n.Size, mtime: n.Mtime, ctime: n.Ctime}
	f.setChunks(n.Chunks)
	c.mu.Lock()
	defer c.mu.Unlock()
	if g := c.open[ino]; g != nil { // lost a race with another opener
		g.refs++
		return g, nil
	}
	f.refs = 1
	c.open[ino] = f
	return f, nil
}

// isSingleUse reports whether f has no handle but the caller's.
func (c *Cache) isSingleUse(f *openFile) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return f.refs == 1
}

// release drops one reference; the last one commits and forgets f.
func (c *Cache) release(ctx context.Context, f *openFile) error {
	c.mu.Lock()
	f.refs--
	last := f.refs == 0
	c.mu.Unlock()
	if !last {
		return nil
	}
	return errors.Join(c.commit(ctx, f, false), c.forgetIfIdle(f))
}

// forgetIfIdle drops f from the open files if nothing holds it: no handle,
// and no intent whose commit has yet to succeed (the snapshotter retries
// those). An inode unlinked while open goes with it.
func (c *Cache) forgetIfIdle(f *openFile) error {
	c.mu.Lock()
	if f.refs > 0 || f.intent.Load() || c.open[f.ino] != f {
		c.mu.Unlock()
		return nil
	}
	delete(c.open, f.ino)
	c.mu.Unlock()
	f.mu.Lock()
	f.closeStagingLocked()
	f.mu.Unlock()
	if n, err := c.getInode(f.ino); errors.Is(err, ErrNotFound) || err == nil && n.Nlink > 0 {
		return nil
	}
	c.nsMu.Lock()
	derr := c.update(func(txn *wtxn) error {
		n, err := txn.Inode(f.ino)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil || n.Nlink > 0 || c.isOpen(f.ino) {
			return err
		}
		return txn.DelInode(f.ino)
	})
	c.nsMu.Unlock()
	return derr
}

func (f *openFile) setChunks(chunks []meta.Chunk) {
	f.chunks = chunks
	f.raNext, f.pfNext = 0, 0
	f.offs = make([]uint64, len(chunks))
	var off uint64
	for i, ch := range chunks {
		f.offs[i] = off
		off += uint64(ch.Len)
	}
}

func (f *openFile) committedSize() uint64 {
	if len(f.chunks) == 0 {
		return 0
	}
	return f.offs[len(f.offs)-1] + uint64(f.chunks[len(f.chunks)-1].Len)
}

func (f *openFile) dirtyLocked() bool {
	return len(f.dirty) > 0 || len(f.points) > 0 || f.changed
}

func (f *openFile) overlayAttr(a *Attr) {
	if o := f.shown.Load(); o != nil {
		o.apply(a)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.overlayLocked(a)
}

func (f *openFile) overlayLocked(a *Attr) {
	if f.dirtyLocked() {
		o := f.overlayOfLocked()
		o.apply(a)
	}
}

// showLocked lets readers of f's attributes see them without waiting for
// mu, until the returned func. Nothing changes f while a commit holds mu,
// and the commit leaves the file showing what it showed before.
// (pendingAttrs values are replaced, never changed in place.)
func (f *openFile) showLocked() (hide func()) {
	if !f.dirtyLocked() {
		return func() {}
	}
	o := f.overlayOfLocked()
	f.shown.Store(&o)
	return func() { f.shown.Store(nil) }
}

func (f *openFile) overlayOfLocked() attrOverlay {
	return attrOverlay{size: f.size, mtime: f.mtime, ctime: f.ctime, attrs: f.attrs}
}

func (o *attrOverlay) apply(a *Attr) {
	a.Size, a.Mtime, a.Ctime = o.size, o.mtime, o.ctime
	if p := o.attrs; p.mode != nil || p.uid != nil || p.gid != nil || p.atime != nil {
		n := meta.Inode{Mode: a.Mode, UID: a.UID, GID: a.GID, Atime: a.Atime}
		p.apply(&n)
		a.Mode, a.UID, a.GID, a.Atime = n.Mode, n.UID, n.GID, n.Atime
	}
}

// openRef returns ino's open state with a reference taken, or nil if the
// file is not open.
func (c *Cache) openRef(ino uint64) *openFile {
	c.mu.Lock()
	defer c.mu.Unlock()
	f := c.open[ino]
	if f != nil {
		f.refs++
	}
	return f
}

// setAttrOpen changes the attributes of an open file in memory; its next
// commit (close, fsync, or the last release) writes them.
func (c *Cache) setAttrOpen(ctx context.Context, f *openFile, in SetAttrIn) (Attr, error) {
	if in.Size != nil {
		if err := f.truncate(ctx, *in.Size); err != nil {
			return Attr{}, err
		}
	}
	// The inode is read holding mu: a commit that holds it writes the
	// pending attributes to the inode and clears them, so an inode read
	// before it with pending attributes read after it would answer with
	// the attributes of before the commit's changes.
	f.mu.Lock()
	n, err := c.getInode(f.ino)
	if err != nil {
		f.mu.Unlock()
		return Attr{}, err
	}
	p := &f.attrs
	if in.Mode != nil {
		m := *in.Mode & 0o7777
		p.mode = &m
	}
	if in.UID != nil {
		u := *in.UID
		p.uid = &u
	}
	if in.GID != nil {
		g := *in.GID
		p.gid = &g
	}
	if in.Atime != nil {
		t := *in.Atime
		p.atime = &t
	}
	if in.Mtime != nil {
		f.mtime = *in.Mtime
	}
	a := namespace.AttrOf(f.ino, n)
	if in.KillPriv {
		f.killSuidLocked(a.Mode)
	}
	f.ctime, f.changed = c.now(), true
	f.overlayLocked(&a)
	f.mu.Unlock()
	if in.KillPriv {
		if err := c.dropCapability(f.ino, n); err != nil {
			return Attr{}, err
		}
	}
	return a, nil
}

// killSuidLocked drops setuid, and setgid of a group-executable file, from
// the pending mode (base is the recorded mode).
func (f *openFile) killSuidLocked(base uint32) {
	m := base
	if f.attrs.mode != nil {
		m = *f.attrs.mode
	}
	n := meta.Inode{Type: tree.File, Mode: m}
	if namespace.KillPriv(&n, true) {
		f.attrs.mode = &n.Mode
		f.ctime, f.changed = f.c.now(), true
	}
}

func (f *openFile) setMtime(t int64) {
	f.mu.Lock()
	f.mtime = t
	f.mu.Unlock()
}

func (f *openFile) closeStaging() {
	f.mu.Lock()
	f.closeStagingLocked()
	f.mu.Unlock()
}

func (f *openFile) closeStagingLocked() {
	if f.stage != nil {
		f.stage.close()
		f.stage = nil
	}
}

// ReadAt reads from the file as it is now, committed or not. Bytes in
// chunks are read after f's lock is released: a chunk's content never
// changes (its id is its hash), so what the file reads as is fixed once
// the chunks are picked, and readers of one file, the kernel's read-ahead
// among them, decrypt in parallel instead of one after another, and never
// wait for a writer's commit on a chunk fetched from the remote.
func (h *Handle) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	for tries := 0; ; tries++ {
		// A sweep may drop a chunk this read planned to read from before
		// the file changed (see sweeper): then the file's chunks now are
		// read instead.
		drops := h.f.c.sweep.drops.Load()
		n, err := h.readAt(ctx, p, off)
		if err == nil || tries == 2 || h.f.c.sweep.drops.Load() == drops {
			return n, err
		}
	}
}

func (h *Handle) readAt(ctx context.Context, p []byte, off int64) (int, error) {
	f := h.f
	if off < 0 {
		return 0, ErrInvalid
	}
	if n, done, err := f.lockRead(ctx, p, uint64(off)); done {
		return n, err
	}
	if uint64(off) >= f.size {
		f.mu.Unlock()
		return 0, nil
	}
	n := min(uint64(len(p)), f.size-uint64(off))
	seq := uint64(off) == f.lastEnd
	if !seq {
		f.raNext, f.pfNext = 0, 0 // a sequential run starting here reads ahead afresh
	}
	var plan []chunkRead
	err := f.planReadLocked(p[:n], uint64(off), seq, &plan)
	if err == nil {
		f.lastEnd = uint64(off) + n
	}
	f.mu.Unlock()
	if err == nil {
		err = f.c.readChunks(ctx, plan)
	}
	if err != nil {
		return 0, err
	}
	return int(n), nil
}

// readDuringCommit reads while a commit holds mu, if it lets readers in;
// ok is false if not. A commit of many bytes takes seconds, and a reader
// of the file, often the writer checking what it wrote, would wait for it.
// It leaves the sequential-read state alone, which is mu's.
func (f *openFile) readDuringCommit(ctx context.Context, p []byte, off uint64) (n int, ok bool, err error) {
	if !f.readable.Load() {
		return 0, false, nil
	}
	f.swap.RLock()
	if !f.readable.Load() {
		f.swap.RUnlock()
		return 0, false, nil
	}
	if f.c.inReadDuringCommit != nil {
		f.c.inReadDuringCommit()
	}
	if off >= f.size {
		f.swap.RUnlock()
		return 0, true, nil
	}
	m := min(uint64(len(p)), f.size-off)
	var plan []chunkRead
	err = f.planReadLocked(p[:m], off, false, &plan)
	f.swap.RUnlock()
	if err == nil {
		err = f.c.readChunks(ctx, plan)
	}
	if err != nil {
		return 0, true, err
	}
	return int(m), true, nil
}

// chunkRead is a part of a read served from a committed chunk.
type chunkRead struct {
	id  crypto.ID
	len uint64 // the chunk's
	in  uint64 // offset of dst's first byte in the chunk
	dst []byte
}

// readAtLocked fills p from offset off (within size): dirty bytes from
// staging (or zeros), the rest from the committed chunks.
func (f *openFile) readAtLocked(ctx context.Context, p []byte, off uint64, seq bool) error {
	var plan []chunkRead
	if err := f.planReadLocked(p, off, seq, &plan); err != nil {
		return err
	}
	return f.c.readChunks(ctx, plan)
}

// planReadLocked fills p from offset off (within size) with what needs f's
// state: dirty bytes from staging (or zeros) and holes; the parts in
// committed chunks it appends to plan, for readChunks.
func (f *openFile) planReadLocked(p []byte, off uint64, seq bool, plan *[]chunkRead) error {
	end := off + uint64(len(p))
	pos := off
	for pos < end {
		i := f.dirty.find(pos)
		if i < len(f.dirty) && f.dirty[i].Start <= pos {
			e := min(f.dirty[i].End, end)
			if err := f.readDirtyLocked(p[pos-off:e-off], pos); err != nil {
				return err
			}
			pos = e
			continue
		}
		e := end
		if i < len(f.dirty) {
			e = min(e, f.dirty[i].Start)
		}
		f.planBaseLocked(p[pos-off:e-off], pos, seq, plan)
		pos = e
	}
	return nil
}

func (f *openFile) readDirtyLocked(p []byte, off uint64) error {
	end := off + uint64(len(p))
	pos := off
	for pos < end {
		i := f.written.find(pos)
		if i < len(f.written) && f.written[i].Start <= pos {
			e := min(f.written[i].End, end)
			if err := f.stage.readAt(p[pos-off:e-off], pos); err != nil {
				return err
			}
			pos = e
			continue
		}
		e := end
		if i < len(f.written) {
			e = min(e, f.written[i].Start)
		}
		clear(p[pos-off : e-off])
		pos = e
	}
	return nil
}

// planBaseLocked plans the read of committed content into p; holes and
// bytes past the content are zeroed at once.
func (f *openFile) planBaseLocked(p []byte, off uint64, seq bool, plan *[]chunkRead) {
	end := off + uint64(len(p))
	pos := off
	for pos < end {
		i := sort.Search(len(f.offs), func(i int) bool { return f.offs[i] > pos }) - 1
		if i < 0 || pos >= f.offs[i]+uint64(f.chunks[i].Len) {
			clear(p[pos-off:])
			return
		}
		ch, in := f.chunks[i], pos-f.offs[i]
		want := min(end-pos, uint64(ch.Len)-in)
		if ch.IsHole() {
			clear(p[pos-off : pos-off+want])
			pos += want
			continue
		}
		*plan = append(*plan, chunkRead{id: ch.ID, len: ch.Len, in: in, dst: p[pos-off : pos-off+want]})
		pos += want
		if seq && i+1 < len(f.chunks) && !f.chunks[i+1].IsHole() {
			// Once per chunk, not once per READ: each Prefetch of a
			// chunk whose file was not open started a goroutine, about
			// one per READ for a 1 MiB reader.
			if f.pfNext != i+2 && f.c.chunks.Prefetch(f.c.bg, f.chunks[i+1].ID) {
				f.pfNext = i + 2
			}
			f.readAheadLocked(i + 1)
		}
	}
}

// readChunks serves planned reads: from memory or the state directory,
// decrypting only the blocks each covers, else fetching the whole chunk.
func (c *Cache) readChunks(ctx context.Context, plan []chunkRead) error {
	for _, r := range plan {
		ok, err := c.chunks.ReadInto(r.id, r.in, r.dst)
		if err != nil {
			return err
		}
		if ok {
			continue
		}
		data, err := c.chunks.Get(ctx, r.id)
		if err != nil {
			return err
		}
		if uint64(len(data)) != r.len {
			return fmt.Errorf("chunk %s: %d bytes, want %d: %w", r.id.Short(), len(data), r.len, errCorruptState)
		}
		copy(r.dst, data[r.in:])
	}
	return nil
}

// Lseek answers lseek(2)'s SEEK_DATA and SEEK_HOLE (whence) from off for
// ino: its holes are those of the committed content not written since and
// the gaps never written (a truncate that grew the file, a write past the
// end), whatever their size. ErrNoMoreData (ENXIO) at or past the end, and
// for SEEK_DATA when only holes follow.
func (c *Cache) Lseek(ctx context.Context, ino uint64, off uint64, whence uint32) (uint64, error) {
	var holes extents
	var size uint64
	if f := c.openRef(ino); f != nil {
		f.mu.Lock()
		for i, ch := range f.chunks {
			if ch.IsHole() {
				holes, _ = holes.add(f.offs[i], f.offs[i]+ch.Len)
			}
		}
		holes = holes.minus(f.dirty)
		for _, r := range f.dirty.minus(f.written) {
			holes, _ = holes.add(r.Start, r.End)
		}
		size = f.size
		f.mu.Unlock()
		if err := c.release(ctx, f); err != nil {
			return 0, err
		}
	} else {
		n, err := c.getInode(ino)
		if err != nil {
			return 0, err
		}
		var o uint64
		for _, ch := range n.Chunks {
			if ch.IsHole() {
				holes, _ = holes.add(o, o+ch.Len)
			}
			o += ch.Len
		}
		size = n.Size
	}
	holes = holes.clip(size)
	hs := make([][2]uint64, len(holes))
	for i, h := range holes {
		hs[i] = [2]uint64{h.Start, h.End}
	}
	pos, errno := tree.SeekHoles(hs, size, off, whence)
	switch errno {
	case 0:
		return pos, nil
	case syscall.ENXIO:
		return 0, ErrNoMoreData
	}
	return 0, ErrInvalid
}

// readAheadBytes is how far past the chunk being read a sequential reader
// has the kernel read chunk files. Each read of a chunk file opens it anew,
// so the kernel's own read-ahead starts small every time: reading 512 MiB
// of chunk files that were not cached went at about 280 MB/s.
const readAheadBytes = 8 << 20

// readAheadLocked asks the kernel to read the files of the chunks from
// index from on, up to readAheadBytes past from, skipping those an earlier
// call asked for. Called as the reader enters each chunk, it keeps the
// window sliding: asking again only once the reader reached the end of
// the window left the disk idle while the reader waited for each chunk.
func (f *openFile) readAheadLocked(from int) {
	if from >= len(f.chunks) {
		return
	}
	start, n := max(from, f.raNext), 0
	for k := from; k < start; k++ {
		n += int(f.chunks[k].Len)
	}
	to := start
	for to < len(f.chunks) && !f.chunks[to].IsHole() && (to == from || n+int(f.chunks[to].Len) <= readAheadBytes) {
		n += int(f.chunks[to].Len)
		to++
	}
	if to > start {
		f.raNext = to
		f.c.chunks.ReadAhead(chunkIDs(f.chunks[start:to]))
	}
}

var errCorruptState = chunkstore.ErrCorrupt

// WriteAt writes p at off (at the end for O_APPEND handles) and returns the
// offset written at. It does not change the file's mtime (see below): the
// caller sets it with SetAttr.
func (h *Handle) WriteAt(ctx context.Context, p []byte, off int64) (int, error) {
	f := h.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if h.append {
		off = int64(f.size)
	}
	if off < 0 {
		return 0, ErrInvalid
	}
	if len(p) == 0 {
		return 0, nil
	}
	if uint64(off) > MaxFileSize-uint64(len(p)) || len(p) > MaxFileSize {
		return 0, ErrFileTooBig
	}
	if err := f.ensureStagingLocked(); err != nil {
		return 0, err
	}
	if f.c.unchecked.Add(int64(len(p))) > spaceCheckEvery {
		f.c.unchecked.Store(0)
		if err := f.c.checkSpace(f.dirtyBytes.Load() + int64(len(p))); err != nil {
			return 0, err
		}
	}
	o := uint64(off)
	if err := f.stage.writeAt(p, o); err != nil {
		return 0, fmt.Errorf("stage write: %w", err)
	}
	var added int64
	if o > f.size {
		f.dirty, _ = f.dirty.add(f.size, o) // the gap reads as zeros (a hole)
	}
	e := o + uint64(len(p))
	f.dirty, _ = f.dirty.add(o, e)
	f.written, added = f.written.add(o, e)
	if e > f.size {
		f.size = e
	}
	// mtime is left alone: under the kernel's writeback cache these are
	// pages written back, at a time of the kernel's choosing (at close,
	// after an fsync, before a fallocate), and the kernel keeps the file's
	// mtime itself and sends it with a SETATTR when its clock moved. A
	// stamp here would outlive the kernel's value whenever the write-back
	// follows that SETATTR, and the recorded mtime (snapshots, and stat
	// after a remount) would differ from the one stat showed.
	f.ctime, f.changed = f.c.now(), true
	// Unwritten gaps are not counted: big ones become holes.
	f.dirtyBytes.Add(added)
	return len(p), nil
}

// truncate sets the size; committed on the next commit.
func (f *openFile) truncate(ctx context.Context, size uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if size > MaxFileSize {
		return ErrFileTooBig
	}
	if size == f.size {
		return nil // POSIX: times change only when the size does
	}
	if size < f.size && f.intent.Load() {
		// Shrinking the staging file would take bytes the intent names.
		if err := f.c.commitLocked(ctx, f, true, false); err != nil {
			return err
		}
	}
	if size < f.size {
		f.dirty = f.dirty.clip(size)
		f.written = f.written.clip(size)
		if f.stage != nil {
			if err := f.stage.truncate(size); err != nil {
				return err
			}
		}
		if size < f.committedSize() {
			f.points = append(f.points, size)
		}
	} else if size > f.size {
		f.dirty, _ = f.dirty.add(f.size, size)
	}
	f.size = size
	now := f.c.now()
	f.mtime, f.ctime, f.changed = now, now, true
	f.dirtyBytes.Store(f.written.total())
	return nil
}

// Zero makes the n bytes at off read as zeros without storing them, as
// fallocate's FALLOC_FL_PUNCH_HOLE and FALLOC_FL_ZERO_RANGE do: the bytes
// become dirty but not written, like the gap a truncate leaves, so the
// next commit records each run of them of minHole bytes or more (together
// with the holes and never-written bytes around it) as a hole and chunks
// shorter ones as zeros. With keepSize the range is cut at the size (a
// punch always keeps it); without, a range past the end grows the file.
// Like WriteAt it leaves the mtime to the kernel and sets the ctime.
func (h *Handle) Zero(ctx context.Context, off, n uint64, keepSize bool) error {
	f := h.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if n == 0 {
		return ErrInvalid
	}
	end := off + n
	if end < off {
		end = math.MaxUint64
	}
	if keepSize {
		end = min(end, f.size)
	} else if end > MaxFileSize {
		return ErrFileTooBig
	}
	if off >= end {
		return nil // past the end, and the size stays
	}
	// The staging file keeps its bytes of the range (an intent may name
	// them); what is not written reads as zeros whatever it holds.
	f.written = f.written.minus(extents{{off, end}})
	f.dirty, _ = f.dirty.add(min(off, f.size), end)
	if end > f.size {
		f.size = end
	}
	f.ctime, f.changed = f.c.now(), true
	f.dirtyBytes.Store(f.written.total())
	return nil
}

func (f *openFile) ensureStagingLocked() error {
	if f.stage != nil {
		return nil
	}
	s, err := newStaging(f.c.staging)
	if err != nil {
		return err
	}
	f.stage = s
	return nil
}

// Flush commits the file (close(2) calls it); for a file whose fsync left
// an intent, it brings the intent up to date instead, and while the
// intent's background commit runs it has nothing to do: the kernel wrote
// the file's dirty pages back before this call, so every write the close
// covers came before the commit took the lock, and its record has them.
func (h *Handle) Flush(ctx context.Context) error {
	f := h.f
	f.commits.Add(1)
	defer f.commits.Add(-1)
	if !f.mu.TryLock() {
		// Held: by a background commit perhaps, or about to be. Waiting
		// for its start rather than its end is what lets close(2) after
		// fsync(2) return before the commit.
		if p := f.bgStarted.Load(); p != nil {
			<-*p
			if f.committing.Load() {
				return nil
			}
		}
		f.mu.Lock()
	}
	defer f.mu.Unlock()
	return h.c.commitLocked(ctx, f, false, true)
}

// Fsync makes the file's changes durable: committed, or for many bytes
// staged durably with an intent and committed in the background.
func (h *Handle) Fsync(ctx context.Context) error {
	h.f.lockCommit()
	defer h.f.unlockCommit()
	return h.c.commitLocked(ctx, h.f, true, true)
}

// Release closes the handle; the last one commits.
func (h *Handle) Release(ctx context.Context) error {
	if h.write {
		h.c.mu.Lock()
		h.f.writers--
		h.c.mu.Unlock()
	}
	return h.c.release(ctx, h.f)
}

// OpenForWriting reports whether ino has a handle open for writing. Only
// then may the kernel hold written pages of it that have not reached the
// cache (under its writeback cache, through any such handle).
func (c *Cache) OpenForWriting(ino uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	f := c.open[ino]
	return f != nil && f.writers > 0
}

// commit turns f's changes into chunks and records them in the inode. The
// chunks are durable in the state directory before the inode names them,
// and both before commit returns.
func (c *Cache) commit(ctx context.Context, f *openFile, durable bool) error {
	f.lockCommit()
	defer f.unlockCommit()
	return c.commitLocked(ctx, f, durable, false)
}

// commitLocked is commit with f.mu held. With deferrable, a durable commit
// of many bytes may return once an intent makes them durable instead, and
// commit in the background (see deferCommitLocked).
func (c *Cache) commitLocked(ctx context.Context, f *openFile, durable, deferrable bool) error {
	// A sweep must see this commit's inode or hear of the chunks it
	// stores (see sweeper).
	c.sweep.enter()
	defer c.sweep.leave()
	if !f.dirtyLocked() {
		if durable {
			// Committed by an earlier close: its chunks may still be in
			// the page cache only.
			if err := c.chunks.SyncNoted(); err != nil {
				return err
			}
			return c.sync()
		}
		return nil
	}
	n, err := c.getInode(f.ino)
	if errors.Is(err, ErrNotFound) {
		c.dropIntentLocked(f)
		return nil
	}
	if err != nil {
		return err
	}
	if n.Nlink == 0 {
		// Unlinked: nobody will ever see the content again.
		c.dropIntentLocked(f)
		return nil
	}
	if deferrable {
		if ok, err := c.deferCommitLocked(f, durable); ok || err != nil {
			return err
		}
	}
	defer f.showLocked()()
	// Until the swap below, nothing changes what the file reads as. The
	// readers let in must be done before the caller, on any return, may
	// change f.
	f.readable.Store(true)
	defer func() {
		f.swap.Lock()
		f.readable.Store(false)
		f.swap.Unlock()
	}()
	if c.inCommit != nil {
		if err := c.inCommit(f.ino); err != nil {
			return err
		}
	}
	// An intent's record goes in the commit's transaction, and its staging
	// bytes once the commit is on the disk: a commit after one is durable.
	durable = durable || f.intent.Load()
	// Holes take no space: a truncate to 1 TiB stores nothing.
	holes := f.newHolesLocked()
	// A commit's bytes count against the same budget as writes': the
	// state directory is statted once per spaceCheckEvery bytes, well
	// within the margin, not at every close of a small file.
	if need := f.dirty.minus(holes).total(); need > spaceCheckEvery || c.unchecked.Add(need) > spaceCheckEvery {
		c.unchecked.Store(0)
		if err := c.checkSpace(need); err != nil {
			return fmt.Errorf("commit inode %d: %w", f.ino, err)
		}
	}
	chunks := f.chunks
	var small []chunkstore.Chunk
	if len(f.dirty) > 0 || len(f.points) > 0 || f.size != f.committedSize() {
		chunks, small, err = c.rechunkLocked(ctx, f, holes, durable)
		if err != nil {
			return fmt.Errorf("commit inode %d: %w", f.ino, err)
		}
	}
	if durable {
		// Chunks stored by closes (kept from the old content, shared with
		// files only closed so far, or of other files whose inodes the
		// sync below makes durable too) reach the disk first.
		if err := c.chunks.SyncNoted(); err != nil {
			return fmt.Errorf("commit inode %d: %w", f.ino, err)
		}
	}
	intent := f.intent.Load()
	c.nsMu.Lock()
	err = c.storeChunks(small, durable, func(txn *wtxn) error {
		if intent {
			if err := txn.Delete(meta.IntentKey(f.ino)); err != nil {
				return err
			}
		}
		n, err := txn.Inode(f.ino)
		if err != nil {
			return err
		}
		n.Chunks, n.Size, n.Mtime, n.Ctime = chunks, f.size, f.mtime, f.ctime
		f.attrs.apply(n)
		return txn.PutInode(f.ino, n)
	})
	c.nsMu.Unlock()
	if errors.Is(err, ErrNotFound) {
		c.dropIntentLocked(f)
		return nil
	}
	if err != nil {
		return fmt.Errorf("commit inode %d: %w", f.ino, err)
	}
	// Badger's log files are memory-mapped: a committed transaction is in
	// the kernel's page cache and survives kill -9 of this process. Only
	// fsync has to reach the disk, for power loss.
	if durable {
		if err := c.sync(); err != nil {
			return err
		}
	}
	f.swap.Lock()
	f.readable.Store(false)
	f.setChunks(chunks)
	f.dirty, f.written, f.points, f.changed = nil, nil, nil, false
	f.attrs = pendingAttrs{}
	f.dirtyBytes.Store(0)
	if intent {
		f.intent.Store(false)
		f.stage.unlink(c.log)
	}
	if f.stage != nil {
		if err := f.stage.reset(); err != nil {
			c.log.Warn("cannot reset a staging file", "err", err)
		}
	}
	f.swap.Unlock()
	c.inodeChanged(f.ino)
	return nil
}

// rechunkLocked computes the new chunk list of f, storing new chunks. Only
// the spans around dirty bytes are re-chunked: from the old chunk boundary
// before a dirty byte until the chunker cuts at an old boundary past every
// dirty byte seen so far; the old chunks in between are reused as they are.
// That works because a content-defined cut depends only on the bytes since
// the previous cut.
//
// holes (from newHolesLocked) are recorded as holes, never chunked: the
// file is a sequence of holes and data regions, and the chunker runs in
// the data regions only, each cut where a hole starts.
//
// Chunks smaller than smallChunk are returned in small rather than stored,
// for the caller to store together with the inode.
func (c *Cache) rechunkLocked(ctx context.Context, f *openFile, holes extents, durable bool) (out []meta.Chunk, small []chunkstore.Chunk, err error) {
	size := f.size
	// A file no bigger than the chunker's minimum is one chunk whatever its
	// content (FastCDC never cuts before it): most files of a source tree
	// commit without waiting for a chunker.
	if size <= uint64(c.r.Config().Chunker.Min) && len(holes) == 0 {
		if size == 0 {
			return nil, nil, nil
		}
		data := make([]byte, size)
		if err := f.readAtLocked(ctx, data, 0, false); err != nil {
			return nil, nil, err
		}
		id := c.r.Key().BlobID(data)
		out = []meta.Chunk{{ID: id, Len: size}}
		if size < smallChunk {
			return out, []chunkstore.Chunk{{ID: id, Data: data, Owned: true}}, nil
		}
		if err := c.storeChunk(id, data, durable); err != nil {
			return nil, nil, err
		}
		return out, nil, nil
	}
	oldEnd := f.committedSize()
	// Dirty spans, plus points where the old chunking must be redone: a
	// shrink point, and the old end when the file grew (the old last chunk
	// was cut by EOF, not by content).
	type span struct{ s, e uint64 }
	var spans []span
	for _, d := range f.dirty {
		spans = append(spans, span{d.Start, d.End})
	}
	for _, p := range f.points {
		if p < size {
			spans = append(spans, span{p, p})
		}
	}
	if size != oldEnd {
		spans = append(spans, span{min(size, oldEnd), min(size, oldEnd)})
	}
	// An old hole that is not wholly inside a new one (written into, or
	// what is left of it too small to stay a hole) is re-chunked as data.
	for i, ch := range f.chunks {
		if !ch.IsHole() {
			continue
		}
		s, e := f.offs[i], f.offs[i]+ch.Len
		if k := holes.find(s); k == len(holes) || holes[k].Start > s || holes[k].End < e {
			spans = append(spans, span{s, e})
		}
	}
	boundary := make(map[uint64]int, len(f.offs))
	for i, o := range f.offs {
		boundary[o] = i
	}
	// chunkStart returns the start of the old chunk holding x (the last
	// chunk for x at or past the old end).
	chunkStart := func(x uint64) uint64 {
		i := sort.Search(len(f.offs), func(i int) bool { return f.offs[i] > x }) - 1
		if i < 0 {
			return 0
		}
		return f.offs[i]
	}
	ch := c.chunkers.get()
	defer c.chunkers.put(ch)
	// Large chunks are stored by st while the next is cut; every return
	// waits for it first, and a successful one takes the ids from it.
	var st *chunkStorer
	defer func() {
		switch {
		case st == nil:
		case err != nil:
			st.wait()
		default:
			if err = st.finish(out); err != nil {
				out, small = nil, nil
			}
		}
	}()

	// region re-chunks the data region [rs, re): no hole inside, and the
	// chunker cuts at re.
	region := func(rs, re uint64) error {
		var rsp []span
		for _, sp := range spans {
			if sp.s <= re && sp.e >= rs {
				rsp = append(rsp, span{max(sp.s, rs), min(sp.e, re)})
			}
		}
		// Old chunks are reused only whole and inside the region: one
		// that straddles either end is re-chunked.
		if _, ok := boundary[rs]; !ok {
			rsp = append(rsp, span{rs, rs})
		}
		if _, ok := boundary[re]; !ok {
			rsp = append(rsp, span{re, re})
		}
		sort.Slice(rsp, func(i, j int) bool { return rsp[i].s < rsp[j].s })
		pos := rs // an old boundary (or rs) below the rechunked part
		si := 0
		copyOld := func(to uint64) {
			if to <= pos {
				return
			}
			for i := boundary[pos]; i < len(f.chunks) && f.offs[i] < to; i++ {
				out = append(out, f.chunks[i])
			}
			pos = to
		}
		for pos < re {
			for si < len(rsp) && rsp[si].e < pos || si < len(rsp) && rsp[si].e == pos && rsp[si].s < pos {
				si++
			}
			if si == len(rsp) {
				copyOld(re)
				break
			}
			start := max(chunkStart(rsp[si].s), pos)
			copyOld(start)
			rd := &contentReader{ctx: ctx, f: f, pos: start, end: re}
			ch.Reset(rd)
			at := start
			reached := false
			for {
				data, err := ch.Next()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					if rd.err != nil {
						return rd.err
					}
					return err
				}
				if len(data) < smallChunk {
					id := c.r.Key().BlobID(data)
					small = append(small, chunkstore.Chunk{ID: id, Data: append([]byte(nil), data...), Owned: true})
					out = append(out, meta.Chunk{ID: id, Len: uint64(len(data))})
				} else {
					if st == nil {
						st = c.newChunkStorer(durable)
					}
					out = append(out, meta.Chunk{Len: uint64(len(data))}) // id filled in by st
					if err := st.put(len(out)-1, data); err != nil {
						return err
					}
				}
				at += uint64(len(data))
				// Re-synchronised: an old, content-defined boundary with no
				// dirty byte or redo point between the run's start and here
				// left unvisited.
				for si < len(rsp) && (rsp[si].e < at || rsp[si].e == at && rsp[si].s < at) {
					si++
				}
				_, old := boundary[at]
				inSpan := si < len(rsp) && rsp[si].s <= at
				if old && at < oldEnd && at < re && !inSpan {
					reached = true
					break
				}
			}
			if rd.err != nil {
				return rd.err
			}
			pos = at
			if !reached {
				break
			}
		}
		return nil
	}
	pos := uint64(0)
	for _, h := range append(holes, extent{size, size}) {
		if h.Start > pos {
			if err := region(pos, h.Start); err != nil {
				return nil, nil, err
			}
		}
		if h.End > h.Start {
			out = append(out, meta.Chunk{Len: h.End - h.Start}) // a hole
		}
		pos = h.End
	}
	return out, small, nil
}

// minHole is the smallest run of never-written bytes a commit records as a
// hole rather than chunking its zeros; shorter runs inside data are not
// worth a chunk boundary.
const minHole = tree.MinHole

// newHolesLocked returns the holes the next commit records: runs of at
// least minHole bytes that read as zeros without being stored, that is
// dirty bytes never written (a truncate that grew the file, a write past
// the end) and holes of the committed content that stayed clean.
func (f *openFile) newHolesLocked() extents {
	var z extents
	for i, ch := range f.chunks {
		if ch.IsHole() && f.offs[i] < f.size {
			z, _ = z.add(f.offs[i], min(f.offs[i]+ch.Len, f.size))
		}
	}
	z = z.minus(f.dirty)
	for _, r := range f.dirty.minus(f.written) {
		z, _ = z.add(r.Start, r.End)
	}
	out := z[:0]
	for _, r := range z {
		if r.End-r.Start >= minHole {
			out = append(out, r)
		}
	}
	return out
}

// smallChunk is the size below which a chunk is stored with its inode.
const smallChunk = 256 << 10

// contentReader reads f's current content sequentially; the caller holds f.mu.
type contentReader struct {
	ctx      context.Context
	f        *openFile
	pos, end uint64
	err      error
}

func (r *contentReader) Read(p []byte) (int, error) {
	if r.pos >= r.end {
		return 0, io.EOF
	}
	n := min(uint64(len(p)), r.end-r.pos)
	if err := r.f.readAtLocked(r.ctx, p[:n], r.pos, false); err != nil {
		r.err = err
		return 0, err
	}
	r.pos += n
	return int(n), nil
}

// chunkIDs lists the ids of chunks (a hole's is zero), for tests and the
// snapshotter.
func chunkIDs(chunks []meta.Chunk) []crypto.ID {
	out := make([]crypto.ID, len(chunks))
	for i, ch := range chunks {
		out[i] = ch.ID
	}
	return out
}

// spaceMargin is free space the state directory must keep beyond what a
// commit writes. Badger's logs are memory-mapped and sparse: filling the
// disk under them would kill the process with SIGBUS instead of returning
// an error, so writers get ENOSPC before that can happen.
const (
	spaceMargin     = 16 << 20
	spaceCheckEvery = 4 << 20
)

// checkSpace fails with ErrNoSpace unless need bytes plus the margin are
// free in the state directory.
func (c *Cache) checkSpace(need int64) error {
	var st unix.Statfs_t
	if err := unix.Statfs(c.opts.StateDir, &st); err != nil {
		return fmt.Errorf("statfs state directory: %w", err)
	}
	if free := int64(st.Bavail) * int64(st.Bsize); free < need+spaceMargin {
		return fmt.Errorf("state directory has %d bytes free, a commit needs %d more: %w", free, need+spaceMargin-free, ErrNoSpace)
	}
	return nil
}
