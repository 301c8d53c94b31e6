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
