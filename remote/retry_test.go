package remote_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"syscall"
	"testing"
	"time"

	"github.com/keepfs/keepfs/remote"
)

func fastRetry() remote.RetryOptions {
	return remote.RetryOptions{InitialInterval: time.Millisecond, MaxInterval: 4 * time.Millisecond, MaxElapsed: 2 * time.Second, Logger: quiet}
}

var testHandle = remote.Handle{Type: remote.Pack, Name: "0123abcd"}

func TestRetryRecoversFromTransientFailures(t *testing.T) {
	ctx := context.Background()
	f := remote.NewFaulty(remote.NewMem())
	var retries int
	opts := fastRetry()
	opts.OnRetry = func(op string, h remote.Handle, attempt int, err error, wait time.Duration) {
		if !errors.Is(err, remote.ErrUnreachable) || h != testHandle {
			t.Errorf("OnRetry(%s, %s, %d, %v)", op, h, attempt, err)
		}
		retries++
	}
	r := remote.WithRetry(f, opts)
	f.FailNext(remote.OpSave, 3)
	if err := r.Save(ctx, testHandle, []byte("data")); err != nil {
		t.Fatal(err)
	}
	if f.Calls(remote.OpSave) != 4 || retries != 3 {
		t.Fatalf("save calls %d, retries %d; want 4 and 3", f.Calls(remote.OpSave), retries)
	}
	f.FailNext(remote.OpLoad, 2)
	got, err := r.Load(ctx, testHandle, 1, 2)
	if err != nil || string(got) != "at" {
		t.Fatalf("load = %q, %v", got, err)
	}
	f.FailNext(remote.OpStat, 1)
	if fi, err := r.Stat(ctx, testHandle); err != nil || fi.Size != 4 {
		t.Fatalf("stat = %+v, %v", fi, err)
	}
	f.FailNext(remote.OpRemove, 1)
	if err := r.Remove(ctx, testHandle); err != nil {
		t.Fatal(err)
	}
}

func TestRetryDoesNotRetryPermanentErrors(t *testing.T) {
	ctx := context.Background()
	f := remote.NewFaulty(remote.NewMem())
	r := remote.WithRetry(f, fastRetry())
	if _, err := r.Load(ctx, testHandle, 0, 0); !errors.Is(err, remote.ErrNotFound) {
		t.Fatalf("load missing: %v", err)
	}
	if err := r.Save(ctx, testHandle, []byte("a")); err != nil {
		t.Fatal(err)
	}
	if err := r.Save(ctx, testHandle, []byte("a")); !errors.Is(err, remote.ErrExists) {
		t.Fatalf("second save: %v, want ErrExists even with equal content (no earlier attempt failed)", err)
	}
	if _, err := r.Load(ctx, testHandle, 0, 5); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("short range: %v", err)
	}
	if err := r.Save(ctx, remote.Handle{Type: "nope"}, nil); !errors.Is(err, remote.ErrInvalidHandle) {
		t.Fatalf("invalid handle: %v", err)
	}
	if n := f.Calls(remote.OpLoad) + f.Calls(remote.OpSave); n != 5 {
		t.Fatalf("%d calls reached the store, want 5 (no retries)", n)
	}
}

