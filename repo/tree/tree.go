// Package tree defines directory trees as stored in tree blobs.
//
// A Tree is one directory: its entries (Nodes) sorted by name bytes. A
// directory Node names its child Tree by blob id, so a snapshot is a Merkle
// tree and unchanged subtrees are shared between snapshots for free. Names
// are arbitrary bytes (anything Linux allows), so the encoding is binary
// rather than JSON, which would mangle invalid UTF-8:
//
//	tree = "KPT1" || uvarint(n) || n * node
//	node = bytes(name) || type:1 || uvarint(mode) || uvarint(uid) || uvarint(gid)
//	       || uvarint(size) || varint(mtime) || varint(atime) || varint(ctime)
//	       || uvarint(inode) || uvarint(links) || uvarint(rdev) || bytes(linktarget)
//	       || uvarint(nx) || nx * (bytes(name) || bytes(value))
//	       || uvarint(nc) || nc * id:32 || holes || (type==dir ? id:32 : nothing)
//	bytes(x) = uvarint(len) || x
//
// A file may have holes: runs of zero bytes that are not stored. A tree
// with at least one hole starts with "KPT2" instead, and each of its nodes
// carries holes = uvarint(nh) || nh * (uvarint(at) || uvarint(len)): a hole
// of len > 0 bytes before chunk at (at == nc: after the last chunk), at
// strictly increasing. A tree without holes is written as "KPT1", without
// the field, so trees written before holes existed keep their ids, and a
// "KPT2" tree without a hole is refused (one encoding per tree).
package tree

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strings"
	"syscall"

	"github.com/keepfs/keepfs/repo/crypto"
)

// Type is the kind of a node.
type Type uint8

const (
	File Type = iota + 1
	Dir
	Symlink
	FIFO
	CharDev
	BlockDev
	Socket
)

