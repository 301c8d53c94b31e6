package fs_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

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
	// Space is back: writing works again.
	if err := os.WriteFile(filepath.Join(m.Dir, "after"), []byte("ok"), 0o644); err != nil {
		t.Fatalf("write after freeing space: %v", err)
	}
}
