package cache

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/keepfs/keepfs/cache/meta"
	"github.com/keepfs/keepfs/remote"
)

// holdBgCommits makes c's background commits wait until the returned
// function is called; c.Close waits for them.
func holdBgCommits(c *Cache) (release func()) {
	gate := make(chan struct{})
	c.beforeBgCommit = func() { <-gate }
	var once sync.Once
	return func() { once.Do(func() { close(gate) }) }
}

// writeFsync writes data at the start of h's file and fsyncs it.
func writeFsync(t *testing.T, h *Handle, data []byte) {
	t.Helper()
	ctx := context.Background()
	if _, err := h.WriteAt(ctx, data, 0); err != nil {
		t.Fatal(err)
	}
	if err := h.Fsync(ctx); err != nil {
		t.Fatal(err)
	}
}

func intentCount(t *testing.T, c *Cache) int {
	t.Helper()
	n := 0
	err := c.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: meta.IntentPrefix()})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func stagingNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, "staging"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// An fsync of many bytes returns before their commit, with an intent; a
// snapshot commits it first, and the background commit then has nothing
// left to do.
func TestFsyncDefersCommit(t *testing.T) {
	ctx := context.Background()
	be := remote.NewMem()
	dir := t.TempDir()
	c := openCache(t, newRepo(t, be), dir)
	defer c.Close(ctx)
	release := holdBgCommits(c)
	defer release()
	const marker = "PATIENT-RECORD-4711"
	data := bytes.Repeat([]byte(marker+"\n"), (deferCommitMin+3<<20)/20)
	a, h := createOpen(t, c, c.Root(), "big")
	writeFsync(t, h, data)
	if n, err := c.getInode(a.Ino); err != nil || n.Size != 0 || len(n.Chunks) != 0 {
		t.Fatalf("the fsync committed at once: %+v, %v", n, err)
	}
	if got := intentCount(t, c); got != 1 {
		t.Fatalf("%d intent records after the fsync, want 1", got)
	}
	if names := stagingNames(t, dir); len(names) != 1 {
		t.Fatalf("staging files after the fsync: %v", names)
	}
	// The kept staging file and the record are no plaintext either.
	if p := grepDir(t, dir, marker); p != "" {
		t.Fatalf("plaintext in %s", p)
	}
	// Closing refreshes the intent and leaves the commit to the background.
	if err := h.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if n, _ := c.getInode(a.Ino); n.Size != 0 {
		t.Fatal("close committed a file with an intent at once")
	}
	wantContent(t, c, a.Ino, data, "content before the commit differs")
	sn, err := c.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(snapshotFile(t, c.Repository(), sn, "/big"), data) {
		t.Fatal("the snapshot after the fsync lacks its data")
	}
	if n, _ := c.getInode(a.Ino); n.Size != uint64(len(data)) {
		t.Fatalf("inode after the snapshot: size %d", n.Size)
	}
	if got := intentCount(t, c); got != 0 {
		t.Fatalf("%d intent records after the commit", got)
	}
	if names := stagingNames(t, dir); len(names) != 0 {
		t.Fatalf("staging files after the commit: %v", names)
	}
	release()
	waitFor(t, func() bool { return !c.isOpen(a.Ino) })
	wantContent(t, c, a.Ino, data, "content after the commit differs")
}

// A small fsync still commits before it returns.
func TestSmallFsyncCommitsAtOnce(t *testing.T) {
	ctx := context.Background()
	c := openCache(t, newRepo(t, remote.NewMem()), t.TempDir())
	defer c.Close(ctx)
	defer holdBgCommits(c)()
	data := randBytes(22, 1<<20)
	a, h := createOpen(t, c, c.Root(), "f")
	defer h.Release(ctx)
	writeFsync(t, h, data)
	if n, err := c.getInode(a.Ino); err != nil || n.Size != uint64(len(data)) || intentCount(t, c) != 0 {
		t.Fatalf("a 1 MiB fsync did not commit: %+v, %v", n, err)
	}
}

