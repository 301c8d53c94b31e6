package s3_test

import (
	"context"
	"io"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/remote/s3"
)

// cuttingS3 serves one object's byte ranges; the first GET's body is cut
// off half way (the connection closed under a promised Content-Length).
type cuttingS3 struct {
	data   []byte
	mu     sync.Mutex
	ranges []string // Range headers of the GETs
}

func (c *cuttingS3) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodHead && (r.URL.Path == "/bkt/" || r.URL.Path == "/bkt") {
		w.WriteHeader(http.StatusOK)
		return
	}
	if r.Method != http.MethodGet {
		w.WriteHeader(http.StatusNotImplemented)
		return
	}
	c.mu.Lock()
	c.ranges = append(c.ranges, r.Header.Get("Range"))
	first := len(c.ranges) == 1
	c.mu.Unlock()
	from, to, _ := strings.Cut(strings.TrimPrefix(r.Header.Get("Range"), "bytes="), "-")
	a, _ := strconv.Atoi(from)
	b, _ := strconv.Atoi(to)
	body := c.data[a : b+1]
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Header().Set("Content-Range", "bytes "+from+"-"+to+"/"+strconv.Itoa(len(c.data)))
	w.Header().Set("Last-Modified", time.Now().UTC().Format(http.TimeFormat))
	w.Header().Set("ETag", `"abc"`)
	w.WriteHeader(http.StatusPartialContent)
	if first {
		_, _ = w.Write(body[:len(body)/2])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // close the connection mid-body
	}
	_, _ = w.Write(body)
}

// TestS3StreamResumesACutBody streams a range through the retry decorator
// from a store that cuts the first body off half way, and checks that the
// rest was asked for from the byte where it broke and that the bytes are
// the object's.
func TestS3StreamResumesACutBody(t *testing.T) {
	data := make([]byte, 1<<20)
	rand.New(rand.NewSource(1)).Read(data)
	c := &cuttingS3{data: data}
	srv := httptest.NewServer(c)
	t.Cleanup(srv.Close)
	srv.Config.ErrorLog = nil
	st, err := s3.Open(context.Background(), s3.Config{
		Endpoint: strings.TrimPrefix(srv.URL, "http://"), Insecure: true, Bucket: "bkt", PathStyle: true, Region: "us-east-1",
		Keys:   s3.Keys{AccessKeyID: "AKIDEXAMPLE", SecretAccessKey: "topsecretvalue"},
		Logger: quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	s := remote.WithRetry(st, remote.RetryOptions{InitialInterval: time.Millisecond, MaxInterval: 2 * time.Millisecond, MaxAttempts: 4, Logger: quiet})
	h := remote.Handle{Type: remote.Pack, Name: "abc"}
	const off, n = 1000, 600000
	rc, err := remote.OpenRange(context.Background(), s, h, off, n)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatalf("stream with a cut body: %v", err)
	}
	if string(got) != string(data[off:off+n]) {
		t.Fatalf("streamed %d bytes that differ from the object's %d", len(got), n)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	want := []string{"bytes=1000-600999", "bytes=301000-600999"}
	if strings.Join(c.ranges, " ") != strings.Join(want, " ") {
		t.Fatalf("GETs asked for %q, want %q: the rest of a cut body is asked for from where it broke", c.ranges, want)
	}
}
