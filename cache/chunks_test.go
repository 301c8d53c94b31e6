package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/keepfs/keepfs/cache/meta"
	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/remote/disktest"
	"github.com/keepfs/keepfs/repo/crypto"
)

// A large chunk that cannot be stored fails the commit (the chunks of a big
// file are stored on a goroutine of their own); the file keeps its old
// content and commits once storing works again.
func TestCommitFailsWhenAChunkCannotBeStored(t *testing.T) {
	ctx := context.Background()
	c := openCache(t, newRepo(t, remote.NewMem()), t.TempDir())
	defer c.Close(ctx)
	old := randBytes(7, 3<<20)
	ino := writeFile(t, c, c.Root(), "f", old)

	// A file where the chunk directory was: no chunk file can be made.
	dir := filepath.Join(c.opts.StateDir, "chunks")
	if err := os.Rename(dir, dir+".away"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	data := randBytes(8, 12<<20) // a dozen large chunks
	h, err := c.OpenFile(ctx, ino, uint32(os.O_RDWR|os.O_TRUNC))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.WriteAt(ctx, data, 0); err != nil {
		t.Fatal(err)
	}
	if err := h.Flush(ctx); err == nil {
		t.Fatal("commit succeeded with no place to store chunks")
	}
	if n, _ := c.getInode(ino); n.Size != uint64(len(old)) {
		t.Fatalf("failed commit changed the committed size to %d", n.Size)
	}

	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(dir+".away", dir); err != nil {
		t.Fatal(err)
	}
	if err := h.Flush(ctx); err != nil {
		t.Fatalf("commit after the failure cleared: %v", err)
	}
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
	wantContent(t, c, ino, data, "content differs after the retried commit")
}

// Files up to the chunker's minimum size skip the chunker; their chunk
// lists are still what the chunker cuts (so they deduplicate against
// imports and against themselves after growing).
func TestSmallFilesChunkLikeTheChunker(t *testing.T) {
	ctx := context.Background()
	c := openCache(t, newRepo(t, remote.NewMem()), t.TempDir())
	defer c.Close(ctx)
	min := c.r.Config().Chunker.Min
	for i, size := range []int{1, 3000, 100 << 10, smallChunk, smallChunk + 1, min - 1, min, min + 1, 3 * min} {
		data := randBytes(uint64(100+i), size)
		ino := writeFile(t, c, c.Root(), fmt.Sprintf("f%d", i), data)
		n, err := c.getInode(ino)
		if err != nil {
			t.Fatal(err)
		}
		ch := c.r.NewChunker()
		ch.Reset(bytes.NewReader(data))
		var want []meta.Chunk
		for {
			b, err := ch.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, meta.Chunk{ID: c.r.Key().BlobID(b), Len: uint64(len(b))})
		}
		if fmt.Sprint(n.Chunks) != fmt.Sprint(want) {
			t.Fatalf("%d bytes: chunks %v, the chunker cuts %v", size, n.Chunks, want)
		}
		if got := readFile(t, c, ino); !bytes.Equal(got, data) {
			t.Fatalf("%d bytes: content differs", size)
		}
	}
}

