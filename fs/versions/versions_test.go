package versions_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/keepfs/keepfs/fs/fstest"
	"github.com/keepfs/keepfs/fs/versions"
	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/archiver"
	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/pack"
)

type env struct {
	t    testing.TB
	be   *remote.Mem
	r    *repo.Repository
	src  string
	mnt  string
	root *versions.Root
	when time.Time
	last *repo.Snapshot
}

func setup(t testing.TB) *env {
	return setupWith(t, func(r *repo.Repository) versions.Source { return versions.RepoSource{Repository: r} })
}

// setupWith mounts a Root over the Source that wrap makes of a fresh
// repository.
func setupWith(t testing.TB, wrap func(*repo.Repository) versions.Source) *env {
	fstest.RequireFUSE(t)
	be := remote.NewMem()
	r, err := repo.Create(context.Background(), be, []byte("pw"), repo.Options{KDF: &crypto.TestKDF})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, be: be, r: r, src: t.TempDir(), mnt: t.TempDir(), when: time.Date(2026, 11, 28, 13, 5, 0, 0, time.UTC)}
	e.root = versions.NewRoot(wrap(r), versions.Options{})
	srv, err := gofs.Mount(e.mnt, e.root, &gofs.Options{MountOptions: fuse.MountOptions{Name: "keepfs-versions-test"}, NullPermissions: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			_ = unix.Unmount(e.mnt, unix.MNT_DETACH)
		}
	})
	return e
}

func (e *env) write(p string, data []byte, mode os.FileMode) {
	e.t.Helper()
	full := filepath.Join(e.src, p)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(full, data, mode); err != nil {
		e.t.Fatal(err)
	}
	if err := os.Chmod(full, mode); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) snapshot(after time.Duration) *repo.Snapshot {
	e.t.Helper()
	e.when = e.when.Add(after)
	opts := archiver.Options{Now: func() time.Time { return e.when }, Parent: e.last}
	sn, _, err := archiver.Import(context.Background(), e.r, e.src, opts)
	if err != nil {
		e.t.Fatal(err)
	}
	e.last = sn
	e.root.Refresh()
	return sn
}

