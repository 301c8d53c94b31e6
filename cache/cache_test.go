package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keepfs/keepfs/cache/namespace"
	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/remote/disktest"
	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/repotest"
	"github.com/keepfs/keepfs/repo/tree"
)

// The tests' repositories: repotest's, with its test key derivation.
var newRepo, reopenRepo = repotest.Create, repotest.Open

func quietLogger() *slog.Logger {
	if os.Getenv("KEEPFS_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func openCache(t testing.TB, r *repo.Repository, dir string) *Cache {
	t.Helper()
	return openCacheWith(t, r, Options{StateDir: dir})
}

// testClock is a settable clock for Options.Now, safe to read from the
// mount's goroutines while the test moves it on.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func newTestClock() *testClock {
	return &testClock{t: time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// openCacheWith is openCache with more options; the snapshot interval and
// logger default to openCache's.
func openCacheWith(t testing.TB, r *repo.Repository, o Options) *Cache {
	t.Helper()
	if o.SnapshotInterval == 0 {
		o.SnapshotInterval = time.Hour
	}
	if o.Logger == nil {
		o.Logger = quietLogger()
	}
	c, err := Open(context.Background(), r, o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var randBytes = disktest.RandBytes

// writeFile creates (or replaces the content of) name in dir and closes it.
func writeFile(t testing.TB, c *Cache, dir uint64, name string, data []byte) uint64 {
	t.Helper()
	return putFile(t, c, dir, name, data, false)
}

// fsyncFile is writeFile with an fsync before the close.
func fsyncFile(t testing.TB, c *Cache, dir uint64, name string, data []byte) uint64 {
	t.Helper()
	return putFile(t, c, dir, name, data, true)
}

func putFile(t testing.TB, c *Cache, dir uint64, name string, data []byte, fsync bool) uint64 {
	t.Helper()
	ctx := context.Background()
	a, err := c.Lookup(ctx, dir, name)
	if errors.Is(err, ErrNotFound) {
		a, err = c.Create(ctx, dir, name, NewNode{Type: tree.File, Mode: 0o644})
	}
	if err != nil {
		t.Fatal(err)
	}
	h, err := c.OpenFile(ctx, a.Ino, uint32(os.O_WRONLY|os.O_TRUNC))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.WriteAt(ctx, data, 0); err != nil {
		t.Fatal(err)
	}
	if fsync {
		if err := h.Fsync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
	return a.Ino
}

// createOpen creates an empty file name in dir and opens it read-write.
func createOpen(t testing.TB, c *Cache, dir uint64, name string) (Attr, *Handle) {
	t.Helper()
	ctx := context.Background()
	a, err := c.Create(ctx, dir, name, NewNode{Type: tree.File, Mode: 0o644})
	if err != nil {
		t.Fatal(err)
	}
	h, err := c.OpenFile(ctx, a.Ino, uint32(os.O_RDWR))
	if err != nil {
		t.Fatal(err)
	}
	return a, h
}

// wantContent fails t with msg unless ino reads as want.
func wantContent(t testing.TB, c *Cache, ino uint64, want []byte, msg string) {
	t.Helper()
	if got := readFile(t, c, ino); !bytes.Equal(got, want) {
		t.Fatalf("%s (%d bytes, want %d)", msg, len(got), len(want))
	}
}

func readFile(t testing.TB, c *Cache, ino uint64) []byte {
	t.Helper()
	b, err := readAllOf(context.Background(), c, ino)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// readAllOf is readFile for goroutines other than the test's.
func readAllOf(ctx context.Context, c *Cache, ino uint64) ([]byte, error) {
	h, err := c.OpenFile(ctx, ino, uint32(os.O_RDONLY))
	if err != nil {
		return nil, err
	}
	defer h.Release(ctx)
	var out []byte
	buf := make([]byte, 128<<10)
	for off := int64(0); ; {
		n, err := h.ReadAt(ctx, buf, off)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return out, nil
		}
		out = append(out, buf[:n]...)
		off += int64(n)
	}
}

// closeAndReopen syncs c, closes it and opens the repository anew in a
// fresh state directory (be's content only), for the caller to close.
func closeAndReopen(t *testing.T, c *Cache, be remote.Storage) *Cache {
	t.Helper()
	ctx := context.Background()
	if _, err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	return openCache(t, reopenRepo(t, be), t.TempDir())
}

func lookupPath(t testing.TB, c *Cache, p string) Attr {
	t.Helper()
	a, err := c.GetAttr(context.Background(), c.Root())
	if err != nil {
		t.Fatal(err)
	}
	for _, part := range strings.Split(strings.Trim(p, "/"), "/") {
		if a, err = c.Lookup(context.Background(), a.Ino, part); err != nil {
			t.Fatalf("lookup %s: %v", p, err)
		}
	}
	return a
}

func TestNamespace(t *testing.T) {
	ctx := context.Background()
	be := remote.NewMem()
	c := openCache(t, newRepo(t, be), t.TempDir())
	defer c.Close(ctx)
	root := c.Root()
	d, err := c.Create(ctx, root, "dir", NewNode{Type: tree.Dir, Mode: 0o2775, GID: 42})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Create(ctx, root, "dir", NewNode{Type: tree.Dir, Mode: 0o755}); !errors.Is(err, ErrExists) {
		t.Fatalf("second mkdir: %v, want ErrExists", err)
	}
	// setgid directory: group and setgid bit inherited.
	sub, err := c.Create(ctx, d.Ino, "sub", NewNode{Type: tree.Dir, Mode: 0o755, GID: 7})
	if err != nil {
		t.Fatal(err)
	}
	if sub.GID != 42 || sub.Mode&0o2000 == 0 {
		t.Fatalf("subdir of setgid dir: gid %d mode %o", sub.GID, sub.Mode)
	}
	f := writeFile(t, c, d.Ino, "a", []byte("hello"))
	if _, err := c.Link(ctx, f, root, "hard"); err != nil {
		t.Fatal(err)
	}
	if a, _ := c.GetAttr(ctx, f); a.Nlink != 2 {
		t.Fatalf("nlink %d after link", a.Nlink)
	}
	if err := c.Rmdir(ctx, root, "dir"); !errors.Is(err, ErrNotEmpty) {
		t.Fatalf("rmdir non-empty: %v", err)
	}
	if err := c.Rename(ctx, d.Ino, "a", root, "b", namespace.RenameNoReplace); err != nil {
		t.Fatal(err)
	}
	if err := c.Rename(ctx, root, "b", root, "hard", namespace.RenameNoReplace); !errors.Is(err, ErrExists) {
		t.Fatalf("rename noreplace onto existing: %v", err)
	}
	if _, err := c.Create(ctx, root, "ln", NewNode{Type: tree.Symlink, Target: "b"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Rename(ctx, root, "b", root, "ln", namespace.RenameExchange); err != nil {
		t.Fatal(err)
	}
	if a := lookupPath(t, c, "ln"); a.Type != tree.File {
		t.Fatalf("after exchange ln is %v", a.Type)
	}
	if a := lookupPath(t, c, "b"); a.Type != tree.Symlink {
		t.Fatalf("after exchange b is %v", a.Type)
	}
	long := strings.Repeat("x", 255)
	if _, err := c.Create(ctx, root, long, NewNode{Type: tree.File, Mode: 0}); err != nil {
		t.Fatalf("255-byte name: %v", err)
	}
	if a := lookupPath(t, c, long); a.Mode != 0 {
		t.Fatalf("mode 0000 became %o", a.Mode)
	}
	if _, err := c.Create(ctx, root, long+"y", NewNode{Type: tree.File}); !errors.Is(err, ErrNameTooLong) {
		t.Fatalf("256-byte name: %v", err)
	}
	odd := "\xff\x01name\twith\nbytes"
	writeFile(t, c, root, odd, []byte("x"))
	if err := c.SetXattr(ctx, f, "user.k", []byte("v"), namespace.XattrCreate); err != nil {
		t.Fatal(err)
	}
	if err := c.SetXattr(ctx, f, "user.k", []byte("v"), namespace.XattrCreate); !errors.Is(err, ErrExists) {
		t.Fatalf("xattr create twice: %v", err)
	}
	if v, err := c.GetXattr(ctx, f, "user.k"); err != nil || string(v) != "v" {
		t.Fatalf("getxattr: %q %v", v, err)
	}
	ents, err := c.ReadDir(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 6 {
		t.Fatalf("root has %d entries: %v", len(ents), ents)
	}
	// Unlink of an open file: content stays readable through the handle.
	h, err := c.OpenFile(ctx, f, uint32(os.O_RDONLY))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"ln", "hard"} {
		if err := c.Unlink(ctx, root, n); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 10)
	if n, err := h.ReadAt(ctx, buf, 0); err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("read of unlinked open file: %q %v", buf[:n], err)
	}
	h.Release(ctx)
	if _, err := c.GetAttr(ctx, f); !errors.Is(err, ErrNotFound) {
		t.Fatalf("inode after last close of unlinked file: %v", err)
	}
}

func TestSparseAndTruncate(t *testing.T) {
	ctx := context.Background()
	c := openCache(t, newRepo(t, remote.NewMem()), t.TempDir())
	defer c.Close(ctx)
	a, _ := c.Create(ctx, c.Root(), "s", NewNode{Type: tree.File, Mode: 0o644})
	h, _ := c.OpenFile(ctx, a.Ino, uint32(os.O_RDWR))
	h.WriteAt(ctx, []byte("end"), 3<<20)
	h.Flush(ctx)
	want := make([]byte, 3<<20+3)
	copy(want[3<<20:], "end")
	if got := readFile(t, c, a.Ino); !bytes.Equal(got, want) {
		t.Fatalf("sparse file: %d bytes, want %d", len(got), len(want))
	}
	// shrink, then grow: the gap reads as zeros, not old data.
	base := randBytes(1, 2<<20)
	h.WriteAt(ctx, base, 0)
	h.f.truncate(ctx, 100)
	h.f.truncate(ctx, 200)
	h.Flush(ctx)
	want = append(append([]byte{}, base[:100]...), make([]byte, 100)...)
	if got := readFile(t, c, a.Ino); !bytes.Equal(got, want) {
		t.Fatalf("shrink+grow: got %d bytes", len(got))
	}
	h.Release(ctx)
}

// TestCommitCost pins that commit cost grows with changed bytes: a 1-byte
// change in a 64 MiB file stores a few new chunks, not the file.
func TestCommitCost(t *testing.T) {
	ctx := context.Background()
	c := openCache(t, newRepo(t, remote.NewMem()), t.TempDir())
	defer c.Close(ctx)
	data := randBytes(2, 64<<20)
	ino := writeFile(t, c, c.Root(), "big", data)
	n, _ := c.getInode(ino)
	if len(n.Chunks) < 20 {
		t.Fatalf("64 MiB in only %d chunks", len(n.Chunks))
	}
	c.mu.Lock()
	q0 := int(c.chunks.Stored())
	c.mu.Unlock()
	for i, off := range []int64{40 << 20, 5, int64(len(data) - 1)} {
		h, _ := c.OpenFile(ctx, ino, uint32(os.O_RDWR))
		if _, err := h.WriteAt(ctx, []byte{byte(i+1) ^ data[off]}, off); err != nil {
			t.Fatal(err)
		}
		data[off] ^= byte(i + 1)
		if err := h.Release(ctx); err != nil {
			t.Fatal(err)
		}
		added := int(c.chunks.Stored()) - q0
		q0 = int(c.chunks.Stored())
		if added < 1 || added > 3 {
			t.Fatalf("1-byte change at %d queued %d new chunks, want 1..3", off, added)
		}
	}
	// Appends re-chunk only the tail.
	h, _ := c.OpenFile(ctx, ino, uint32(os.O_WRONLY|os.O_APPEND))
	h.WriteAt(ctx, []byte("tail"), 0)
	h.Release(ctx)
	data = append(data, "tail"...)
	added := int(c.chunks.Stored()) - q0
	if added > 3 {
		t.Fatalf("append queued %d chunks", added)
	}
	wantContent(t, c, ino, data, "content differs after partial re-chunking")
	// The partial re-chunk cuts the same chunks as a full one.
	n, _ = c.getInode(ino)
	full := writeFile(t, c, c.Root(), "copy", data)
	m, _ := c.getInode(full)
	if len(n.Chunks) != len(m.Chunks) {
		t.Fatalf("partial re-chunk gave %d chunks, full %d", len(n.Chunks), len(m.Chunks))
	}
	for i := range n.Chunks {
		if n.Chunks[i] != m.Chunks[i] {
			t.Fatalf("chunk %d differs between partial and full chunking", i)
		}
	}
}

// TestDurableAndRecovery: committed data survives a restart (queue
// included), syncs reach the remote, and a fresh state directory rebuilds
// the tree from the remote alone.
func TestDurableAndRecovery(t *testing.T) {
	ctx := context.Background()
	be := remote.NewMem()
	r := newRepo(t, be)
	dir := t.TempDir()
	c := openCache(t, r, dir)
	big := randBytes(3, 3<<20)
	d, _ := c.Create(ctx, c.Root(), "docs", NewNode{Type: tree.Dir, Mode: 0o755})
	writeFile(t, c, d.Ino, "big", big)
	writeFile(t, c, c.Root(), "small", []byte("small"))
	// Simulate a crash: close Badger without the final snapshot/drain.
	c.cancel()
	c.wg.Wait()
	c.dbp.Load().db.Close()
	c.ix.Close()
	c.lockFile.Close()

	c = openCache(t, reopenRepo(t, be), dir)
	wantContent(t, c, lookupPath(t, c, "docs/big").Ino, big, "big file differs after restart")
	var notified []*repo.Snapshot
	c.OnSnapshot(func(sn *repo.Snapshot) {
		notified = append(notified, sn)
		c.Sync(ctx) // callbacks may call back in
	})
	sn, err := c.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(notified) != 1 || notified[0] != sn {
		t.Fatalf("OnSnapshot saw %v, want the one new snapshot", notified)
	}
	if _, err := c.Sync(ctx); err != nil || len(notified) != 1 {
		t.Fatalf("a sync with nothing changed made a snapshot: %v", err)
	}
	if st := c.Status(); st.QueueBlobs != 0 || st.LastSnapshotID != sn.ID.String() || !st.RemoteReachable {
		t.Fatalf("status after sync: %+v", st)
	}
	if sn.Stats.Files != 2 {
		t.Fatalf("snapshot has %d files", sn.Stats.Files)
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}

	var reports []Progress
	fresh := openCacheWith(t, reopenRepo(t, be), Options{StateDir: t.TempDir(), Progress: func(p Progress) { reports = append(reports, p) }})
	defer fresh.Close(ctx)
	// The rebuild reports the directories it fetched, from none to all
	// (the root and docs).
	if n := len(reports); n < 2 || reports[0].Done != 0 || reports[n-1].Done != 2 || reports[n-1].Total != 2 || reports[n-1].Unit != "directories" {
		t.Fatalf("progress of the rebuild: %+v", reports)
	}
	if got := readFile(t, fresh, lookupPath(t, fresh, "docs/big").Ino); !bytes.Equal(got, big) {
		t.Fatal("big file differs after recovery from the remote")
	}
	if got := readFile(t, fresh, lookupPath(t, fresh, "small").Ino); string(got) != "small" {
		t.Fatalf("small: %q", got)
	}
	// Nothing changed: sync returns the recovered snapshot.
	sn2, err := fresh.Sync(ctx)
	if err != nil || sn2.ID != sn.ID {
		t.Fatalf("sync after recovery: %v, %v", sn2, err)
	}
}

func TestLocks(t *testing.T) {
	ctx := context.Background()
	be := remote.NewMem()
	r := newRepo(t, be)
	dir := t.TempDir()
	c := openCache(t, r, dir)
	defer c.Close(ctx)
	if _, err := Open(ctx, reopenRepo(t, be), Options{StateDir: dir, Logger: quietLogger()}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second open of a state dir: %v", err)
	}
	if _, err := Open(ctx, reopenRepo(t, be), Options{StateDir: t.TempDir(), Logger: quietLogger()}); !errors.Is(err, ErrRepoLocked) {
		t.Fatalf("second mount of a repository: %v", err)
	}
}

func TestIgnoreAndPlaintext(t *testing.T) {
	ctx := context.Background()
	be := remote.NewMem()
	dir := t.TempDir()
	c := openCache(t, newRepo(t, be), dir)
	writeFile(t, c, c.Root(), ".gdprignore", []byte("secret/\n*.tmp\n"))
	s, _ := c.Create(ctx, c.Root(), "secret", NewNode{Type: tree.Dir, Mode: 0o755})
	writeFile(t, c, s.Ino, "passport.txt", []byte("passport MARKER-55e1d0"))
	writeFile(t, c, c.Root(), "x.tmp", []byte("scratch MARKER-55e1d0"))
	writeFile(t, c, c.Root(), "jane-doe-contract.txt", []byte("contract MARKER-7f3a9c"))
	sn, err := c.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r := c.Repository()
	for _, p := range []string{"/secret", "/x.tmp"} {
		if _, err := r.Lookup(ctx, sn.Tree, p); !errors.Is(err, repo.ErrPathNotFound) {
			t.Fatalf("%s in snapshot: %v", p, err)
		}
	}
	if _, err := r.Lookup(ctx, sn.Tree, "/jane-doe-contract.txt"); err != nil {
		t.Fatal(err)
	}
	// Ignored files still work locally.
	if got := readFile(t, c, lookupPath(t, c, "secret/passport.txt").Ino); !bytes.Contains(got, []byte("passport")) {
		t.Fatal("ignored file unreadable")
	}
	// Un-ignoring takes effect at the next snapshot.
	writeFile(t, c, c.Root(), ".gdprignore", []byte("secret/\n"))
	sn, err = c.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Lookup(ctx, sn.Tree, "/x.tmp"); err != nil {
		t.Fatalf("x.tmp after un-ignoring: %v", err)
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for _, marker := range []string{"MARKER-55e1d0", "MARKER-7f3a9c", "jane-doe-contract", "passport.txt"} {
		if where := grepDir(t, dir, marker); where != "" {
			t.Errorf("plaintext %q in state dir: %s", marker, where)
		}
	}
	for _, obj := range allObjects(t, be) {
		if bytes.Contains(obj, []byte("MARKER-55e1d0")) || bytes.Contains(obj, []byte("passport")) {
			t.Error("ignored content reached the remote")
		}
	}
}

func grepDir(t *testing.T, dir, s string) string {
	var found string
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(b, []byte(s)) {
			found = p
		}
		return nil
	})
	return found
}

// TestFailingRemote: with the remote down the cache keeps working, Status
// says so, and the queue drains once it returns.
func TestFailingRemote(t *testing.T) {
	ctx := context.Background()
	mem := remote.NewMem()
	newRepo(t, mem)
	f := remote.NewFaulty(mem)
	c := openCache(t, reopenRepo(t, f), t.TempDir())
	defer func() {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		c.Close(cctx)
	}()
	f.Break()
	data := randBytes(4, 1<<20)
	ino := writeFile(t, c, c.Root(), "f", data)
	// Long enough for the walk to queue the file on a loaded machine;
	// the drain fails and retries until then.
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	_, err := c.Sync(sctx)
	cancel()
	if err == nil {
		t.Fatal("sync succeeded with the remote down")
	}
	st := c.Status()
	if st.RemoteReachable || st.QueueBlobs == 0 || st.LastError == "" {
		t.Fatalf("status with the remote down: %+v", st)
	}
	wantContent(t, c, ino, data, "read with the remote down")
	f.Heal()
	hctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if _, err := c.Sync(hctx); err != nil {
		t.Fatalf("sync after the remote came back: %v", err)
	}
	if st := c.Status(); !st.RemoteReachable || st.QueueBlobs != 0 {
		t.Fatalf("status after heal: %+v", st)
	}
}

func allObjects(t *testing.T, be remote.Storage) [][]byte {
	var out [][]byte
	for _, typ := range remote.Types {
		be.List(context.Background(), typ, func(fi remote.Info) error {
			b, err := remote.LoadAll(context.Background(), be, fi.Handle)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, b)
			return nil
		})
	}
	return out
}

// TestEviction: the cache keeps clean chunks within CacheSize, never drops
// what is not uploaded, and refetches evicted data from the remote.
func TestEviction(t *testing.T) {
	ctx := context.Background()
	be := remote.NewMem()
	c, err := Open(ctx, newRepo(t, be), Options{StateDir: t.TempDir(), CacheSize: 2 << 20, SnapshotInterval: time.Hour, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	files := map[uint64][]byte{}
	for i := 0; i < 4; i++ {
		data := randBytes(uint64(10+i), 3<<20)
		files[writeFile(t, c, c.Root(), fmt.Sprintf("f%d", i), data)] = data
	}
	// Nothing leaves before a snapshot decides it may (DESIGN invariant 7),
	// and nothing unuploaded is evicted meanwhile.
	if st := c.Status(); st.QueueBlobs != 0 || st.CacheBytes != 0 {
		t.Fatalf("before sync: %+v", st)
	}
	if _, err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if st := c.Status(); st.CacheBytes > 2<<20 || st.QueueBlobs != 0 {
		t.Fatalf("after sync: %+v", st)
	}
	for ino, data := range files {
		if !bytes.Equal(readFile(t, c, ino), data) {
			t.Fatal("evicted data not refetched correctly")
		}
	}
	if st := c.Status(); st.CacheBytes > 2<<20+8<<20 {
		t.Fatalf("cache grew to %d bytes", st.CacheBytes)
	}
}

// TestSnapshotReusesTrees: after a change deep in one branch, the next
// snapshot encodes only the directories on the changed path.
func TestSnapshotReusesTrees(t *testing.T) {
	ctx := context.Background()
	c := openCache(t, newRepo(t, remote.NewMem()), t.TempDir())
	defer c.Close(ctx)
	dir := c.Root()
	for _, n := range []string{"a", "b", "c"} {
		a, _ := c.Create(ctx, dir, n, NewNode{Type: tree.Dir, Mode: 0o755})
		dir = a.Ino
	}
	deep := writeFile(t, c, dir, "f", []byte("v1"))
	for _, n := range []string{"x", "y", "z"} {
		a, _ := c.Create(ctx, c.Root(), n, NewNode{Type: tree.Dir, Mode: 0o755})
		writeFile(t, c, a.Ino, "g", []byte(n))
	}
	first, err := c.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	before := c.Counters().TreesBuilt
	h, _ := c.OpenFile(ctx, deep, uint32(os.O_WRONLY))
	h.WriteAt(ctx, []byte("v2"), 0)
	h.Release(ctx)
	second, err := c.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if built := c.Counters().TreesBuilt - before; built != 4 {
		t.Fatalf("encoded %d trees after a change under /a/b/c, want 4 (root, a, b, c)", built)
	}
	if !second.Time.After(first.Time) {
		t.Fatalf("snapshot times %s then %s: not increasing", first.Time.Format(time.RFC3339Nano), second.Time.Format(time.RFC3339Nano))
	}
	if second.Parent == nil || *second.Parent != first.ID {
		t.Fatal("second snapshot does not name the first as parent")
	}
	r := c.Repository()
	n1, _ := r.Lookup(ctx, first.Tree, "/x")
	n2, _ := r.Lookup(ctx, second.Tree, "/x")
	if n1.Subtree != n2.Subtree {
		t.Fatal("unchanged subtree not shared between snapshots")
	}
}

// heldFlush starts h.Flush and returns once its commit is held inside,
// until release; fail, if set, is what the held commit then fails with.
// done gets Flush's result. Defer release after the cache's Close, so a
// failing test does not leave Close waiting for the commit.
func heldFlush(c *Cache, h *Handle, fail error) (done <-chan error, release func()) {
	reached, finish := make(chan struct{}), make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(finish) }) }
	var held atomic.Bool
	c.inCommit = func(ino uint64) error {
		if ino != h.Ino() || held.Swap(true) {
			return nil
		}
		close(reached)
		<-finish
		return fail
	}
	ch := make(chan error, 1)
	go func() { ch <- h.Flush(context.Background()) }()
	<-reached
	return ch, release
}

// within returns what ch gives, failing t if that takes 5 s: what sends it
// must not wait for a held commit.
func within[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(5 * time.Second):
		t.Fatalf("%s waited for the commit", what)
		panic("unreachable")
	}
}

// A commit holds its file for as long as the new bytes take to chunk and
// store; stat and lookups of the file must not wait for it, and must show
// what the commit is about to record.
func TestAttrsDuringCommit(t *testing.T) {
	ctx := context.Background()
	c := openCache(t, newRepo(t, remote.NewMem()), t.TempDir())
	defer c.Close(ctx)
	data := randBytes(62, 3<<20)
	a, h := createOpen(t, c, c.Root(), "f")
	if _, err := h.WriteAt(ctx, data, 0); err != nil {
		t.Fatal(err)
	}
	mode := uint32(0o600)
	if _, err := c.SetAttr(ctx, a.Ino, SetAttrIn{Mode: &mode}); err != nil {
		t.Fatal(err)
	}
	want, err := c.GetAttr(ctx, a.Ino)
	if err != nil {
		t.Fatal(err)
	}
	if want.Size != uint64(len(data)) || want.Mode&0o7777 != mode {
		t.Fatalf("before the commit: size %d mode %o, want %d and %o", want.Size, want.Mode&0o7777, len(data), mode)
	}
	done, release := heldFlush(c, h, nil)
	defer release()
	same := func(a Attr) bool {
		return a.Size == want.Size && a.Mtime == want.Mtime && a.Ctime == want.Ctime && a.Mode == want.Mode
	}
	got := make(chan error, 1)
	go func() {
		var err error
		for _, op := range []func() (Attr, error){
			func() (Attr, error) { return c.GetAttr(ctx, a.Ino) },
			func() (Attr, error) { return c.Lookup(ctx, c.Root(), "f") },
		} {
			a, e := op()
			if e == nil && !same(a) {
				e = fmt.Errorf("during the commit: %+v, want %+v", a, want)
			}
			err = errors.Join(err, e)
		}
		got <- err
	}()
	if err := within(t, got, "stat"); err != nil {
		t.Fatal(err)
	}
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	after, err := c.GetAttr(ctx, a.Ino)
	if err != nil {
		t.Fatal(err)
	}
	if !same(after) {
		t.Fatalf("after the commit: %+v, want %+v", after, want)
	}
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
	wantContent(t, c, a.Ino, data, "content after the commit differs")
}

// A read of a file while its commit runs goes ahead rather than wait for
// it, and reads the content the commit is recording.
func TestReadDuringCommit(t *testing.T) {
	ctx := context.Background()
	c := openCache(t, newRepo(t, remote.NewMem()), t.TempDir())
	defer c.Close(ctx)
	old := randBytes(63, 3<<20)
	a, h := createOpen(t, c, c.Root(), "f")
	if _, err := h.WriteAt(ctx, old, 0); err != nil {
		t.Fatal(err)
	}
	if err := h.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// Half of it changed, and it grew: reads need the committed chunks, the
	// staging and the hole between.
	data := bytes.Clone(old)
	copy(data[1<<20:], randBytes(64, 1<<20))
	data = append(data, make([]byte, 1<<20)...)
	copy(data[4<<20-10:], "the end...")
	for _, w := range []struct{ off, end int }{{1 << 20, 2 << 20}, {4<<20 - 10, 4 << 20}} {
		if _, err := h.WriteAt(ctx, data[w.off:w.end], int64(w.off)); err != nil {
			t.Fatal(err)
		}
	}
	done, release := heldFlush(c, h, nil)
	defer release()
	r, err := c.OpenFile(ctx, a.Ino, uint32(os.O_RDONLY))
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte, 1)
	go func() {
		b := make([]byte, len(data)+100)
		n, err := r.ReadAt(ctx, b, 0)
		if err != nil {
			t.Error(err)
		}
		got <- b[:n]
	}()
	if !bytes.Equal(within(t, got, "a read"), data) {
		t.Fatal("a read during the commit got other content")
	}
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(r.Release(ctx), h.Release(ctx)); err != nil {
		t.Fatal(err)
	}
	wantContent(t, c, a.Ino, data, "content after the commit differs")
}

// Readers racing commits that swap a file's chunks and empty its staging
// read the same content throughout (run with -race).
func TestReadsRaceCommits(t *testing.T) {
	ctx := context.Background()
	c := openCache(t, newRepo(t, remote.NewMem()), t.TempDir())
	defer c.Close(ctx)
	data := randBytes(65, 2<<20)
	a, h := createOpen(t, c, c.Root(), "f")
	if _, err := h.WriteAt(ctx, data, 0); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 3 {
		r, err := c.OpenFile(ctx, a.Ino, uint32(os.O_RDONLY))
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer r.Release(ctx)
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			b := make([]byte, 300<<10)
			for {
				select {
				case <-stop:
					return
				default:
				}
				off := rng.IntN(len(data))
				n, err := r.ReadAt(ctx, b[:1+rng.IntN(len(b)-1)], int64(off))
				if err != nil {
					t.Error(err)
					return
				}
				if !bytes.Equal(b[:n], data[off:off+n]) {
					t.Errorf("read at %d: other content", off)
					return
				}
			}
		}()
	}
	rng := rand.New(rand.NewPCG(9, 9))
	for range 30 {
		// Same bytes again: the content never changes, its representation
		// (staging, chunks) does at every commit.
		off := rng.IntN(len(data))
		end := min(len(data), off+rng.IntN(512<<10))
		if _, err := h.WriteAt(ctx, data[off:end], int64(off)); err != nil {
			t.Fatal(err)
		}
		if err := h.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

// A commit that fails lets its caller change the file at once: a reader
// it let in must be done before it returns.
func TestFailedCommitWaitsForReaders(t *testing.T) {
	ctx := context.Background()
	c := openCache(t, newRepo(t, remote.NewMem()), t.TempDir())
	defer c.Close(ctx)
	data := randBytes(66, 1<<20)
	a, h := createOpen(t, c, c.Root(), "f")
	if _, err := h.WriteAt(ctx, data, 0); err != nil {
		t.Fatal(err)
	}
	errInjected := errors.New("injected")
	done, failCommit := heldFlush(c, h, errInjected)
	defer failCommit()
	reading, finishRead := make(chan struct{}), make(chan struct{})
	var once sync.Once
	release := func() { once.Do(func() { close(finishRead) }) }
	defer release()
	c.inReadDuringCommit = func() {
		close(reading)
		<-finishRead
	}
	r, err := c.OpenFile(ctx, a.Ino, uint32(os.O_RDONLY))
	if err != nil {
		t.Fatal(err)
	}
	read := make(chan error, 1)
	b := make([]byte, 4096)
	go func() {
		_, err := r.ReadAt(ctx, b, 4096)
		read <- err
	}()
	within(t, reading, "a read")
	failCommit()
	select {
	case err := <-done:
		t.Fatalf("the failed commit returned (%v) with a reader inside", err)
	case <-time.After(200 * time.Millisecond):
	}
	release()
	if err := <-read; err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, errInjected) {
		t.Fatalf("commit: %v, want the injected failure", err)
	}
	if !bytes.Equal(b, data[4096:8192]) {
		t.Fatal("the read during the commit got other content")
	}
	c.inReadDuringCommit = nil
	if err := errors.Join(r.Release(ctx), h.Flush(ctx), h.Release(ctx)); err != nil {
		t.Fatal(err)
	}
	wantContent(t, c, a.Ino, data, "content after the commit differs")
}

// A SETATTR of an open file (futimens, say) that comes while a commit
// records the file's pending mode must answer with that mode. It read the
// inode before the commit wrote it and took the file once the commit had
// cleared the pending change, and answered with the mode from before the
// chmod: the kernel showed a 04755 file as 0000 for its attribute timeout.
func TestSetAttrDuringCommitAnswersThePendingMode(t *testing.T) {
	ctx := context.Background()
	c := openCache(t, newRepo(t, remote.NewMem()), t.TempDir())
	defer c.Close(ctx)
	a, h := createOpen(t, c, c.Root(), "f")
	if _, err := h.WriteAt(ctx, randBytes(64, 1<<20), 0); err != nil {
		t.Fatal(err)
	}
	mode := uint32(0o4755)
	if _, err := c.SetAttr(ctx, a.Ino, SetAttrIn{Mode: &mode}); err != nil {
		t.Fatal(err)
	}
	done, release := heldFlush(c, h, nil)
	defer release()
	mtime := int64(1e18)
	type result struct {
		a   Attr
		err error
	}
	got := make(chan result, 1)
	go func() {
		a, err := c.SetAttr(ctx, a.Ino, SetAttrIn{Mtime: &mtime})
		got <- result{a, err}
	}()
	time.Sleep(200 * time.Millisecond) // the SETATTR waits for the file
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	r := <-got
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.a.Mode&0o7777 != mode || r.a.Mtime != mtime {
		t.Errorf("SETATTR during the commit answered mode %o mtime %d, want %o and %d", r.a.Mode&0o7777, r.a.Mtime, mode, mtime)
	}
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := c.GetAttr(ctx, a.Ino); err != nil || st.Mode&0o7777 != mode || st.Mtime != mtime {
		t.Errorf("after: mode %o mtime %d (%v), want %o and %d", st.Mode&0o7777, st.Mtime, err, mode, mtime)
	}
}

// A write by a caller without CAP_FSETID that comes while a commit records
// a chmod must not bring back the mode from before it: the kill of setuid
// started from the inode read before the commit, 04755, and made it 0755
// where the chmod had said 0700.
func TestKillPrivDuringCommitKeepsThePendingMode(t *testing.T) {
	ctx := context.Background()
	c := openCache(t, newRepo(t, remote.NewMem()), t.TempDir())
	defer c.Close(ctx)
	a, h := createOpen(t, c, c.Root(), "f")
	suid := uint32(0o4755)
	if _, err := c.SetAttr(ctx, a.Ino, SetAttrIn{Mode: &suid}); err != nil {
		t.Fatal(err)
	}
	if err := h.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := h.WriteAt(ctx, randBytes(65, 1<<20), 0); err != nil {
		t.Fatal(err)
	}
	mode := uint32(0o700)
	if _, err := c.SetAttr(ctx, a.Ino, SetAttrIn{Mode: &mode}); err != nil {
		t.Fatal(err)
	}
	done, release := heldFlush(c, h, nil)
	defer release()
	got := make(chan error, 1)
	go func() { got <- c.KillPriv(ctx, a.Ino, true) }()
	time.Sleep(200 * time.Millisecond) // the kill waits for the file
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := c.GetAttr(ctx, a.Ino); err != nil || st.Mode&0o7777 != mode {
		t.Errorf("mode %o (%v), want %o", st.Mode&0o7777, err, mode)
	}
}

// Link must not wait for an open file's lock while it holds the namespace
// lock: a commit holds the file's lock and then takes the namespace lock to
// write the inode, so a hard link made while another handle of the file
// closed hung both, and every later request on the mount (found by a
// lockstep soak: LINK, FLUSH and UNLINK stuck for good).
func TestLinkDuringCommitDoesNotDeadlock(t *testing.T) {
	ctx := context.Background()
	c := openCache(t, newRepo(t, remote.NewMem()), t.TempDir())
	a, h := createOpen(t, c, c.Root(), "f")
	if _, err := h.WriteAt(ctx, randBytes(63, 4096), 0); err != nil {
		t.Fatal(err)
	}
	f := h.f
	// What a commit does first: take the file's lock (a reader of its
	// attributes found nothing shown yet and waits for it).
	f.lockCommit()
	linked := make(chan error, 1)
	go func() {
		_, err := c.Link(ctx, a.Ino, c.Root(), "g")
		linked <- err
	}()
	time.Sleep(200 * time.Millisecond) // Link reaches the file's lock
	committed := make(chan error, 1)
	go func() {
		err := c.commitLocked(ctx, f, false, false)
		f.unlockCommit()
		committed <- err
	}()
	if err := within(t, committed, "commit"); err != nil {
		t.Fatal(err)
	}
	if err := within(t, linked, "link"); err != nil {
		t.Fatal(err)
	}
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if g, err := c.Lookup(ctx, c.Root(), "g"); err != nil || g.Ino != a.Ino || g.Nlink != 2 {
		t.Fatalf("g: %+v %v", g, err)
	}
	c.Close(ctx)
}