// A sequential reader has the kernel read the chunk files ahead of the
// chunk it prefetches; a random reader does not.
func TestSequentialReadReadsAhead(t *testing.T) {
	ctx := context.Background()
	c := openCache(t, newRepo(t, remote.NewMem()), disktest.TempDir(t))
	defer c.Close(ctx)
	ino := writeFile(t, c, c.Root(), "f", randBytes(9, 24<<20))
	if err := c.up.Drain(ctx); err != nil { // the uploader reads chunk files too
		t.Fatal(err)
	}
	n, err := c.getInode(ino)
	if err != nil {
		t.Fatal(err)
	}
	var files []string // of the chunks kept in files, in file order
	for _, ch := range n.Chunks {
		p := c.chunks.FilePath(ch.ID)
		f, err := os.Open(p)
		if err != nil {
			continue // a small tail chunk lives elsewhere
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED) // what a durable write does
		f.Close()
		files = append(files, p)
	}
	if len(files) < 4 || len(files) < len(n.Chunks)-1 {
		t.Fatalf("%d of %d chunks in files, want at least 4 and all but the tail", len(files), len(n.Chunks))
	}
	cached := func(i int) bool {
		res, all := disktest.ResidentPages(t, files[i])
		return res == all
	}
	read := func(off int64) {
		h, err := c.OpenFile(ctx, ino, uint32(os.O_RDONLY))
		if err != nil {
			t.Fatal(err)
		}
		defer h.Release(ctx)
		if _, err := h.ReadAt(ctx, make([]byte, 4096), off); err != nil {
			t.Fatal(err)
		}
	}
	if cached(2) {
		t.Fatal("chunk file cached before any read")
	}
	read(int64(n.Chunks[0].Len) + 100) // not where the last read ended: random
	time.Sleep(200 * time.Millisecond)
	if cached(2) {
		t.Fatal("a random read read ahead")
	}
	read(0) // sequential: reads chunk 0, reads ahead from 1
	// The window is chunks 1.. up to readAheadBytes; files past it stay
	// on the disk.
	end, sum := 1, 0
	for end < len(files) && sum+int(n.Chunks[end].Len) <= readAheadBytes {
		sum += int(n.Chunks[end].Len)
		end++
	}
	deadline := time.Now().Add(10 * time.Second)
	for i := 1; i < end; i++ {
		for !cached(i) {
			if time.Now().After(deadline) {
				t.Fatalf("chunk %d's file was not read ahead", i)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	time.Sleep(200 * time.Millisecond)
	if end < len(files) && cached(end) {
		t.Fatalf("chunk %d's file read ahead, past readAheadBytes", end)
	}
	if end >= len(files) {
		t.Fatalf("the file's %d chunks fit in one window: the sliding is not tested", len(files))
	}
	// The window slides as the reader enters each chunk, without waiting
	// for it to reach the window's end: entering chunk k asks for chunks
	// k+1.. up to readAheadBytes, so chunk end joins at the first k where
	// chunks k+1 through end fit (at the latest k = end-1, whose window
	// always holds its first chunk).
	k := 1
	for ; k < end-1; k++ {
		fit := 0
		for j := k + 1; j <= end; j++ {
			fit += int(n.Chunks[j].Len)
		}
		if fit <= readAheadBytes {
			break
		}
	}
	var enter uint64 // offset of chunk k's first byte
	for j := range k {
		enter += n.Chunks[j].Len
	}
	h, err := c.OpenFile(ctx, ino, uint32(os.O_RDONLY))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Release(ctx)
	buf := make([]byte, 64<<10)
	for off := int64(0); off < int64(enter)+4096; off += int64(len(buf)) {
		if _, err := h.ReadAt(ctx, buf, off); err != nil {
			t.Fatal(err)
		}
	}
	for !cached(end) {
		if time.Now().After(deadline) {
			t.Fatalf("chunk %d's file was not read ahead once the reader entered chunk %d", end, k)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// outsideBytes is what the state directory holds of chunks outside their
// records (files and segments).
func outsideBytes(t *testing.T, c *Cache) int64 {
	t.Helper()
	var n int64
	if err := c.chunks.Outside(func(_ crypto.ID, size int64) { n += size }); err != nil {
		t.Fatal(err)
	}
	return n
}

// crashClose stops c as kill -9 would: no final commit, snapshot or drain.
func crashClose(c *Cache) {
	c.cancel()
	c.wg.Wait()
	c.dbp.Load().db.Close()
	c.ix.Close()
	c.lockFile.Close()
}

// TestOpenDropsChunksNoFileNames: a file rewritten between snapshots left
// the chunks of the versions in between in the state directory for good
// (no walk queues them, eviction takes only uploaded chunks). Open drops
// them, and keeps every chunk a file names, even one committed after the
// last snapshot and never queued (a crash before the next).
func TestOpenDropsChunksNoFileNames(t *testing.T) {
	defer func(v int64) { sweepAtLeast = v }(sweepAtLeast)
	sweepAtLeast = 1 << 20
	ctx := context.Background()
	be := remote.NewMem()
	dir := t.TempDir()
	c := openCache(t, newRepo(t, be), dir)
	var last []byte
	for i := range 10 {
		last = randBytes(uint64(100+i), 1<<20)
		writeFile(t, c, c.Root(), "f", last)
	}
	if _, err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	late := randBytes(200, 2<<20)
	writeFile(t, c, c.Root(), "late", late)
	before := outsideBytes(t, c)
	crashClose(c)

	c = openCache(t, reopenRepo(t, be), dir)
	after := outsideBytes(t, c)
	if before-after < 8<<20 {
		t.Fatalf("chunk bytes in the state directory: %d before the restart, %d after; want the 9 dead versions (9 MiB) gone", before, after)
	}
	wantContent(t, c, lookupPath(t, c, "f").Ino, last, "f after the sweep")
	wantContent(t, c, lookupPath(t, c, "late").Ino, late, "late (never queued) after the sweep")
	fresh := closeAndReopen(t, c, be)
	defer fresh.Close(ctx)
	wantContent(t, fresh, lookupPath(t, fresh, "late").Ino, late, "late from the remote")
}

// TestOpenAfterCrashDropsStrayChunkFiles: a chunk file whose record a
// killed daemon never wrote, or had deleted just before, is removed by
// the next Open; nothing else would ever remove it.
func TestOpenAfterCrashDropsStrayChunkFiles(t *testing.T) {
	be := remote.NewMem()
	dir := t.TempDir()
	c := openCache(t, newRepo(t, be), dir)
	data := randBytes(7, 1<<20)
	writeFile(t, c, c.Root(), "f", data)
	stray := c.chunks.FilePath(c.r.Key().BlobID([]byte("a record never written")))
	crashClose(c)
	if err := os.WriteFile(stray, []byte("sealed bytes of some chunk"), 0o600); err != nil {
		t.Fatal(err)
	}
	c = openCache(t, reopenRepo(t, be), dir)
	defer c.Close(context.Background())
	if _, err := os.Stat(stray); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the stray chunk file after Open: %v", err)
	}
	wantContent(t, c, lookupPath(t, c, "f").Ino, data, "f after the stray files went")
}
