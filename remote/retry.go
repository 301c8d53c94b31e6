package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"syscall"
	"time"
)

// RetryOptions tunes WithRetry. Zero fields take the defaults noted.
type RetryOptions struct {
	// InitialInterval is the first wait (default 200ms); each retry doubles
	// it up to MaxInterval (default 10s). Waits are jittered by ±25%.
	InitialInterval time.Duration
	MaxInterval     time.Duration
	// MaxElapsed bounds the time one call spends retrying (default 1m);
	// after it the last error is returned, still wrapping ErrUnreachable
	// if that was the cause, so the caller can raise a health event.
	MaxElapsed time.Duration
	// MaxAttempts, if positive, also bounds the number of tries.
	MaxAttempts int
	// Logger receives one warning per retry (default slog.Default()).
	Logger *slog.Logger
	// OnRetry, if set, is called before each wait; the daemon uses it to
	// track remote health.
	OnRetry func(op string, h Handle, attempt int, err error, wait time.Duration)
}

func (o RetryOptions) withDefaults() RetryOptions {
	if o.InitialInterval <= 0 {
		o.InitialInterval = 200 * time.Millisecond
	}
	if o.MaxInterval <= 0 {
		o.MaxInterval = 10 * time.Second
	}
	if o.MaxInterval < o.InitialInterval {
		o.MaxInterval = o.InitialInterval
	}
	if o.MaxElapsed <= 0 {
		o.MaxElapsed = time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// WithRetry wraps s so that calls failing with a transient error (see
// Retryable) are retried with exponential backoff and jitter, honouring ctx.
//
// A retried Save or Remove may find that an earlier, seemingly failed
// attempt did reach the store: a Save that then meets ErrExists with
// identical content, or a Remove that then meets ErrNotFound, succeeds.
func WithRetry(s Storage, opts RetryOptions) Storage {
	return &retrying{s: s, opts: opts.withDefaults()}
}

type retrying struct {
	s    Storage
	opts RetryOptions
}

// Retryable reports whether err may go away if the call is repeated: a
// transport failure or an unclassified I/O error, but not a missing or
// existing object, an invalid request, a cancelled context or a full or
// read-only disk.
func Retryable(err error) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return false
	case errors.Is(err, ErrUnreachable):
		return true
	}
	for _, permanent := range []error{
		ErrNotFound, ErrExists, ErrInvalidHandle, fs.ErrInvalid, io.ErrUnexpectedEOF, fs.ErrPermission,
		syscall.ENOSPC, syscall.EDQUOT, syscall.EROFS, syscall.ENOTDIR, syscall.EISDIR, syscall.ENAMETOOLONG,
	} {
		if errors.Is(err, permanent) {
			return false
		}
	}
	return true
}

// permanentError stops the retry loop; do returns the wrapped error as is.
type permanentError struct{ err error }

func (p permanentError) Error() string { return p.err.Error() }

// Retry calls fn until it succeeds or fails for good, as WithRetry's
// calls do, for work that is not a Storage call (opening a store). An
// error wrapped by Permanent stops it at once.
func Retry(ctx context.Context, opts RetryOptions, op string, fn func() error) error {
	r := &retrying{opts: opts.withDefaults()}
	return r.do(ctx, op, Handle{}, fn)
}

// Permanent marks err as not worth retrying (see Retry).
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

func (r *retrying) do(ctx context.Context, op string, h Handle, fn func() error) error {
	start := time.Now()
	interval := r.opts.InitialInterval
	for attempt := 1; ; attempt++ {
		err := fn()
		var perm permanentError
		if errors.As(err, &perm) {
			return perm.err
		}
		if !Retryable(err) {
			return err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w: %w", ctx.Err(), err)
		}
		wait := jitter(interval)
		elapsed := time.Since(start)
		if r.opts.MaxAttempts > 0 && attempt >= r.opts.MaxAttempts || elapsed+wait > r.opts.MaxElapsed {
			return fmt.Errorf("gave up after %d attempts in %s: %w", attempt, elapsed.Round(time.Millisecond), err)
		}
		r.opts.Logger.Warn("remote call failed, retrying", "op", op, "object", h.String(), "attempt", attempt, "wait", wait, "err", err)
		if r.opts.OnRetry != nil {
			r.opts.OnRetry(op, h, attempt, err, wait)
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return fmt.Errorf("%w while retrying: %w", ctx.Err(), err)
		case <-timer.C:
		}
		interval = min(2*interval, r.opts.MaxInterval)
	}
}

func jitter(d time.Duration) time.Duration {
	return d*3/4 + rand.N(d/2+1)
}

func (r *retrying) Location() string { return r.s.Location() }

// RemoveTemp passes TempSweeper through; a failure is left to the caller,
// whose next run sweeps again.
func (r *retrying) RemoveTemp(ctx context.Context) (TempRemoved, error) {
	return RemoveTemp(ctx, r.s)
}

func (r *retrying) Save(ctx context.Context, h Handle, data []byte) error {
	ambiguous := false
	return r.do(ctx, "save", h, func() error {
		err := r.s.Save(ctx, h, data)
		if errors.Is(err, ErrExists) && ambiguous {
			same, cerr := r.sameContent(ctx, h, data)
			if cerr != nil {
				return cerr
			}
			if same {
				return nil
			}
		}
		if err != nil {
			ambiguous = true
		}
		return err
	})
}

// sameContent reports whether h holds exactly data.
func (r *retrying) sameContent(ctx context.Context, h Handle, data []byte) (bool, error) {
	fi, err := r.s.Stat(ctx, h)
	if err != nil {
		return false, fmt.Errorf("save %s: compare with existing object: %w", h, err)
	}
	if fi.Size != int64(len(data)) {
		return false, nil
	}
	stored, err := r.s.Load(ctx, h, 0, 0)
	if err != nil {
		return false, fmt.Errorf("save %s: compare with existing object: %w", h, err)
	}
	return bytes.Equal(stored, data), nil
}

func (r *retrying) Load(ctx context.Context, h Handle, offset, length int64) ([]byte, error) {
	var out []byte
	err := r.do(ctx, "load", h, func() error {
		var err error
		out, err = r.s.Load(ctx, h, offset, length)
		return err
	})
	return out, err
}

func (r *retrying) Stat(ctx context.Context, h Handle) (Info, error) {
	var fi Info
	err := r.do(ctx, "stat", h, func() error {
		var err error
		fi, err = r.s.Stat(ctx, h)
		return err
	})
	return fi, err
}

// List restarts a listing that failed part way, passing fn only the objects
// it has not seen yet, so fn still sees each object once.
func (r *retrying) List(ctx context.Context, t Type, fn func(Info) error) error {
	seen := make(map[Handle]struct{})
	return r.do(ctx, "list", Handle{Type: t}, func() error {
		var fnErr error
		err := r.s.List(ctx, t, func(fi Info) error {
			if _, ok := seen[fi.Handle]; ok {
				return nil
			}
			seen[fi.Handle] = struct{}{}
			fnErr = fn(fi)
			return fnErr
		})
		if fnErr != nil {
			return permanentError{fnErr}
		}
		return err
	})
}

func (r *retrying) Remove(ctx context.Context, h Handle) error {
	ambiguous := false
	return r.do(ctx, "remove", h, func() error {
		err := r.s.Remove(ctx, h)
		if errors.Is(err, ErrNotFound) && ambiguous {
			return nil
		}
		if err != nil {
			ambiguous = true
		}
		return err
	})
}

func (r *retrying) Close() error { return r.s.Close() }
