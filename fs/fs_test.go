package fs_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/posixtest"
	"github.com/hanwen/go-fuse/v2/splice"
	"golang.org/x/sys/unix"

	keepfs "github.com/keepfs/keepfs/fs"
	"github.com/keepfs/keepfs/fs/fstest"
)

func TestPosix(t *testing.T) {
	m := fstest.New(t, fstest.Config{})
	// Tests whose premise this file system does not share.
	skip := map[string]string{
		// It expects two descriptors of one process to conflict, which
		// holds for OFD locks on a loopback's backing files, not for the
		// POSIX locks the kernel keeps for this file system.
		"FcntlFlockLocksFile": "per-descriptor lock ownership is a loopback property",
	}
	for name, fn := range posixtest.All {
		t.Run(name, func(t *testing.T) {
			if why, ok := skip[name]; ok {
				t.Log("not run:", why)
				return
			}
			dir := filepath.Join(m.Dir, name)
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			fn(t, dir)
		})
	}
}

func TestMountBasics(t *testing.T) {
	m := fstest.New(t, fstest.Config{})
	d := m.Dir
	data := make([]byte, 5<<20+123)
	rand.Read(data)
	p := filepath.Join(d, "a", "b", "big")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o640); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(p)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back: %v, equal=%v", err, bytes.Equal(got, data))
	}
	// Write in the middle at an offset, and sparse beyond the end.
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("XYZ"), 1<<20)
	f.WriteAt([]byte("END"), int64(len(data))+4096)
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	copy(data[1<<20:], "XYZ")
	data = append(data, make([]byte, 4096)...)
	data = append(data, "END"...)
	if got, _ := os.ReadFile(p); !bytes.Equal(got, data) {
		t.Fatal("content after offset writes differs")
	}
	// mode 0000 stays 0000; no umask applied on top of the caller's.
	z := filepath.Join(d, "zero")
	if err := os.WriteFile(z, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(z, 0)
	if fi, _ := os.Stat(z); fi.Mode().Perm() != 0 {
		t.Fatalf("mode 0000 shows as %v", fi.Mode())
	}
	old := syscall.Umask(0)
	err = os.Mkdir(filepath.Join(d, "open"), 0o777)
	syscall.Umask(old)
	if fi, _ := os.Stat(filepath.Join(d, "open")); err != nil || fi.Mode().Perm() != 0o777 {
		t.Fatalf("mkdir 0777 with umask 0: %v %v", fi.Mode(), err)
	}
	// setgid directories pass their group and bit on.
	sg := filepath.Join(d, "sg")
	for _, err := range []error{os.Mkdir(sg, 0o755), os.Chown(sg, 0, 4242), os.Chmod(sg, 0o2775|os.ModeSetgid), os.Mkdir(filepath.Join(sg, "sub"), 0o755)} {
		if err != nil {
			t.Fatal(err)
		}
	}
	var st unix.Stat_t
	unix.Stat(sg, &st)
	t.Logf("sg: gid %d mode %o", st.Gid, st.Mode)
	unix.Stat(filepath.Join(sg, "sub"), &st)
	if st.Gid != 4242 || st.Mode&unix.S_ISGID == 0 {
		t.Fatalf("subdir of setgid dir: gid %d mode %o", st.Gid, st.Mode)
	}
	// 255-byte names and odd bytes.
	long := strings.Repeat("n", 255)
	if err := os.WriteFile(filepath.Join(d, long), []byte("x"), 0o644); err != nil {
		t.Fatalf("255-byte name: %v", err)
	}
	if err := os.WriteFile(filepath.Join(d, long+"x"), []byte("x"), 0o644); !errors.Is(err, syscall.ENAMETOOLONG) {
		t.Fatalf("256-byte name: %v", err)
	}
	odd := "\x01\xfe tab\tnl\n"
	if err := os.WriteFile(filepath.Join(d, odd), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	// rename variants
	os.WriteFile(filepath.Join(d, "r1"), []byte("one"), 0o644)
	os.WriteFile(filepath.Join(d, "r2"), []byte("two"), 0o644)
	if err := unix.Renameat2(unix.AT_FDCWD, filepath.Join(d, "r1"), unix.AT_FDCWD, filepath.Join(d, "r2"), unix.RENAME_NOREPLACE); !errors.Is(err, syscall.EEXIST) {
		t.Fatalf("RENAME_NOREPLACE: %v", err)
	}
	if err := unix.Renameat2(unix.AT_FDCWD, filepath.Join(d, "r1"), unix.AT_FDCWD, filepath.Join(d, "r2"), unix.RENAME_EXCHANGE); err != nil {
		t.Fatalf("RENAME_EXCHANGE: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(d, "r1")); string(b) != "two" {
		t.Fatalf("after exchange r1 = %q", b)
	}
	if err := os.Rename(filepath.Join(d, "r1"), filepath.Join(d, "a", "r2")); err != nil {
		t.Fatal(err)
	}
	// The root's .versions name is reserved.
	if err := os.Mkdir(filepath.Join(d, ".versions"), 0o755); err == nil {
		t.Fatal("mkdir .versions at the root succeeded")
	}
	if err := os.WriteFile(filepath.Join(d, ".versions"), nil, 0o644); err == nil {
		t.Fatal("creating a file .versions at the root succeeded")
	}
	if err := os.Rename(filepath.Join(d, "zero"), filepath.Join(d, ".versions")); err == nil {
		t.Fatal("renaming onto .versions at the root succeeded")
	}
	// statfs works.
	var sfs unix.Statfs_t
	if err := unix.Statfs(d, &sfs); err != nil || sfs.Namelen != 255 {
		t.Fatalf("statfs: %v namelen %d", err, sfs.Namelen)
	}
	// fstype
	mounts, _ := os.ReadFile("/proc/mounts")
	if !strings.Contains(string(mounts), " "+d+" fuse.keepfs ") {
		t.Fatalf("mount not listed as fuse.keepfs")
	}
}

func TestSyncAndRecovery(t *testing.T) {
	m := fstest.New(t, fstest.Config{})
	want := map[string][]byte{}
	for i := 0; i < 20; i++ {
		b := make([]byte, i*7919)
		rand.Read(b)
		name := fmt.Sprintf("d%d/f%d", i%3, i)
		os.MkdirAll(filepath.Join(m.Dir, filepath.Dir(name)), 0o755)
		if err := os.WriteFile(filepath.Join(m.Dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
		want[name] = b
	}
	os.Symlink("d0/f0", filepath.Join(m.Dir, "link"))
	if err := os.Link(filepath.Join(m.Dir, "d1/f1"), filepath.Join(m.Dir, "d2/hard")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(filepath.Join(m.Dir, "d0/f3"), "user.tag", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Cache.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	m.Close(t)
	m2 := fstest.New(t, fstest.Config{Remote: m.Remote})
	for name, b := range want {
		got, err := os.ReadFile(filepath.Join(m2.Dir, name))
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("%s after recovery: %v", name, err)
		}
	}
	if tgt, err := os.Readlink(filepath.Join(m2.Dir, "link")); err != nil || tgt != "d0/f0" {
		t.Fatalf("symlink after recovery: %q %v", tgt, err)
	}
	var a, b unix.Stat_t
	unix.Stat(filepath.Join(m2.Dir, "d1/f1"), &a)
	unix.Stat(filepath.Join(m2.Dir, "d2/hard"), &b)
	if a.Ino != b.Ino || a.Nlink != 2 {
		t.Fatalf("hard link after recovery: inodes %d/%d nlink %d", a.Ino, b.Ino, a.Nlink)
	}
	{
		v := make([]byte, 8)
		n, err := unix.Getxattr(filepath.Join(m2.Dir, "d0/f3"), "user.tag", v)
		if err != nil || string(v[:n]) != "v" {
			t.Fatalf("xattr after recovery: %q %v", v[:n], err)
		}
	}
}

func TestUnlinkOpenFile(t *testing.T) {
	m := fstest.New(t, fstest.Config{})
	p := filepath.Join(m.Dir, "f")
	os.WriteFile(p, []byte("still here"), 0o644)
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, err := f.ReadAt(buf, 0)
	if string(buf[:n]) != "still here" {
		t.Fatalf("read of unlinked open file: %q %v", buf[:n], err)
	}
}

func TestMmap(t *testing.T) {
	m := fstest.New(t, fstest.Config{})
	p := filepath.Join(m.Dir, "m")
	os.WriteFile(p, make([]byte, 8192), 0o644)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := unix.Mmap(int(f.Fd()), 0, 8192, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	copy(b[4096:], "mmapped")
	if err := unix.Msync(b, unix.MS_SYNC); err != nil {
		t.Fatal(err)
	}
	unix.Munmap(b)
	f.Close()
	got, _ := os.ReadFile(p)
	if string(got[4096:4103]) != "mmapped" {
		t.Fatalf("mmap write not visible: %q", got[4096:4103])
	}
}

// Interleaved appends and positioned writes on two descriptors of a file
// with committed content give what a local disk gives (with the kernel's
// writeback cache the kernel works out append offsets, and dirty pages go
// back through a handle of its choosing).
func TestAppendBesidePositionedWrites(t *testing.T) {
	m := fstest.New(t, fstest.Config{})
	run := func(dir string) []byte {
		t.Helper()
		p := filepath.Join(dir, "f")
		if err := os.WriteFile(p, bytes.Repeat([]byte("0123456789"), 20000), 0o644); err != nil {
			t.Fatal(err)
		}
		plain, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		app, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 50 {
			if _, err := plain.WriteAt(bytes.Repeat([]byte{'a' + byte(i%26)}, 300), int64(i*3907)); err != nil {
				t.Fatal(err)
			}
			if _, err := app.Write(bytes.Repeat([]byte{'A' + byte(i%26)}, 100+i)); err != nil {
				t.Fatal(err)
			}
		}
		// Pages go back through whichever handle the kernel picks.
		if err := plain.Sync(); err != nil {
			t.Fatal(err)
		}
		app.Close()
		plain.Close()
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	want, got := run(t.TempDir()), run(m.Dir)
	if !bytes.Equal(got, want) {
		t.Fatalf("mount: %d bytes, local disk: %d bytes, contents differ", len(got), len(want))
	}
}

// The kernel keeps listings of live directories (FOPEN_CACHE_DIR). Every
// change made through the mount shows in the next listing, warm or not, and
// an open directory that is rewound sees what changed since it was opened.
func TestDirListingFollowsChanges(t *testing.T) {
	m := fstest.New(t, fstest.Config{})
	d, o := filepath.Join(m.Dir, "d"), filepath.Join(m.Dir, "o")
	for _, p := range []string{d, o} {
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]bool{}
	check := func(step string) {
		t.Helper()
		for round := 0; round < 2; round++ { // the second is served from the kernel's cache
			ents, err := os.ReadDir(d)
			if err != nil {
				t.Fatalf("%s: %v", step, err)
			}
			got := map[string]bool{}
			for _, e := range ents {
				got[e.Name()] = true
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("%s (listing %d): got %v, want %v", step, round+1, got, want)
			}
		}
	}
	check("empty")
	for i := 0; i < 3; i++ {
		name := fmt.Sprintf("f%d", i)
		if err := os.WriteFile(filepath.Join(d, name), []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
		want[name] = true
		check("create " + name)
	}
	steps := []struct {
		name string
		do   func() error
		add  []string
		del  []string
	}{
		{"mkdir", func() error { return os.Mkdir(filepath.Join(d, "sub"), 0o755) }, []string{"sub"}, nil},
		{"symlink", func() error { return os.Symlink("f0", filepath.Join(d, "ln")) }, []string{"ln"}, nil},
		{"link in", func() error {
			os.WriteFile(filepath.Join(o, "x"), nil, 0o644)
			return os.Link(filepath.Join(o, "x"), filepath.Join(d, "hard"))
		}, []string{"hard"}, nil},
		{"rename within", func() error { return os.Rename(filepath.Join(d, "f1"), filepath.Join(d, "g1")) }, []string{"g1"}, []string{"f1"}},
		{"rename over", func() error { return os.Rename(filepath.Join(d, "g1"), filepath.Join(d, "f2")) }, nil, []string{"g1"}},
		{"rename out", func() error { return os.Rename(filepath.Join(d, "f0"), filepath.Join(o, "f0")) }, nil, []string{"f0"}},
		{"rename in", func() error { return os.Rename(filepath.Join(o, "x"), filepath.Join(d, "x")) }, []string{"x"}, nil},
		{"exchange", func() error {
			os.WriteFile(filepath.Join(o, "y"), nil, 0o644)
			return unix.Renameat2(unix.AT_FDCWD, filepath.Join(o, "y"), unix.AT_FDCWD, filepath.Join(d, "x"), unix.RENAME_EXCHANGE)
		}, nil, nil},
		{"unlink", func() error { return os.Remove(filepath.Join(d, "hard")) }, nil, []string{"hard"}},
		{"rmdir", func() error { return os.Remove(filepath.Join(d, "sub")) }, nil, []string{"sub"}},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		for _, n := range s.add {
			want[n] = true
		}
		for _, n := range s.del {
			delete(want, n)
		}
		check(s.name)
	}

	f, err := os.Open(d)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Readdirnames(-1); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d, "late"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	names, err := f.Readdirnames(-1)
	if err != nil || !slices.Contains(names, "late") {
		t.Fatalf("listing after rewind: %v %v, want it to hold \"late\"", names, err)
	}
}

// A missing SELinux label reads as unsupported (ls -l then stops asking
// for one per file); a label that was set is kept like any other xattr.
func TestSELinuxLabel(t *testing.T) {
	m := fstest.New(t, fstest.Config{})
	p := filepath.Join(m.Dir, "f")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if _, err := unix.Lgetxattr(p, "security.selinux", buf); err != unix.EOPNOTSUPP {
		t.Fatalf("getxattr of a missing label: %v, want EOPNOTSUPP", err)
	}
	if _, err := unix.Lgetxattr(p, "user.none", buf); err != unix.ENODATA {
		t.Fatalf("getxattr of another missing xattr: %v, want ENODATA", err)
	}
	label := "system_u:object_r:user_home_t:s0"
	if err := unix.Lsetxattr(p, "security.selinux", []byte(label), 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.Lgetxattr(p, "security.selinux", buf)
	if err != nil || string(buf[:n]) != label {
		t.Fatalf("label read back: %q %v", buf[:n], err)
	}
	n, err = unix.Llistxattr(p, buf)
	if err != nil || !strings.Contains(string(buf[:n]), "security.selinux") {
		t.Fatalf("listxattr: %q %v", buf[:n], err)
	}
}

// The kernel caches every directory listing (the mount has no OPENDIR), so
// .versions must drop its cached listing when snapshots come or go.
func TestVersionsListingFollowsSnapshots(t *testing.T) {
	m := fstest.New(t, fstest.Config{})
	vdir := filepath.Join(m.Dir, keepfs.VersionsName)
	names := func() []string {
		t.Helper()
		ents, err := os.ReadDir(vdir)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range ents {
			out = append(out, e.Name())
		}
		return out
	}
	var want []string
	for i := 0; i < 3; i++ {
		if err := os.WriteFile(filepath.Join(m.Dir, fmt.Sprintf("f%d", i)), []byte{byte(i)}, 0o644); err != nil {
			t.Fatal(err)
		}
		sn, err := m.Cache.Sync(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, sn.Name())
		deadline := time.Now().Add(5 * time.Second)
		for {
			got := names()
			if slices.Equal(got, append(slices.Clone(want), "latest")) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("after snapshot %d, .versions lists %v, want %v and latest", i+1, got, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
		time.Sleep(1100 * time.Millisecond) // snapshot names have a second's resolution
	}
}

// The mount's kernel read-ahead window is raised when the daemon may set
// it (root), and left at the kernel's default otherwise.
func TestReadAheadWindow(t *testing.T) {
	m := fstest.New(t, fstest.Config{})
	var st unix.Stat_t
	if err := unix.Stat(m.Dir, &st); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev)))
	if err != nil {
		t.Fatal(err)
	}
	want := "128" // the kernel's default for a FUSE mount
	if os.Geteuid() == 0 {
		want = "1024" // fs.readAheadKiB
	}
	if got := strings.TrimSpace(string(b)); got != want {
		t.Fatalf("read_ahead_kb %s, want %s", got, want)
	}
}

// READ replies go out with one writev: the data is decrypted into memory,
// so go-fuse's splice path, which pushed every reply through a pipe to no
// purpose (three extra syscalls per READ), stays unused.
func TestReadRepliesWithoutSplice(t *testing.T) {
	m := fstest.New(t, fstest.Config{})
	p := filepath.Join(m.Dir, "f")
	data := make([]byte, 256<<10)
	rand.Read(data)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	// Drop the file's pages so that the reads below reach the mount.
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	splice.ClearSplicePool()
	got := make([]byte, 4096)
	for _, off := range []int64{0, 100 << 10, 200 << 10} {
		if _, err := f.ReadAt(got, off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data[off:off+4096]) {
			t.Fatalf("read at %d differs", off)
		}
	}
	if n := splice.Total(); n != 0 {
		t.Fatalf("%d splice pipe pairs used by READ replies, want 0", n)
	}
}
