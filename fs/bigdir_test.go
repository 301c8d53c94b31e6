package fs_test

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/keepfs/keepfs/fs/fstest"
)

// TestLargeDirectory lists a directory of many entries (100,000 with
// KEEPFS_LONG=1; fewer by default to keep the suite fast).
func TestLargeDirectory(t *testing.T) {
	n := 5000
	if os.Getenv("KEEPFS_LONG") == "1" {
		n = 100_000
	}
	m := fstest.New(t, fstest.Config{})
	dir := filepath.Join(m.Dir, "big")
	os.Mkdir(dir, 0o755)
	for i := 0; i < n; i++ {
		fd, err := syscall.Open(filepath.Join(dir, fmt.Sprintf("entry-%06d", i)), syscall.O_CREAT|syscall.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		syscall.Close(fd)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != n {
		t.Fatalf("listed %d entries, want %d", len(ents), n)
	}
	if _, err := m.Cache.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
}
