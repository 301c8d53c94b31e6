package meta

import (
	"bytes"
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
