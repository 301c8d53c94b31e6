package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"testing"

	"github.com/keepfs/keepfs/remote/disktest"
	"golang.org/x/sys/unix"
)

// directDir is a temporary directory on a disk-backed file system (tmpfs
// pages are the file: there is no cache to bypass) that takes O_DIRECT.
func directDir(t *testing.T) string {
	t.Helper()
	dir := disktest.TempDir(t)
	f, err := os.CreateTemp(dir, "probe")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := setDirect(f, true); err != nil {
		t.Fatalf("the test directory's file system refuses O_DIRECT: %v", err)
	}
	return dir
}

// A pack is written around the page cache: Save fsyncs it anyway, and the
// copy into fresh page-cache pages was the largest item of an import's CPU.
// Only the tail after the last full block may be cached.
func TestFileSaveBypassesPageCache(t *testing.T) {
	dir := directDir(t)
	f, err := CreateFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	data := disktest.RandBytes(1, 3<<20+100)
	h := Handle{Type: Pack, Name: "aa01"}
	if err := f.Save(context.Background(), h, data); err != nil {
		t.Fatal(err)
	}
	resident, pages := disktest.ResidentPages(t, f.path(h))
	if resident > 1 {
		t.Errorf("%d of %d pages of a saved pack are in the page cache, want at most the tail's", resident, pages)
	}
	got, err := f.Load(context.Background(), h, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Error("pack read back differs")
	}
}

// Every size and alignment comes back intact: below the direct threshold,
// exact blocks, a partial last block, more than one write slice, and a
// slice not starting on a block boundary (written through the page cache).
func TestFileSaveSizes(t *testing.T) {
	dir := directDir(t)
	f, err := CreateFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	big := disktest.RandBytes(2, writeSlice+directMin+2*directAlign)
	cases := map[string][]byte{
		"below":         big[:directMin-1],
		"threshold":     big[:directMin],
		"partial block": big[:directMin+1],
		"block short":   big[:directMin+directAlign-1],
		"two slices":    big[:writeSlice+directMin+directAlign+5],
		"unaligned":     big[1 : directMin+3*directAlign],
		"one block off": big[directAlign : directAlign+directMin+17],
	}
	i := 0
	for name, data := range cases {
		i++
		h := Handle{Type: Pack, Name: "bb0" + string(rune('0'+i))}
		if err := f.Save(context.Background(), h, data); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, err := f.Load(context.Background(), h, 0, 0)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !bytes.Equal(got, data) {
			t.Errorf("%s: %d bytes saved, %d read back, contents differ", name, len(data), len(got))
		}
	}
}