func (t Type) String() string {
	switch t {
	case File:
		return "file"
	case Dir:
		return "dir"
	case Symlink:
		return "symlink"
	case FIFO:
		return "fifo"
	case CharDev:
		return "chardev"
	case BlockDev:
		return "blockdev"
	case Socket:
		return "socket"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Xattr is one extended attribute.
type Xattr struct {
	Name  string
	Value []byte
}

// Node is one directory entry with everything restore needs.
type Node struct {
	Name       string
	Type       Type
	Mode       uint32 // permission bits plus setuid, setgid, sticky (07777)
	UID, GID   uint32
	Size       uint64
	MTime      int64 // nanoseconds since the epoch
	ATime      int64
	CTime      int64
	Inode      uint64 // with Links > 1, identifies hard links within one snapshot
	Links      uint64
	Rdev       uint64
	LinkTarget string
	Xattrs     []Xattr
	Content    []crypto.ID // file chunks, in order
	Holes      []Hole      // runs of zeros between chunks, not stored (files)
	Subtree    crypto.ID   // for Dir
}

// Hole is a run of Len zero bytes before chunk At of a file's Content
// (At == len(Content): after the last chunk). A file's holes have strictly
// increasing At and Len > 0.
type Hole struct {
	At  int
	Len uint64
}

// MinHole is the smallest run of zeros that writers (the mount's commit,
// import) record as a hole: shorter ones inside data are not worth a chunk
// boundary and are chunked as zeros.
const MinHole = 1 << 20

// Piece is one run of a file's content in order: a chunk (ID), or a hole
// of Hole zero bytes (ID zero).
type Piece struct {
	ID   crypto.ID
	Hole uint64
}

// Pieces lists n's content in file order, holes included.
func (n *Node) Pieces() []Piece {
	out := make([]Piece, 0, len(n.Content)+len(n.Holes))
	h := 0
	for i := 0; i <= len(n.Content); i++ {
		for ; h < len(n.Holes) && n.Holes[h].At == i; h++ {
			out = append(out, Piece{Hole: n.Holes[h].Len})
		}
		if i < len(n.Content) {
			out = append(out, Piece{ID: n.Content[i]})
		}
	}
	return out
}

// SeekHoles answers lseek's SEEK_DATA and SEEK_HOLE (whence) from off in
// a file of size bytes whose holes are the sorted, disjoint ranges holes
// (start, end); the end of the file counts as a hole. ENXIO past the end
// or, for SEEK_DATA, when only holes follow.
func SeekHoles(holes [][2]uint64, size, off uint64, whence uint32) (uint64, syscall.Errno) {
	if off >= size {
		return 0, syscall.ENXIO
	}
	i := sort.Search(len(holes), func(i int) bool { return holes[i][1] > off })
	in := i < len(holes) && holes[i][0] <= off
	switch whence {
	case seekData:
		if !in {
			return off, 0
		}
		if holes[i][1] >= size {
			return 0, syscall.ENXIO
		}
		return holes[i][1], 0
	case seekHole:
		if in {
			return off, 0
		}
		if i < len(holes) {
			return holes[i][0], 0
		}
		return size, 0
	}
	return 0, syscall.EINVAL
}

const (
	seekData = 3 // SEEK_DATA
	seekHole = 4 // SEEK_HOLE
)

// SetPieces sets n's Content and Holes from pieces (adjacent holes merge,
// empty ones go).
func (n *Node) SetPieces(pieces []Piece) {
	n.Content, n.Holes = nil, nil
	for _, p := range pieces {
		if !p.ID.IsNull() {
			n.Content = append(n.Content, p.ID)
			continue
		}
		if p.Hole == 0 {
			continue
		}
		if k := len(n.Holes); k > 0 && n.Holes[k-1].At == len(n.Content) {
			n.Holes[k-1].Len += p.Hole
			continue
		}
		n.Holes = append(n.Holes, Hole{At: len(n.Content), Len: p.Hole})
	}
}

// Tree is one directory's entries.
type Tree struct {
	Nodes []*Node
}

// Sort orders nodes by name bytes, as Encode requires.
func (t *Tree) Sort() {
	sort.Slice(t.Nodes, func(i, j int) bool { return t.Nodes[i].Name < t.Nodes[j].Name })
}

// Find returns the node called name, or nil.
func (t *Tree) Find(name string) *Node {
	i := sort.Search(len(t.Nodes), func(i int) bool { return t.Nodes[i].Name >= name })
	if i < len(t.Nodes) && t.Nodes[i].Name == name {
		return t.Nodes[i]
	}
	return nil
}

// ValidName reports whether name can be a directory entry: it must not be
// able to climb out of the directory it is restored into.
func ValidName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") || len(name) > maxNameLen {
		return fmt.Errorf("invalid entry name %q", name)
	}
	return nil
}

const (
	magic      = "KPT1"
	magicHoles = "KPT2" // at least one node has holes
)

// Limits that bound what a decoder allocates for hostile input.
const (
	maxNameLen    = 255
	maxLinkTarget = 4096
	maxXattrs     = 1 << 12
	maxXattrSize  = 64 << 10
	maxChunks     = 1 << 24
	maxHoles      = 1 << 24
)

// check applies Decode's rules to a node before it is encoded: a tree that
// Encode accepts but Decode refuses would be a snapshot nobody can read.
func (n *Node) check() error {
	if n.Type < File || n.Type > Socket {
		return fmt.Errorf("tree: entry %q: unknown type %d", n.Name, n.Type)
	}
	if n.Type != File && len(n.Content) > 0 {
		return fmt.Errorf("tree: entry %q: %s with content", n.Name, n.Type)
	}
	if len(n.Content) > maxChunks {
		return fmt.Errorf("tree: entry %q: %d chunks", n.Name, len(n.Content))
	}
	if n.Type != File && len(n.Holes) > 0 {
		return fmt.Errorf("tree: entry %q: %s with holes", n.Name, n.Type)
	}
	if err := checkHoles(n.Holes, len(n.Content)); err != nil {
		return fmt.Errorf("tree: entry %q: %w", n.Name, err)
	}
	for _, id := range n.Content {
		if id.IsNull() {
			return fmt.Errorf("tree: entry %q: zero chunk id", n.Name)
		}
	}
	if len(n.LinkTarget) > maxLinkTarget {
		return fmt.Errorf("tree: entry %q: link target of %d bytes", n.Name, len(n.LinkTarget))
	}
	if len(n.Xattrs) > maxXattrs {
		return fmt.Errorf("tree: entry %q: %d xattrs", n.Name, len(n.Xattrs))
	}
	for _, x := range n.Xattrs {
		if len(x.Name) > maxNameLen || len(x.Value) > maxXattrSize {
			return fmt.Errorf("tree: entry %q: xattr %q too large", n.Name, x.Name)
		}
	}
	return nil
}

