package s3_test

import (
	"context"
	"errors"
	"io"
	"math/rand"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/remote/remotetest"
	"github.com/keepfs/keepfs/remote/s3"
)

// cuttingTransport cuts off the body of the next ranged GET after half
// its Content-Length, as a connection dropped mid-body does (a gateway
// killed, a volume server lost while it streams): the body's Read fails
// with io.ErrUnexpectedEOF, as net/http's does under a promised length.
type cuttingTransport struct {
	mu   sync.Mutex
	cut  bool // cut the next ranged GET
	gets int  // ranged GETs seen
}

func (c *cuttingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil || req.Method != http.MethodGet || req.Header.Get("Range") == "" {
		return resp, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gets++
	if c.cut && resp.StatusCode == http.StatusPartialContent && resp.ContentLength > 1 {
		c.cut = false
		resp.Body = &cutBody{r: resp.Body, left: resp.ContentLength / 2}
	}
	return resp, nil
}

type cutBody struct {
	r    io.ReadCloser
	left int64
}

func (b *cutBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, io.ErrUnexpectedEOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *cutBody) Close() error { return b.r.Close() }

// TestS3LoadRetriesACutBody: a ranged Load whose body is cut off part way
// is a transport failure (remote.ErrUnreachable, retried), not a range
// past the object's end (io.ErrUnexpectedEOF, which is permanent and which
// the repository reports as a pack shorter than its index says, a critical
// integrity incident). Through the retry decorator the Load gets the
// object's bytes; a range that really runs past the end stays a short read.
func TestS3LoadRetriesACutBody(t *testing.T) {
	c := startCluster(t, remotetest.SeaweedOptions{})
	ctx := context.Background()
	tr := &cuttingTransport{}
	cfg := c.config(c.bucket(t), "cut")
	cfg.Transport = tr
	st, err := s3.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := remote.WithRetry(st, remote.RetryOptions{InitialInterval: time.Millisecond, MaxInterval: 2 * time.Millisecond, MaxAttempts: 4, Logger: quiet})
	data := make([]byte, 3<<20)
	rand.New(rand.NewSource(1)).Read(data)
	h := remote.Handle{Type: remote.Pack, Name: remotetest.RandomName()}
	if err := s.Save(ctx, h, data); err != nil {
		t.Fatal(err)
	}

	tr.mu.Lock()
	tr.cut, tr.gets = true, 0
	tr.mu.Unlock()
	const off, n = 1000, 2 << 20
	got, err := s.Load(ctx, h, off, n)
	if err != nil {
		t.Fatalf("Load of a range whose first body was cut off: %v (ErrUnexpectedEOF: %v), want the bytes after a retry",
			err, errors.Is(err, io.ErrUnexpectedEOF))
	}
	if string(got) != string(data[off:off+n]) {
		t.Fatalf("Load returned %d bytes that differ from the object's", len(got))
	}
	tr.mu.Lock()
	gets := tr.gets
	tr.mu.Unlock()
	if gets != 2 {
		t.Fatalf("%d ranged GETs, want 2 (the cut one and its retry)", gets)
	}

	// Past the end: still a short read, not retried.
	if _, err := st.Load(ctx, h, int64(len(data))-10, 20); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("Load running past the end: %v, want io.ErrUnexpectedEOF", err)
	}
}
