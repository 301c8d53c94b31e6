package versions

import (
	"container/list"
	"context"
	"fmt"
	"math"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/pack"
	"github.com/keepfs/keepfs/repo/tree"
)

// fileNode reads chunks on demand.
type fileNode struct {
	node
	once    sync.Once
	pieces  []tree.Piece // chunks and holes in file order
	offsets []int64      // start of each piece; len(pieces)+1 entries
	err     error
	// next is where the last read ended: a read starting there is
	// sequential and earns a read-ahead of the following chunk.
	next atomic.Int64
}

// layout places every chunk and hole in the file. Only chunk ids are in
// the tree, so the sizes of chunks come from the index.
func (f *fileNode) layout() error {
	f.once.Do(func() {
		f.pieces = f.n.Pieces()
		f.offsets = make([]int64, len(f.pieces)+1)
		for i, p := range f.pieces {
			sz := p.Hole
			if !p.ID.IsNull() {
				s, ok := f.r.src.BlobSize(pack.Data, p.ID)
				if !ok {
					f.err = fmt.Errorf("data blob %s: %w", p.ID.Short(), repo.ErrBlobNotFound)
					return
				}
				sz = uint64(s)
			}
			if sz > math.MaxInt64-uint64(f.offsets[i]) {
				f.err = fmt.Errorf("%s: content past 2^63 bytes: %w", f.path, pack.ErrCorrupt)
				return
			}
			f.offsets[i+1] = f.offsets[i] + int64(sz)
		}
		if end := f.offsets[len(f.offsets)-1]; uint64(end) != f.n.Size {
			// The tree and the index disagree: serving either size could
			// hand out wrong bytes.
			f.err = fmt.Errorf("%s: chunks add up to %d bytes, tree says %d: %w", f.path, end, f.n.Size, pack.ErrCorrupt)
		}
	})
	return f.err
}

var _ = (gofs.NodeOpener)((*fileNode)(nil))

func (f *fileNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC|syscall.O_APPEND) != 0 {
		return nil, 0, syscall.EROFS
	}
	if err := f.layout(); err != nil {
		return nil, 0, f.r.errno(err)
	}
	// Snapshot content never changes: let the kernel keep its page cache
	// across opens.
	return nil, fuse.FOPEN_KEEP_CACHE, 0
}

var _ = (gofs.NodeReader)((*fileNode)(nil))

func (f *fileNode) Read(ctx context.Context, fh gofs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if err := f.layout(); err != nil {
		return nil, f.r.errno(err)
	}
	end := f.offsets[len(f.offsets)-1]
	if off >= end || off < 0 {
		return fuse.ReadResultData(nil), 0
	}
	want := min(int64(len(dest)), end-off)
	i := sort.Search(len(f.offsets)-1, func(i int) bool { return f.offsets[i+1] > off })
	n := int64(0)
	for n < want && i < len(f.pieces) {
		start := off + n - f.offsets[i]
		if f.pieces[i].ID.IsNull() {
			// A hole: zeros, nothing fetched.
			k := min(want-n, f.offsets[i+1]-f.offsets[i]-start)
			clear(dest[n : n+k])
			n += k
			i++
			continue
		}
		b, err := f.chunk(ctx, i)
		if err != nil {
			return nil, f.r.errno(err)
		}
		n += int64(copy(dest[n:want], b[start:]))
		i++
	}
	for i < len(f.pieces) && f.pieces[i].ID.IsNull() {
		i++
	}
	if f.next.Swap(off+n) == off && i < len(f.pieces) {
		// Sequential: chunk i is the one the next read will need (or the
		// one after, if this read ended on a boundary, which is harmless).
		f.r.blobs.prefetch(f.r.src, f.pieces[i].ID, f.r.opts.Logger)
	}
	return fuse.ReadResultData(dest[:n]), 0
}

var _ = (gofs.NodeLseeker)((*fileNode)(nil))