// checkHoles applies the rules for a file's holes.
func checkHoles(holes []Hole, nc int) error {
	if len(holes) > maxHoles {
		return fmt.Errorf("%d holes", len(holes))
	}
	for i, h := range holes {
		if h.Len == 0 || h.At < 0 || h.At > nc || i > 0 && holes[i-1].At >= h.At {
			return errors.New("holes out of order, empty or past the content")
		}
	}
	return nil
}

// Encode serialises t; nodes must be sorted with unique, valid names.
func (t *Tree) Encode() ([]byte, error) {
	var buf bytes.Buffer
	holes := false
	for _, n := range t.Nodes {
		holes = holes || len(n.Holes) > 0
	}
	if holes {
		buf.WriteString(magicHoles)
	} else {
		buf.WriteString(magic)
	}
	var tmp []byte
	tmp = binary.AppendUvarint(tmp[:0], uint64(len(t.Nodes)))
	buf.Write(tmp)
	for i, n := range t.Nodes {
		if err := ValidName(n.Name); err != nil {
			return nil, err
		}
		if err := n.check(); err != nil {
			return nil, err
		}
		if i > 0 && t.Nodes[i-1].Name >= n.Name {
			return nil, fmt.Errorf("tree: entries not sorted or duplicated at %q", n.Name)
		}
		b := tmp[:0]
		b = appendBytes(b, []byte(n.Name))
		b = append(b, byte(n.Type))
		for _, v := range []uint64{uint64(n.Mode), uint64(n.UID), uint64(n.GID), n.Size} {
			b = binary.AppendUvarint(b, v)
		}
		for _, v := range []int64{n.MTime, n.ATime, n.CTime} {
			b = binary.AppendVarint(b, v)
		}
		for _, v := range []uint64{n.Inode, n.Links, n.Rdev} {
			b = binary.AppendUvarint(b, v)
		}
		b = appendBytes(b, []byte(n.LinkTarget))
		b = binary.AppendUvarint(b, uint64(len(n.Xattrs)))
		for _, x := range n.Xattrs {
			b = appendBytes(b, []byte(x.Name))
			b = appendBytes(b, x.Value)
		}
		b = binary.AppendUvarint(b, uint64(len(n.Content)))
		for _, id := range n.Content {
			b = append(b, id[:]...)
		}
		if holes {
			b = binary.AppendUvarint(b, uint64(len(n.Holes)))
			for _, h := range n.Holes {
				b = binary.AppendUvarint(b, uint64(h.At))
				b = binary.AppendUvarint(b, h.Len)
			}
		}
		if n.Type == Dir {
			b = append(b, n.Subtree[:]...)
		}
		buf.Write(b)
		tmp = b
	}
	return buf.Bytes(), nil
}

