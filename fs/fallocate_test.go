package fs_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/keepfs/keepfs/fs/fstest"
)

const (
	punchHole = unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE
	zeroRange = unix.FALLOC_FL_ZERO_RANGE
	keepSize  = unix.FALLOC_FL_KEEP_SIZE
	mib       = 1 << 20
)

func randomBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed)})
	r.Read(b)
	return b
}

// zero clears want[off:off+n] (as much of it as there is).
func zero(want []byte, off, n int) {
	clear(want[min(off, len(want)):min(off+n, len(want))])
}

func fallocate(t *testing.T, f *os.File, mode uint32, off, n int64) {
	t.Helper()
	if err := unix.Fallocate(int(f.Fd()), mode, off, n); err != nil {
		t.Fatalf("fallocate(mode %#x, %d, %d) of %s: %v", mode, off, n, filepath.Base(f.Name()), err)
	}
}

// open opens p and closes it when t ends, before the mount goes: a
// descriptor left open by a failing test keeps the unmount from happening.
func open(t *testing.T, p string, flag int) *os.File {
	t.Helper()
	f, err := os.OpenFile(p, flag, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// seek is lseek(2) on a new descriptor of p.
func seek(t *testing.T, p string, off int64, whence int) int64 {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pos, err := unix.Seek(int(f.Fd()), off, whence)
	if err != nil {
		return -1
	}
	return pos
}

func stat(t *testing.T, p string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func sameBytes(t *testing.T, where, p string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	if len(got) != len(want) {
		t.Fatalf("%s: %s has %d bytes, want %d", where, filepath.Base(p), len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: %s differs first at byte %d: %d, want %d", where, filepath.Base(p), i, got[i], want[i])
		}
	}
}

// TestFallocatePunchAndZero: FALLOC_FL_PUNCH_HOLE and FALLOC_FL_ZERO_RANGE
// (with and without KEEP_SIZE) make the range read as zeros and, where it
// is 1 MiB or more, a hole: SEEK_DATA/SEEK_HOLE find it, st_blocks drops,
// and no chunk holds it; sizes change only for a zero range past the end
// without KEEP_SIZE. It holds in .versions and after a remount. Other
// modes stay EOPNOTSUPP.
func TestFallocatePunchAndZero(t *testing.T) {
	m := fstest.New(t, fstest.Config{})
	ctx := context.Background()
	p := filepath.Join(m.Dir, "f")
	want := randomBytes(1, 8*mib)
	if err := os.WriteFile(p, want, 0o644); err != nil {
		t.Fatal(err)
	}
	blocks := stat(t, p).Blocks
	f := open(t, p, os.O_RDWR)
	// Across chunk boundaries (chunks average 1 MiB).
	fallocate(t, f, punchHole, 3*mib/2, 4*mib)
	zero(want, 3*mib/2, 4*mib)
	// Inside one chunk, smaller than a hole is kept.
	fallocate(t, f, punchHole, 100, 5000)
	zero(want, 100, 5000)
	// At the end, past it: the size stays.
	fallocate(t, f, punchHole, 7*mib, 10*mib)
	zero(want, 7*mib, 10*mib)
	// Zero range under KEEP_SIZE past the end: the size stays too.
	fallocate(t, f, zeroRange|keepSize, 6*mib, 4*mib)
	zero(want, 6*mib, 4*mib)
	sameBytes(t, "open", p, want)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	sameBytes(t, "closed", p, want)
	// [1.5, 5.5) MiB and [6, 8) MiB are holes now, by SEEK_HOLE and
	// SEEK_DATA, and in st_blocks.
	for _, c := range []struct {
		off    int64
		whence int
		want   int64
	}{
		{0, unix.SEEK_HOLE, 3 * mib / 2},
		{3 * mib / 2, unix.SEEK_DATA, 11 * mib / 2},
		{11 * mib / 2, unix.SEEK_HOLE, 6 * mib},
		{6 * mib, unix.SEEK_DATA, -1}, // ENXIO: only a hole follows
	} {
		if got := seek(t, p, c.off, c.whence); got != c.want {
			t.Errorf("lseek(%d, whence %d) = %d, want %d", c.off, c.whence, got, c.want)
		}
	}
	st := stat(t, p)
	if st.Size != 8*mib || st.Blocks > blocks-6*mib/512 {
		t.Errorf("after punching 6 MiB: size %d, %d blocks (%d before)", st.Size, st.Blocks, blocks)
	}
	a, err := m.Cache.GetAttr(ctx, st.Ino)
	if err != nil || a.Holes != 6*mib {
		t.Errorf("committed holes: %d bytes, %v; want 6 MiB", a.Holes, err)
	}

	// A zero range past the end without KEEP_SIZE grows the file, and a
	// punch of bytes never written is a no-op that succeeds.
	g := open(t, p, os.O_RDWR)
	fallocate(t, g, zeroRange, 9*mib, 2*mib)
	want = append(want, make([]byte, 3*mib)...)
	fallocate(t, g, punchHole, 8*mib, 2*mib)
	if fi, err := g.Stat(); err != nil || fi.Size() != 11*mib {
		t.Fatalf("size after a zero range to 11 MiB: %v, %v", fi.Size(), err)
	}
	// Collapse, insert and unshare are not supported.
	for _, mode := range []uint32{unix.FALLOC_FL_COLLAPSE_RANGE, unix.FALLOC_FL_INSERT_RANGE, unix.FALLOC_FL_UNSHARE_RANGE} {
		if err := unix.Fallocate(int(g.Fd()), mode, 0, 4096); err != unix.EOPNOTSUPP {
			t.Errorf("fallocate mode %#x: %v, want EOPNOTSUPP", mode, err)
		}
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	sameBytes(t, "grown", p, want)
	if got := seek(t, p, 6*mib, unix.SEEK_DATA); got != -1 {
		t.Errorf("SEEK_DATA in the grown tail: %d, want ENXIO", got)
	}

	if _, err := m.Cache.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	v := filepath.Join(m.Dir, ".versions", "latest", "f")
	sameBytes(t, ".versions", v, want)
	if got := seek(t, v, 0, unix.SEEK_HOLE); got != 3*mib/2 {
		t.Errorf(".versions: SEEK_HOLE from 0 = %d, want %d", got, 3*mib/2)
	}
	m.Close(t)
	m2 := fstest.New(t, fstest.Config{Remote: m.Remote, StateDir: m.StateDir})
	p2 := filepath.Join(m2.Dir, "f")
	sameBytes(t, "remounted", p2, want)
	if got := seek(t, p2, 3*mib/2, unix.SEEK_DATA); got != 11*mib/2 {
		t.Errorf("remounted: SEEK_DATA from 1.5 MiB = %d, want %d", got, 11*mib/2)
	}
}

// TestPunchWithPagesOfOtherDescriptors: under the writeback cache one
// descriptor's written pages may still be in the kernel when another
// punches or zeroes a range of them: the punched bytes must read as zeros
// through every descriptor, and the bytes around them as written, open
// and after the close.
func TestPunchWithPagesOfOtherDescriptors(t *testing.T) {
	m := fstest.New(t, fstest.Config{})
	p := filepath.Join(m.Dir, "f")
	want := randomBytes(2, 3*mib)
	if err := os.WriteFile(p, want, 0o644); err != nil {
		t.Fatal(err)
	}
	w1, w2, r := open(t, p, os.O_RDWR), open(t, p, os.O_RDWR), open(t, p, os.O_RDONLY)
	// Pages in the kernel's cache: read through r, written through w1.
	buf := make([]byte, len(want))
	if _, err := r.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	more := randomBytes(3, 2*mib)
	if _, err := w1.WriteAt(more, mib/2); err != nil {
		t.Fatal(err)
	}
	copy(want[mib/2:], more)
	fallocate(t, w2, punchHole, mib/2+1000, mib)
	zero(want, mib/2+1000, mib)
	fallocate(t, w2, zeroRange, 2*mib+10, 4096)
	zero(want, 2*mib+10, 4096)
	for _, f := range []*os.File{w1, w2, r} {
		got := make([]byte, len(want))
		if _, err := f.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("read through %v after the punch: differs", f.Fd())
		}
	}
	// A write after the punch into the punched range is kept.
	if _, err := w1.WriteAt([]byte("after"), mib); err != nil {
		t.Fatal(err)
	}
	copy(want[mib:], "after")
	for _, f := range []*os.File{w1, w2, r} {
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	sameBytes(t, "closed", p, want)
	m.Close(t)
	m2 := fstest.New(t, fstest.Config{Remote: m.Remote, StateDir: m.StateDir})
	sameBytes(t, "remounted", filepath.Join(m2.Dir, "f"), want)
}
