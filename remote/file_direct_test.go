package remote

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// directDir is a temporary directory where O_DIRECT writes bypass the page
// cache, or the test is skipped: tmpfs accepts O_DIRECT (Linux 6.6 on) but
// its pages are the file, and some file systems refuse it.
func directDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	var sfs unix.Statfs_t
	if err := unix.Statfs(dir, &sfs); err != nil {
		t.Fatal(err)
	}
	if sfs.Type == unix.TMPFS_MAGIC {
		t.Skip("temporary directory is on tmpfs: no page cache to bypass")
	}
	f, err := os.CreateTemp(dir, "probe")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := setDirect(f, true); err != nil {
		t.Skipf("temporary directory refuses O_DIRECT: %v", err)
	}
	return dir
}

func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, 0))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
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
	data := randomBytes(3<<20+100, 1)
	h := Handle{Type: Pack, Name: "aa01"}
	if err := f.Save(context.Background(), h, data); err != nil {
		t.Fatal(err)
	}
	fd, err := os.Open(f.path(h))
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	m, err := unix.Mmap(int(fd.Fd()), 0, len(data), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	pages := (len(data) + os.Getpagesize() - 1) / os.Getpagesize()
	vec := make([]byte, pages)
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		t.Fatal(errno)
	}
	resident := 0
	for _, v := range vec {
		resident += int(v & 1)
	}
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
	big := randomBytes(writeSlice+directMin+2*directAlign, 2)
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
