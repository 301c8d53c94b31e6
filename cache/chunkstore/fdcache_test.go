package chunkstore

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keepfs/keepfs/cache/meta"
	"github.com/keepfs/keepfs/repo/crypto"
)

// The descriptor cache keeps at most max files open, closes the least
// recently used first, and never closes a file a reader holds.
func TestFDCache(t *testing.T) {
	dir := t.TempDir()
	fc := newFDCache(2)
	open := func(i byte) (crypto.ID, *os.File) {
		p := filepath.Join(dir, string('a'+rune(i)))
		if err := os.WriteFile(p, []byte{i}, 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		return crypto.ID{i}, f
	}
	closed := func(f *os.File) bool { _, err := f.Stat(); return errors.Is(err, os.ErrClosed) }
	var files []*os.File
	for i := range byte(3) {
		id, f := open(i)
		files = append(files, f)
		fc.put(fc.add(id, f, blockFormat, 1))
		if i == 1 {
			fc.put(fc.get(crypto.ID{0})) // 0 is now the most recent
		}
	}
	if fc.len() != 2 || !closed(files[1]) || closed(files[0]) || closed(files[2]) {
		t.Fatalf("%d kept; closed: %v %v %v, want 2 kept and only the least recent closed", fc.len(), closed(files[0]), closed(files[1]), closed(files[2]))
	}
	// A second add of the same id keeps the first file.
	id, dup := open(0)
	oc := fc.add(id, dup, blockFormat, 1)
	if oc.f != files[0] || !closed(dup) {
		t.Fatal("second add of an id replaced the first file")
	}
	// Dropped while held: closed only when put back.
	fc.drop(crypto.ID{0})
	if fc.get(crypto.ID{0}) != nil || closed(files[0]) {
		t.Fatal("dropped file still cached, or closed under its reader")
	}
	b := make([]byte, 1)
	if _, err := oc.f.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	fc.put(oc)
	if !closed(files[0]) {
		t.Fatal("dropped file not closed once put back")
	}
	fc.close()
	if fc.len() != 0 || !closed(files[2]) {
		t.Fatal("close left files open")
	}
	id, f := open(3)
	fc.put(fc.add(id, f, blockFormat, 1))
	if fc.len() != 0 || !closed(f) {
		t.Fatal("a closed cache kept a file")
	}
}

// openFDs returns the paths of this process's descriptors below dir.
func openFDs(t *testing.T, dir string) []string {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && strings.HasPrefix(l, dir) {
			out = append(out, l)
		}
	}
	return out
}

// Reads keep chunk files open; removing a chunk (eviction, erase) closes
// its descriptor and deletes the file, and reads miss it from then on.
func TestChunkFileDescriptors(t *testing.T) {
	e := newEnv(t, 1<<30)
	s := e.s
	data := randBytes(3, 300<<10)
	id := e.key.BlobID(data)
	if err := s.Put([]Chunk{{ID: id, Data: data}}, false); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		got, err := s.LoadRange(id, 5000, 4096)
		if err != nil || !bytes.Equal(got, data[5000:9096]) {
			t.Fatal(err)
		}
	}
	p := s.files.path(id)
	if s.files.fds.len() != 1 || len(openFDs(t, p)) != 1 {
		t.Fatalf("%d cached, %d open, want the chunk file open once", s.files.fds.len(), len(openFDs(t, p)))
	}
	if err := s.files.remove(id); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("chunk file still there: %v", err)
	}
	if s.files.fds.len() != 0 || len(openFDs(t, p)) != 0 {
		t.Fatal("descriptor of a removed chunk file still open")
	}
	if _, err := s.LoadRange(id, 0, 10); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("read of a removed chunk: %v, want not found", err)
	}
	// A chunk written again replaces any descriptor of its old file.
	if err := s.files.write(id, data, false); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Load(id); err != nil || !bytes.Equal(got, data) {
		t.Fatal(err)
	}
	if err := s.files.write(id, data, false); err != nil {
		t.Fatal(err)
	}
	if s.files.fds.len() != 0 {
		t.Fatal("descriptor of a replaced chunk file kept")
	}
}

// Chunk files of format 2 (64 KiB blocks, written before format 3) still
// read, whole and in part.
func TestLegacyChunkFormat2(t *testing.T) {
	e := newEnv(t, 1<<30)
	s := e.s
	data := randBytes(5, 5*v2BlockSize+1234)
	id := e.key.BlobID(data)
	var sealed []byte
	ns := s.files.aead.NonceSize()
	for i := 0; i*v2BlockSize < len(data); i++ {
		blk := data[i*v2BlockSize : min((i+1)*v2BlockSize, len(data))]
		nonce := make([]byte, ns)
		rand.Read(nonce)
		ad := binary.BigEndian.AppendUint32(append([]byte(nil), id[:]...), uint32(i))
		sealed = s.files.aead.Seal(append(sealed, nonce...), nonce, blk, ad)
	}
	if err := os.WriteFile(s.files.path(id), sealed, 0o600); err != nil {
		t.Fatal(err)
	}
	err := e.db.Update(func(txn Txn) error {
		return txn.Set(meta.ChunkKey(id), append(binary.BigEndian.AppendUint64(nil, uint64(len(data))), 2))
	})
	if err != nil {
		t.Fatal(err)
	}
	size := int64(len(data))
	for _, r := range [][2]int64{{0, size}, {v2BlockSize - 1, 2}, {3*v2BlockSize + 7, 4096}, {size - 1, 1}, {100, 4 * v2BlockSize}} {
		for range 2 { // through Badger, then the open descriptor
			got, err := s.LoadRange(id, r[0], r[1])
			if err != nil || !bytes.Equal(got, data[r[0]:r[0]+r[1]]) {
				t.Fatalf("range %v: %v", r, err)
			}
		}
	}
}
