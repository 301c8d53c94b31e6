package integration

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestSparseTruncate: truncate -s 1T of an empty file and the sync after
// it are quick and store nothing but metadata; the hole reads as zeros and
// lseek finds data and holes, live, in .versions and after a restore; a
// truncate to 10^15 bytes succeeds and one past the maximum file size
// (2^50) fails with EFBIG, never ENOSPC or EIO (pjdfstest truncate/12,
// ftruncate/12).
func TestSparseTruncate(t *testing.T) {
	w := newWorld(t)
	w.mount()
	f := filepath.Join(w.mnt, "big")
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	run(t, w.mnt, "truncate", "-s", "1T", "big")
	tTrunc := time.Since(start)
	start = time.Now()
	w.kf("sync", w.mnt)
	tSync := time.Since(start)
	t.Logf("truncate -s 1T: %v, keepfs sync: %v", tTrunc, tSync)
	if tTrunc > 2*time.Second || tSync > 5*time.Second {
		t.Fatalf("truncate -s 1T took %v and sync %v: the hole is being stored", tTrunc, tSync)
	}
	const tib = int64(1) << 40
	fi, err := os.Stat(f)
	if err != nil || fi.Size() != tib {
		t.Fatalf("stat after truncate: %v, %v", fi, err)
	}
	// Nothing but metadata went to the remote.
	if n := dirBytes(t, w.remote); n > 4<<20 {
		t.Fatalf("the remote holds %d bytes after syncing a 1 TiB hole", n)
	}
	seek := func(p string, off int64, whence int) (int64, error) {
		t.Helper()
		fd, err := unix.Open(p, unix.O_RDONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		return unix.Seek(fd, off, whence)
	}
	if _, err := seek(f, 0, unix.SEEK_DATA); err != unix.ENXIO {
		t.Fatalf("SEEK_DATA in an all-hole file: %v, want ENXIO", err)
	}
	// Data in the middle.
	mid := int64(100) << 30
	g, err := os.OpenFile(f, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.WriteAt([]byte("middle"), mid); err != nil {
		t.Fatal(err)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	checkSparse := func(p, where string) {
		t.Helper()
		if off, err := seek(p, 0, unix.SEEK_DATA); err != nil || off != mid {
			t.Fatalf("%s: SEEK_DATA from 0 = %d, %v; want %d", where, off, err, mid)
		}
		if off, err := seek(p, mid, unix.SEEK_HOLE); err != nil || off <= mid || off > mid+1<<20 {
			t.Fatalf("%s: SEEK_HOLE from the data = %d, %v", where, off, err)
		}
		h, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		b := make([]byte, 8192+6)
		if _, err := h.ReadAt(b, mid-8192); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, append(make([]byte, 8192), "middle"...)) {
			t.Fatalf("%s: the data and the hole before it read wrong", where)
		}
		if _, err := h.ReadAt(b, tib-int64(len(b))); err != nil || !bytes.Equal(b, make([]byte, len(b))) {
			t.Fatalf("%s: the end of the hole: %v", where, err)
		}
		// st_blocks counts what is stored, so tools look for the holes.
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil || st.Blocks*512 > 1<<20 {
			t.Fatalf("%s: %d blocks, %v", where, st.Blocks, err)
		}
	}
	checkSparse(f, "live")
	w.kf("sync", w.mnt)
	checkSparse(filepath.Join(w.mnt, ".versions", "latest", "big"), ".versions")
	// cp finds the holes (st_blocks, then SEEK_DATA) and copies 1 TiB
	// out of the mount in no time.
	start = time.Now()
	copied := filepath.Join(w.dir, "copied")
	run(t, w.dir, "cp", "--sparse=auto", filepath.Join(w.mnt, ".versions", "latest", "big"), copied)
	t.Logf("cp of the 1 TiB sparse file out of .versions: %v", time.Since(start))
	checkSparse(copied, "copied with cp")
	out := filepath.Join(w.dir, "restored")
	w.kf("restore", "/big", "--to", out)
	checkSparse(filepath.Join(out, "big"), "restored")
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(out, "big"), &st); err != nil || st.Size != tib || st.Blocks*512 > 1<<20 {
		t.Fatalf("restored file: size %d, %d blocks, %v: holes were written", st.Size, st.Blocks, err)
	}

	// pjdfstest truncate/12: 10^15 bytes succeeds (or EFBIG, never
	// ENOSPC/EIO); keepfs allows up to 2^50 and refuses beyond.
	huge := filepath.Join(w.mnt, "huge")
	if err := os.WriteFile(huge, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Truncate(huge, 999999999999999); err != nil {
		t.Fatalf("truncate to 10^15-1: %v", err)
	}
	if fi, err := os.Stat(huge); err != nil || fi.Size() != 999999999999999 {
		t.Fatalf("size after truncate to 10^15-1: %v %v", fi, err)
	}
	if err := unix.Truncate(huge, 1<<50+1); err != unix.EFBIG {
		t.Fatalf("truncate past 2^50: %v, want EFBIG", err)
	}
	fd, err := unix.Open(huge, unix.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Ftruncate(fd, 1000000000000000); err != nil {
		t.Fatalf("ftruncate to 10^15: %v", err)
	}
	if err := unix.Close(fd); err != nil {
		t.Fatalf("close after ftruncate to 10^15: %v", err)
	}
	start = time.Now()
	w.kf("sync", w.mnt)
	t.Logf("sync of a 10^15-byte hole: %v", time.Since(start))
	w.kf("check", "--read-data") // exits non-zero on any problem
}

// dirBytes sums the sizes of the files below dir.
func dirBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestIndexCompactionMount: however many upload passes a mount runs (a
// small change and a sync each), index/ in the remote stays bounded, and
// a check and a fresh state directory see everything.
func TestIndexCompactionMount(t *testing.T) {
	w := newWorld(t)
	w.mount()
	count := func() int {
		ents, err := os.ReadDir(filepath.Join(w.remote, "index"))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, e := range ents {
			if !strings.HasPrefix(e.Name(), ".tmp") {
				n++
			}
		}
		return n
	}
	most := 0
	for i := 0; i < 40; i++ {
		if err := os.WriteFile(filepath.Join(w.mnt, fmt.Sprintf("f%d", i)), []byte(fmt.Sprintf("pass %d\n", i)), 0o644); err != nil {
			t.Fatal(err)
		}
		w.kf("sync", w.mnt)
		most = max(most, count())
	}
	t.Logf("40 upload passes: at most %d index objects, %d at the end", most, count())
	if most > 10 {
		t.Fatalf("%d index objects after 40 upload passes", most)
	}
	w.unmount()
	// Unmount merges what is left of the session's segments into one.
	if n := count(); n != 1 {
		t.Fatalf("%d index objects after unmount", n)
	}
	w.kf("check", "--read-data")
	out := filepath.Join(w.dir, "restored")
	w.kf("restore", "/", "--to", out)
	for i := 0; i < 40; i++ {
		if b, err := os.ReadFile(filepath.Join(out, fmt.Sprintf("f%d", i))); err != nil || string(b) != fmt.Sprintf("pass %d\n", i) {
			t.Fatalf("f%d restored as %q, %v", i, b, err)
		}
	}
}

// TestFallocatePunch: fallocate(1)'s punch hole (-p) and zero range (-z,
// with -n to keep the size) on the mount: inside one chunk, across chunk
// boundaries, at and past the end, of bytes never written, and a zero
// range that grows the file. The ranges read as zeros; those of 1 MiB or
// more are holes to SEEK_DATA/SEEK_HOLE and st_blocks, live, in
// .versions, in a restore (written sparse) and after a remount.
func TestFallocatePunch(t *testing.T) {
	w := newWorld(t)
	w.mount()
	const mib = 1 << 20
	f := filepath.Join(w.mnt, "f")
	want := make([]byte, 6*mib)
	for i := range want {
		want[i] = byte(i*7/3 + i>>13)
	}
	if err := os.WriteFile(f, want, 0o644); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(f, &st); err != nil {
		t.Fatal(err)
	}
	before := st.Blocks
	fa := func(args ...string) { run(t, w.mnt, "fallocate", append(args, "f")...) }
	fa("-p", "-o", "100", "-l", "1000")                      // inside one chunk
	fa("-p", "-o", fmt.Sprint(mib), "-l", fmt.Sprint(3*mib)) // across chunk boundaries
	fa("-p", "-o", fmt.Sprint(5*mib), "-l", "10M")           // at and past the end
	fa("-z", "-n", "-o", fmt.Sprint(6*mib-10), "-l", "1M")   // past the end, size kept
	fa("-z", "-o", fmt.Sprint(7*mib), "-l", "1M")            // grows the file to 8 MiB
	fa("-p", "-o", fmt.Sprint(6*mib+4096), "-l", "4096")     // bytes never written
	clear(want[100:1100])
	clear(want[mib : 4*mib])
	clear(want[5*mib:])
	want = append(want, make([]byte, 2*mib)...)
	// Bytes not in holes: [0, 1) and [4, 5) MiB. The 1000 bytes punched
	// at 100, too few for a hole, were stored as zeros in a chunk.
	const data = 2 * mib
	check := func(p, where string, live bool) {
		t.Helper()
		got, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s: read %d bytes (%v), want %d, equal %v", where, len(got), err, len(want), bytes.Equal(got, want))
		}
		fd, err := unix.Open(p, unix.O_RDONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		for _, c := range []struct {
			off    int64
			whence int
			want   int64
		}{
			{0, unix.SEEK_HOLE, mib},
			{mib, unix.SEEK_DATA, 4 * mib},
			{4 * mib, unix.SEEK_HOLE, 5 * mib},
		} {
			if pos, err := unix.Seek(fd, c.off, c.whence); err != nil || pos != c.want {
				t.Errorf("%s: lseek(%d, whence %d) = %d, %v; want %d", where, c.off, c.whence, pos, err, c.want)
			}
		}
		if pos, err := unix.Seek(fd, 5*mib, unix.SEEK_DATA); err != unix.ENXIO {
			t.Errorf("%s: SEEK_DATA in the 3 MiB tail hole = %d, %v; want ENXIO", where, pos, err)
		}
		if err := unix.Fstat(fd, &st); err != nil {
			t.Fatal(err)
		}
		// The mount counts stored bytes exactly; ext4 rounds to blocks.
		if st.Blocks*512 > data+64<<10 || live && st.Blocks >= before {
			t.Errorf("%s: %d blocks (%d before the punches), want about %d bytes", where, st.Blocks, before, data)
		}
	}
	check(f, "live", true)
	w.kf("sync", w.mnt)
	check(filepath.Join(w.mnt, ".versions", "latest", "f"), ".versions", false)
	out := filepath.Join(w.dir, "restored")
	w.kf("restore", "/f", "--to", out)
	check(filepath.Join(out, "f"), "restored", false)
	w.unmount()
	w.mount()
	check(f, "remounted", true)
}
