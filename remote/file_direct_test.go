package remote

import (
	"bytes"
	"context"
	"os"
	"testing"

	"github.com/keepfs/keepfs/remote/disktest"
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