// Shrinking a file with an intent commits the intent first: the staging
// bytes it names must not go before the commit has them.
func TestTruncateCommitsIntent(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	c := openCache(t, newRepo(t, remote.NewMem()), dir)
	defer c.Close(ctx)
	defer holdBgCommits(c)()
	data := randBytes(23, deferCommitMin+1<<20)
	a, h := createOpen(t, c, c.Root(), "f")
	defer h.Release(ctx)
	writeFsync(t, h, data)
	if intentCount(t, c) != 1 {
		t.Fatal("no intent: the test would test nothing")
	}
	size := uint64(1000)
	if _, err := c.SetAttr(ctx, a.Ino, SetAttrIn{Size: &size}); err != nil {
		t.Fatal(err)
	}
	if n, _ := c.getInode(a.Ino); n.Size != uint64(len(data)) || intentCount(t, c) != 0 || len(stagingNames(t, dir)) != 0 {
		t.Fatalf("truncate did not commit the intent first: size %d, %d intents", n.Size, intentCount(t, c))
	}
	wantContent(t, c, a.Ino, data[:size], "content after the truncate differs")
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for i := 0; i < 500; i++ {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("condition not reached in 5 s")
}

// intentContent is what the intent child leaves: a file fsynced whole,
// then changed in place and closed before the kill.
func intentContent() (fsynced, closed []byte) {
	fsynced = randBytes(31, deferCommitMin+5<<20)
	closed = bytes.Clone(fsynced)
	copy(closed[1<<20:], randBytes(32, 100_000))
	closed = append(closed, randBytes(33, 70_000)...)
	return fsynced, closed
}

// intentChild: KEEPFS_INTENT_CHILD=<remote dir>:<state dir> writes and
// fsyncs a big file with background commits held, then changes and closes
// it, and waits to be killed. With KEEPFS_INTENT_IMAGES=<dir> it copies
// each staging file into dir once its bytes reached the disk: what a power
// loss would leave of it.
func intentChild(spec string) {
	t := &testing.T{}
	c := openChildCache(spec)
	c.beforeBgCommit = func() { select {} }
	if dir := os.Getenv("KEEPFS_INTENT_IMAGES"); dir != "" {
		c.stagingSynced = func(name string, f *os.File) {
			img, err := os.Create(filepath.Join(dir, name))
			if err == nil {
				_, err = io.Copy(img, io.NewSectionReader(f, 0, 1<<40))
				err = errors.Join(err, img.Close())
			}
			if err != nil {
				panic(err)
			}
		}
	}
	ctx := context.Background()
	fsynced, closed := intentContent()
	_, h := createOpen(t, c, c.Root(), "big")
	for off := 0; off < len(fsynced); off += 1 << 20 {
		if _, err := h.WriteAt(ctx, fsynced[off:min(off+1<<20, len(fsynced))], int64(off)); err != nil {
			panic(err)
		}
	}
	if err := h.Fsync(ctx); err != nil {
		panic(err)
	}
	os.Stdout.WriteString("fsynced\n")
	if _, err := h.WriteAt(ctx, closed[1<<20:1<<20+100_000], 1<<20); err != nil {
		panic(err)
	}
	if _, err := h.WriteAt(ctx, closed[len(fsynced):], int64(len(fsynced))); err != nil {
		panic(err)
	}
	if err := h.Flush(ctx); err != nil {
		panic(err)
	}
	if err := h.Release(ctx); err != nil {
		panic(err)
	}
	os.Stdout.WriteString("closed\n")
	select {}
}

// killIntentChild runs the intent child (with env added) on a fresh
// repository and state directory and kills it once its close returned. It
// returns the remote, the state directory and the path of the staging file
// the intent names.
func killIntentChild(t *testing.T, env ...string) (remote.Storage, string, string) {
	t.Helper()
	rdir, sdir := t.TempDir(), t.TempDir()
	be, err := remote.NewFile(rdir)
	if err != nil {
		t.Fatal(err)
	}
	newRepo(t, be)
	cmd, sc := startChild(t, append(env, "KEEPFS_INTENT_CHILD="+rdir+":"+sdir)...)
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if sc.Text() == "closed" {
			break
		}
	}
	cmd.Process.Kill()
	cmd.Wait()
	if strings.Join(lines, ",") != "fsynced,closed" {
		t.Fatalf("child said %q", lines)
	}
	names := stagingNames(t, sdir)
	if len(names) != 1 {
		t.Fatalf("staging files %v, want the one the intent names", names)
	}
	return be, sdir, filepath.Join(sdir, "staging", names[0])
}

// TestKill9WithIntent kills a process between an fsync that deferred its
// commit (and a close after it) and the commit: Open commits the intent,
// and the file reads as closed.
func TestKill9WithIntent(t *testing.T) {
	be, sdir, _ := killIntentChild(t)
	c := openCache(t, reopenRepo(t, be), sdir)
	defer c.Close(context.Background())
	_, closed := intentContent()
	if got := readFile(t, c, lookupPath(t, c, "big").Ino); !bytes.Equal(got, closed) {
		t.Fatalf("after kill -9: %d bytes, want the %d closed", len(got), len(closed))
	}
	if intentCount(t, c) != 0 || len(stagingNames(t, sdir)) != 0 {
		t.Fatalf("intent left after recovery: %d records, staging %v", intentCount(t, c), stagingNames(t, sdir))
	}
	sn, err := c.Sync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(snapshotFile(t, c.Repository(), sn, "/big"), closed) {
		t.Fatal("the snapshot after recovery differs")
	}
}

