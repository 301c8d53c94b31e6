package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// RangeOpener is implemented by stores that can stream a byte range: a
// reader of a whole pack's needed extent then costs one request and
// memory for what the caller reads at a time, not for the extent.
// Decorators that can pass it through implement it too; OpenRange falls
// back to Loads for the others.
type RangeOpener interface {
	// Open returns a reader of length bytes of h from offset (length 0:
	// to the end), with Load's range rules: a range beyond the end is an
	// error wrapping io.ErrUnexpectedEOF, from Open or from a Read. A
	// body that breaks off early fails its Read with an error wrapping
	// ErrUnreachable, never a silent io.EOF.
	Open(ctx context.Context, h Handle, offset, length int64) (io.ReadCloser, error)
}

// streamPiece is the most one Load of OpenRange's fallback asks for, so
// a store that cannot stream keeps memory at a piece per reader.
const streamPiece = 4 << 20

// OpenRange streams [offset, offset+length) of h from s: through s's Open
// if it has one, else by Loads of up to streamPiece bytes as the reader
// goes. length must be positive.
func OpenRange(ctx context.Context, s Storage, h Handle, offset, length int64) (io.ReadCloser, error) {
	if length <= 0 || offset < 0 {
		return nil, fmt.Errorf("open %s: range [%d,+%d): want a positive length", h, offset, length)
	}
	if o, ok := s.(RangeOpener); ok {
		return o.Open(ctx, h, offset, length)
	}
	return &loadReader{ctx: ctx, s: s, h: h, off: offset, end: offset + length}, nil
}

// loadReader reads a range by Loads of up to streamPiece bytes.
type loadReader struct {
	ctx      context.Context
	s        Storage
	h        Handle
	off, end int64 // next byte to load, end of the range
	buf      []byte
}

func (l *loadReader) Read(p []byte) (int, error) {
	if len(l.buf) == 0 {
		if l.off >= l.end {
			return 0, io.EOF
		}
		n := min(l.end-l.off, streamPiece)
		b, err := l.s.Load(l.ctx, l.h, l.off, n)
		if err != nil {
			return 0, err
		}
		if int64(len(b)) != n {
			return 0, ShortRange(l.h, l.off, n, l.off+int64(len(b)))
		}
		l.buf, l.off = b, l.off+n
	}
	n := copy(p, l.buf)
	l.buf = l.buf[n:]
	return n, nil
}

func (l *loadReader) Close() error { l.buf = nil; return nil }

// Open streams a range through the wrapped store, bypassing the windows:
// a caller streaming an extent reads every byte of it once.
func (r *readAhead) Open(ctx context.Context, h Handle, offset, length int64) (io.ReadCloser, error) {
	return OpenRange(ctx, r.Storage, h, offset, length)
}

// Open opens the range with retries, and returns a reader that, when the
// stream breaks off with a retryable error, opens the rest of the range
// again (with the same backoff and limits as any call) and goes on from
// the byte where it broke: a 16 MiB stream cut at 15 MiB costs 1 MiB more,
// not the whole range.
func (r *retrying) Open(ctx context.Context, h Handle, offset, length int64) (io.ReadCloser, error) {
	rr := &resumingReader{r: r, ctx: ctx, h: h, off: offset, end: offset + length}
	err := r.do(ctx, "load", h, rr.open)
	if err != nil {
		return nil, err
	}
	return rr, nil
}

type resumingReader struct {
	r        *retrying
	ctx      context.Context
	h        Handle
	off, end int64 // next byte to read, end of the range
	rc       io.ReadCloser
}

func (rr *resumingReader) open() error {
	rc, err := OpenRange(rr.ctx, rr.r.s, rr.h, rr.off, rr.end-rr.off)
	if err != nil {
		return err
	}
	rr.rc = rc
	return nil
}

func (rr *resumingReader) Read(p []byte) (int, error) {
	if rr.off >= rr.end {
		return 0, io.EOF
	}
	if int64(len(p)) > rr.end-rr.off {
		p = p[:rr.end-rr.off]
	}
	var n int
	err := rr.r.do(rr.ctx, "load", rr.h, func() error {
		if rr.rc == nil {
			if err := rr.open(); err != nil {
				return err
			}
		}
		var err error
		n, err = rr.rc.Read(p)
		rr.off += int64(n)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, io.EOF) && rr.off >= rr.end:
			return nil
		case errors.Is(err, io.EOF):
			// The store's reader promises not to end early; one that
			// does anyway is treated as a broken stream.
			err = fmt.Errorf("load %s: the stream ended at byte %d of %d: %w", rr.h, rr.off, rr.end, ErrUnreachable)
		}
		rr.rc.Close()
		rr.rc = nil
		if n > 0 && Retryable(err) {
			// Hand out what came; the next Read opens the rest.
			return nil
		}
		return err
	})
	return n, err
}

func (rr *resumingReader) Close() error {
	if rr.rc == nil {
		return nil
	}
	err := rr.rc.Close()
	rr.rc = nil
	return err
}
