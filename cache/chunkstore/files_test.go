package chunkstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/keepfs/keepfs/cache/meta"
	"github.com/keepfs/keepfs/remote/disktest"
	"github.com/keepfs/keepfs/repo/crypto"
)

// Block-sealed chunk files read any range by opening only its blocks, and
// a damaged block spoils only reads that touch it.
func TestChunkFileRanges(t *testing.T) {
	e := newEnv(t, 1<<30)
	s := e.s
	// Past segmentMax, so it gets a file of its own.
	data := randBytes(7, 70*blockSize+1234)
	id := e.key.BlobID(data)
	if err := s.Put([]Chunk{{ID: id, Data: data}}, false); err != nil {
		t.Fatal(err)
	}
	size := int64(len(data))
	for _, r := range [][2]int64{{0, size}, {0, 1}, {blockSize - 1, 2}, {3 * blockSize, blockSize}, {size - 1, 1},
		{70 * blockSize, 1234}, {100, 4 * blockSize}, {size, 0}, {blockSize - 100, 17 * blockSize}} {
		got, err := s.LoadRange(id, r[0], r[1])
		if err != nil || !bytes.Equal(got, data[r[0]:r[0]+r[1]]) {
			t.Fatalf("range %v: %v", r, err)
		}
		// Into a reused buffer holding other bytes, too small or big enough.
		for _, n := range []int{16, 8 * blockSize} {
			buf := bytes.Repeat([]byte{0xa5}, n)
			got, err := s.loadRangeBuf(id, r[0], r[1], buf)
			if err != nil || !bytes.Equal(got, data[r[0]:r[0]+r[1]]) {
				t.Fatalf("range %v into a %d-byte buffer: %v", r, n, err)
			}
			// Decrypted straight into a destination: only its n bytes
			// are written, the bytes around it stay.
			dst := bytes.Repeat([]byte{0x5a}, int(r[1])+2)
			if _, err := s.loadRangeTo(id, r[0], r[1], buf[:0], dst[1:1+r[1]]); err != nil ||
				!bytes.Equal(dst[1:1+r[1]], data[r[0]:r[0]+r[1]]) || dst[0] != 0x5a || dst[len(dst)-1] != 0x5a {
				t.Fatalf("range %v into its destination, a %d-byte buffer for the blocks: %v", r, n, err)
			}
		}
	}
	if _, err := s.LoadRange(id, size-1, 2); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("read past the end: %v", err)
	}
	// Flip a byte in block 2.
	p := s.files.path(id)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	at := 2*s.files.sealedBlock() + 100
	b := make([]byte, 1)
	f.ReadAt(b, at)
	b[0] ^= 1
	f.WriteAt(b, at)
	f.Close()
	if got, err := s.LoadRange(id, 0, blockSize); err != nil || !bytes.Equal(got, data[:blockSize]) {
		t.Fatalf("block 0 after damage to block 2: %v", err)
	}
	if _, err := s.loadRangeTo(id, 2*blockSize+5, 10, nil, make([]byte, 10)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("read of a damaged block into a destination: %v", err)
	}
	if _, err := s.LoadRange(id, 2*blockSize+5, 10); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("damaged block read: %v, want a corruption error", err)
	}
	if _, err := s.Load(id); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("whole chunk with a damaged block: %v", err)
	}
}

// State directories written before block sealing (whole-chunk files, 16 KiB
// inline values) still read, through the mount's read path too.
func TestLegacyChunkValues(t *testing.T) {
	e := newEnv(t, 1<<30)
	s := e.s
	big := randBytes(8, 300<<10)
	small := randBytes(9, 12<<10)
	bigID, smallID := e.key.BlobID(big), e.key.BlobID(small)
	// Format 1: nonce || AEAD(whole chunk, ad = id); c value = size only.
	sealed := make([]byte, s.files.aead.NonceSize())
	rand.Read(sealed)
	sealed = s.files.aead.Seal(sealed, sealed, big, bigID[:])
	if err := os.WriteFile(s.files.path(bigID), sealed, 0o600); err != nil {
		t.Fatal(err)
	}
	err := e.db.Update(func(txn Txn) error {
		if err := txn.Set(meta.ChunkKey(bigID), binary.BigEndian.AppendUint64(nil, uint64(len(big)))); err != nil {
			return err
		}
		return txn.Set(meta.ChunkKey(smallID), append(binary.BigEndian.AppendUint64(nil, uint64(len(small))), small...))
	})
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[crypto.ID][]byte{bigID: big, smallID: small} {
		got, err := s.LoadRange(name, 1000, 5000)
		if err != nil || !bytes.Equal(got, want[1000:6000]) {
			t.Fatalf("legacy chunk %s: %v", name.Short(), err)
		}
	}
	// The mount's read path: ReadInto a 4 KiB buffer at any offset, and
	// Get of the whole chunk.
	for name, want := range map[crypto.ID][]byte{bigID: big, smallID: small} {
		for _, off := range []int{len(want) - 4096, 5, 2000} {
			buf := make([]byte, 4096)
			if ok, err := s.ReadInto(name, uint64(off), buf); !ok || err != nil || !bytes.Equal(buf, want[off:off+4096]) {
				t.Fatalf("legacy chunk %s at %d: %v, %v", name.Short(), off, ok, err)
			}
		}
		s.Uncache(name)
		if got, err := s.Get(context.Background(), name); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("legacy chunk %s whole: %v", name.Short(), err)
		}
	}
}

