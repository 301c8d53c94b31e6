package versions_test

import (
	"bytes"
	"context"
	"errors"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
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
)

type env struct {
	t    *testing.T
	be   *remote.Mem
	r    *repo.Repository
	src  string
	mnt  string
	root *versions.Root
	when time.Time
	last *repo.Snapshot
}

func setup(t *testing.T) *env {
	fstest.RequireFUSE(t)
	be := remote.NewMem()
	r, err := repo.Create(context.Background(), be, []byte("pw"), repo.Options{KDF: &crypto.TestKDF})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, be: be, r: r, src: t.TempDir(), mnt: t.TempDir(), when: time.Date(2026, 11, 28, 13, 5, 0, 0, time.UTC)}
	e.root = versions.NewRoot(versions.RepoSource{Repository: r}, versions.Options{})
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
