package location_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/remote/location"
	"github.com/keepfs/keepfs/remote/remotetest"
)

func TestParse(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		in   string
		want location.Location
	}{
		{"file:///srv/repo", location.Location{Scheme: location.File, Path: "/srv/repo"}},
		{"file://localhost/srv/repo/", location.Location{Scheme: location.File, Path: "/srv/repo"}},
		{"FILE:///a%20b", location.Location{Scheme: location.File, Path: "/a b"}},
		{"/srv/repo", location.Location{Scheme: location.File, Path: "/srv/repo"}},
		{"repo", location.Location{Scheme: location.File, Path: filepath.Join(wd, "repo")}},
		{"./a/../b", location.Location{Scheme: location.File, Path: filepath.Join(wd, "b")}},
		{"sftp://root@127.0.0.1:2222/srv/repo", location.Location{Scheme: location.SFTP, User: "root", Host: "127.0.0.1", Port: 2222, Path: "/srv/repo"}},
		{"sftp://backup.example.com/srv/repo", location.Location{Scheme: location.SFTP, Host: "backup.example.com", Port: 22, Path: "/srv/repo"}},
		{"sftp://u@[::1]:22/r", location.Location{Scheme: location.SFTP, User: "u", Host: "::1", Port: 22, Path: "/r"}},
		{"sftp://u@host/~/backups/repo", location.Location{Scheme: location.SFTP, User: "u", Host: "host", Port: 22, Path: "backups/repo"}},
		{"sftp://u@host/~", location.Location{Scheme: location.SFTP, User: "u", Host: "host", Port: 22, Path: "."}},
		{"s3://s3.eu-west-1.amazonaws.com/my-bucket", location.Location{Scheme: location.S3, Host: "s3.eu-west-1.amazonaws.com", Bucket: "my-bucket"}},
		{"s3://minio.example:9000/bkt/team/laptop/", location.Location{Scheme: location.S3, Host: "minio.example", Port: 9000, Bucket: "bkt", Prefix: "team/laptop"}},
		{"s3+http://127.0.0.1:8333/keepfs/repo", location.Location{Scheme: location.S3HTTP, Host: "127.0.0.1", Port: 8333, Bucket: "keepfs", Prefix: "repo"}},
		{"S3+HTTP://[::1]:8333/b.c-d/", location.Location{Scheme: location.S3HTTP, Host: "::1", Port: 8333, Bucket: "b.c-d"}},
	} {
		got, err := location.Parse(tc.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("Parse(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
		// String round-trips.
		again, err := location.Parse(got.String())
		if err != nil || again != got {
			t.Errorf("Parse(%q.String() = %q) = %+v, %v", tc.in, got.String(), again, err)
		}
	}
}

func TestParseRejects(t *testing.T) {
	for _, tc := range []struct{ in, mention string }{
		{"", "--repo"},
		{"   ", "--repo"},
		{"gs://bucket/x", "unsupported scheme"},
		{"s3://host", "no bucket"},
		{"s3://host/", "no bucket"},
		{"s3:///bucket", "no host"},
		{"s3://host/Bad_Bucket", "bucket name"},
		{"s3://host/ab", "bucket name"},
		{"s3://host/-ab/x", "bucket name"},
		{"s3://host/bkt/a//b", "prefix"},
		{"s3://host/bkt/a/../b", "prefix"},
		{"s3://host:0/bkt", "bad port"},
		{"s3://AKIA:s3cr3t@host/bkt", "credentials"},
		{"s3+http://host/bkt?region=x", "query"},
		{"file://otherhost/x", "local path"},
		{"file://relative", "local path"},
		{"file:///", ""},
		{"sftp:///srv/repo", "no host"},
		{"sftp://host", "no repository path"},
		{"sftp://host/", "no repository path"},
		{"sftp://host:99999/x", "bad port"},
		{"sftp://host:abc/x", ""},
		{"sftp://u:secret@host/x", "passwords"},
		{"sftp://host/x?opt=1", "query"},
		{"user@host:/srv/repo", "sftp://"},
		{"host:repo", "sftp://"},
	} {
		l, err := location.Parse(tc.in)
		if tc.in == "file:///" && err == nil {
			// The root directory is a legal, if odd, repository.
			if l.Path != "/" {
				t.Errorf("Parse(%q) = %+v", tc.in, l)
			}
			continue
		}
		if err == nil {
			t.Errorf("Parse(%q) = %+v, want an error", tc.in, l)
			continue
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("Parse(%q) error is not one line: %q", tc.in, err)
		}
		if !strings.Contains(err.Error(), tc.mention) {
			t.Errorf("Parse(%q) = %v, want it to mention %q", tc.in, err, tc.mention)
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("Parse(%q) error leaks the password: %v", tc.in, err)
		}
	}
}

var quiet = slog.New(slog.DiscardHandler)

func roundTrip(t *testing.T, url string, opts location.Options) {
	t.Helper()
	ctx := context.Background()
	if _, err := location.Open(ctx, url, opts); !errors.Is(err, remote.ErrNotFound) {
		t.Fatalf("open before create: %v, want ErrNotFound", err)
	}
	s, err := location.Create(ctx, url, opts)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	cfg := remote.Handle{Type: remote.Config}
	if err := s.Save(ctx, cfg, []byte("config")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := location.Create(ctx, url, opts); !errors.Is(err, remote.ErrExists) {
		t.Fatalf("second create: %v, want ErrExists", err)
	}
	s, err = location.Open(ctx, url, opts)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer s.Close()
	got, err := remote.LoadAll(ctx, s, cfg)
	if err != nil || string(got) != "config" {
		t.Fatalf("load after reopen: %q, %v", got, err)
	}
}

func TestFileRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "repo")
	roundTrip(t, "file://"+dir, location.Options{Logger: quiet})
	s, err := location.Open(context.Background(), dir, location.Options{Logger: quiet})
	if err != nil {
		t.Fatalf("open as a plain path: %v", err)
	}
	if s.Location() != "file://"+dir {
		t.Errorf("Location() = %q", s.Location())
	}
	s.Close()
}

