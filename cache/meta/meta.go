package meta

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

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
	prefixIntent = 'f'
	prefixTree   = 't'
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

// IntentKey is the key of the fsync intent of inode ino.
func IntentKey(ino uint64) []byte {
	k := InodeKey(ino)
	k[0] = prefixIntent
	return k
}

// IntentPrefix prefixes every intent key.
func IntentPrefix() []byte { return []byte{prefixIntent} }

// TreeKey is the key of the cached tree id of directory ino.
func TreeKey(ino uint64) []byte {
	k := InodeKey(ino)
	k[0] = prefixTree
	return k
}

// TreePrefix prefixes every cached tree key.
func TreePrefix() []byte { return []byte{prefixTree} }

// InoFromTreeKey parses a tree key; ok is false if k is not one.
func InoFromTreeKey(k []byte) (uint64, bool) {
	if len(k) != 9 || k[0] != prefixTree {
		return 0, false
	}
	return binary.BigEndian.Uint64(k[1:]), true
}

// TreeEntry is the tree a snapshot walk built for a directory, valid while
// neither the directory's subtree nor the ignore rules that reach it from
// above change.
type TreeEntry struct {
	ID crypto.ID // the tree blob
	// Rules identifies the ignore rules in force above the directory and
	// its path below the topmost ignore file (zero: no rules apply).
	Rules              crypto.ID
	Files, Dirs, Bytes int64 // the subtree's snapshot statistics
}

const treeEntryVersion = 1

// EncodeTreeEntry is the value of a tree key.
func EncodeTreeEntry(e *TreeEntry) []byte {
	b := make([]byte, 0, 1+64+3*binary.MaxVarintLen64)
	b = append(b, treeEntryVersion)
	b = append(b, e.ID[:]...)
	b = append(b, e.Rules[:]...)
	for _, v := range []int64{e.Files, e.Dirs, e.Bytes} {
		b = binary.AppendUvarint(b, uint64(v))
	}
	return b
}

// DecodeTreeEntry parses a tree key's value; it refuses anything that
// EncodeTreeEntry cannot have written.
func DecodeTreeEntry(b []byte) (*TreeEntry, error) {
	if len(b) < 1+64 || b[0] != treeEntryVersion {
		return nil, errors.New("meta: bad tree cache record")
	}
	e := &TreeEntry{}
	copy(e.ID[:], b[1:])
	copy(e.Rules[:], b[33:])
	r := &reader{b: b[65:]}
	var buf [binary.MaxVarintLen64]byte
	for _, p := range []*int64{&e.Files, &e.Dirs, &e.Bytes} {
		before := len(r.b)
		v := r.uvarint()
		// Only the shortest encoding: EncodeTreeEntry writes no other.
		if r.err == nil && before-len(r.b) != binary.PutUvarint(buf[:], v) {
			return nil, errors.New("meta: non-canonical count in tree cache record")
		}
		if v > 1<<62 {
			return nil, errors.New("meta: bad count in tree cache record")
		}
		*p = int64(v)
	}
	if r.err != nil {
		return nil, r.err
	}
	if len(r.b) != 0 || e.ID.IsNull() || e.Dirs < 1 {
		return nil, errors.New("meta: bad tree cache record")
	}
	return e, nil
}

// Chunk is one piece of a file's content: a stored chunk, or with a zero
// ID a hole, Len zero bytes that are not stored.
type Chunk struct {
	ID  crypto.ID
	Len uint64
}

// IsHole reports whether c is a hole.
func (c Chunk) IsHole() bool { return c.ID.IsNull() }

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
		b = binary.AppendUvarint(b, c.Len)
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
		n.Chunks[i].Len = r.uvarint()
	}
	if r.err != nil {
		return nil, r.err
	}
	return n, nil
}

// Intent is what an fsync made durable before its commit: the file's
// uncommitted changes relative to the chunk list its inode names, with the
// bytes themselves in an encrypted staging file.
type Intent struct {
	Staging      string   // file name in the staging directory
	Key          [32]byte // AES-256-GCM key of the staging file's blocks
	Base         [32]byte // digest of the inode's chunk list the changes apply to
	Size         uint64
	Mtime, Ctime int64
	// Pending attribute changes; absent ones are nil.
	Mode, UID, GID *uint32
	Atime          *int64
	Dirty          []Range  // bytes that differ from the base
	Written        []Range  // of those, bytes the staging file holds (the rest are zeros)
	Points         []uint64 // offsets where the base's chunking must be redone
}

