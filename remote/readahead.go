package remote

import (
	"context"
	"sync"
)

// ReadAheadOptions tunes WithReadAhead. Zero fields take the defaults noted.
type ReadAheadOptions struct {
	// Window is how much of a pack one read fetches (default 2 MiB).
	Window int64
	// Windows is how many fetched windows are kept (default 8), so memory
	// is bounded by Window × Windows.
	Windows int
}

// WithReadAhead wraps s so that a small ranged Load of a pack fetches a
// whole window from that offset on and answers later Loads inside the
// window from memory. A restore or a mount reading many small blobs one
// after the other from a pack then costs one request per window instead
// of one per blob: on an object store each request is a round trip of
// milliseconds (20,000 small files: 20,000 GETs).
//
// Packs are named by the hash of their content, so a window can never hold
// stale bytes for its name; other types and Loads of at least half a
// window go straight through. Concurrent Loads inside a window being
// fetched wait for it rather than fetching again.
func WithReadAhead(s Storage, o ReadAheadOptions) Storage {
	if o.Window <= 0 {
		o.Window = 2 << 20
	}
	if o.Windows <= 0 {
		o.Windows = 8
	}
	return &readAhead{Storage: s, o: o, sizes: make(map[string]int64)}
}

type readAhead struct {
	Storage
	o ReadAheadOptions

	mu      sync.Mutex
	sizes   map[string]int64 // pack name → size; guarded by mu
	windows []*window        // most recently used last; guarded by mu
}

type window struct {
	name     string
	off, end int64
	ready    chan struct{} // closed once data or err is set
	data     []byte
	err      error
}

// noReadAheadKey marks a context whose Loads go straight through.
type noReadAheadKey struct{}

// WithoutReadAhead returns ctx marked so that a WithReadAhead store
// passes its Loads straight to the store it wraps, neither fetching a
// window nor answering from one. A caller that already asks for exactly
// the ranges it needs (restore groups the blobs it wants into spans and
// runs) would otherwise pay for a window's worth of bytes it never reads,
// and a HEAD for the size of every pack it touches.
func WithoutReadAhead(ctx context.Context) context.Context {
	return context.WithValue(ctx, noReadAheadKey{}, true)
}

func (r *readAhead) Load(ctx context.Context, h Handle, offset, length int64) ([]byte, error) {
	if h.Type != Pack || length <= 0 || offset < 0 || length >= r.o.Window/2 || ctx.Value(noReadAheadKey{}) != nil {
		return r.Storage.Load(ctx, h, offset, length)
	}
	if b, ok := r.fromWindow(ctx, h.Name, offset, length); ok {
		return b, nil
	}
	size, err := r.size(ctx, h)
	if err != nil {
		return nil, err
	}
	if offset+length > size {
		return r.Storage.Load(ctx, h, offset, length) // let the store report the short range
	}
	w := &window{name: h.Name, off: offset, end: min(offset+r.o.Window, size), ready: make(chan struct{})}
	r.mu.Lock()
	r.windows = append(r.windows, w)
	r.evictLocked()
	r.mu.Unlock()
	w.data, w.err = r.Storage.Load(ctx, h, w.off, w.end-w.off)
	close(w.ready)
	if w.err != nil {
		r.drop(w)
		return nil, w.err
	}
	return clone(w.data[offset-w.off : offset-w.off+length]), nil
}

// fromWindow answers from a window holding [offset, offset+length) of
// name, waiting for one being fetched.
func (r *readAhead) fromWindow(ctx context.Context, name string, offset, length int64) ([]byte, bool) {
	r.mu.Lock()
	var w *window
	for i := len(r.windows) - 1; i >= 0; i-- {
		c := r.windows[i]
		if c.name == name && offset >= c.off && offset+length <= c.end {
			w = c
			// most recently used goes last
			r.windows = append(append(r.windows[:i:i], r.windows[i+1:]...), c)
			break
		}
	}
	r.mu.Unlock()
	if w == nil {
		return nil, false
	}
	select {
	case <-w.ready:
	case <-ctx.Done():
		return nil, false
	}
	if w.err != nil {
		return nil, false // the fetcher's failure (its context, say): fetch ourselves
	}
	return clone(w.data[offset-w.off : offset-w.off+length]), true
}

func (r *readAhead) size(ctx context.Context, h Handle) (int64, error) {
	r.mu.Lock()
	size, ok := r.sizes[h.Name]
	r.mu.Unlock()
	if ok {
		return size, nil
	}
	fi, err := r.Storage.Stat(ctx, h)
	if err != nil {
		return 0, err
	}
	r.mu.Lock()
	if len(r.sizes) >= 100000 {
		clear(r.sizes)
	}
	r.sizes[h.Name] = fi.Size
	r.mu.Unlock()
	return fi.Size, nil
}

// evictLocked drops the least recently used fetched windows beyond the
// limit; windows still being fetched stay (their fetchers hold them anyway).
func (r *readAhead) evictLocked() {
	for i := 0; len(r.windows) > r.o.Windows && i < len(r.windows); {
		select {
		case <-r.windows[i].ready:
			r.windows = append(r.windows[:i], r.windows[i+1:]...)
		default:
			i++
		}
	}
}

func (r *readAhead) drop(w *window) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, c := range r.windows {
		if c == w {
			r.windows = append(r.windows[:i], r.windows[i+1:]...)
			return
		}
	}
}

// Remove forgets what is cached of h before removing it.
func (r *readAhead) Remove(ctx context.Context, h Handle) error {
	if h.Type == Pack {
		r.mu.Lock()
		delete(r.sizes, h.Name)
		kept := r.windows[:0]
		for _, w := range r.windows {
			if w.name != h.Name {
				kept = append(kept, w)
			}
		}
		clear(r.windows[len(kept):])
		r.windows = kept
		r.mu.Unlock()
	}
	return r.Storage.Remove(ctx, h)
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }

// RemoveTemp passes TempSweeper through.
func (r *readAhead) RemoveTemp(ctx context.Context) (TempRemoved, error) {
	return RemoveTemp(ctx, r.Storage)
}
