package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// listen makes a unix socket at dir/name and returns its path; nothing
// accepts on it unless the caller does.
func listen(t *testing.T, dir, name string) (string, *net.UnixListener) {
	t.Helper()
	p := filepath.Join(dir, name)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: p, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
	return p, ln
}

func oneLineErr(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: accepted", what)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("%s: error spans lines: %q", what, err)
	}
}

// A fuse.keepfs mount's source can name any socket: the CLI talks only to
// one owned by itself or root, that is not writable by others, and that is
// a socket at all.
func TestCheckSocket(t *testing.T) {
	dir := t.TempDir()
	good, _ := listen(t, dir, "good.sock")
	if err := CheckSocket(good); err != nil {
		t.Fatalf("own 0600 socket: %v", err)
	}

	loose, _ := listen(t, dir, "loose.sock")
	if err := os.Chmod(loose, 0o666); err != nil {
		t.Fatal(err)
	}
	err := CheckSocket(loose)
	oneLineErr(t, "mode 0666", err)
	if !errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), "writable by others") {
		t.Errorf("mode 0666: %v", err)
	}

	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := CheckSocket(plain); !errors.Is(err, ErrUntrusted) {
		t.Errorf("regular file: %v", err)
	}
	if err := CheckSocket(filepath.Join(dir, "missing")); err == nil || errors.Is(err, ErrUntrusted) {
		t.Errorf("missing socket: %v", err)
	}
}

// A socket of another user is refused before anything is sent: the
// listener never sees a connection.
func TestSocketOfAnotherUserRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown a socket to another uid")
	}
	dir := t.TempDir()
	sock, ln := listen(t, dir, "control.sock")
	if err := os.Chown(sock, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	err := CheckSocket(sock)
	oneLineErr(t, "uid 65534", err)
	if !errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), "uid 65534") {
		t.Fatalf("uid 65534: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for name, call := range map[string]func() error{
		"Call":  func() error { _, err := Call(ctx, sock, "sync"); return err },
		"Dial":  func() error { _, err := Dial(ctx, sock); return err },
		"Hello": func() error { _, err := Hello(ctx, sock, ""); return err },
	} {
		if err := call(); !errors.Is(err, ErrUntrusted) {
			t.Errorf("%s: %v", name, err)
		}
	}
	_ = ln.SetDeadline(time.Now().Add(100 * time.Millisecond))
	if c, err := ln.Accept(); err == nil {
		c.Close()
		t.Fatal("the client connected to a socket of another user")
	}
}

// fakeDaemon answers every request on sock with resp.
func fakeDaemon(t *testing.T, ln *net.UnixListener, resp Response) {
	t.Helper()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			var req Request
			_ = json.NewDecoder(c).Decode(&req)
			_ = json.NewEncoder(c).Encode(resp)
			c.Close()
		}
	}()
}

// Hello checks the daemon's repository id: a mount of another repository
// than the one --repo names, or an answer naming none, is refused.
func TestHelloChecksRepository(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	sock, ln := listen(t, dir, "a.sock")
	fakeDaemon(t, ln, Response{OK: true, Mount: "/mnt/a", RepoID: "aaaaaaaaaaaaaaaaaaaaaaaa"})
	if r, err := Hello(ctx, sock, "aaaaaaaaaaaaaaaaaaaaaaaa"); err != nil || r.Mount != "/mnt/a" {
		t.Fatalf("matching repository: %+v %v", r, err)
	}
	if _, err := Hello(ctx, sock, ""); err != nil {
		t.Fatalf("no expectation: %v", err)
	}
	_, err := Hello(ctx, sock, "bbbbbbbbbbbbbbbbbbbbbbbb")
	oneLineErr(t, "other repository", err)
	if !strings.Contains(err.Error(), "/mnt/a serves repository aaaaaaaaaaaaaaaa, not bbbbbbbbbbbbbbbb") {
		t.Errorf("other repository: %v", err)
	}

	anon, ln2 := listen(t, dir, "b.sock")
	fakeDaemon(t, ln2, Response{OK: true, Mount: "/mnt/b"})
	if _, err := Hello(ctx, anon, ""); !errors.Is(err, ErrUntrusted) {
		t.Errorf("answer without a repository id: %v", err)
	}
}

// A daemon that does not answer (stopped with SIGSTOP, hung) is given up
// on after HelloTimeout: prune, erase and restore ask every keepfs mount on
// the machine whether it serves their repository, and one stopped mount of
// another repository hung them for good.
func TestHelloGivesUpOnSilentDaemon(t *testing.T) {
	defer func(d time.Duration) { HelloTimeout = d }(HelloTimeout)
	HelloTimeout = 200 * time.Millisecond
	sock, _ := listen(t, t.TempDir(), "silent.sock") // connects, never answers
	done := make(chan error, 1)
	go func() {
		_, err := Hello(context.Background(), sock, "aaaaaaaaaaaaaaaaaaaaaaaa")
		done <- err
	}()
	select {
	case err := <-done:
		oneLineErr(t, "silent daemon", err)
		if !strings.Contains(err.Error(), "did not answer") {
			t.Errorf("silent daemon: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Hello still waits for a daemon that never answers")
	}
}
