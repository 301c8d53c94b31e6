package restorer_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/archiver"
	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/history"
	"github.com/keepfs/keepfs/repo/pack"
	"github.com/keepfs/keepfs/repo/restorer"
	"github.com/keepfs/keepfs/repo/tree"
)

// A file with holes restores as a sparse file: the holes are not written
// (the restored file takes the blocks of its data only), a trailing hole
// sets the size, and the content reads as the holes' zeros around the data.
func TestRestoreSparse(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t)
	data := bytes.Repeat([]byte("data"), 1024)
	id, _, err := r.SaveBlob(ctx, pack.Data, data)
	must(t, err)
	const hole = 1 << 30
	size := uint64(hole + len(data) + hole)
	nd := &tree.Node{Name: "sparse", Type: tree.File, Mode: 0o644, Size: size, Content: nil}
	nd.SetPieces([]tree.Piece{{Hole: hole}, {ID: id}, {Hole: hole}})
	tr := &tree.Tree{Nodes: []*tree.Node{nd, {Name: "tail", Type: tree.File, Mode: 0o600, Size: 5 << 20, Holes: []tree.Hole{{At: 0, Len: 5 << 20}}}}}
	tid, err := r.SaveTree(ctx, tr)
	must(t, err)
	sn := &repo.Snapshot{Time: time.Now(), Tree: tid}
	must(t, r.SaveSnapshot(ctx, sn))
	// Content ids tell holes apart and leave hole-free files' ids alone.
	moved := &tree.Node{Type: tree.File, Content: []crypto.ID{id}, Holes: []tree.Hole{{At: 0, Len: hole + 1}, {At: 1, Len: hole - 1}}}
	if history.ContentID(r.Key(), nd) == history.ContentID(r.Key(), moved) ||
		history.ContentID(r.Key(), &tree.Node{Content: []crypto.ID{id}}) != r.Key().BlobID(id[:]) {
		t.Fatal("content ids of sparse files")
	}

	dst := t.TempDir()
	_, err = restorer.Restore(ctx, r, sn, []string{"/"}, dst, restorer.Options{})
	must(t, err)
	p := filepath.Join(dst, "sparse")
	var st unix.Stat_t
	must(t, unix.Stat(p, &st))
	if uint64(st.Size) != size {
		t.Fatalf("size %d, want %d", st.Size, size)
	}
	if st.Blocks*512 > 1<<20 {
		t.Fatalf("restored file takes %d bytes on disk: holes were written", st.Blocks*512)
	}
	f, err := os.Open(p)
	must(t, err)
	defer f.Close()
	got := make([]byte, len(data)+200)
	_, err = f.ReadAt(got, hole-100)
	must(t, err)
	want := append(append(make([]byte, 100), data...), make([]byte, 100)...)
	if !bytes.Equal(got, want) {
		t.Fatal("restored content differs around the data")
	}
	if off, err := unix.Seek(int(f.Fd()), 0, unix.SEEK_DATA); err == nil && off != hole {
		t.Errorf("SEEK_DATA in the restored file = %d, want %d", off, hole)
	}
	must(t, unix.Stat(filepath.Join(dst, "tail"), &st))
	if st.Size != 5<<20 || st.Blocks != 0 {
		t.Fatalf("all-hole file: size %d, %d blocks", st.Size, st.Blocks)
	}
}

// Import records the holes of a sparse file (those of tree.MinHole or
// more) without reading them, an unchanged sparse file keeps them in the
// next import, and restore brings the file back sparse and byte for byte.
func TestImportRestoreSparse(t *testing.T) {
	ctx := context.Background()
	src := t.TempDir()
	p := filepath.Join(src, "disk.img")
	f, err := os.Create(p)
	must(t, err)
	const size = 3 << 30
	parts := map[int64]string{0: "head", 1 << 30: "middle", size - 4: "tail", 2<<30 + 100: "after a small hole", 2<<30 + 100 + 18 + 64<<10: "near"}
	for off, s := range parts {
		_, err := f.WriteAt([]byte(s), off)
		must(t, err)
	}
	// (the 64 KiB gap before "near" is too small a hole: chunked as zeros)
	must(t, f.Close())
	var st unix.Stat_t
	must(t, unix.Stat(p, &st))
	if st.Blocks*512 > 1<<20 {
		t.Skipf("the temporary directory's file system does not keep holes (%d blocks)", st.Blocks)
	}
	r := newRepo(t)
	start := time.Now()
	sn, _, err := archiver.Import(ctx, r, src, archiver.Options{})
	must(t, err)
	took := time.Since(start)
	tr, err := r.LoadTree(ctx, sn.Tree)
	must(t, err)
	nd := tr.Find("disk.img")
	var holes uint64
	for _, h := range nd.Holes {
		holes += h.Len
	}
	if nd.Size != size || holes < size-16<<20 {
		t.Fatalf("imported node: size %d, %d bytes of holes in %+v (import took %v)", nd.Size, holes, nd.Holes, took)
	}
	// The next import of the unchanged file keeps its content and holes.
	sn2, _, err := archiver.Import(ctx, r, src, archiver.Options{Parent: sn})
	must(t, err)
	if sn2.Tree != sn.Tree {
		t.Fatal("an unchanged sparse file changed the tree")
	}
	dst := t.TempDir()
	_, err = restorer.Restore(ctx, r, sn, []string{"/"}, dst, restorer.Options{})
	must(t, err)
	out := filepath.Join(dst, "disk.img")
	must(t, unix.Stat(out, &st))
	if st.Size != size || st.Blocks*512 > 16<<20 {
		t.Fatalf("restored: size %d, %d blocks", st.Size, st.Blocks)
	}
	g, err := os.Open(out)
	must(t, err)
	defer g.Close()
	for off, s := range parts {
		b := make([]byte, len(s)+2)
		if off+int64(len(b)) > size {
			off -= 2
			s = "\x00\x00" + s
		}
		_, err := g.ReadAt(b, off)
		must(t, err)
		if want := s; !bytes.HasPrefix(append(b, 0, 0), []byte(want)) {
			t.Fatalf("at %d: %q, want %q", off, b, want)
		}
	}
}
