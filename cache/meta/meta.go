package meta

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/tree"
)

// Key prefixes; see the schema above.
const (
	prefixInode  = 'i'
	prefixDirent = 'd'
	prefixChunk  = 'c'
	prefixQueue  = 'q'
	prefixState  = 's'
)

// RootIno is the inode number of the live tree's root.
const RootIno uint64 = 1

// InodeKey is the key of inode ino.
func InodeKey(ino uint64) []byte {
	k := make([]byte, 9)
	k[0] = prefixInode
	binary.BigEndian.PutUint64(k[1:], ino)
	return k
}

// InodePrefix prefixes every inode key.
func InodePrefix() []byte { return []byte{prefixInode} }

// InoFromInodeKey parses an inode key.
func InoFromInodeKey(k []byte) uint64 { return binary.BigEndian.Uint64(k[1:9]) }

// DirentKey is the key of entry name in directory parent.
func DirentKey(parent uint64, name string) []byte {
	k := make([]byte, 9, 9+len(name))
	k[0] = prefixDirent
	binary.BigEndian.PutUint64(k[1:], parent)
	return append(k, name...)
}

// DirentPrefix prefixes every entry of directory parent.
func DirentPrefix(parent uint64) []byte { return DirentKey(parent, "") }

// NameFromDirentKey returns the entry name of a dirent key.
func NameFromDirentKey(k []byte) string { return string(k[9:]) }

// EncodeDirent is the value of a dirent key.
func EncodeDirent(ino uint64, t tree.Type) []byte {
	v := make([]byte, 9)
	binary.BigEndian.PutUint64(v, ino)
	v[8] = byte(t)
	return v
}

// DecodeDirent parses a dirent value.
func DecodeDirent(v []byte) (uint64, tree.Type, error) {
	if len(v) != 9 {
		return 0, 0, errors.New("meta: bad dirent value")
	}
	return binary.BigEndian.Uint64(v), tree.Type(v[8]), nil
}

// ChunkKey is the key holding a chunk's plaintext.
func ChunkKey(id crypto.ID) []byte { return append([]byte{prefixChunk}, id[:]...) }

// ChunkPrefix prefixes every chunk key.
func ChunkPrefix() []byte { return []byte{prefixChunk} }

// QueueKey marks chunk id as waiting for upload.
func QueueKey(id crypto.ID) []byte { return append([]byte{prefixQueue}, id[:]...) }

// QueuePrefix prefixes every queue key.
func QueuePrefix() []byte { return []byte{prefixQueue} }

// IDFromKey returns the blob id of a chunk or queue key.
func IDFromKey(k []byte) crypto.ID {
	var id crypto.ID
	copy(id[:], k[1:])
	return id
}

// StateKey names a state value.
func StateKey(name string) []byte { return append([]byte{prefixState}, name...) }

// Chunk is one piece of a file's content.
type Chunk struct {
	ID  crypto.ID
	Len uint32
}

// Inode is one file, directory, symlink or special file.
type Inode struct {
	Type                tree.Type
	Mode                uint32 // 07777 bits
	UID, GID            uint32
	Nlink               uint32
	Size                uint64
	Rdev                uint64
	Atime, Mtime, Ctime int64 // ns since the epoch
	// Parent is the directory the inode was last linked into; it finds the
	// path for .gdprignore decisions and the dirty path for the snapshotter.
	Parent uint64
	Name   string // name in Parent, for the same reasons
	Target string // symlink target
	Xattrs []tree.Xattr
	Chunks []Chunk
}

const inodeVersion = 1

// EncodeInode serialises n.
func EncodeInode(n *Inode) []byte {
	b := make([]byte, 0, 64+len(n.Target)+len(n.Chunks)*36)
	b = append(b, inodeVersion, byte(n.Type))
	for _, v := range []uint64{uint64(n.Mode), uint64(n.UID), uint64(n.GID), uint64(n.Nlink), n.Size, n.Rdev, n.Parent} {
		b = binary.AppendUvarint(b, v)
	}
	for _, v := range []int64{n.Atime, n.Mtime, n.Ctime} {
		b = binary.AppendVarint(b, v)
	}
	b = appendBytes(b, []byte(n.Name))
	b = appendBytes(b, []byte(n.Target))
	b = binary.AppendUvarint(b, uint64(len(n.Xattrs)))
	for _, x := range n.Xattrs {
		b = appendBytes(b, []byte(x.Name))
		b = appendBytes(b, x.Value)
	}
	b = binary.AppendUvarint(b, uint64(len(n.Chunks)))
	for _, c := range n.Chunks {
		b = append(b, c.ID[:]...)
		b = binary.AppendUvarint(b, uint64(c.Len))
	}
	return b
}

func appendBytes(b, x []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(x)))
	return append(b, x...)
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errors.New("meta: bad varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = errors.New("meta: bad varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) bytes() []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.err = errors.New("meta: truncated field")
		return nil
	}
	out := append([]byte(nil), r.b[:n]...)
	r.b = r.b[n:]
	return out
}

// DecodeInode parses an inode record.
func DecodeInode(b []byte) (*Inode, error) {
	if len(b) < 2 || b[0] != inodeVersion {
		return nil, fmt.Errorf("meta: unknown inode record version")
	}
	n := &Inode{Type: tree.Type(b[1])}
	r := &reader{b: b[2:]}
	n.Mode = uint32(r.uvarint())
	n.UID = uint32(r.uvarint())
	n.GID = uint32(r.uvarint())
	n.Nlink = uint32(r.uvarint())
	n.Size = r.uvarint()
	n.Rdev = r.uvarint()
	n.Parent = r.uvarint()
	n.Atime = r.varint()
	n.Mtime = r.varint()
	n.Ctime = r.varint()
	n.Name = string(r.bytes())
	n.Target = string(r.bytes())
	nx := r.uvarint()
	if nx > uint64(len(r.b)) {
		return nil, errors.New("meta: bad xattr count")
	}
	for i := uint64(0); i < nx && r.err == nil; i++ {
		name := string(r.bytes())
		n.Xattrs = append(n.Xattrs, tree.Xattr{Name: name, Value: r.bytes()})
	}
	nc := r.uvarint()
	if nc > uint64(len(r.b))/33 {
		return nil, errors.New("meta: bad chunk count")
	}
	if nc > 0 {
		n.Chunks = make([]Chunk, nc)
	}
	for i := range n.Chunks {
		if r.err != nil || len(r.b) < 32 {
			return nil, errors.New("meta: truncated chunk list")
		}
		copy(n.Chunks[i].ID[:], r.b)
		r.b = r.b[32:]
		n.Chunks[i].Len = uint32(r.uvarint())
	}
	if r.err != nil {
		return nil, r.err
	}
	return n, nil
}
