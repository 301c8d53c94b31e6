package fs_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/keepfs/keepfs/fs/fstest"
	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/restorer"
)

// TestHardLinksOfEveryKind: link(2) makes hard links of FIFOs and symlinks
// too. A snapshot must keep them linked, as it keeps regular files:
// restore made separate FIFOs (link count 1 each) of a FIFO with three
// links, and so did a fresh state directory's mount. In .versions the links
// of one inode share its number, or cp -a and rsync -H copy them apart.
func TestHardLinksOfEveryKind(t *testing.T) {
	m := fstest.New(t, fstest.Config{})
	ctx := context.Background()
	d := m.Dir
	if err := os.WriteFile(filepath.Join(d, "file"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(d, "fifo"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("file", filepath.Join(d, "sym")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(d, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"file", "fifo", "sym"} {
		for _, link := range []string{name + "2", "sub/" + name + "3"} {
			// linkat without AT_SYMLINK_FOLLOW links the symlink itself
			if err := unix.Linkat(unix.AT_FDCWD, filepath.Join(d, name), unix.AT_FDCWD, filepath.Join(d, link), 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	linked := func(where, root string) {
		t.Helper()
		for _, name := range []string{"file", "fifo", "sym"} {
			var a, b, c unix.Stat_t
			for _, x := range []struct {
				p  string
				st *unix.Stat_t
			}{{name, &a}, {name + "2", &b}, {"sub/" + name + "3", &c}} {
				if err := unix.Lstat(filepath.Join(root, x.p), x.st); err != nil {
					t.Fatalf("%s: %v", where, err)
				}
			}
			if a.Ino != b.Ino || a.Ino != c.Ino || a.Nlink != 3 {
				t.Errorf("%s: %s and its links: inodes %d, %d, %d, link count %d; want one inode with 3 links",
					where, name, a.Ino, b.Ino, c.Ino, a.Nlink)
			}
		}
	}
	linked("mount", d)
	if _, err := m.Cache.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	// cp -a, tar and rsync -H find hard links by inode number.
	linked(".versions", filepath.Join(d, ".versions", "latest"))
	m.Close(t) // with a final snapshot
	r, err := repo.Open(ctx, m.Remote, fstest.Password, repo.Options{KDF: &crypto.TestKDF})
	if err != nil {
		t.Fatal(err)
	}
	sns, err := r.Snapshots(ctx)
	if err != nil || len(sns) == 0 {
		t.Fatalf("snapshots: %d, %v", len(sns), err)
	}
	dst := t.TempDir()
	if _, err := restorer.Restore(ctx, r, sns[len(sns)-1], []string{"/"}, dst, restorer.Options{}); err != nil {
		t.Fatal(err)
	}
	linked("restore", dst)
	r.Close()
	m2 := fstest.New(t, fstest.Config{Remote: m.Remote})
	linked("a fresh state directory's mount", m2.Dir)
}
