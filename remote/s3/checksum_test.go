package s3_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/minio/minio-go/v7"

	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/remote/remotetest"
	"github.com/keepfs/keepfs/remote/s3"
)

// digestRecorder records the digests every PUT carries; it can flip a byte
// of the next body after the digests were computed (a body corrupted on
// the way) and hide the CRC32C a store answers with (a store that ignores
// the header).
type digestRecorder struct {
	mu       sync.Mutex
	puts     []putDigests
	corrupt  bool // flip a byte of the next PUT's body
	hideEcho bool
}

type putDigests struct{ md5, crc32c string }

func (d *digestRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodPut {
		d.mu.Lock()
		d.puts = append(d.puts, putDigests{req.Header.Get("Content-Md5"), req.Header.Get("X-Amz-Checksum-Crc32c")})
		if d.corrupt && req.Body != nil {
			d.corrupt = false
			req.Body = &flipReader{r: req.Body, at: 1000}
		}
		d.mu.Unlock()
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err == nil && d.hideEcho {
		resp.Header.Del("X-Amz-Checksum-Crc32c")
	}
	return resp, err
}

func (d *digestRecorder) take() []putDigests {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := d.puts
	d.puts = nil
	return out
}

// flipReader inverts the byte at offset at of what it reads.
type flipReader struct {
	r   io.ReadCloser
	at  int64
	off int64
}

func (f *flipReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if i := f.at - f.off; i >= 0 && i < int64(n) {
		p[i] ^= 0xff
	}
	f.off += int64(n)
	return n, err
}

func (f *flipReader) Close() error { return f.r.Close() }

func crc32c(b []byte) string {
	return base64.StdEncoding.EncodeToString(binary.BigEndian.AppendUint32(nil, crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli))))
}

// Uploads are checked by the store: it refuses a body that does not match
// the CRC32C sent with it, so Save can drop the dearer Content-MD5 once
// the store has shown (by answering with the CRC32C) that it checks one.
func TestS3UploadChecksum(t *testing.T) {
	c := startCluster(t, remotetest.SeaweedOptions{})
	bucket := c.bucket(t)
	ctx := context.Background()
	data := bytes.Repeat([]byte("pack bytes "), 20000)
	name := func(i int) string { return strings.Repeat(string("abcdef"[i]), 64) }
	open := func(t *testing.T, rec *digestRecorder) remote.Storage {
		cfg := c.config(bucket, "digest/"+remotetest.RandomName()[:12])
		cfg.Transport = rec
		s, err := s3.Open(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}

	// The store itself, not only keepfs's client, must refuse a wrong
	// CRC32C: without Content-MD5 it is the only check of the body.
	t.Run("StoreRefusesWrongCRC32C", func(t *testing.T) {
		core := minio.Core{Client: c.rawClient()}
		key := "digest/" + remotetest.RandomName()
		wrong := crc32c(append([]byte("x"), data...))
		opts := minio.PutObjectOptions{UserMetadata: map[string]string{"x-amz-checksum-crc32c": wrong}}
		_, err := core.PutObject(ctx, bucket, key, bytes.NewReader(data), int64(len(data)), "", "", opts)
		if code := minio.ToErrorResponse(err).Code; code != "BadDigest" {
			t.Fatalf("PUT with a wrong CRC32C: %v (code %q), want BadDigest", err, code)
		}
		if _, err := core.StatObject(ctx, bucket, key, minio.StatObjectOptions{}); minio.ToErrorResponse(err).StatusCode != http.StatusNotFound {
			t.Fatalf("object after a refused PUT: %v, want 404", err)
		}
		opts.UserMetadata["x-amz-checksum-crc32c"] = crc32c(data)
		if _, err := core.PutObject(ctx, bucket, key, bytes.NewReader(data), int64(len(data)), "", "", opts); err != nil {
			t.Fatalf("PUT with the right CRC32C: %v", err)
		}
	})

	t.Run("CorruptedUploadRefused", func(t *testing.T) {
		rec := &digestRecorder{}
		s := open(t, rec)
		if err := s.Save(ctx, remote.Handle{Type: remote.Pack, Name: name(0)}, data); err != nil {
			t.Fatal(err)
		}
		want := crc32c(data)
		if got := rec.take(); len(got) != 1 || got[0].crc32c != want || got[0].md5 == "" {
			t.Fatalf("first PUT's digests %+v, want CRC32C %s and a Content-MD5", got, want)
		}
		// The store answered with the CRC32C: from now on it is the only digest.
		h := remote.Handle{Type: remote.Pack, Name: name(1)}
		rec.corrupt = true
		err := s.Save(ctx, h, data)
		if got := rec.take(); len(got) != 1 || got[0].crc32c != want || got[0].md5 != "" {
			t.Fatalf("second PUT's digests %+v, want CRC32C %s alone", got, want)
		}
		if err == nil {
			t.Fatal("a body corrupted on the way was stored")
		}
		if _, serr := s.Stat(ctx, h); !errors.Is(serr, remote.ErrNotFound) {
			t.Fatalf("after a refused upload (%v): stat %v, want not found", err, serr)
		}
		if err := s.Save(ctx, h, data); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Load(ctx, h, 0, 0); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("load back: %d bytes, %v", len(got), err)
		}
	})

	// A store that does not answer with the CRC32C may not check it:
	// Content-MD5, which every S3 store checks, stays.
	t.Run("NoEchoKeepsMD5", func(t *testing.T) {
		rec := &digestRecorder{hideEcho: true}
		s := open(t, rec)
		for i := 2; i < 4; i++ {
			if err := s.Save(ctx, remote.Handle{Type: remote.Pack, Name: name(i)}, data); err != nil {
				t.Fatal(err)
			}
		}
		got := rec.take()
		if len(got) != 2 || got[0].md5 == "" || got[1].md5 == "" {
			t.Fatalf("PUT digests %+v, want Content-MD5 on both", got)
		}
	})
}
