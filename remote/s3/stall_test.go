package s3_test

import (
	"context"
	"errors"
	"io"
	"math/rand"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/remote/remotetest"
	"github.com/keepfs/keepfs/remote/s3"
)

// freezingTransport takes the first 64 KiB of the next PUT's body and then
// nothing more until the request is given up, as a peer that accepted the
// connection and then froze (SIGSTOP, a hung disk) does once the socket's
// buffers are full.
type freezingTransport struct {
	freeze atomic.Bool
	puts   atomic.Int32
}

func (f *freezingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodPut || !f.freeze.CompareAndSwap(true, false) {
		if req.Method == http.MethodPut {
			f.puts.Add(1)
		}
		return http.DefaultTransport.RoundTrip(req)
	}
	f.puts.Add(1)
	if _, err := io.CopyN(io.Discard, req.Body, 64<<10); err != nil {
		return nil, err
	}
	<-req.Context().Done()
	return nil, req.Context().Err()
}

// TestS3SaveFailsAFrozenUpload: an upload whose body the connection stops
// taking fails once StallTimeout passes with no progress, as a transport
// failure (remote.ErrUnreachable) that the retry decorator retries, so a
// peer frozen for good cannot hang the uploader for good
// (ResponseHeaderTimeout only starts once the body is sent).
func TestS3SaveFailsAFrozenUpload(t *testing.T) {
	c := startCluster(t, remotetest.SeaweedOptions{})
	ctx := context.Background()
	tr := &freezingTransport{}
	cfg := c.config(c.bucket(t), "stall")
	cfg.Transport = tr
	cfg.StallTimeout = 500 * time.Millisecond
	st, err := s3.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 4<<20)
	rand.New(rand.NewSource(2)).Read(data)
	h := remote.Handle{Type: remote.Pack, Name: remotetest.RandomName()}
	tr.freeze.Store(true)
	start := time.Now()
	err = st.Save(ctx, h, data)
	if took := time.Since(start); !errors.Is(err, remote.ErrUnreachable) || took > 20*time.Second {
		t.Fatalf("Save of a frozen upload: %v after %s, want ErrUnreachable soon after 500ms", err, took)
	}
	// Retried, it goes through; a slow but moving body is not a stall.
	s := remote.WithRetry(st, remote.RetryOptions{InitialInterval: time.Millisecond, MaxInterval: 2 * time.Millisecond, MaxAttempts: 4, Logger: quiet})
	tr.freeze.Store(true)
	if err := s.Save(ctx, h, data); err != nil {
		t.Fatal(err)
	}
	if n := tr.puts.Load(); n != 3 {
		t.Fatalf("%d PUTs, want 3 (frozen, frozen, through)", n)
	}
	got, err := remote.LoadAll(ctx, st, h)
	if err != nil || string(got) != string(data) {
		t.Fatalf("stored object: %d bytes, %v", len(got), err)
	}
}
