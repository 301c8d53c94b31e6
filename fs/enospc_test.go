package fs_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/keepfs/keepfs/fs/fstest"
)

// TestFullDisk: with the state directory on a small file system, a writer
// that fills it gets ENOSPC, and files committed before stay intact.
func TestFullDisk(t *testing.T) {
	fstest.RequireFUSE(t)
	state := t.TempDir()
	if err := unix.Mount("tmpfs", state, "tmpfs", 0, "size=80m,mode=0700"); err != nil {
		if os.Getenv("KEEPFS_REQUIRE_FUSE") == "1" {
			t.Fatalf("mount tmpfs for the state directory: %v", err)
		}
		t.Skipf("cannot mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(state, unix.MNT_DETACH) })
	m := fstest.New(t, fstest.Config{StateDir: state})
	keep := make([]byte, 1<<20)
	rand.Read(keep)
	p := filepath.Join(m.Dir, "keep")
	if err := os.WriteFile(p, keep, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(m.Dir, "huge"))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	var werr error
	for i := 0; i < 200 && werr == nil; i++ {
		rand.Read(buf)
		_, werr = f.Write(buf)
	}
	if werr == nil {
		werr = f.Close()
	} else {
		f.Close()
	}
	if !errors.Is(werr, syscall.ENOSPC) {
		t.Fatalf("filling the state directory: %v, want ENOSPC", werr)
	}
	if got, err := os.ReadFile(p); err != nil || !bytes.Equal(got, keep) {
		t.Fatalf("committed file after ENOSPC: %v", err)
	}
	os.Remove(filepath.Join(m.Dir, "huge"))
	// Space comes back once the mount has the release of huge's last
	// descriptor, which the kernel sends after close returns: writing works
	// again within moments.
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := os.WriteFile(filepath.Join(m.Dir, "after"), []byte("ok"), 0o644)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.ENOSPC) || time.Now().After(deadline) {
			t.Fatalf("write after freeing space: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got, err := os.ReadFile(filepath.Join(m.Dir, "after")); err != nil || string(got) != "ok" {
		t.Fatalf("file written after freeing space: %q, %v", got, err)
	}
}
