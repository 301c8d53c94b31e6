package fs_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/keepfs/keepfs/fs/fstest"
)

// TestWritebackMtimeReachesTheDaemon: with the kernel's writeback cache
// the kernel keeps a file's mtime and sends it (SETATTR) only when its own,
// coarse-grained clock moved. Pages it writes back later (at close, after
// an fsync, before a fallocate) must not stamp the daemon's clock on the
// file, or what the daemon records (and snapshots, and shows after a
// remount) differs from what stat showed when the file was closed.
func TestWritebackMtimeReachesTheDaemon(t *testing.T) {
	m := fstest.New(t, fstest.Config{})
	ctx := context.Background()
	cases := map[string]func(f *os.File) error{
		// write, fsync, write again within the same clock tick, close
		"fsync": func(f *os.File) error {
			if err := f.Sync(); err != nil {
				return err
			}
			_, err := f.WriteAt([]byte("abc"), 7)
			return err
		},
		// a fallocate that grows the file
		"fallocate": func(f *os.File) error {
			return unix.Fallocate(int(f.Fd()), 0, 50000, 200000)
		},
	}
	for name, step := range cases {
		bad := 0
		const n = 30
		for i := 0; i < n; i++ {
			p := filepath.Join(m.Dir, fmt.Sprintf("%s-%d", name, i))
			f, err := os.Create(p)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt(make([]byte, 100000), 0); err != nil {
				t.Fatal(err)
			}
			if err := step(f); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			var st unix.Stat_t
			if err := unix.Stat(p, &st); err != nil {
				t.Fatal(err)
			}
			a, err := m.Cache.GetAttr(ctx, st.Ino)
			if err != nil {
				t.Fatal(err)
			}
			if a.Mtime != st.Mtim.Nano() {
				bad++
				if bad == 1 {
					t.Errorf("%s: stat shows mtime %d, the daemon recorded %d", p, st.Mtim.Nano(), a.Mtime)
				}
			}
		}
		if bad > 0 {
			t.Errorf("%s: %d of %d files recorded another mtime than stat showed", name, bad, n)
		}
	}
}

// TestTimesBefore1970: a time before the epoch with nanoseconds splits
// into negative seconds and nanoseconds in [0, 1e9), or stat shows
// another time than the one set.
func TestTimesBefore1970(t *testing.T) {
	m := fstest.New(t, fstest.Config{})
	file := filepath.Join(m.Dir, "old")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(m.Dir, "dir")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(m.Dir, "link")
	if err := os.Symlink("old", link); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{file, dir, link} {
		for _, ns := range []int64{-1525311922710030614, -1, -1e9, -999999999, 1e9 + 5} {
			ts := []unix.Timespec{unix.NsecToTimespec(ns + 7), unix.NsecToTimespec(ns)}
			if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				t.Fatal(err)
			}
			var st unix.Stat_t
			if err := unix.Lstat(p, &st); err != nil {
				t.Fatal(err)
			}
			if st.Mtim.Nano() != ns || st.Atim.Nano() != ns+7 {
				t.Errorf("%s: set mtime %d atime %d, stat shows %d and %d", filepath.Base(p), ns, ns+7, st.Mtim.Nano(), st.Atim.Nano())
			}
		}
	}
}
