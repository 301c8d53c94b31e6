package versions_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/pack"
	"github.com/keepfs/keepfs/repo/tree"
)

// A file with holes reads through .versions as its data with zeros around
// it, fetching nothing for the holes, and lseek finds its data and holes.
func TestVersionsSparse(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	data := bytes.Repeat([]byte("sparse"), 1000)
	id, _, err := e.r.SaveBlob(ctx, pack.Data, data)
	if err != nil {
		t.Fatal(err)
	}
	const hole = uint64(1) << 40
	nd := &tree.Node{Name: "f", Type: tree.File, Mode: 0o644, Size: hole + uint64(len(data)) + hole}
	nd.SetPieces([]tree.Piece{{Hole: hole}, {ID: id}, {Hole: hole}})
	tid, err := e.r.SaveTree(ctx, &tree.Tree{Nodes: []*tree.Node{nd}})
	if err != nil {
		t.Fatal(err)
	}
	sn := &repo.Snapshot{Time: e.when, Tree: tid}
	if err := e.r.SaveSnapshot(ctx, sn); err != nil {
		t.Fatal(err)
	}
	e.root.Refresh()
	f, err := os.Open(filepath.Join(e.mnt, sn.Name(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil || uint64(st.Size) != nd.Size || st.Blocks != int64(len(data)+511)/512 {
		t.Fatalf("size %d (want %d), %d blocks: %v", st.Size, nd.Size, st.Blocks, err)
	}
	start := time.Now()
	got := make([]byte, len(data)+8192)
	if _, err := f.ReadAt(got, int64(hole)-4096); err != nil {
		t.Fatal(err)
	}
	want := append(append(make([]byte, 4096), data...), make([]byte, 4096)...)
	if !bytes.Equal(got, want) {
		t.Fatal("data and holes read wrong")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("reading around a hole took %v", d)
	}
	fd := int(f.Fd())
	for _, c := range []struct {
		off    int64
		whence int
		want   int64
		errno  error
	}{
		{0, unix.SEEK_DATA, int64(hole), nil},
		{0, unix.SEEK_HOLE, 0, nil},
		{int64(hole) + 1, unix.SEEK_HOLE, int64(hole) + int64(len(data)), nil},
		{int64(hole) + int64(len(data)), unix.SEEK_DATA, 0, unix.ENXIO},
	} {
		got, err := unix.Seek(fd, c.off, c.whence)
		if c.errno != nil {
			if err != c.errno {
				t.Errorf("lseek(%d, %d): %d, %v; want %v", c.off, c.whence, got, err, c.errno)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("lseek(%d, %d) = %d, %v; want %d", c.off, c.whence, got, err, c.want)
		}
	}
}