// Range is a half-open byte range [Start, End).
type Range struct{ Start, End uint64 }

// intentVersion 2: staging files sealed in blocks (version 1 named CTR
// ones, with an IV).
const intentVersion = 2

// EncodeIntent is the value of an intent key.
func EncodeIntent(in *Intent) []byte {
	b := []byte{intentVersion}
	b = appendBytes(b, []byte(in.Staging))
	b = append(b, in.Key[:]...)
	b = append(b, in.Base[:]...)
	b = binary.AppendUvarint(b, in.Size)
	b = binary.AppendVarint(b, in.Mtime)
	b = binary.AppendVarint(b, in.Ctime)
	var has byte
	for i, p := range []*uint32{in.Mode, in.UID, in.GID} {
		if p != nil {
			has |= 1 << i
		}
	}
	if in.Atime != nil {
		has |= 1 << 3
	}
	b = append(b, has)
	for _, p := range []*uint32{in.Mode, in.UID, in.GID} {
		if p != nil {
			b = binary.AppendUvarint(b, uint64(*p))
		}
	}
	if in.Atime != nil {
		b = binary.AppendVarint(b, *in.Atime)
	}
	for _, rs := range [][]Range{in.Dirty, in.Written} {
		b = binary.AppendUvarint(b, uint64(len(rs)))
		for _, r := range rs {
			b = binary.AppendUvarint(b, r.Start)
			b = binary.AppendUvarint(b, r.End-r.Start)
		}
	}
	b = binary.AppendUvarint(b, uint64(len(in.Points)))
	for _, p := range in.Points {
		b = binary.AppendUvarint(b, p)
	}
	return b
}

// DecodeIntent parses an intent record. Ranges come out sorted, disjoint
// and within Size, or the record is refused.
func DecodeIntent(b []byte) (*Intent, error) {
	if len(b) < 1 || b[0] != intentVersion {
		return nil, errors.New("meta: unknown intent record version")
	}
	r := &reader{b: b[1:]}
	in := &Intent{Staging: string(r.bytes())}
	if r.err != nil || len(r.b) < 32+32 {
		return nil, errors.New("meta: truncated intent record")
	}
	copy(in.Key[:], r.b)
	copy(in.Base[:], r.b[32:])
	r.b = r.b[64:]
	in.Size = r.uvarint()
	in.Mtime = r.varint()
	in.Ctime = r.varint()
	if r.err != nil || len(r.b) < 1 {
		return nil, errors.New("meta: truncated intent record")
	}
	has := r.b[0]
	if has > 0xf {
		return nil, errors.New("meta: bad flags in intent record")
	}
	r.b = r.b[1:]
	for i, p := range []**uint32{&in.Mode, &in.UID, &in.GID} {
		if has&(1<<i) != 0 {
			v := r.uvarint()
			if v > math.MaxUint32 {
				return nil, errors.New("meta: mode, uid or gid past 32 bits in intent record")
			}
			v32 := uint32(v)
			*p = &v32
		}
	}
	if has&(1<<3) != 0 {
		v := r.varint()
		in.Atime = &v
	}
	for _, rs := range []*[]Range{&in.Dirty, &in.Written} {
		n := r.uvarint()
		if n > uint64(len(r.b))/2 {
			return nil, errors.New("meta: bad range count")
		}
		var prev uint64
		for i := uint64(0); i < n && r.err == nil; i++ {
			s, l := r.uvarint(), r.uvarint()
			e := s + l
			if e < s || e > in.Size || l == 0 || i > 0 && s <= prev {
				return nil, errors.New("meta: bad range in intent record")
			}
			*rs = append(*rs, Range{s, e})
			prev = e
		}
	}
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		return nil, errors.New("meta: bad point count")
	}
	for i := uint64(0); i < n && r.err == nil; i++ {
		in.Points = append(in.Points, r.uvarint())
	}
	if r.err != nil {
		return nil, r.err
	}
	if len(r.b) != 0 {
		return nil, errors.New("meta: trailing bytes in intent record")
	}
	return in, nil
}
