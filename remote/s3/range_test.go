package s3_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand"
	"net/http"
	"strconv"
	"sync"
	"testing"

	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/remote/remotetest"
	"github.com/keepfs/keepfs/remote/s3"
)

// wholeObjectTransport answers every ranged GET with the whole object, as
// a store that ignores the Range header does: status 200, no
// Content-Range, the object's bytes (full) from its first.
type wholeObjectTransport struct {
	mu     sync.Mutex
	full   []byte
	ranged int
}

func (w *wholeObjectTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil || req.Method != http.MethodGet || req.Header.Get("Range") == "" || resp.StatusCode != http.StatusPartialContent {
		return resp, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.full == nil {
		return resp, nil
	}
	w.ranged++
	resp.Body.Close()
	resp.StatusCode, resp.Status = http.StatusOK, "200 OK"
	resp.Header.Del("Content-Range")
	resp.Header.Set("Content-Length", strconv.Itoa(len(w.full)))
	resp.ContentLength = int64(len(w.full))
	resp.Body = io.NopCloser(bytes.NewReader(w.full))
	return resp, nil
}

// TestS3RangeIgnored: a store that answers ranged GETs with the whole
// object gets the bytes asked for read out of it. Taking the object's
// first bytes instead failed every blob's decryption past a pack's first,
// which the repository reports as tampering (a false breach alert).
func TestS3RangeIgnored(t *testing.T) {
	c := startCluster(t, remotetest.SeaweedOptions{})
	ctx := context.Background()
	tr := &wholeObjectTransport{}
	var logs bytes.Buffer
	cfg := c.config(c.bucket(t), "whole")
	cfg.Transport = tr
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	st, err := s3.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	data := make([]byte, 1<<20)
	rand.New(rand.NewSource(2)).Read(data)
	h := remote.Handle{Type: remote.Pack, Name: remotetest.RandomName()}
	if err := st.Save(ctx, h, data); err != nil {
		t.Fatal(err)
	}
	tr.mu.Lock()
	tr.full = data
	tr.mu.Unlock()

	const off, n = 300000, 5000
	if got, err := st.Load(ctx, h, off, n); err != nil || !bytes.Equal(got, data[off:off+n]) {
		t.Fatalf("Load [%d,+%d) from a store ignoring Range: %v (equal %v)", off, n, err, bytes.Equal(got, data[off:off+n]))
	}
	if got, err := st.Load(ctx, h, off, 0); err != nil || !bytes.Equal(got, data[off:]) {
		t.Fatalf("Load from %d to the end: %v (%d bytes)", off, err, len(got))
	}
	rc, err := st.Open(ctx, h, off, n)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, data[off:off+n]) {
		t.Fatalf("Open [%d,+%d) from a store ignoring Range: %v (%d bytes)", off, n, err, len(got))
	}
	if _, err := st.Load(ctx, h, int64(len(data))-10, 20); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("Load running past the end: %v, want a short range", err)
	}
	tr.mu.Lock()
	ranged := tr.ranged
	tr.mu.Unlock()
	if ranged < 3 {
		t.Fatalf("%d ranged GETs answered whole: the test proves nothing", ranged)
	}
	if c := bytes.Count(logs.Bytes(), []byte("ignores ranged GETs")); c != 1 {
		t.Fatalf("warned %d times about whole objects, want once:\n%s", c, logs.String())
	}
}
