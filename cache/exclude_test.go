package cache

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/keepfs/keepfs/cache/upload"
	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/remote/disktest"
	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/pack"
	"github.com/keepfs/keepfs/repo/tree"
)

// remoteBytes is the size of everything the remote holds.
func remoteBytes(t *testing.T, be remote.Storage) int64 {
	t.Helper()
	var n int64
	for _, typ := range remote.Types {
		if err := be.List(context.Background(), typ, func(fi remote.Info) error {
			n += fi.Size
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	return n
}

// TestCommitsNeverQueue: a commit stores chunks locally only; the upload
// queue is what a snapshot walk decided, so a file excluded after its
// close never leaves (DESIGN invariant 7).
func TestCommitsNeverQueue(t *testing.T) {
	ctx := context.Background()
	be := remote.NewMem()
	c := openCache(t, newRepo(t, be), t.TempDir())
	defer c.Close(ctx)
	if _, err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	before := remoteBytes(t, be)
	ino := writeFile(t, c, c.Root(), "scan.raw", randBytes(21, 6<<20))
	if st := c.Status(); st.QueueBlobs != 0 {
		t.Fatalf("a commit queued chunks: %+v", st)
	}
	writeFile(t, c, c.Root(), ".gdprignore", []byte("scan.raw\n"))
	sn, err := c.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Repository().Lookup(ctx, sn.Tree, "/scan.raw"); !errors.Is(err, repo.ErrPathNotFound) {
		t.Fatalf("/scan.raw in the snapshot: %v", err)
	}
	n, _ := c.getInode(ino)
	for _, ch := range n.Chunks {
		if c.Repository().Index().Has(pack.Data, ch.ID) {
			t.Fatal("a chunk of the excluded file is in the repository")
		}
	}
	if grew := remoteBytes(t, be) - before; grew > 1<<20 {
		t.Fatalf("the remote grew %d bytes for a 6 MiB excluded file", grew)
	}
}

// TestUnreadableIgnoreExcludes: a .gdprignore that cannot be read excludes
// everything in its directory (never includes it), the rest of the tree
// is backed up, and once it reads again the directory is walked again.
func TestUnreadableIgnoreExcludes(t *testing.T) {
	ctx := context.Background()
	be := remote.NewMem()
	c := openCache(t, newRepo(t, be), disktest.TempDir(t))
	defer func() {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		c.Close(cctx)
	}()
	d, err := c.Create(ctx, c.Root(), "d", NewNode{Type: tree.Dir, Mode: 0o755})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := c.Create(ctx, d.Ino, "sub", NewNode{Type: tree.Dir, Mode: 0o755})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, c, d.Ino, "medical.raw", randBytes(22, 3<<20))
	writeFile(t, c, sub.Ino, "deeper.raw", randBytes(23, 1<<20))
	// Big enough (past the largest chunk kept in a segment) to be kept in a chunk file of its own.
	rules := []byte(strings.Repeat("# a long comment to make the file big\n", 8000) + "nothing-matches\n")
	ig := writeFile(t, c, d.Ino, ".gdprignore", rules)
	writeFile(t, c, c.Root(), "other", []byte("backed up"))
	n, err := c.getInode(ig)
	if err != nil || len(n.Chunks) != 1 {
		t.Fatalf("ignore file: %v, %d chunks", err, len(n.Chunks))
	}
	p := c.chunks.FilePath(n.Chunks[0].ID)
	good, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("the ignore file's chunk is not in a file: %v", err)
	}
	bad := bytes.Clone(good)
	for i := len(bad) / 2; i < len(bad)/2+64; i++ {
		bad[i] ^= 0xff
	}
	if err := os.WriteFile(p, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	c.chunks.Uncache(n.Chunks[0].ID)
	if _, err := c.readAll(ctx, n); err == nil {
		t.Fatal("the damaged ignore file still reads")
	}
	before := remoteBytes(t, be)
	sn, err := c.Sync(ctx)
	if err != nil {
		t.Fatalf("sync with an unreadable .gdprignore: %v", err)
	}
	r := c.Repository()
	if got := snapshotFile(t, r, sn, "/other"); string(got) != "backed up" {
		t.Fatalf("/other: %q", got)
	}
	if nd, err := r.Lookup(ctx, sn.Tree, "/d"); err != nil || nd.Type != tree.Dir {
		t.Fatalf("/d: %v", err)
	}
	for _, p := range []string{"/d/medical.raw", "/d/sub", "/d/.gdprignore"} {
		if _, err := r.Lookup(ctx, sn.Tree, p); !errors.Is(err, repo.ErrPathNotFound) {
			t.Fatalf("%s in the snapshot under an unreadable .gdprignore: %v", p, err)
		}
	}
	if grew := remoteBytes(t, be) - before; grew > 1<<20 {
		t.Fatalf("the remote grew %d bytes for 4 MiB under an unreadable .gdprignore", grew)
	}
	// Repaired without any change to /d: the next snapshot walks /d again
	// rather than reusing its tree.
	if err := os.WriteFile(p, good, 0o600); err != nil {
		t.Fatal(err)
	}
	writeFile(t, c, c.Root(), "other", []byte("changed"))
	if sn, err = c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/d/medical.raw", "/d/sub/deeper.raw", "/d/.gdprignore"} {
		if _, err := r.Lookup(ctx, sn.Tree, p); err != nil {
			t.Fatalf("%s once the .gdprignore reads again: %v", p, err)
		}
	}
}

// TestStaleQueueNotUploaded: entries queued by a snapshot whose upload
// failed are not uploaded once the file is excluded: the next walk sets
// the queue, and the uploader does not work on a queue older than the
// namespace.
func TestStaleQueueNotUploaded(t *testing.T) {
	ctx := context.Background()
	mem, f, _, c := faultyCache(t)
	defer func() {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		c.Close(cctx)
	}()
	writeFile(t, c, c.Root(), "scan.raw", randBytes(24, 4<<20))
	f.Break()
	// Long enough for the walk to queue the file on a loaded machine;
	// the drain fails and retries until then.
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	_, err := c.Sync(sctx)
	cancel()
	if err == nil {
		t.Fatal("sync succeeded with the remote down")
	}
	if st := c.Status(); st.QueueBlobs == 0 {
		t.Fatalf("the failed snapshot queued nothing: %+v", st)
	}
	writeFile(t, c, c.Root(), ".gdprignore", []byte("scan.raw\n"))
	before := remoteBytes(t, mem)
	f.Heal()
	time.Sleep(3 * upload.Delay) // the uploader's retry would have run
	if grew := remoteBytes(t, mem) - before; grew > 1<<20 {
		t.Fatalf("the uploader shipped %d bytes of a file excluded since its walk", grew)
	}
	if _, err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if grew := remoteBytes(t, mem) - before; grew > 1<<20 {
		t.Fatalf("the remote grew %d bytes for an excluded file", grew)
	}
	if st := c.Status(); st.QueueBlobs != 0 {
		t.Fatalf("queue after sync: %+v", st)
	}
}

// TestIgnoreDuringUploadStopsIt: a .gdprignore written a moment after the
// file it excludes, when a snapshot's upload of that file has already
// begun (the periodic snapshot caught the file alone). The upload stops
// before the bytes leave, measured by the remote's size with
// incompressible data, and the sync stores a snapshot without the file.
func TestIgnoreDuringUploadStopsIt(t *testing.T) {
	ignoreStopsUpload(t, ".gdprignore", nil)
}

// A .gdprignore that is a hard link of a file recorded under another name
// stops uploads when written through that name, after a restart too.
func TestIgnoreLinkedUnderAnotherNameStopsUpload(t *testing.T) {
	ignoreStopsUpload(t, "rules.txt", func(t *testing.T, c *Cache) {
		ctx := context.Background()
		ino := writeFile(t, c, c.Root(), "rules.txt", []byte("# nothing yet\n"))
		if _, err := c.Link(ctx, ino, c.Root(), ".gdprignore"); err != nil {
			t.Fatal(err)
		}
	})
}

// ignoreStopsUpload writes "*.raw" into the file named rules while a 6 MiB
// .raw file's pack is being uploaded, and checks that the upload stopped.
// prepare, if set, runs on the cache before it is closed and reopened.
func ignoreStopsUpload(t *testing.T, rules string, prepare func(*testing.T, *Cache)) {
	ctx := context.Background()
	mem, f, sdir, c := faultyCache(t)
	if prepare != nil {
		prepare(t, c)
		if err := c.Close(ctx); err != nil {
			t.Fatal(err)
		}
		c = openCache(t, reopenRepo(t, f), sdir)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		c.Close(cctx)
	}()
	if _, err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	before := remoteBytes(t, mem)
	saves := f.Calls(remote.OpSave)
	writeFile(t, c, c.Root(), "scan.raw", randBytes(31, 6<<20))
	// A slow link: the pack's upload is still under way when the
	// .gdprignore comes.
	f.SetDelay(5 * time.Second)
	type result struct {
		sn  *repo.Snapshot
		err error
	}
	done := make(chan result, 1)
	go func() {
		sn, err := c.Sync(ctx)
		done <- result{sn, err}
	}()
	for deadline := time.Now().Add(30 * time.Second); f.Calls(remote.OpSave) == saves; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the sync never began uploading")
		}
	}
	writeFile(t, c, c.Root(), rules, []byte("*.raw\n"))
	f.SetDelay(0)
	var res result
	select {
	case res = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("the sync did not return")
	}
	if res.err != nil {
		t.Fatal(res.err)
	}
	if grew := remoteBytes(t, mem) - before; grew > 1<<20 {
		t.Fatalf("the remote grew %d bytes for a 6 MiB file excluded during its upload", grew)
	}
	if _, err := c.Repository().Lookup(ctx, res.sn.Tree, "/scan.raw"); !errors.Is(err, repo.ErrPathNotFound) {
		t.Fatalf("/scan.raw in the snapshot: %v", err)
	}
	if _, err := c.Repository().Lookup(ctx, res.sn.Tree, "/.gdprignore"); err != nil {
		t.Fatalf("the .gdprignore is not in the snapshot: %v", err)
	}
}
