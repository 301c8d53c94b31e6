package restorer

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// Both ways of opening beneath the target (openat2, and the walk used on
// kernels without it) refuse a symlink in any component.
func TestOpenBeneathRefusesSymlinks(t *testing.T) {
	dir, outside := t.TempDir(), t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "a", "b"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "a", "ln")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(outside, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	root, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(root)
	rs := &restorer{rootFD: root}
	open := map[string]func(string) (int, error){
		"openat2": func(rel string) (int, error) { return rs.openBeneath(rel, unix.O_RDONLY|unix.O_DIRECTORY) },
		"walk":    func(rel string) (int, error) { return walkBeneath(root, rel, unix.O_RDONLY|unix.O_DIRECTORY) },
	}
	for name, fn := range open {
		for _, rel := range []string{"", "a", "a/b"} {
			fd, err := fn(rel)
			if err != nil {
				t.Errorf("%s %q: %v", name, rel, err)
				continue
			}
			unix.Close(fd)
		}
		for _, rel := range []string{"a/ln", "a/ln/x", "../" + filepath.Base(dir)} {
			fd, err := fn(rel)
			if err == nil {
				unix.Close(fd)
				t.Errorf("%s %q: opened", name, rel)
			} else if rel != "../"+filepath.Base(dir) && !errors.Is(err, errEscape) {
				t.Errorf("%s %q: %v, want errEscape", name, rel, err)
			}
		}
	}
}
