package daemon

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keepfs/keepfs/cache"
	"github.com/keepfs/keepfs/fs/fstest"
	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/crypto"
)

func mounted(p string) bool {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == p {
			return true
		}
	}
	return false
}

// One daemon in this process on a real FUSE mount over an in-memory
// remote: status, sync and unmount through the control socket.
func TestControlProtocol(t *testing.T) {
	fstest.RequireFUSE(t)
	ctx := context.Background()
	be := remote.NewMem()
	r, err := repo.Create(ctx, be, []byte("daemon words"), repo.Options{KDF: &crypto.TestKDF})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	mnt, state := t.TempDir(), t.TempDir()
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, r, Config{
			Mountpoint: mnt,
			Cache:      cache.Options{StateDir: state, SnapshotInterval: time.Hour},
			Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
			Ready:      func() { close(ready) },
		})
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("not ready after 30 s")
	}
	t.Cleanup(func() {
		if mounted(mnt) {
			t.Errorf("%s left mounted", mnt)
		}
	})
	sock := filepath.Join(state, SocketName)
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket: %v %v", fi, err)
	}
	cl, err := Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	st, err := cl.Status(ctx)
	if err != nil || st.Status == nil || st.Mount != mnt || st.PID != os.Getpid() || st.RepoID != r.Config().ID {
		t.Fatalf("status: %+v %v", st, err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "f.txt"), []byte("synced"), 0o644); err != nil {
		t.Fatal(err)
	}
	sn, err := cl.Sync(ctx)
	if err != nil || sn.Snapshot == "" {
		t.Fatalf("sync: %+v %v", sn, err)
	}
	if st, _ := cl.Status(ctx); st.Status.DirtyBytes != 0 || st.Status.QueueBlobs != 0 {
		t.Fatalf("after sync: %+v", st.Status)
	}
	if _, err := Send(ctx, sock, Request{Op: "explode"}); err == nil || !strings.Contains(err.Error(), "unknown request") {
		t.Fatalf("unknown op: %v", err)
	}
	// A client whose context ends gets its context's error, promptly.
	short, cancel := context.WithTimeout(ctx, time.Nanosecond)
	defer cancel()
	if _, err := cl.Status(short); err == nil {
		t.Fatal("status with an expired context succeeded")
	}

	// Written after the sync, closed before unmount: in the final snapshot.
	if err := os.WriteFile(filepath.Join(mnt, "late.txt"), []byte("final"), 0o644); err != nil {
		t.Fatal(err)
	}
	resp, err := cl.Unmount(ctx)
	if err != nil {
		t.Fatalf("unmount: %v", err)
	}
	// Unmount answered after shutdown: Run has returned, or is returning.
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after unmount: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after unmount")
	}
	if mounted(mnt) {
		t.Fatal("still mounted")
	}
	snaps, err := r.Snapshots(ctx)
	if err != nil || len(snaps) < 2 {
		t.Fatalf("snapshots in the remote: %d %v", len(snaps), err)
	}
	if last := snaps[len(snaps)-1].Name(); last != resp.Snapshot {
		t.Errorf("unmount named snapshot %q, newest is %q", resp.Snapshot, last)
	}
	if _, err := Dial(ctx, sock); err == nil {
		t.Error("the control socket still answers after Run returned")
	}
}
