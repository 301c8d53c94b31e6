package remote_test

import (
	"context"
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keepfs/keepfs/remote"
)

// deadStreams opens every stream fine and fails its first Read.
type deadStreams struct {
	remote.Storage
	opens atomic.Int32
}

func (d *deadStreams) Open(ctx context.Context, h remote.Handle, off, n int64) (io.ReadCloser, error) {
	d.opens.Add(1)
	return io.NopCloser(failingReader{}), nil
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, remote.ErrUnreachable }

// A stream that breaks before giving a byte, every time it is opened
// again, is given up after the retry limits, with the transport error.
func TestRetryGivesUpOnAStreamThatNeverMoves(t *testing.T) {
	d := &deadStreams{Storage: remote.NewMem()}
	s := remote.WithRetry(d, remote.RetryOptions{InitialInterval: time.Millisecond, MaxInterval: 2 * time.Millisecond, MaxAttempts: 3, Logger: quiet})
	rc, err := remote.OpenRange(context.Background(), s, remote.Handle{Type: remote.Pack, Name: "abc"}, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	_, err = io.ReadAll(rc)
	if !errors.Is(err, remote.ErrUnreachable) {
		t.Fatalf("read of a stream that never moves: %v, want ErrUnreachable", err)
	}
	if n := d.opens.Load(); n != 3 {
		t.Fatalf("opened %d times, want 3 (MaxAttempts)", n)
	}
}
