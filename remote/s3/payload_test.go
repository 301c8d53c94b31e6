package s3_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/remote/remotetest"
	"github.com/keepfs/keepfs/remote/s3"
)

// payloadRecorder records the X-Amz-Content-Sha256 of every PUT and, when
// refuseUnsigned is set, answers an unsigned one as a store that wants
// signed payloads would.
type payloadRecorder struct {
	mu             sync.Mutex
	puts           []string
	refuseUnsigned bool
}

func (p *payloadRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodPut {
		h := req.Header.Get("X-Amz-Content-Sha256")
		p.mu.Lock()
		p.puts = append(p.puts, h)
		refuse := p.refuseUnsigned && h == "UNSIGNED-PAYLOAD"
		p.mu.Unlock()
		if refuse {
			if req.Body != nil {
				_, _ = io.Copy(io.Discard, req.Body)
				req.Body.Close()
			}
			body := `<?xml version="1.0" encoding="UTF-8"?><Error><Code>InvalidRequest</Code><Message>unsigned payloads are not allowed</Message></Error>`
			return &http.Response{StatusCode: http.StatusBadRequest, Status: "400 Bad Request", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
				Header: http.Header{"Content-Type": {"application/xml"}}, Body: io.NopCloser(strings.NewReader(body)),
				ContentLength: int64(len(body)), Request: req}, nil
		}
	}
	return http.DefaultTransport.RoundTrip(req)
}

func (p *payloadRecorder) take() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := p.puts
	p.puts = nil
	return out
}

// Uploads skip the SHA-256 of their body (UNSIGNED-PAYLOAD, as minio-go
// does over TLS) unless SignPayload asks for it or the store refuses them.
func TestUnsignedPayload(t *testing.T) {
	c := startCluster(t, remotetest.SeaweedOptions{})
	bucket := c.bucket(t)
	ctx := context.Background()
	data := bytes.Repeat([]byte("pack bytes "), 20000)
	save := func(t *testing.T, s remote.Storage, name string) {
		t.Helper()
		h := remote.Handle{Type: remote.Pack, Name: name}
		if err := s.Save(ctx, h, data); err != nil {
			t.Fatal(err)
		}
		got, err := s.Load(ctx, h, 0, 0)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("load back: %d bytes, %v", len(got), err)
		}
	}
	open := func(t *testing.T, rec *payloadRecorder, sign bool) remote.Storage {
		cfg := c.config(bucket, "payload/"+remotetest.RandomName()[:12])
		cfg.Transport, cfg.SignPayload = rec, sign
		s, err := s3.Open(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	name := func(i byte) string { return strings.Repeat(string("abc"[i]), 64) }
	t.Run("Unsigned", func(t *testing.T) {
		rec := &payloadRecorder{}
		save(t, open(t, rec, false), name(0))
		if got := rec.take(); len(got) != 1 || got[0] != "UNSIGNED-PAYLOAD" {
			t.Fatalf("PUT payload hashes %q, want one UNSIGNED-PAYLOAD", got)
		}
	})
	t.Run("Signed", func(t *testing.T) {
		rec := &payloadRecorder{}
		save(t, open(t, rec, true), name(0))
		if got := rec.take(); len(got) != 1 || got[0] == "UNSIGNED-PAYLOAD" || got[0] == "" {
			t.Fatalf("PUT payload hashes %q, want one signed", got)
		}
	})
	t.Run("RefusedThenSigned", func(t *testing.T) {
		rec := &payloadRecorder{refuseUnsigned: true}
		s := open(t, rec, false)
		save(t, s, name(1))
		if got := rec.take(); len(got) != 2 || got[0] != "UNSIGNED-PAYLOAD" || got[1] == "UNSIGNED-PAYLOAD" {
			t.Fatalf("PUT payload hashes %q, want unsigned then signed", got)
		}
		save(t, s, name(2))
		if got := rec.take(); len(got) != 1 || got[0] == "UNSIGNED-PAYLOAD" {
			t.Fatalf("PUT payload hashes %q after a refusal, want one signed", got)
		}
	})
}