func TestVersionsTree(t *testing.T) {
	e := setup(t)
	big := make([]byte, 5<<20+123)
	rand.New(rand.NewSource(7)).Read(big)
	e.write("docs/contract.txt", []byte("v1\n"), 0o640)
	e.write("media/big.bin", big, 0o644)
	if err := os.Symlink("../docs/contract.txt", filepath.Join(e.src, "media/link")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lsetxattr(filepath.Join(e.src, "docs/contract.txt"), "user.tag", []byte("secret"), 0); err != nil {
		t.Fatal(err)
	}
	mt := time.Date(2020, 2, 2, 2, 2, 2, 0, time.UTC)
	if err := os.Chtimes(filepath.Join(e.src, "docs/contract.txt"), mt, mt); err != nil {
		t.Fatal(err)
	}
	s1 := e.snapshot(0) // 13:05:00
	e.write("docs/contract.txt", []byte("v2\n"), 0o640)
	s2 := e.snapshot(2 * time.Hour) // 15:05:00
	// Two snapshots in the same second get distinct names.
	e.write("docs/contract.txt", []byte("v3\n"), 0o640)
	s3 := e.snapshot(0)

	ents, err := os.ReadDir(e.mnt)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range ents {
		names = append(names, d.Name())
	}
	sort.Strings(names)
	want := []string{s1.Name(), s2.Name(), s2.Name() + "-1", "latest"}
	sort.Strings(want)
	if len(names) != 4 || names[0] != want[0] || names[3] != "latest" {
		t.Fatalf("listing %v, want %v (s3 %s)", names, want, s3.Name())
	}
	// The directory's mtime is the newest snapshot's (once the kernel's
	// one-second attribute timeout has let go of what it had before the
	// listing), not 1970.
	for deadline := time.Now().Add(3 * time.Second); ; {
		fi, err := os.Stat(e.mnt)
		if err != nil {
			t.Fatal(err)
		}
		if fi.ModTime().Equal(s3.Time.Truncate(time.Nanosecond)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf(".versions mtime %v, want the newest snapshot's %v", fi.ModTime(), s3.Time)
		}
		time.Sleep(100 * time.Millisecond)
	}
	read := func(p string) string {
		b, err := os.ReadFile(filepath.Join(e.mnt, p))
		if err != nil {
			t.Fatalf("read %s: %v", p, err)
		}
		return string(b)
	}
	if got := read("latest/docs/contract.txt"); got != "v3\n" {
		t.Errorf("latest: %q", got)
	}
	if got := read(s1.Name() + "/docs/contract.txt"); got != "v1\n" {
		t.Errorf("by name: %q", got)
	}
	for prefix, want := range map[string]string{"2026-11-28T13": "v1\n", "2026-11-28T14": "v1\n", "2026-11-28": "v3\n", "2026-11-28T150500Z": "v2\n", "2026-11-28T150500Z-1": "v3\n"} {
		if got := read(prefix + "/docs/contract.txt"); got != want {
			t.Errorf("prefix %s: %q, want %q", prefix, got, want)
		}
	}
	if _, err := os.Stat(filepath.Join(e.mnt, "2026-11-28T12")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("before the first snapshot: %v", err)
	}
	if _, err := os.Stat(filepath.Join(e.mnt, "yesterday")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("junk name: %v", err)
	}
	// Content, modes, times, symlinks, xattrs as they were.
	if got := read("latest/media/big.bin"); !bytes.Equal([]byte(got), big) {
		t.Error("big file differs")
	}
	fi, err := os.Lstat(filepath.Join(e.mnt, s1.Name(), "docs/contract.txt"))
	if err != nil || fi.Mode().Perm() != 0o640 || !fi.ModTime().Equal(mt) {
		t.Errorf("attributes: %v %v %v", fi.Mode(), fi.ModTime(), err)
	}
	if l, err := os.Readlink(filepath.Join(e.mnt, "latest/media/link")); err != nil || l != "../docs/contract.txt" {
		t.Errorf("symlink: %q %v", l, err)
	}
	buf := make([]byte, 64)
	if n, err := unix.Getxattr(filepath.Join(e.mnt, s1.Name(), "docs/contract.txt"), "user.tag", buf); err != nil || string(buf[:n]) != "secret" {
		t.Errorf("xattr: %q %v", buf[:n], err)
	}
	// Read-only everywhere.
	for _, op := range []func() error{
		func() error { return os.WriteFile(filepath.Join(e.mnt, "latest/new"), []byte("x"), 0o644) },
		func() error {
			return os.WriteFile(filepath.Join(e.mnt, "latest/docs/contract.txt"), []byte("x"), 0o644)
		},
		func() error { return os.Mkdir(filepath.Join(e.mnt, "latest/d"), 0o755) },
		func() error { return os.Remove(filepath.Join(e.mnt, "latest/docs/contract.txt")) },
		func() error { return os.Chmod(filepath.Join(e.mnt, "latest/docs/contract.txt"), 0o777) },
		func() error {
			return os.Rename(filepath.Join(e.mnt, "latest/docs/contract.txt"), filepath.Join(e.mnt, "latest/x"))
		},
	} {
		if err := op(); !errors.Is(err, syscall.EROFS) && !errors.Is(err, syscall.EACCES) && !errors.Is(err, syscall.EPERM) {
			t.Errorf("write in .versions: %v", err)
		}
	}
	// Ordinary tools copy out of it.
	out := t.TempDir()
	if b, err := exec.Command("cp", "-a", e.mnt+"/latest/.", out).CombinedOutput(); err != nil {
		t.Fatalf("cp -a: %v %s", err, b)
	}
	if b, err := exec.Command("diff", "-r", "--no-dereference", e.src, out).CombinedOutput(); err != nil {
		t.Fatalf("diff -r: %v %s", err, b)
	}
}

// A tampered pack gives EIO, never wrong bytes.
func TestVersionsTamperedPackIsEIO(t *testing.T) {
	e := setup(t)
	data := make([]byte, 2<<20)
	rand.New(rand.NewSource(1)).Read(data)
	e.write("f.bin", data, 0o644)
	e.snapshot(0)
	ctx := context.Background()
	var packs []remote.Info
	_ = e.be.List(ctx, remote.Pack, func(fi remote.Info) error { packs = append(packs, fi); return nil })
	for _, p := range packs {
		b, _ := remote.LoadAll(ctx, e.be, p.Handle)
		if len(b) > 1<<20 {
			b[100] ^= 1
			e.be.Replace(p.Handle, b)
		}
	}
	_, err := os.ReadFile(filepath.Join(e.mnt, "latest/f.bin"))
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("tampered read: %v", err)
	}
}