func appendBytes(b, x []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(x)))
	return append(b, x...)
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(msg string) {
	if r.err == nil {
		r.err = errors.New("tree: " + msg)
	}
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	// Only the shortest encoding is accepted, so a tree has one encoding.
	if n <= 0 || n != len(binary.AppendUvarint(nil, v)) {
		r.fail("bad varint")
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
	if n <= 0 || n != len(binary.AppendVarint(nil, v)) {
		r.fail("bad varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) u32() uint32 {
	v := r.uvarint()
	if v > 1<<32-1 {
		r.fail("value out of range")
	}
	return uint32(v)
}

func (r *reader) bytes(max int) []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(max) || n > uint64(len(r.b)) {
		r.fail("truncated or oversized field")
		return nil
	}
	out := r.b[:n:n]
	r.b = r.b[n:]
	return out
}

func (r *reader) id() crypto.ID {
	var id crypto.ID
	if r.err != nil {
		return id
	}
	if len(r.b) < len(id) {
		r.fail("truncated id")
		return id
	}
	copy(id[:], r.b)
	r.b = r.b[len(id):]
	return id
}

// Decode parses a tree blob, rejecting names that could escape a restore
// target, unsorted or duplicate entries and unknown types.
func Decode(b []byte) (*Tree, error) {
	if len(b) < len(magic) || string(b[:len(magic)]) != magic && string(b[:len(magic)]) != magicHoles {
		return nil, errors.New("tree: bad magic")
	}
	withHoles, anyHole := string(b[:len(magic)]) == magicHoles, false
	r := &reader{b: b[len(magic):]}
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		return nil, errors.New("tree: entry count exceeds size")
	}
	t := &Tree{Nodes: make([]*Node, 0, n)}
	for i := uint64(0); i < n && r.err == nil; i++ {
		nd := &Node{}
		nd.Name = string(r.bytes(maxNameLen))
		if len(r.b) == 0 {
			r.fail("truncated node")
			break
		}
		if r.err == nil {
			nd.Type = Type(r.b[0])
			r.b = r.b[1:]
		}
		nd.Mode = r.u32()
		nd.UID = r.u32()
		nd.GID = r.u32()
		nd.Size = r.uvarint()
		nd.MTime = r.varint()
		nd.ATime = r.varint()
		nd.CTime = r.varint()
		nd.Inode = r.uvarint()
		nd.Links = r.uvarint()
		nd.Rdev = r.uvarint()
		nd.LinkTarget = string(r.bytes(maxLinkTarget))
		nx := r.uvarint()
		if nx > maxXattrs {
			r.fail("too many xattrs")
		}
		for j := uint64(0); j < nx && r.err == nil; j++ {
			name := string(r.bytes(maxNameLen))
			val := r.bytes(maxXattrSize)
			nd.Xattrs = append(nd.Xattrs, Xattr{Name: name, Value: append([]byte(nil), val...)})
		}
		nc := r.uvarint()
		if nc > maxChunks || nc > uint64(len(r.b))/32 {
			r.fail("chunk count exceeds size")
		}
		if r.err == nil && nc > 0 {
			nd.Content = make([]crypto.ID, nc)
			for j := range nd.Content {
				if nd.Content[j] = r.id(); r.err == nil && nd.Content[j].IsNull() {
					r.fail("zero chunk id")
				}
			}
		}
		if withHoles {
			nh := r.uvarint()
			if nh > maxHoles || nh > uint64(len(r.b))/2 {
				r.fail("hole count exceeds size")
			}
			for j := uint64(0); j < nh && r.err == nil; j++ {
				at := r.uvarint()
				if at > uint64(len(nd.Content)) {
					r.fail("hole past the content")
					break
				}
				nd.Holes = append(nd.Holes, Hole{At: int(at), Len: r.uvarint()})
			}
			if r.err == nil {
				if err := checkHoles(nd.Holes, len(nd.Content)); err != nil {
					r.fail(err.Error())
				}
			}
			anyHole = anyHole || len(nd.Holes) > 0
		}
		if r.err != nil {
			break
		}
		if nd.Type < File || nd.Type > Socket {
			return nil, fmt.Errorf("tree: entry %q: unknown type %d", nd.Name, nd.Type)
		}
		if nd.Type == Dir {
			nd.Subtree = r.id()
		}
		if nd.Type != File && (len(nd.Content) > 0 || len(nd.Holes) > 0) {
			return nil, fmt.Errorf("tree: entry %q: %s with content", nd.Name, nd.Type)
		}
		if err := ValidName(nd.Name); err != nil {
			return nil, fmt.Errorf("tree: %w", err)
		}
		if len(t.Nodes) > 0 && t.Nodes[len(t.Nodes)-1].Name >= nd.Name {
			return nil, fmt.Errorf("tree: entries not sorted or duplicated at %q", nd.Name)
		}
		t.Nodes = append(t.Nodes, nd)
	}
	if r.err != nil {
		return nil, r.err
	}
	if len(r.b) != 0 {
		return nil, errors.New("tree: trailing bytes")
	}
	if withHoles && !anyHole {
		return nil, errors.New("tree: KPT2 tree without holes")
	}
	return t, nil
}
