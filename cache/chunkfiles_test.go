package cache

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/keepfs/keepfs/cache/meta"
	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/tree"
)

// Block-sealed chunk files read any range by opening only its blocks, and
// a damaged block spoils only reads that touch it.
func TestChunkFileRanges(t *testing.T) {
	ctx := context.Background()
	c := openCache(t, newRepo(t, remote.NewMem()), t.TempDir())
	defer c.Close(ctx)
	// Past segmentMax, so it gets a file of its own.
	data := randBytes(7, 70*blockSize+1234)
	id := c.r.Key().BlobID(data)
	if err := c.storeChunk(id, data, false); err != nil {
		t.Fatal(err)
	}
	size := int64(len(data))
	for _, r := range [][2]int64{{0, size}, {0, 1}, {blockSize - 1, 2}, {3 * blockSize, blockSize}, {size - 1, 1},
		{70 * blockSize, 1234}, {100, 4 * blockSize}, {size, 0}, {blockSize - 100, 17 * blockSize}} {
		got, err := c.loadLocalRange(id, r[0], r[1])
		if err != nil || !bytes.Equal(got, data[r[0]:r[0]+r[1]]) {
			t.Fatalf("range %v: %v", r, err)
		}
		// Into a reused buffer holding other bytes, too small or big enough.
		for _, n := range []int{16, 8 * blockSize} {
			buf := bytes.Repeat([]byte{0xa5}, n)
			got, err := c.loadLocalRangeBuf(id, r[0], r[1], buf)
			if err != nil || !bytes.Equal(got, data[r[0]:r[0]+r[1]]) {
				t.Fatalf("range %v into a %d-byte buffer: %v", r, n, err)
			}
			// Decrypted straight into a destination: only its n bytes
			// are written, the bytes around it stay.
			dst := bytes.Repeat([]byte{0x5a}, int(r[1])+2)
			if _, err := c.loadLocalRangeTo(id, r[0], r[1], buf[:0], dst[1:1+r[1]]); err != nil ||
				!bytes.Equal(dst[1:1+r[1]], data[r[0]:r[0]+r[1]]) || dst[0] != 0x5a || dst[len(dst)-1] != 0x5a {
				t.Fatalf("range %v into its destination, a %d-byte buffer for the blocks: %v", r, n, err)
			}
		}
	}
	if _, err := c.loadLocalRange(id, size-1, 2); !errors.Is(err, errCorruptState) {
		t.Fatalf("read past the end: %v", err)
	}
	// Flip a byte in block 2.
	p := c.files.path(id)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	at := 2*c.files.sealedBlock() + 100
	b := make([]byte, 1)
	f.ReadAt(b, at)
	b[0] ^= 1
	f.WriteAt(b, at)
	f.Close()
	if got, err := c.loadLocalRange(id, 0, blockSize); err != nil || !bytes.Equal(got, data[:blockSize]) {
		t.Fatalf("block 0 after damage to block 2: %v", err)
	}
	if _, err := c.loadLocalRangeTo(id, 2*blockSize+5, 10, nil, make([]byte, 10)); !errors.Is(err, errCorruptState) {
		t.Fatalf("read of a damaged block into a destination: %v", err)
	}
	if _, err := c.loadLocalRange(id, 2*blockSize+5, 10); !errors.Is(err, errCorruptState) {
		t.Fatalf("damaged block read: %v, want a corruption error", err)
	}
	if _, err := c.loadLocal(id); !errors.Is(err, errCorruptState) {
		t.Fatalf("whole chunk with a damaged block: %v", err)
	}
}

// State directories written before block sealing (whole-chunk files, 16 KiB
// inline values) still read, through the mount's read path too.
func TestLegacyChunkValues(t *testing.T) {
	ctx := context.Background()
	c := openCache(t, newRepo(t, remote.NewMem()), t.TempDir())
	defer c.Close(ctx)
	big := randBytes(8, 300<<10)
	small := randBytes(9, 12<<10)
	bigID, smallID := c.r.Key().BlobID(big), c.r.Key().BlobID(small)
	// Format 1: nonce || AEAD(whole chunk, ad = id); c value = size only.
	sealed := make([]byte, c.files.aead.NonceSize())
	rand.Read(sealed)
	sealed = c.files.aead.Seal(sealed, sealed, big, bigID[:])
	if err := os.WriteFile(c.files.path(bigID), sealed, 0o600); err != nil {
		t.Fatal(err)
	}
	err := c.update(func(txn *wtxn) error {
		if err := txn.Set(meta.ChunkKey(bigID), binary.BigEndian.AppendUint64(nil, uint64(len(big)))); err != nil {
			return err
		}
		return txn.Set(meta.ChunkKey(smallID), append(binary.BigEndian.AppendUint64(nil, uint64(len(small))), small...))
	})
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[crypto.ID][]byte{bigID: big, smallID: small} {
		got, err := c.loadLocalRange(name, 1000, 5000)
		if err != nil || !bytes.Equal(got, want[1000:6000]) {
			t.Fatalf("legacy chunk %s: %v", name.Short(), err)
		}
	}
	// A file made of both, read at random offsets through a handle.
	a, err := c.Create(ctx, c.Root(), "f", NewNode{Type: tree.File, Mode: 0o644})
	if err != nil {
		t.Fatal(err)
	}
	err = c.update(func(txn *wtxn) error {
		n, err := txn.inode(a.Ino)
		if err != nil {
			return err
		}
		n.Chunks = []meta.Chunk{{ID: bigID, Len: uint64(len(big))}, {ID: smallID, Len: uint64(len(small))}}
		n.Size = uint64(len(big) + len(small))
		return txn.putInode(a.Ino, n)
	})
	if err != nil {
		t.Fatal(err)
	}
	want := append(append([]byte(nil), big...), small...)
	h, err := c.OpenFile(ctx, a.Ino, uint32(os.O_RDONLY))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Release(ctx)
	for _, off := range []int64{int64(len(want)) - 100, 5, 200 << 10, int64(len(big)) - 10} {
		buf := make([]byte, 4096)
		n, err := h.ReadAt(ctx, buf, off)
		if err != nil || !bytes.Equal(buf[:n], want[off:min(off+4096, int64(len(want)))]) {
			t.Fatalf("read at %d: %v", off, err)
		}
	}
}