// Hard links keep their link count, inode numbers stay put for a path, and
// a multi-chunk file read sequentially (which triggers read-ahead) and at
// random offsets gives the original bytes.
func TestVersionsLinksInodesAndReads(t *testing.T) {
	e := setup(t)
	big := make([]byte, 9<<20+7)
	rand.New(rand.NewSource(3)).Read(big)
	e.write("a/big.bin", big, 0o600)
	if err := os.Link(filepath.Join(e.src, "a/big.bin"), filepath.Join(e.src, "a/twin.bin")); err != nil {
		t.Fatal(err)
	}
	sn := e.snapshot(0)
	var st1, st2 unix.Stat_t
	if err := unix.Lstat(filepath.Join(e.mnt, sn.Name(), "a/twin.bin"), &st1); err != nil {
		t.Fatal(err)
	}
	if st1.Nlink != 2 || st1.Size != int64(len(big)) || st1.Mode&0o7777 != 0o600 {
		t.Errorf("hard link: nlink %d size %d mode %o", st1.Nlink, st1.Size, st1.Mode)
	}
	if err := unix.Lstat(filepath.Join(e.mnt, "latest/a/twin.bin"), &st2); err != nil {
		t.Fatal(err)
	}
	if st1.Ino != st2.Ino {
		t.Errorf("one snapshot path, two inode numbers: %d %d", st1.Ino, st2.Ino)
	}
	f, err := os.Open(filepath.Join(e.mnt, "latest/a/big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := io.ReadAll(f)
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("sequential read: %d bytes, equal %v, %v", len(got), bytes.Equal(got, big), err)
	}
	rng := rand.New(rand.NewSource(4))
	buf := make([]byte, 300<<10)
	for range 20 {
		off := rng.Int63n(int64(len(big)))
		n, err := f.ReadAt(buf, off)
		if err != nil && err != io.EOF {
			t.Fatal(err)
		}
		if !bytes.Equal(buf[:n], big[off:min(off+int64(len(buf)), int64(len(big)))]) {
			t.Fatalf("random read at %d differs", off)
		}
	}
}

// lyingSource reports chunk sizes one byte too large, as a tampered or
// stale index would.
type lyingSource struct{ versions.RepoSource }

func (s lyingSource) BlobSize(t pack.BlobType, id crypto.ID) (uint32, bool) {
	n, ok := s.RepoSource.BlobSize(t, id)
	return n + 1, ok
}

// When the index and the tree disagree on a file's size, reads fail with
// EIO rather than returning padded or short data.
func TestVersionsSizeMismatchIsEIO(t *testing.T) {
	e := setupWith(t, func(r *repo.Repository) versions.Source {
		return lyingSource{versions.RepoSource{Repository: r}}
	})
	e.write("f.txt", []byte("hello\n"), 0o644)
	e.snapshot(0)
	if _, err := os.ReadFile(filepath.Join(e.mnt, "latest/f.txt")); !errors.Is(err, syscall.EIO) {
		t.Fatalf("read with a wrong index size: %v", err)
	}
}

// BenchmarkWalk20k is an `ls -lR` of 20,000 files: readdir plus lstat of
// every entry, in a snapshot under .versions and in the source directory
// it was taken from. The first .versions walk loads the trees; later ones
// run from the kernel's caches, as a user browsing history would.
func BenchmarkWalk20k(b *testing.B) {
	e := setup(b)
	for d := range 100 {
		dir := filepath.Join(e.src, fmt.Sprintf("d%03d", d))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			b.Fatal(err)
		}
		for f := range 200 {
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%03d", f)), []byte{byte(f)}, 0o644); err != nil {
				b.Fatal(err)
			}
		}
	}
	e.snapshot(0)
	walk := func(b *testing.B, root string) {
		n := 0
		err := filepath.WalkDir(root, func(p string, d iofs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			var st unix.Stat_t
			n++
			return unix.Lstat(p, &st)
		})
		if err != nil || n != 20101 {
			b.Fatalf("walk %s: %d entries, %v", root, n, err)
		}
	}
	b.Run("source", func(b *testing.B) {
		for b.Loop() {
			walk(b, e.src)
		}
	})
	b.Run("versions-cold", func(b *testing.B) {
		// A fresh snapshot name each round defeats the kernel caches:
		// the prefix lookup gives a new dentry, the trees come from the
		// repository's tree cache.
		for b.Loop() {
			walk(b, filepath.Join(e.mnt, e.last.Name()))
			b.StopTimer()
			e.snapshot(time.Second)
			b.StartTimer()
		}
	})
	b.Run("versions-warm", func(b *testing.B) {
		for b.Loop() {
			walk(b, filepath.Join(e.mnt, "latest"))
		}
	})
}

