package fs_test

import (
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"

	keepfs "github.com/keepfs/keepfs/fs"
	"github.com/keepfs/keepfs/fs/fstest"
)

// countReadlink counts the READLINK requests the kernel sends.
type countReadlink struct {
	fuse.RawFileSystem
	n *atomic.Int64
}

func (c countReadlink) Readlink(cancel <-chan struct{}, header *fuse.InHeader) ([]byte, fuse.Status) {
	c.n.Add(1)
	return c.RawFileSystem.Readlink(cancel, header)
}

// The kernel caches symlink targets: reading a link again, or walking a
// path through it, asks the mount once.
func TestSymlinkTargetsCached(t *testing.T) {
	var n atomic.Int64
	m := fstest.New(t, fstest.Config{Options: keepfs.Options{
		WrapRaw: func(r fuse.RawFileSystem) fuse.RawFileSystem { return countReadlink{r, &n} },
	}})
	if err := os.Mkdir(filepath.Join(m.Dir, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(m.Dir, "d", "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(m.Dir, "l")
	if err := os.Symlink("d", link); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if got, err := os.Readlink(link); err != nil || got != "d" {
			t.Fatalf("readlink: %q %v", got, err)
		}
		if b, err := os.ReadFile(filepath.Join(link, "f")); err != nil || string(b) != "x" {
			t.Fatalf("read through the link: %q %v", b, err)
		}
	}
	if got := n.Load(); got != 1 {
		t.Fatalf("%d READLINK requests, want 1", got)
	}
	// A link replaced by another of the same name shows its new target.
	if err := os.Remove(link); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("d/f", link); err != nil {
		t.Fatal(err)
	}
	if got, err := os.Readlink(link); err != nil || got != "d/f" {
		t.Fatalf("readlink of the new link: %q %v", got, err)
	}
}