// TestDamagedIntentDropped: staged bytes an intent names that no longer
// open (the disk altered them) drop the intent at Open: the file keeps its
// last committed content, and snapshots go on rather than fail for good.
func TestDamagedIntentDropped(t *testing.T) {
	be, sdir, staged := killIntentChild(t)
	sf, err := os.OpenFile(staged, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sf.WriteAt([]byte("damage"), 5*stageSealed+100); err != nil {
		t.Fatal(err)
	}
	sf.Close()
	c := openCache(t, reopenRepo(t, be), sdir)
	defer c.Close(context.Background())
	if got := readFile(t, c, lookupPath(t, c, "big").Ino); len(got) != 0 {
		t.Fatalf("after damage: %d bytes, want the empty file last committed", len(got))
	}
	if intentCount(t, c) != 0 || len(stagingNames(t, sdir)) != 0 {
		t.Fatalf("left after Open: %d intents, staging %v", intentCount(t, c), stagingNames(t, sdir))
	}
	writeFile(t, c, c.Root(), "other", []byte("changed")) // so that a snapshot is due
	if _, err := c.Sync(context.Background()); err != nil {
		t.Fatalf("sync after a damaged intent: %v", err)
	}
}

// TestPowerLossWithIntent: a power loss after a close that followed a
// deferred fsync. Badger may keep the record the close rewrote while the
// staged bytes written after the fsync are lost; the file must then read
// as fsynced or as closed, never with other bytes where the lost ones were.
func TestPowerLossWithIntent(t *testing.T) {
	idir := t.TempDir()
	be, sdir, staged := killIntentChild(t, "KEEPFS_INTENT_IMAGES="+idir)
	// The power goes: the staging file is left as it was at its last sync
	// (the worst case keeps every record Badger had).
	img, err := os.ReadFile(filepath.Join(idir, filepath.Base(staged)))
	if err != nil {
		t.Fatalf("the staging file never reached the disk: %v", err)
	}
	if err := os.WriteFile(staged, img, 0o600); err != nil {
		t.Fatal(err)
	}
	defer func(old func() string) { bootID = old }(bootID)
	bootID = func() string { return "after-the-reboot" }
	c := openCache(t, reopenRepo(t, be), sdir)
	defer c.Close(context.Background())
	fsynced, closed := intentContent()
	got := readFile(t, c, lookupPath(t, c, "big").Ino)
	if !bytes.Equal(got, closed) && !bytes.Equal(got, fsynced) {
		t.Fatalf("after the power loss: %d bytes, neither the %d fsynced nor the %d closed", len(got), len(fsynced), len(closed))
	}
}

// An intent that no longer fits its file (the base changed) is dropped,
// not applied over other content; stray staging files go at Open.
func TestUnusableIntentDropped(t *testing.T) {
	ctx := context.Background()
	be := remote.NewMem()
	dir := t.TempDir()
	c := openCache(t, newRepo(t, be), dir)
	old := randBytes(41, 2000)
	ino := writeFile(t, c, c.Root(), "f", old)
	rec := &meta.Intent{Staging: "gone", Size: 10, Dirty: []meta.Range{{Start: 0, End: 10}}}
	if err := c.update(func(txn *wtxn) error { return txn.Set(meta.IntentKey(ino), meta.EncodeIntent(rec)) }); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "staging", "stray"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	crash(c)
	c = openCache(t, reopenRepo(t, be), dir)
	defer c.Close(ctx)
	wantContent(t, c, ino, old, "an unusable intent changed the file")
	if intentCount(t, c) != 0 || len(stagingNames(t, dir)) != 0 {
		t.Fatalf("left after Open: %d intents, staging %v", intentCount(t, c), stagingNames(t, dir))
	}
}

// A close while the background commit runs returns at once, and the
// record it relies on covers the writes made between the fsync and the
// commit.
func TestCloseDuringBackgroundCommit(t *testing.T) {
	ctx := context.Background()
	c := openCache(t, newRepo(t, remote.NewMem()), t.TempDir())
	defer c.Close(ctx)
	start := holdBgCommits(c)
	defer start()
	reached, finish := make(chan struct{}), make(chan struct{})
	c.duringBgCommit = func() { close(reached); <-finish }
	var once sync.Once
	release := func() { once.Do(func() { close(finish) }) }
	defer release()

	data := randBytes(61, deferCommitMin+2<<20)
	a, h := createOpen(t, c, c.Root(), "f")
	writeFsync(t, h, data[:deferCommitMin+1<<20])
	if _, err := h.WriteAt(ctx, data[deferCommitMin+1<<20:], deferCommitMin+1<<20); err != nil {
		t.Fatal(err)
	}
	start()
	<-reached
	var rec *meta.Intent
	if err := c.view(func(txn *badger.Txn) error {
		v, err := getValue(txn, meta.IntentKey(a.Ino))
		if err == nil {
			rec, err = meta.DecodeIntent(v)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if rec.Size != uint64(len(data)) {
		t.Fatalf("the record covers %d bytes while the commit runs, want all %d", rec.Size, len(data))
	}
	done := make(chan error, 1)
	go func() { done <- errors.Join(h.Flush(ctx), h.Release(ctx)) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("close waited for the background commit")
	}
	release()
	waitFor(t, func() bool { return !c.isOpen(a.Ino) })
	wantContent(t, c, a.Ino, data, "content after the commit differs")
}

// A read that arrives while the background commit holds the file but has
// not let readers in yet waits for it to let them in, not for the whole
// commit.
func TestReadBeforeBackgroundCommitLetsReadersIn(t *testing.T) {
	ctx := context.Background()
	c := openCache(t, newRepo(t, remote.NewMem()), t.TempDir())
	defer c.Close(ctx)
	start := holdBgCommits(c)
	defer start()
	reached, proceed := make(chan struct{}), make(chan struct{})
	c.duringBgCommit = func() { close(reached); <-proceed }
	var once sync.Once
	letGo := func() { once.Do(func() { close(proceed) }) }
	defer letGo()
	// The commit, once readers may go in, waits until the read is done
	// (or gives up after a while, for the test to fail rather than hang).
	readDone := make(chan struct{})
	var hold sync.Once
	c.inCommit = func(uint64) error {
		hold.Do(func() {
			select {
			case <-readDone:
			case <-time.After(5 * time.Second):
			}
		})
		return nil
	}

	data := randBytes(67, deferCommitMin+1<<20)
	a, h := createOpen(t, c, c.Root(), "f")
	writeFsync(t, h, data)
	start()
	<-reached
	r, err := c.OpenFile(ctx, a.Ino, uint32(os.O_RDONLY))
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 64<<10)
	read := make(chan error, 1)
	go func() {
		_, err := r.ReadAt(ctx, b, 1<<20)
		close(readDone)
		read <- err
	}()
	time.Sleep(50 * time.Millisecond) // the reader finds the file held
	letGo()
	select {
	case err := <-read:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the read waited for the whole background commit")
	}
	if !bytes.Equal(b, data[1<<20:1<<20+len(b)]) {
		t.Fatal("the read during the commit got other content")
	}
	if err := errors.Join(r.Release(ctx), h.Flush(ctx), h.Release(ctx)); err != nil {
		t.Fatal(err)
	}
	wantContent(t, c, a.Ino, data, "content after the commit differs")
}

// Every big fsync of a file that stays open defers its commit, not only
// the first: the kernel links an O_TMPFILE staging file only once
// (linkat clears I_LINKABLE), so a staging file whose name a commit
// removed cannot be named again, and the next fsync used to fall back to
// committing at once ("cannot keep a staging file").
func TestRepeatedFsyncDefersEachTime(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	c := openCache(t, newRepo(t, remote.NewMem()), dir)
	defer c.Close(ctx)
	release := holdBgCommits(c)
	defer release()
	a, h := createOpen(t, c, c.Root(), "f")
	defer h.Release(ctx)
	var data []byte
	for i := 0; i < 3; i++ {
		data = randBytes(uint64(70+i), deferCommitMin+1<<20)
		writeFsync(t, h, data)
		if got := intentCount(t, c); got != 1 {
			t.Fatalf("fsync %d: %d intent records, want 1 (committed at once?)", i+1, got)
		}
		if names := stagingNames(t, dir); len(names) != 1 {
			t.Fatalf("fsync %d: staging files %v, want one", i+1, names)
		}
		sn, err := c.Sync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(snapshotFile(t, c.Repository(), sn, "/f"), data) {
			t.Fatalf("snapshot after fsync %d lacks its data", i+1)
		}
		if got, names := intentCount(t, c), stagingNames(t, dir); got != 0 || len(names) != 0 {
			t.Fatalf("after the commit of fsync %d: %d intents, staging files %v", i+1, got, names)
		}
	}
	wantContent(t, c, a.Ino, data, "content after the last commit differs")
}
