package s3_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/remote/s3"
)

// fakeS3 answers every request with the next of its canned statuses (the
// last one repeats), and counts requests.
type fakeS3 struct {
	statuses []int
	code     string
	calls    atomic.Int32
}

func (f *fakeS3) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := int(f.calls.Add(1)) - 1
	status := f.statuses[min(n, len(f.statuses)-1)]
	if r.Method == http.MethodHead && r.URL.Path == "/bkt/" || r.URL.Path == "/bkt" {
		// HEAD bucket (Open): always there.
		f.calls.Add(-1)
		w.WriteHeader(http.StatusOK)
		return
	}
	if status == http.StatusOK {
		if r.Method == http.MethodHead || r.Method == http.MethodGet {
			w.Header().Set("Content-Length", "3")
			w.Header().Set("Last-Modified", time.Now().UTC().Format(http.TimeFormat))
			w.Header().Set("ETag", `"abc"`)
			w.WriteHeader(http.StatusOK)
			if r.Method == http.MethodGet {
				_, _ = w.Write([]byte("abc"))
			}
			return
		}
		w.WriteHeader(http.StatusOK)
		return
	}
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>canned</Message><Resource>%s</Resource><RequestId>1</RequestId></Error>`, f.code, r.URL.Path)
	}
}

func openFake(t *testing.T, f *fakeS3) remote.Storage {
	t.Helper()
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	s, err := s3.Open(context.Background(), s3.Config{
		Endpoint: strings.TrimPrefix(srv.URL, "http://"), Insecure: true, Bucket: "bkt", PathStyle: true, Region: "us-east-1",
		Keys:   s3.Keys{AccessKeyID: "AKIDEXAMPLE", SecretAccessKey: "topsecretvalue"},
		Logger: quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	f.calls.Store(0)
	return remote.WithRetry(s, remote.RetryOptions{InitialInterval: time.Millisecond, MaxInterval: 2 * time.Millisecond, MaxAttempts: 4, Logger: quiet})
}

// TestS3ErrorClassification: throttling and server errors are retried (and
// wrap remote.ErrUnreachable once retries run out); 403 and 404 are not.
func TestS3ErrorClassification(t *testing.T) {
	h := remote.Handle{Type: remote.Snapshot, Name: "abc"}
	for _, tc := range []struct {
		status    int
		code      string
		want      error
		wantCalls int32
	}{
		{503, "SlowDown", remote.ErrUnreachable, 4},
		{503, "ServiceUnavailable", remote.ErrUnreachable, 4},
		{500, "InternalError", remote.ErrUnreachable, 4},
		{502, "BadGateway", remote.ErrUnreachable, 4},
		{429, "TooManyRequests", remote.ErrUnreachable, 4},
		{400, "BadDigest", remote.ErrUnreachable, 4},
		{400, "XAmzContentSHA256Mismatch", remote.ErrUnreachable, 4},
		{403, "AccessDenied", fs.ErrPermission, 1},
		{403, "SignatureDoesNotMatch", fs.ErrPermission, 1},
		{404, "NoSuchKey", remote.ErrNotFound, 1},
		{400, "InvalidArgument", fs.ErrInvalid, 1},
	} {
		t.Run(fmt.Sprintf("%d-%s", tc.status, tc.code), func(t *testing.T) {
			f := &fakeS3{statuses: []int{tc.status}, code: tc.code}
			s := openFake(t, f)
			_, err := s.Load(context.Background(), h, 0, 0)
			if !errors.Is(err, tc.want) {
				t.Fatalf("load: %v, want %v", err, tc.want)
			}
			if got := f.calls.Load(); got != tc.wantCalls {
				t.Fatalf("load made %d requests, want %d", got, tc.wantCalls)
			}
			if strings.Contains(err.Error(), "topsecretvalue") || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q shows the secret or spans lines", err)
			}
		})
	}
	t.Run("RecoversAfterThrottling", func(t *testing.T) {
		f := &fakeS3{statuses: []int{503, 500, 200}, code: "SlowDown"}
		s := openFake(t, f)
		got, err := s.Load(context.Background(), h, 0, 0)
		if err != nil || string(got) != "abc" {
			t.Fatalf("load after two failures = %q, %v", got, err)
		}
	})
	t.Run("PreconditionFailedIsExists", func(t *testing.T) {
		// HEAD says missing, the conditional PUT then loses a race.
		f := &fakeS3{statuses: []int{404, 412}, code: "PreconditionFailed"}
		s := openFake(t, f)
		if err := s.Save(context.Background(), h, []byte("xyz")); !errors.Is(err, remote.ErrExists) {
			t.Fatalf("save losing the conditional PUT: %v, want ErrExists", err)
		}
	})
	t.Run("ConnectionRefused", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		_, err = s3.Open(context.Background(), s3.Config{Endpoint: addr, Insecure: true, Bucket: "bkt", Region: "us-east-1",
			Keys: s3.Keys{AccessKeyID: "a", SecretAccessKey: "topsecretvalue"}, Logger: quiet})
		if !errors.Is(err, remote.ErrUnreachable) || strings.Contains(err.Error(), "topsecretvalue") {
			t.Fatalf("open of a closed port: %v, want ErrUnreachable", err)
		}
	})
}
