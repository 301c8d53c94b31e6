package meta

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"testing"

	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/tree"
)

func TestInodeRoundTrip(t *testing.T) {
	n := &Inode{Type: tree.File, Mode: 0o4755, UID: 1000, GID: 4242, Nlink: 3, Size: 1 << 40, Rdev: 7,
		Atime: -5, Mtime: 1700000000123456789, Ctime: 42, Parent: 9, Name: "\xffname\n", Target: "t",
		Xattrs: []tree.Xattr{{Name: "user.a", Value: []byte{0, 1}}},
		Chunks: []Chunk{{ID: crypto.Hash([]byte("a")), Len: 1 << 20}, {ID: crypto.Hash([]byte("b")), Len: 5}}}
	got, err := DecodeInode(EncodeInode(n))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, n) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, n)
	}
	b := EncodeInode(n)
	for i := 0; i < len(b); i++ {
		DecodeInode(b[:i]) // must not panic on truncation
	}
}

func TestKeys(t *testing.T) {
	if InoFromInodeKey(InodeKey(12345)) != 12345 {
		t.Fatal("inode key")
	}
	k := DirentKey(7, "name")
	if NameFromDirentKey(k) != "name" || !bytes.HasPrefix(k, DirentPrefix(7)) || bytes.HasPrefix(k, DirentPrefix(8)) {
		t.Fatal("dirent key")
	}
	id := crypto.Hash([]byte("x"))
	if IDFromKey(ChunkKey(id)) != id || IDFromKey(QueueKey(id)) != id {
		t.Fatal("chunk/queue key")
	}
	ino, typ, err := DecodeDirent(EncodeDirent(99, tree.Dir))
	if err != nil || ino != 99 || typ != tree.Dir {
		t.Fatal("dirent value")
	}
}

func TestIntentRoundTrip(t *testing.T) {
	mode, gid, atime := uint32(0o600), uint32(0), int64(-3)
	in := &Intent{Staging: "0a1b2c", Size: 10 << 20, Mtime: 1700000000123456789, Ctime: 5,
		Mode: &mode, GID: &gid, Atime: &atime,
		Dirty:   []Range{{0, 4096}, {1 << 20, 10 << 20}},
		Written: []Range{{0, 100}, {1 << 20, 9 << 20}},
		Points:  []uint64{7, 3}}
	in.Key[0], in.Key[31], in.Base[31] = 1, 2, 3
	got, err := DecodeIntent(EncodeIntent(in))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, in) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, in)
	}
	b := EncodeIntent(in)
	for i := 0; i < len(b); i++ {
		if _, err := DecodeIntent(b[:i]); err == nil {
			t.Fatalf("truncated to %d bytes: accepted", i)
		}
	}
	// Ranges must stay sorted, disjoint and within the size: recovery
	// writes through them.
	for _, bad := range []Intent{
		{Size: 10, Dirty: []Range{{5, 11}}},
		{Size: 10, Dirty: []Range{{5, 6}, {2, 3}}},
		{Size: 10, Written: []Range{{5, 5}}},
	} {
		if _, err := DecodeIntent(EncodeIntent(&bad)); err == nil {
			t.Fatalf("accepted %+v", bad)
		}
	}
	// A mode, uid or gid past 32 bits is no value EncodeIntent wrote:
	// refused, not cut to its low bits (0o644 here).
	head := EncodeIntent(&Intent{})[:1+1+64+3]
	for i := range 3 {
		rec := append(append([]byte(nil), head...), 1<<i)
		rec = binary.AppendUvarint(rec, 1<<32|0o644)
		rec = append(rec, 0, 0, 0)
		if got, err := DecodeIntent(rec); err == nil {
			t.Fatalf("field %d of 33 bits accepted: %+v", i, got)
		}
	}
}