func TestSFTPRoundTrip(t *testing.T) {
	os.Unsetenv("SSH_AUTH_SOCK")
	sshd := remotetest.StartSSHD(t)
	opts := location.Options{KnownHostsFile: sshd.KnownHosts, IdentityFile: sshd.Identity, Logger: quiet}
	url := sshd.URL(filepath.Join(t.TempDir(), "repo"))
	roundTrip(t, url, opts)

	s, err := location.Open(context.Background(), url, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Location() != url {
		t.Errorf("Location() = %q, want %q", s.Location(), url)
	}
}

func TestParseS3NeverEchoesASecret(t *testing.T) {
	_, err := location.Parse("s3://AKIAEXAMPLE:wJalrXUtnFEMIsecret@host/bkt")
	if err == nil || strings.Contains(err.Error(), "wJalrXUtnFEMIsecret") {
		t.Fatalf("Parse of a URL with a secret: %v", err)
	}
}

// fakeS3 answers every request with status, on addr once started.
func fakeS3(t *testing.T, addr string, status int) *http.Server {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(status) })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return srv
}

// freeAddr returns a 127.0.0.1 address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// A store that does not answer when a command starts (a gateway
// restarting) is waited for, with a warning per try, as every later call
// is; a store that answers "no" is not.
func TestOpenWaitsForAStoreComingUp(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secretsecret")
	addr := freeAddr(t)
	var logs bytes.Buffer
	var mu sync.Mutex
	opts := location.Options{
		Retry:  remote.RetryOptions{InitialInterval: 20 * time.Millisecond, MaxInterval: 100 * time.Millisecond, MaxElapsed: 20 * time.Second},
		Logger: slog.New(slog.NewTextHandler(&lockedWriter{&mu, &logs}, nil)),
		// Known, so that the client asks no bucket location first.
		S3Region: "us-east-1",
	}
	url := "s3+http://" + addr + "/bucket"
	go func() {
		time.Sleep(400 * time.Millisecond)
		fakeS3(t, addr, http.StatusOK)
	}()
	start := time.Now()
	s, err := location.Open(context.Background(), url, opts)
	if err != nil {
		t.Fatalf("open while the store came up: %v", err)
	}
	s.Close()
	mu.Lock()
	warned := strings.Count(logs.String(), "retrying")
	mu.Unlock()
	if took := time.Since(start); took < 300*time.Millisecond || warned == 0 {
		t.Fatalf("opened after %v with %d warnings: it did not wait for the store", took, warned)
	}

	// Down for good: gives up within the bound, naming the cause.
	opts.Retry.MaxElapsed = 500 * time.Millisecond
	start = time.Now()
	_, err = location.Open(context.Background(), "s3+http://"+freeAddr(t)+"/bucket", opts)
	if !errors.Is(err, remote.ErrUnreachable) || !strings.Contains(err.Error(), "gave up") || time.Since(start) > 5*time.Second {
		t.Fatalf("open of a store that stays down: %v after %v", err, time.Since(start))
	}

	// Refused: at once.
	denied := freeAddr(t)
	fakeS3(t, denied, http.StatusForbidden)
	opts.Retry.MaxElapsed = 20 * time.Second
	start = time.Now()
	_, err = location.Open(context.Background(), "s3+http://"+denied+"/bucket", opts)
	if err == nil || errors.Is(err, remote.ErrUnreachable) || time.Since(start) > 2*time.Second {
		t.Fatalf("open of a store that refuses the credentials: %v after %v; want a refusal at once", err, time.Since(start))
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