// evict drops the clean pages of the file at path from the page cache.
func evict(t *testing.T, path string) {
	t.Helper()
	fd, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	if err := unix.Fadvise(int(fd.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
}

// readRange streams [off,+n) of h through Open, asking for step bytes at
// a time as io.ReadFull would for blobs of that size.
func readRange(f *File, h Handle, off, n int64, step int) ([]byte, error) {
	rc, err := f.Open(context.Background(), h, off, n)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var out []byte
	p := make([]byte, step)
	for {
		m, err := io.ReadFull(rc, p)
		out = append(out, p[:m]...)
		// io.ReadFull's own ErrUnexpectedEOF (unwrapped) is a last
		// partial step; the reader's wraps it and is a real error.
		if err == io.EOF || err == io.ErrUnexpectedEOF && int64(len(out)) == n {
			return out, nil
		}
		if err != nil {
			return out, err
		}
	}
}

// A restore's extent of a pack is read around the page cache as the pack
// was written: the kernel would otherwise allocate page-cache pages for
// data read once and copy every byte out of them again.
func TestFileOpenBypassesPageCache(t *testing.T) {
	f, err := CreateFile(directDir(t))
	if err != nil {
		t.Fatal(err)
	}
	data := disktest.RandBytes(3, 5<<20+333)
	h := Handle{Type: Pack, Name: "cc01"}
	if err := f.Save(context.Background(), h, data); err != nil {
		t.Fatal(err)
	}
	evict(t, f.path(h))
	got, err := readRange(f, h, 0, int64(len(data)), 1<<20+77)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("pack streamed back differs")
	}
	if resident, pages := disktest.ResidentPages(t, f.path(h)); resident > 0 {
		t.Errorf("%d of %d pages of a streamed pack are in the page cache, want none", resident, pages)
	}
}

// Ranges around the thresholds and block boundaries come back intact,
// those of directReadMin bytes or more without touching the page cache:
// below and at the threshold, unaligned starts and ends, across buffer
// refills, and up to a file end that is not on a block boundary.
func TestFileOpenSizes(t *testing.T) {
	f, err := CreateFile(directDir(t))
	if err != nil {
		t.Fatal(err)
	}
	size := int64(2*directReadBuf + 3*directAlign + 1234)
	data := disktest.RandBytes(4, int(size))
	h := Handle{Type: Pack, Name: "dd01"}
	if err := f.Save(context.Background(), h, data); err != nil {
		t.Fatal(err)
	}
	const a = directAlign
	for _, c := range []struct {
		name   string
		off, n int64
		step   int
	}{
		{"below", 0, directReadMin - 1, 4096},
		{"threshold", 0, directReadMin, 4096},
		{"threshold unaligned", 1, directReadMin, 1000},
		{"block minus one", a - 1, directReadMin + 2, 1 << 20},
		{"one block in", a, directReadMin + a, 3 << 20},
		{"buffer edge", directReadBuf - 1, directReadMin + 2, 1},
		{"two refills", 17, 2*directReadBuf + 5, 512 << 10},
		{"to the end", a + 5, size - a - 5, 1 << 20},
		{"last partial block", size - directReadMin - 100, directReadMin + 100, 4097},
		{"whole file", 0, size, 8 << 20},
	} {
		evict(t, f.path(h))
		got, err := readRange(f, h, c.off, c.n, c.step)
		if err != nil {
			t.Fatalf("%s [%d,+%d): %v", c.name, c.off, c.n, err)
		}
		if !bytes.Equal(got, data[c.off:c.off+c.n]) {
			t.Errorf("%s [%d,+%d): %d bytes back, contents differ", c.name, c.off, c.n, len(got))
		}
		resident, pages := disktest.ResidentPages(t, f.path(h))
		if c.n >= directReadMin && resident > 0 {
			t.Errorf("%s [%d,+%d): %d of %d pages in the page cache, want none", c.name, c.off, c.n, resident, pages)
		}
		if c.n < directReadMin && resident == 0 {
			t.Errorf("%s [%d,+%d): nothing in the page cache: a short range should take the ordinary path", c.name, c.off, c.n)
		}
	}
}

// A file that shrank under an open range (objects are immutable, so it
// was damaged) fails the Read with io.ErrUnexpectedEOF once the bytes
// that are there have been handed out, never with a silent io.EOF.
func TestFileOpenShortFile(t *testing.T) {
	f, err := CreateFile(directDir(t))
	if err != nil {
		t.Fatal(err)
	}
	size := int64(3*directReadBuf + 100)
	data := disktest.RandBytes(5, int(size))
	for i, c := range []struct {
		name string
		off  int64
		cut  int64 // the file's size once opened
	}{
		{"mid buffer", 10, directReadBuf + directAlign + 7},
		{"on a block", 10, 2 * directReadBuf},
		{"before the range", directReadBuf + 3, directReadBuf},
		{"at the start", directAlign, directAlign},
		{"to nothing", 0, 0},
	} {
		h := Handle{Type: Pack, Name: fmt.Sprintf("ee%02x", i)}
		if err := f.Save(context.Background(), h, data); err != nil {
			t.Fatal(err)
		}
		rc, err := f.Open(context.Background(), h, c.off, size-c.off)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(f.path(h), c.cut); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("%s: range of a file cut to %d bytes read %d bytes, %v; want an error wrapping io.ErrUnexpectedEOF", c.name, c.cut, len(got), err)
		}
		if want := max(c.cut-c.off, 0); int64(len(got)) != want || !bytes.Equal(got, data[c.off:c.off+want]) {
			t.Errorf("%s: %d bytes before the error, want the %d the file still holds", c.name, len(got), want)
		}
	}
}

// A range whose pages are in the page cache already (a pack copied into
// the repository, or just read by a check) is read from there: a direct
// read would fetch from the disk what memory holds.
func TestFileOpenCachedRangeTakesPageCache(t *testing.T) {
	f, err := CreateFile(directDir(t))
	if err != nil {
		t.Fatal(err)
	}
	data := disktest.RandBytes(6, 3<<20)
	h := Handle{Type: Pack, Name: "ff01"}
	if err := f.Save(context.Background(), h, data); err != nil {
		t.Fatal(err)
	}
	direct := func() bool {
		rc, err := f.Open(context.Background(), h, 0, int64(len(data)))
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		got, err := io.ReadAll(rc)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("stream of the pack: %d bytes, %v; want the %d saved", len(got), err, len(data))
		}
		return rc.(*fileRange).buf != nil
	}
	evict(t, f.path(h))
	if !direct() {
		t.Error("a pack not in the page cache was read through it, want O_DIRECT")
	}
	if _, err := f.Load(context.Background(), h, 0, 0); err != nil {
		t.Fatal(err)
	}
	if direct() {
		t.Error("a pack in the page cache was read with O_DIRECT, want the page cache")
	}
}
