package sftp_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/remote/remotetest"
	"github.com/keepfs/keepfs/remote/sftp"
)

var quiet = slog.New(slog.DiscardHandler)

func config(s *remotetest.SSHD, dir string) sftp.Config {
	return sftp.Config{
		User:           s.User,
		Host:           s.Host,
		Port:           s.Port,
		Path:           dir,
		KnownHostsFile: s.KnownHosts,
		IdentityFiles:  []string{s.Identity},
		Logger:         quiet,
	}
}

func create(t *testing.T, cfg sftp.Config) *sftp.Backend {
	t.Helper()
	b, err := sftp.Create(context.Background(), cfg)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	return b
}

func TestMain(m *testing.M) {
	// The agent of whoever runs the tests must not decide what they see.
	os.Unsetenv("SSH_AUTH_SOCK")
	os.Exit(m.Run())
}

func TestConformance(t *testing.T) {
	s := remotetest.StartSSHD(t)
	remotetest.Run(t, func(t *testing.T) remote.Storage {
		return create(t, config(s, filepath.Join(t.TempDir(), "repo")))
	})
}

func TestLayoutPermissionsAndReopen(t *testing.T) {
	ctx := context.Background()
	s := remotetest.StartSSHD(t)
	dir := filepath.Join(t.TempDir(), "a", "repo")
	b := create(t, config(s, dir))
	defer b.Close()
	pack := remote.Handle{Type: remote.Pack, Name: "abcdef"}
	for _, h := range []remote.Handle{{Type: remote.Config}, pack} {
		if err := b.Save(ctx, h, []byte(h.String())); err != nil {
			t.Fatal(err)
		}
	}
	for rel, mode := range map[string]os.FileMode{".": 0o700, "keys": 0o700, "packs/ab": 0o700, "config": 0o600, "packs/ab/abcdef": 0o600} {
		fi, err := os.Stat(filepath.Join(dir, rel))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", rel, fi.Mode().Perm(), mode)
		}
	}
	if want := fmt.Sprintf("sftp://%s@%s%s", s.User, s.Addr(), dir); b.Location() != want {
		t.Errorf("Location() = %q, want %q", b.Location(), want)
	}

	if _, err := sftp.Create(ctx, config(s, dir)); !errors.Is(err, remote.ErrExists) {
		t.Errorf("create over an existing repository: %v, want ErrExists", err)
	}
	reopened, err := sftp.Open(ctx, config(s, dir))
	if err != nil {
		t.Fatal(err)
	}
	defer reopened.Close()
	got, err := remote.LoadAll(ctx, reopened, pack)
	if err != nil || string(got) != pack.String() {
		t.Fatalf("reopened: %q, %v", got, err)
	}
	if _, err := sftp.Open(ctx, config(s, filepath.Join(dir, "missing"))); !errors.Is(err, remote.ErrNotFound) {
		t.Errorf("open missing directory: %v, want ErrNotFound", err)
	}
}

func TestUnknownHostRefused(t *testing.T) {
	s := remotetest.StartSSHD(t)
	cfg := config(s, t.TempDir())
	cfg.KnownHostsFile = filepath.Join(t.TempDir(), "known_hosts") // does not exist
	_, err := sftp.Open(context.Background(), cfg)
	if !errors.Is(err, sftp.ErrHostKey) || !errors.Is(err, fs.ErrPermission) {
		t.Fatalf("open with unknown host key: %v, want ErrHostKey", err)
	}
	if errors.Is(err, remote.ErrUnreachable) || remote.Retryable(err) {
		t.Errorf("host key refusal must not be retried: %v", err)
	}
	msg := err.Error()
	for _, want := range []string{"ssh-keyscan -p " + fmt.Sprint(s.Port), "--insecure-ignore-host-key", "SHA256:"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
	if strings.Contains(msg, "\n") {
		t.Errorf("error is not one line: %q", msg)
	}

	// The explicit opt-out connects.
	cfg.InsecureIgnoreHostKey = true
	b, err := sftp.Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("open with InsecureIgnoreHostKey: %v", err)
	}
	b.Close()
}