// A chunk file written for an fsync leaves the page cache once it is on the
// disk; one written for a close stays (the kernel writes it back later).
func TestDurableChunkFileLeavesPageCache(t *testing.T) {
	e := newEnvIn(t, disktest.TempDir(t), 1<<30)
	s := e.s
	for _, durable := range []bool{false, true} {
		data := randBytes(uint64(len(fmt.Sprint(durable))), 4<<20)
		id := e.key.BlobID(data)
		if err := s.Put([]Chunk{{ID: id, Data: data}}, durable); err != nil {
			t.Fatal(err)
		}
		res, all := disktest.ResidentPages(t, s.files.path(id))
		if durable && res != 0 {
			t.Errorf("fsynced chunk file: %d of %d pages still cached", res, all)
		}
		if !durable && res != all {
			t.Errorf("closed chunk file: %d of %d pages cached, want all (dirty pages cannot be dropped)", res, all)
		}
		if got, err := s.Load(id); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read back (durable %v): %v", durable, err)
		}
	}
}

// A random read that finds its chunk file's pages not cached has the
// kernel read the whole file in the background, so that the chunk's later
// reads find it cached instead of each going to the disk.
func TestColdRandomReadWarmsChunkFile(t *testing.T) {
	e := newEnvIn(t, disktest.TempDir(t), 1<<30)
	s := e.s
	data := randBytes(41, 4<<20)
	id := e.put(data, true) // written for an fsync: its pages leave the page cache
	s.Uncache(id)
	p := s.files.path(id)
	if res, all := disktest.ResidentPages(t, p); res > all/2 {
		t.Fatalf("%d of %d pages cached before the read: the test needs a cold file", res, all)
	}
	const off = 1<<20 + 100
	dst := make([]byte, blockSize)
	if ok, err := s.ReadInto(id, off, dst); !ok || err != nil {
		t.Fatalf("ReadInto: %v, %v", ok, err)
	}
	if !bytes.Equal(dst, data[off:off+blockSize]) {
		t.Fatal("read differs from what was written")
	}
	res, all := 0, 0
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if res, all = disktest.ResidentPages(t, p); res == all {
			return
		}
	}
	t.Fatalf("%d of %d pages of the chunk file cached 5 s after a 4 KiB read of it, want all", res, all)
}

// A 4 KiB read of a chunk file at an offset that cuts two blocks, the
// common case of a random read (chunks start anywhere), allocates nothing:
// the sealed blocks, their associated data and a cut block's plaintext all
// go in the recycled read buffer.
func TestRandomReadAllocatesNothing(t *testing.T) {
	e := newEnv(t, 1<<30)
	s := e.s
	data := randBytes(31, 1<<20)
	id := e.put(data, false)
	if s.mem.get(id) != nil {
		t.Fatal("chunk in memory: the read would not reach its file")
	}
	const off = blockSize + 100 // cuts blocks 1 and 2
	dst := make([]byte, blockSize)
	read := func() {
		ok, err := s.ReadInto(id, off, dst)
		if !ok || err != nil {
			t.Fatalf("ReadInto: %v, %v", ok, err)
		}
	}
	read() // opens the file: the descriptor cache allocates once
	if !bytes.Equal(dst, data[off:off+blockSize]) {
		t.Fatal("read differs from what was written")
	}
	if a := testing.AllocsPerRun(100, read); a != 0 {
		t.Fatalf("%.1f allocations per read, want 0", a)
	}
}

// Prefetch of a chunk whose file the read path holds open knows it local
// without a goroutine (and a look in the store) to find that out.
func TestPrefetchOfOpenChunkFileStartsNothing(t *testing.T) {
	e := newEnv(t, 1<<30)
	s := e.s
	data := randBytes(32, 1<<20)
	id := e.put(data, false)
	if _, err := s.LoadRange(id, 0, blockSize); err != nil { // opens the file
		t.Fatal(err)
	}
	prefetch := func() {
		if !s.Prefetch(context.Background(), id) {
			t.Fatal("Prefetch of a local chunk: false")
		}
		s.Wait()
	}
	if a := testing.AllocsPerRun(100, prefetch); a != 0 {
		t.Fatalf("%.1f allocations per Prefetch of an open chunk file, want 0", a)
	}
}