func TestRetryGivesUp(t *testing.T) {
	f := remote.NewFaulty(remote.NewMem())
	f.Break()
	opts := fastRetry()
	opts.MaxElapsed = 100 * time.Millisecond
	r := remote.WithRetry(f, opts)
	start := time.Now()
	_, err := r.Stat(context.Background(), testHandle)
	if !errors.Is(err, remote.ErrUnreachable) || !errors.Is(err, remote.ErrInjected) {
		t.Fatalf("stat of a broken remote: %v, want ErrUnreachable", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("gave up after %s, want about 100ms", d)
	}
	if f.Calls(remote.OpStat) < 3 {
		t.Fatalf("only %d attempts", f.Calls(remote.OpStat))
	}

	opts.MaxElapsed = time.Hour
	opts.MaxAttempts = 4
	r = remote.WithRetry(f, opts)
	before := f.Calls(remote.OpLoad)
	if _, err := r.Load(context.Background(), testHandle, 0, 0); !errors.Is(err, remote.ErrUnreachable) {
		t.Fatal(err)
	}
	if n := f.Calls(remote.OpLoad) - before; n != 4 {
		t.Fatalf("%d attempts, want MaxAttempts=4", n)
	}
}

func TestRetryHonoursContext(t *testing.T) {
	f := remote.NewFaulty(remote.NewMem())
	f.Break()
	r := remote.WithRetry(f, remote.RetryOptions{InitialInterval: time.Hour, MaxElapsed: 10 * time.Hour, Logger: quiet})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := r.Save(ctx, testHandle, []byte("x"))
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, remote.ErrUnreachable) {
		t.Fatalf("save: %v, want deadline exceeded while retrying an unreachable remote", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("returned after %s", d)
	}
}

// A Save whose acknowledgement was lost has in fact stored the object; the
// retry finds it there with the same bytes and reports success.
func TestRetrySaveAfterLostAck(t *testing.T) {
	ctx := context.Background()
	f := remote.NewFaulty(remote.NewMem())
	r := remote.WithRetry(f, fastRetry())
	f.LoseNextSaveAcks(1)
	if err := r.Save(ctx, testHandle, []byte("payload")); err != nil {
		t.Fatalf("save after a lost ack: %v", err)
	}
	if f.Calls(remote.OpSave) != 2 {
		t.Fatalf("save calls = %d, want 2", f.Calls(remote.OpSave))
	}
}

// ... but if the object under that name holds other bytes, someone else
// wrote it, and that is still ErrExists.
func TestRetrySaveAmbiguousConflict(t *testing.T) {
	ctx := context.Background()
	mem := remote.NewMem()
	if err := mem.Save(ctx, testHandle, []byte("theirs")); err != nil {
		t.Fatal(err)
	}
	f := remote.NewFaulty(mem)
	r := remote.WithRetry(f, fastRetry())
	for _, data := range []string{"mine!!", "longer content"} {
		f.FailNext(remote.OpSave, 1)
		if err := r.Save(ctx, testHandle, []byte(data)); !errors.Is(err, remote.ErrExists) {
			t.Fatalf("save %q: %v, want ErrExists", data, err)
		}
	}
}

// flakyList fails a listing after emitting some objects, once.
type flakyList struct {
	remote.Storage
	failAfter int
}

func (s *flakyList) List(ctx context.Context, typ remote.Type, fn func(remote.Info) error) error {
	n := 0
	err := s.Storage.List(ctx, typ, func(fi remote.Info) error {
		if s.failAfter > 0 && n == s.failAfter {
			s.failAfter = 0
			return fmt.Errorf("connection reset: %w", remote.ErrUnreachable)
		}
		n++
		return fn(fi)
	})
	return err
}

func TestRetryListResumesWithoutDuplicates(t *testing.T) {
	ctx := context.Background()
	mem := remote.NewMem()
	for i := range 10 {
		if err := mem.Save(ctx, remote.Handle{Type: remote.Index, Name: fmt.Sprintf("i%d", i)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	r := remote.WithRetry(&flakyList{Storage: mem, failAfter: 4}, fastRetry())
	seen := map[string]int{}
	if err := r.List(ctx, remote.Index, func(fi remote.Info) error { seen[fi.Handle.Name]++; return nil }); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 10 {
		t.Fatalf("listed %d objects, want 10", len(seen))
	}
	for name, n := range seen {
		if n != 1 {
			t.Errorf("%s listed %d times", name, n)
		}
	}

	stop := errors.New("callback says stop")
	f := remote.NewFaulty(mem)
	r = remote.WithRetry(f, fastRetry())
	if err := r.List(ctx, remote.Index, func(remote.Info) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("list: %v, want the callback's error", err)
	}
	if f.Calls(remote.OpList) != 1 {
		t.Fatalf("a callback error was retried (%d calls)", f.Calls(remote.OpList))
	}
}

func TestRetryable(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{fmt.Errorf("x: %w", remote.ErrUnreachable), true},
		{errors.New("some I/O hiccup"), true},
		{syscall.EIO, true},
		{fmt.Errorf("x: %w", remote.ErrNotFound), false},
		{fmt.Errorf("x: %w", remote.ErrExists), false},
		{fmt.Errorf("x: %w", remote.ErrInvalidHandle), false},
		{fmt.Errorf("x: %w", context.Canceled), false},
		{fmt.Errorf("%w: %w", context.DeadlineExceeded, remote.ErrUnreachable), false},
		{remote.ShortRange(testHandle, 0, 1, 0), false},
		{fs.ErrPermission, false},
		{&fs.PathError{Op: "write", Path: "/x", Err: syscall.ENOSPC}, false},
		{&fs.PathError{Op: "open", Path: "/x", Err: syscall.EROFS}, false},
	} {
		if got := remote.Retryable(tc.err); got != tc.want {
			t.Errorf("Retryable(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