func TestWrongHostKeyRefused(t *testing.T) {
	s := remotetest.StartSSHD(t)
	other := remotetest.StartSSHD(t) // a different host key
	cfg := config(s, t.TempDir())
	// known_hosts claims s's address has other's key.
	line := strings.Replace(other.KnownHostsLine(), fmt.Sprint(other.Port), fmt.Sprint(s.Port), 1)
	cfg.KnownHostsFile = filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(cfg.KnownHostsFile, []byte(line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := sftp.Open(context.Background(), cfg)
	if !errors.Is(err, sftp.ErrHostKey) {
		t.Fatalf("open with a mismatching host key: %v, want ErrHostKey", err)
	}
	if !strings.Contains(err.Error(), "does not match") {
		t.Errorf("error does not say the key changed: %v", err)
	}
}

func TestWrongIdentityRefused(t *testing.T) {
	s := remotetest.StartSSHD(t)
	other := remotetest.StartSSHD(t)
	cfg := config(s, t.TempDir())
	cfg.IdentityFiles = []string{other.Identity} // not authorised on s
	_, err := sftp.Open(context.Background(), cfg)
	if !errors.Is(err, sftp.ErrAuth) || remote.Retryable(err) {
		t.Fatalf("open with an unauthorised key: %v, want a permanent ErrAuth", err)
	}
}

// A server that goes away (stopped) or goes silent (frozen, like a
// network partition) makes calls fail with ErrUnreachable within a bounded
// time; once it is back, the same backend reconnects.
// restartable starts a server that a test will stop and start again, and
// a backend that notices a dead connection within a second.
func restartable(t *testing.T) (*remotetest.SSHD, *sftp.Backend) {
	s := remotetest.StartSSHD(t)
	cfg := config(s, filepath.Join(t.TempDir(), "repo"))
	cfg.KeepAlive = 300 * time.Millisecond
	cfg.DialTimeout = 2 * time.Second
	b := create(t, cfg)
	t.Cleanup(func() { b.Close() })
	return s, b
}

func TestUnreachableAndReconnect(t *testing.T) {
	ctx := context.Background()
	s, b := restartable(t)
	h := remote.Handle{Type: remote.Index, Name: "i1"}
	if err := b.Save(ctx, h, []byte("one")); err != nil {
		t.Fatal(err)
	}

	within := func(what string, limit time.Duration, fn func() error) {
		t.Helper()
		start := time.Now()
		err := fn()
		if !errors.Is(err, remote.ErrUnreachable) {
			t.Fatalf("%s: %v, want ErrUnreachable", what, err)
		}
		if d := time.Since(start); d > limit {
			t.Fatalf("%s took %s to fail, want under %s", what, d, limit)
		}
	}

	s.Stop()
	within("load after sshd stopped", 5*time.Second, func() error { _, err := remote.LoadAll(ctx, b, h); return err })
	within("save while sshd is down", 5*time.Second, func() error {
		return b.Save(ctx, remote.Handle{Type: remote.Index, Name: "i2"}, []byte("two"))
	})

	s.Start()
	if got, err := remote.LoadAll(ctx, b, h); err != nil || string(got) != "one" {
		t.Fatalf("load after sshd restarted: %q, %v", got, err)
	}

	s.Freeze()
	defer s.Thaw()
	within("stat on a silent server", 5*time.Second, func() error { _, err := b.Stat(ctx, h); return err })
	s.Thaw()
	if _, err := b.Stat(ctx, h); err != nil {
		t.Fatalf("stat after the server woke up: %v", err)
	}

	// Through the retry decorator, a short outage is invisible.
	r := remote.WithRetry(b, remote.RetryOptions{InitialInterval: 50 * time.Millisecond, MaxInterval: 200 * time.Millisecond, MaxElapsed: 20 * time.Second, Logger: quiet})
	s.Stop()
	go func() {
		time.Sleep(500 * time.Millisecond)
		s.Start()
	}()
	if err := r.Save(ctx, remote.Handle{Type: remote.Index, Name: "i3"}, []byte("three")); err != nil {
		t.Fatalf("retried save across an sshd restart: %v", err)
	}
}

// A cancelled context stops a call blocked on a silent server at once,
// without waiting for the keepalive.
func TestCancelWhileServerSilent(t *testing.T) {
	s := remotetest.StartSSHD(t)
	cfg := config(s, filepath.Join(t.TempDir(), "repo"))
	cfg.KeepAlive = time.Minute
	b := create(t, cfg)
	defer b.Close()
	s.Freeze()
	defer s.Thaw()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := b.Stat(ctx, remote.Handle{Type: remote.Config})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("stat: %v, want deadline exceeded", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("stat returned after %s", d)
	}
}

func TestNoTempFilesLeft(t *testing.T) {
	ctx := context.Background()
	s := remotetest.StartSSHD(t)
	dir := filepath.Join(t.TempDir(), "repo")
	b := create(t, config(s, dir))
	defer b.Close()
	h := remote.Handle{Type: remote.Pack, Name: remotetest.RandomName()}
	if err := b.Save(ctx, h, remotetest.RandomBytes(100_000)); err != nil {
		t.Fatal(err)
	}
	if err := b.Save(ctx, h, []byte("other")); !errors.Is(err, remote.ErrExists) {
		t.Fatal(err)
	}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), remote.TempPrefix) {
			t.Errorf("temporary file left: %s", p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func BenchmarkSave(b *testing.B) {
	s := remotetest.StartSSHD(b)
	cfg := config(s, filepath.Join(b.TempDir(), "repo"))
	be, err := sftp.Create(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer be.Close()
	data := remotetest.RandomBytes(16 << 20)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		h := remote.Handle{Type: remote.Pack, Name: remotetest.RandomName()}
		if err := be.Save(context.Background(), h, data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLoad(b *testing.B) {
	s := remotetest.StartSSHD(b)
	cfg := config(s, filepath.Join(b.TempDir(), "repo"))
	be, err := sftp.Create(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer be.Close()
	h := remote.Handle{Type: remote.Pack, Name: remotetest.RandomName()}
	if err := be.Save(context.Background(), h, remotetest.RandomBytes(16<<20)); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(16 << 20)
	for b.Loop() {
		if _, err := remote.LoadAll(context.Background(), be, h); err != nil {
			b.Fatal(err)
		}
	}
}

// OpenSSH offers fsync@openssh.com, so a backend that insists on it (the
// default) connects and saves.
func TestFsyncRequiredAgainstOpenSSH(t *testing.T) {
	s := remotetest.StartSSHD(t)
	cfg := config(s, filepath.Join(t.TempDir(), "repo"))
	cfg.AllowNoFsync = false
	b := create(t, cfg)
	defer b.Close()
	if err := b.Save(context.Background(), remote.Handle{Type: remote.Config}, []byte("x")); err != nil {
		t.Fatal(err)
	}
}

// A range stream that loses its connection mid-way fails its Read with
// ErrUnreachable, and through the retry decorator it resumes where it
// broke once the server is back: the caller reads every byte once.
func TestRangeStreamResumesAcrossRestart(t *testing.T) {
	ctx := context.Background()
	s, b := restartable(t)
	h := remote.Handle{Type: remote.Pack, Name: remotetest.RandomName()}
	data := remotetest.RandomBytes(9 << 20)
	if err := b.Save(ctx, h, data); err != nil {
		t.Fatal(err)
	}
	if _, ok := remote.Storage(b).(remote.RangeOpener); !ok {
		t.Fatal("the SFTP backend does not stream ranges")
	}

	// Bare: the break is an error, not a short read.
	rc, err := b.Open(ctx, h, 100, 8<<20)
	if err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 1<<20)
	if _, err := io.ReadFull(rc, head); err != nil {
		t.Fatal(err)
	}
	s.Stop()
	_, err = io.ReadAll(rc)
	rc.Close()
	if !errors.Is(err, remote.ErrUnreachable) {
		t.Fatalf("read after sshd stopped: %v, want ErrUnreachable", err)
	}
	s.Start()

	r := remote.WithRetry(b, remote.RetryOptions{InitialInterval: 50 * time.Millisecond, MaxInterval: 200 * time.Millisecond, MaxElapsed: 20 * time.Second, Logger: quiet})
	rc, err = remote.OpenRange(ctx, r, h, 100, 8<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got := make([]byte, 1<<20)
	if _, err := io.ReadFull(rc, got); err != nil {
		t.Fatal(err)
	}
	s.Stop()
	go func() {
		time.Sleep(500 * time.Millisecond)
		s.Start()
	}()
	rest, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("retried stream across an sshd restart: %v", err)
	}
	got = append(got, rest...)
	if !bytes.Equal(got, data[100:100+8<<20]) {
		t.Fatalf("resumed stream: %d bytes, not the object's range", len(got))
	}
}

// Partial uploads a killed writer or a cut connection left are swept.
func TestRemoveTemp(t *testing.T) {
	s := remotetest.StartSSHD(t)
	dir := filepath.Join(t.TempDir(), "repo")
	b := create(t, config(s, dir))
	defer b.Close()
	remotetest.CheckRemoveTemp(t, b, dir)
}