// FuzzDecodeIntent: the decoder never panics, and what it accepts
// survives an encoding round trip unchanged.
func FuzzDecodeIntent(f *testing.F) {
	mode := uint32(0o644)
	f.Add(EncodeIntent(&Intent{Staging: "s", Size: 8, Mode: &mode, Dirty: []Range{{0, 8}}, Written: []Range{{1, 2}}, Points: []uint64{4}}))
	f.Add(EncodeIntent(&Intent{}))
	f.Add([]byte{intentVersion, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		in, err := DecodeIntent(b)
		if err != nil {
			return
		}
		again, err := DecodeIntent(EncodeIntent(in))
		if err != nil || !reflect.DeepEqual(again, in) {
			t.Fatalf("round trip of %x: %+v, %v", b, again, err)
		}
		// As documented: ranges sorted, disjoint, non-empty, within Size
		// (recovery writes through them).
		for _, rs := range [][]Range{in.Dirty, in.Written} {
			for i, r := range rs {
				if r.Start >= r.End || r.End > in.Size || i > 0 && r.Start <= rs[i-1].End {
					t.Fatalf("accepted range %d %+v of %+v in a file of %d bytes", i, r, rs, in.Size)
				}
			}
		}
	})
}

func TestTreeEntryRoundTrip(t *testing.T) {
	e := &TreeEntry{ID: crypto.Hash([]byte("tree")), Rules: crypto.Hash([]byte("rules")), Files: 1 << 40, Dirs: 3, Bytes: 1<<62 - 1}
	got, err := DecodeTreeEntry(EncodeTreeEntry(e))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, e) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, e)
	}
	b := EncodeTreeEntry(e)
	for i := 0; i < len(b); i++ {
		if _, err := DecodeTreeEntry(b[:i]); err == nil {
			t.Fatalf("truncated to %d bytes: accepted", i)
		}
	}
	if _, err := DecodeTreeEntry(append(b, 0)); err == nil {
		t.Fatal("trailing byte accepted")
	}
	// A count in a longer varint than the encoder writes (Files 0 as 80 00):
	// the decoder refuses what EncodeTreeEntry cannot have written.
	one := EncodeTreeEntry(&TreeEntry{ID: e.ID, Dirs: 1})
	long := append(append(one[:65:65], 0x80), one[65:]...)
	if _, err := DecodeTreeEntry(long); err == nil {
		t.Fatalf("non-canonical varint accepted: %x", long[65:])
	}
	for _, bad := range []TreeEntry{{Dirs: 1}, {ID: e.ID}, {ID: e.ID, Dirs: 1, Files: -1}} {
		if _, err := DecodeTreeEntry(EncodeTreeEntry(&bad)); err == nil {
			t.Fatalf("accepted %+v", bad)
		}
	}
	if ino, ok := InoFromTreeKey(TreeKey(77)); !ok || ino != 77 || !bytes.HasPrefix(TreeKey(77), TreePrefix()) {
		t.Fatal("tree key")
	}
	if _, ok := InoFromTreeKey(InodeKey(77)); ok {
		t.Fatal("an inode key parsed as a tree key")
	}
}

// FuzzDecodeTreeEntry: the decoder never panics on corrupt bytes, and it
// accepts only what EncodeTreeEntry writes: the bytes it accepts are the
// encoding of what it returns.
func FuzzDecodeTreeEntry(f *testing.F) {
	f.Add(EncodeTreeEntry(&TreeEntry{ID: crypto.Hash([]byte("t")), Dirs: 1}))
	f.Add([]byte{treeEntryVersion, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := DecodeTreeEntry(b)
		if err != nil {
			return
		}
		if enc := EncodeTreeEntry(e); !bytes.Equal(enc, b) {
			t.Fatalf("accepted %x, which encodes as %x", b, enc)
		}
		if e.ID.IsNull() || e.Dirs < 1 || e.Files < 0 || e.Bytes < 0 {
			t.Fatalf("accepted an impossible entry %+v", e)
		}
	})
}