// latest and prefixes the kernel has already cached move to a new snapshot
// as soon as Refresh is called, not after their entry timeout.
func TestVersionsLatestMovesOnRefresh(t *testing.T) {
	e := setup(t)
	e.write("f.txt", []byte("one"), 0o644)
	first := e.snapshot(0)
	for _, name := range []string{"latest", "2026-11-28"} {
		if b, err := os.ReadFile(filepath.Join(e.mnt, name, "f.txt")); err != nil || string(b) != "one" {
			t.Fatalf("%s before: %q %v", name, b, err)
		}
	}
	e.write("f.txt", []byte("two"), 0o644)
	e.snapshot(time.Minute) // calls Refresh
	deadline := time.Now().Add(5 * time.Second)
	for _, name := range []string{"latest", "2026-11-28"} {
		for {
			b, err := os.ReadFile(filepath.Join(e.mnt, name, "f.txt"))
			if err == nil && string(b) == "two" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s after a new snapshot: %q %v", name, b, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if b, err := os.ReadFile(filepath.Join(e.mnt, first.Name(), "f.txt")); err != nil || string(b) != "one" {
		t.Fatalf("first snapshot by name: %q %v", b, err)
	}
}

// hidingSource lists every snapshot except the one named by hide, as the
// repository would after a prune removed it.
type hidingSource struct {
	versions.RepoSource
	hide *atomic.Pointer[crypto.ID]
}

func (s hidingSource) Snapshots(ctx context.Context) ([]*repo.Snapshot, error) {
	all, err := s.RepoSource.Snapshots(ctx)
	var out []*repo.Snapshot
	for _, sn := range all {
		if h := s.hide.Load(); h == nil || *h != sn.ID {
			out = append(out, sn)
		}
	}
	return out, err
}

// A snapshot that goes away (prune) disappears from a mount that had it
// cached as soon as Refresh is called.
func TestVersionsPrunedNameVanishesOnRefresh(t *testing.T) {
	var hide atomic.Pointer[crypto.ID]
	e := setupWith(t, func(r *repo.Repository) versions.Source {
		return hidingSource{versions.RepoSource{Repository: r}, &hide}
	})
	e.write("f.txt", []byte("one"), 0o644)
	first := e.snapshot(0)
	e.snapshot(time.Hour)
	p := filepath.Join(e.mnt, first.Name(), "f.txt")
	if _, err := os.Stat(p); err != nil {
		t.Fatal(err)
	}
	hide.Store(&first.ID)
	e.root.Refresh()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := os.Stat(filepath.Join(e.mnt, first.Name()))
		if errors.Is(err, os.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pruned snapshot still visible: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ls -l asks every file for its SELinux label and POSIX ACL. coreutils
// stops asking on a device that answers EOPNOTSUPP once, but asks again
// for every file after ENODATA (a FUSE round trip each): a snapshot must
// answer as the live tree does, or ls -lR of it is several times slower.
func TestVersionsXattrErrnos(t *testing.T) {
	e := setup(t)
	e.write("a.txt", []byte("a\n"), 0o644)
	if err := unix.Lsetxattr(filepath.Join(e.src, "a.txt"), "user.tag", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	e.snapshot(0)
	buf := make([]byte, 64)
	for _, p := range []string{"latest/a.txt", "latest"} {
		full := filepath.Join(e.mnt, p)
		for attr, want := range map[string]error{
			"security.selinux":         unix.EOPNOTSUPP,
			"system.posix_acl_access":  unix.EOPNOTSUPP,
			"system.posix_acl_default": unix.EOPNOTSUPP,
			"user.missing":             unix.ENODATA,
		} {
			if _, err := unix.Lgetxattr(full, attr, buf); !errors.Is(err, want) {
				t.Errorf("getxattr %s %s: %v, want %v", p, attr, err, want)
			}
		}
	}
	full := filepath.Join(e.mnt, "latest/a.txt")
	if n, err := unix.Lgetxattr(full, "user.tag", nil); err != nil || n != 1 {
		t.Errorf("getxattr size of user.tag: %d, %v; want 1", n, err)
	}
	if n, err := unix.Lgetxattr(full, "user.tag", buf); err != nil || string(buf[:n]) != "v" {
		t.Errorf("getxattr user.tag: %q, %v; want \"v\"", buf[:n], err)
	}
}