// A large chunk that cannot be stored fails the commit (the chunks of a big
// file are stored on a goroutine of their own); the file keeps its old
// content and commits once storing works again.
func TestCommitFailsWhenAChunkCannotBeStored(t *testing.T) {
	ctx := context.Background()
	c := openCache(t, newRepo(t, remote.NewMem()), t.TempDir())
	defer c.Close(ctx)
	old := randBytes(7, 3<<20)
	ino := writeFile(t, c, c.Root(), "f", old)

	blocked := filepath.Join(t.TempDir(), "not-a-directory")
	if err := os.WriteFile(blocked, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	dir := c.files.dir
	c.files.dir = blocked
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

	c.files.dir = dir
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

// A chunk file written for an fsync leaves the page cache once it is on the
// disk; one written for a close stays (the kernel writes it back later).
func TestDurableChunkFileLeavesPageCache(t *testing.T) {
	ctx := context.Background()
	c := openCache(t, newRepo(t, remote.NewMem()), diskTempDir(t))
	defer c.Close(ctx)
	for _, durable := range []bool{false, true} {
		data := randBytes(uint64(len(fmt.Sprint(durable))), 4<<20)
		id := c.r.Key().BlobID(data)
		if err := c.storeChunk(id, data, durable); err != nil {
			t.Fatal(err)
		}
		res, all := residentPages(t, c.files.path(id))
		if durable && res != 0 {
			t.Errorf("fsynced chunk file: %d of %d pages still cached", res, all)
		}
		if !durable && res != all {
			t.Errorf("closed chunk file: %d of %d pages cached, want all (dirty pages cannot be dropped)", res, all)
		}
		if got, err := c.loadLocal(id); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read back (durable %v): %v", durable, err)
		}
	}
}

// diskTempDir is a temporary directory on a disk-backed file system: tmpfs
// pages cannot leave the page cache.
func diskTempDir(t *testing.T) string {
	dir := t.TempDir()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	if st.Type != unix.TMPFS_MAGIC {
		return dir
	}
	wd, err := os.MkdirTemp(".", ".disk-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(wd) })
	return wd
}

// residentPages counts the pages of the file at path that are in the page
// cache.
func residentPages(t *testing.T, path string) (res, all int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	vec := make([]byte, (len(m)+os.Getpagesize()-1)/os.Getpagesize())
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		t.Fatal(errno)
	}
	for _, v := range vec {
		res += int(v & 1)
	}
	return res, len(vec)
}

// A sequential reader has the kernel read the chunk files ahead of the
// chunk it prefetches; a random reader does not.
func TestSequentialReadReadsAhead(t *testing.T) {
	ctx := context.Background()
	c := openCache(t, newRepo(t, remote.NewMem()), diskTempDir(t))
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
		p := c.files.path(ch.ID)
		f, err := os.Open(p)
		if err != nil {
			continue // a small tail chunk lives elsewhere
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		dropPages(f)
		f.Close()
		files = append(files, p)
	}
	if len(files) < 4 || len(files) < len(n.Chunks)-1 {
		t.Fatalf("%d of %d chunks in files, want at least 4 and all but the tail", len(files), len(n.Chunks))
	}
	cached := func(i int) bool {
		res, all := residentPages(t, files[i])
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
	// A reader entering chunk 1 slides the window by a chunk, without
	// waiting to reach its end.
	h, err := c.OpenFile(ctx, ino, uint32(os.O_RDONLY))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Release(ctx)
	buf := make([]byte, 64<<10)
	for off := int64(0); off < int64(n.Chunks[0].Len)+4096; off += int64(len(buf)) {
		if _, err := h.ReadAt(ctx, buf, off); err != nil {
			t.Fatal(err)
		}
	}
	for !cached(end) {
		if time.Now().After(deadline) {
			t.Fatalf("chunk %d's file was not read ahead once the reader entered chunk 1", end)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