// Lseek answers SEEK_DATA and SEEK_HOLE from the holes the tree records.
func (f *fileNode) Lseek(ctx context.Context, fh gofs.FileHandle, off uint64, whence uint32) (uint64, syscall.Errno) {
	if err := f.layout(); err != nil {
		return 0, f.r.errno(err)
	}
	holes := make([][2]uint64, 0, len(f.n.Holes))
	for i, p := range f.pieces {
		if p.ID.IsNull() {
			holes = append(holes, [2]uint64{uint64(f.offsets[i]), uint64(f.offsets[i+1])})
		}
	}
	return tree.SeekHoles(holes, uint64(f.offsets[len(f.offsets)-1]), off, whence)
}

// chunk returns piece i (a chunk), checked against the size the index
// promised.
func (f *fileNode) chunk(ctx context.Context, i int) ([]byte, error) {
	id := f.pieces[i].ID
	b, err := f.r.blobs.get(ctx, f.r.src, id)
	if err != nil {
		return nil, err
	}
	if want := f.offsets[i+1] - f.offsets[i]; int64(len(b)) != want {
		return nil, fmt.Errorf("data blob %s: %d bytes, index says %d: %w", id.Short(), len(b), want, pack.ErrCorrupt)
	}
	return b, nil
}

// chunkCache keeps recently read chunks: the kernel reads 128 KiB at a
// time and a chunk is about 1 MiB, so without it every chunk would be
// fetched and decrypted eight times. Least recently used chunks go first
// once the byte bound is passed. Concurrent loads of one chunk (the
// kernel's parallel reads, a read racing its own read-ahead) share one
// fetch.
type chunkCache struct {
	max int64

	mu       sync.Mutex // guards the fields below
	size     int64
	lru      *list.List // of *cached, most recent at the front
	m        map[crypto.ID]*list.Element
	inflight map[crypto.ID]*load
}

type cached struct {
	id crypto.ID
	b  []byte
}

type load struct {
	done chan struct{}
	b    []byte
	err  error
}

func newChunkCache(max int64) *chunkCache {
	return &chunkCache{max: max, lru: list.New(), m: map[crypto.ID]*list.Element{}, inflight: map[crypto.ID]*load{}}
}

func (c *chunkCache) get(ctx context.Context, src Source, id crypto.ID) ([]byte, error) {
	c.mu.Lock()
	if e, ok := c.m[id]; ok {
		c.lru.MoveToFront(e)
		c.mu.Unlock()
		return e.Value.(*cached).b, nil
	}
	l, ok := c.inflight[id]
	if !ok {
		l = &load{done: make(chan struct{})}
		c.inflight[id] = l
		c.mu.Unlock()
		// The fetch must not die with the first caller's context: others
		// may be waiting on it.
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
		l.b, l.err = src.LoadBlob(lctx, pack.Data, id)
		cancel()
		c.mu.Lock()
		delete(c.inflight, id)
		if l.err == nil {
			c.addLocked(id, l.b)
		}
		c.mu.Unlock()
		close(l.done)
		return l.b, l.err
	}
	c.mu.Unlock()
	select {
	case <-l.done:
		return l.b, l.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (c *chunkCache) addLocked(id crypto.ID, b []byte) {
	if _, ok := c.m[id]; ok {
		return
	}
	c.m[id] = c.lru.PushFront(&cached{id: id, b: b})
	c.size += int64(len(b))
	for c.size > c.max && c.lru.Len() > 1 {
		e := c.lru.Back()
		v := e.Value.(*cached)
		c.lru.Remove(e)
		delete(c.m, v.id)
		c.size -= int64(len(v.b))
	}
}

// prefetch loads id in the background unless it is cached or on its way.
func (c *chunkCache) prefetch(src Source, id crypto.ID, log interface{ Debug(string, ...any) }) {
	c.mu.Lock()
	_, have := c.m[id]
	_, loading := c.inflight[id]
	c.mu.Unlock()
	if have || loading {
		return
	}
	go func() {
		// A failure here is reported when a reader asks for the chunk.
		if _, err := c.get(context.Background(), src, id); err != nil {
			log.Debug("read-ahead", "blob", id.Short(), "err", err)
		}
	}()
}
