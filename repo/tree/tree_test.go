package tree

import (
	"bytes"
	"encoding/binary"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/keepfs/keepfs/repo/crypto"
)

func manyChunks(n int) []crypto.ID {
	out := make([]crypto.ID, n)
	for i := range out {
		out[i] = crypto.Hash([]byte{byte(i), byte(i >> 8), byte(i >> 16)})
	}
	return out
}

// testTree has one node of every type and the awkward cases of each field.
func testTree() *Tree {
	t := &Tree{Nodes: []*Node{
		{Name: "a dir", Type: Dir, Mode: 0o755, Subtree: crypto.ID{7}, MTime: -5, Links: 2},
		{Name: "file\n\xff\xfe", Type: File, Mode: 0o4755, UID: 1000, GID: 1000, Size: 3, MTime: 1e18, CTime: 2,
			Inode: 42, Links: 2, Content: []crypto.ID{{1}, {2}}, Xattrs: []Xattr{{Name: "user.x", Value: []byte{0, 1}}, {Name: "user.empty", Value: []byte{}}}},
		{Name: "big", Type: File, Size: math.MaxUint64, Content: manyChunks(5000), MTime: math.MinInt64, ATime: math.MaxInt64, CTime: -1,
			UID: math.MaxUint32, GID: math.MaxUint32, Mode: 0o7777, Inode: math.MaxUint64, Links: math.MaxUint64},
		{Name: "empty file", Type: File},
		{Name: "link", Type: Symlink, LinkTarget: "../a dir", Size: 8},
		{Name: "long link", Type: Symlink, LinkTarget: strings.Repeat("x/", 2048)},
		{Name: strings.Repeat("n", 255), Type: FIFO, Mode: 0o600},
		{Name: "\x01\x7f\xc3\x28 not utf-8", Type: Socket},
		{Name: "tty", Type: CharDev, Rdev: 0x0504},
		{Name: "sda", Type: BlockDev, Rdev: math.MaxUint64},
		{Name: "xattrs", Type: Dir, Xattrs: []Xattr{{Name: strings.Repeat("u", 255), Value: bytes.Repeat([]byte{0xff}, 64<<10)}, {Name: "\xff", Value: nil}}},
		{Name: "-", Type: File}, {Name: "...", Type: File}, {Name: ".hidden", Type: File}, {Name: "\\", Type: File},
	}}
	t.Sort()
	return t
}

func encode(t *testing.T, tr *Tree) []byte {
	t.Helper()
	b, err := tr.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// normalize makes empty and nil slices compare equal, as the encoding
// does not tell them apart.
func normalize(tr *Tree) *Tree {
	if len(tr.Nodes) == 0 {
		tr.Nodes = nil
	}
	for _, n := range tr.Nodes {
		if len(n.Content) == 0 {
			n.Content = nil
		}
		if len(n.Xattrs) == 0 {
			n.Xattrs = nil
		}
		for i := range n.Xattrs {
			if len(n.Xattrs[i].Value) == 0 {
				n.Xattrs[i].Value = nil
			}
		}
	}
	return tr
}

func TestRoundTrip(t *testing.T) {
	for name, tr := range map[string]*Tree{"all kinds": testTree(), "empty": {}} {
		b := encode(t, tr)
		got, err := Decode(b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !reflect.DeepEqual(normalize(got), normalize(tr)) {
			for i := range tr.Nodes {
				if i >= len(got.Nodes) || !reflect.DeepEqual(got.Nodes[i], tr.Nodes[i]) {
					t.Fatalf("%s: node %d differs", name, i)
				}
			}
			t.Fatalf("%s: tree differs", name)
		}
		if !bytes.Equal(encode(t, got), b) {
			t.Fatalf("%s: re-encoding differs", name)
		}
	}
	// Subtree ids are only stored for directories.
	tr := &Tree{Nodes: []*Node{{Name: "f", Type: File, Subtree: crypto.ID{1}}}}
	if got, err := Decode(encode(t, tr)); err != nil || !got.Nodes[0].Subtree.IsNull() {
		t.Fatalf("file subtree: %v", err)
	}
}

// The encoding follows the layout documented in the package comment.
func TestEncodingMatchesSpec(t *testing.T) {
	tr := &Tree{Nodes: []*Node{
		{Name: "d", Type: Dir, Mode: 0o755, UID: 1, GID: 2, MTime: -1, ATime: 3, CTime: 4, Links: 2, Subtree: crypto.ID{9}},
		{Name: "f", Type: File, Size: 5, Inode: 7, Links: 1, Content: []crypto.ID{{8}}, Xattrs: []Xattr{{Name: "user.a", Value: []byte("v")}}},
	}}
	got := encode(t, tr)
	if !bytes.Equal(got, rawTree(rawNode("d", Dir, nodeOpts{mode: 0o755, uid: 1, gid: 2, mtime: -1, atime: 3, ctime: 4, links: 2, subtree: &crypto.ID{9}}),
		rawNode("f", File, nodeOpts{size: 5, inode: 7, links: 1, chunks: []crypto.ID{{8}}, xattrs: []Xattr{{Name: "user.a", Value: []byte("v")}}}))) {
		t.Fatalf("encoding does not follow the documented layout: %x", got)
	}
}

type nodeOpts struct {
	mode, uid, gid, size, inode, links, rdev uint64
	mtime, atime, ctime                      int64
	target                                   string
	xattrs                                   []Xattr
	chunks                                   []crypto.ID
	subtree                                  *crypto.ID
	nxattrs, nchunks                         *uint64 // override the counts
}

// rawNode encodes a node field by field from the package comment, without
// any of Encode's checks, so tests can build any (invalid) input.
func rawNode(name string, typ Type, o nodeOpts) []byte {
	b := binary.AppendUvarint(nil, uint64(len(name)))
	b = append(b, name...)
	b = append(b, byte(typ))
	for _, v := range []uint64{o.mode, o.uid, o.gid, o.size} {
		b = binary.AppendUvarint(b, v)
	}
	for _, v := range []int64{o.mtime, o.atime, o.ctime} {
		b = binary.AppendVarint(b, v)
	}
	for _, v := range []uint64{o.inode, o.links, o.rdev} {
		b = binary.AppendUvarint(b, v)
	}
	b = binary.AppendUvarint(b, uint64(len(o.target)))
	b = append(b, o.target...)
	nx := uint64(len(o.xattrs))
	if o.nxattrs != nil {
		nx = *o.nxattrs
	}
	b = binary.AppendUvarint(b, nx)
	for _, x := range o.xattrs {
		b = binary.AppendUvarint(b, uint64(len(x.Name)))
		b = append(b, x.Name...)
		b = binary.AppendUvarint(b, uint64(len(x.Value)))
		b = append(b, x.Value...)
	}
	nc := uint64(len(o.chunks))
	if o.nchunks != nil {
		nc = *o.nchunks
	}
	b = binary.AppendUvarint(b, nc)
	for _, id := range o.chunks {
		b = append(b, id[:]...)
	}
	if o.subtree != nil {
		b = append(b, o.subtree[:]...)
	}
	return b
}

func rawTree(nodes ...[]byte) []byte {
	b := append([]byte(magic), binary.AppendUvarint(nil, uint64(len(nodes)))...)
	for _, n := range nodes {
		b = append(b, n...)
	}
	return b
}

func TestEncodeRejects(t *testing.T) {
	bad := map[string]*Tree{
		"unsorted":            {Nodes: []*Node{{Name: "b", Type: File}, {Name: "a", Type: File}}},
		"duplicate":           {Nodes: []*Node{{Name: "a", Type: File}, {Name: "a", Type: Dir}}},
		"unknown type 0":      {Nodes: []*Node{{Name: "a"}}},
		"unknown type 8":      {Nodes: []*Node{{Name: "a", Type: Socket + 1}}},
		"dir with content":    {Nodes: []*Node{{Name: "a", Type: Dir, Content: []crypto.ID{{1}}}}},
		"link with content":   {Nodes: []*Node{{Name: "a", Type: Symlink, Content: []crypto.ID{{1}}}}},
		"long link target":    {Nodes: []*Node{{Name: "a", Type: Symlink, LinkTarget: strings.Repeat("x", 4097)}}},
		"long xattr name":     {Nodes: []*Node{{Name: "a", Type: File, Xattrs: []Xattr{{Name: strings.Repeat("x", 256)}}}}},
		"large xattr value":   {Nodes: []*Node{{Name: "a", Type: File, Xattrs: []Xattr{{Name: "user.a", Value: make([]byte, 64<<10+1)}}}}},
		"too many xattrs":     {Nodes: []*Node{{Name: "a", Type: File, Xattrs: make([]Xattr, maxXattrs+1)}}},
		"bad name after good": {Nodes: []*Node{{Name: "a", Type: File}, {Name: "b/c", Type: File}}},
	}
	for _, name := range []string{"", ".", "..", "a/b", "/", "nul\x00", "\x00", strings.Repeat("x", 256)} {
		bad["name "+name] = &Tree{Nodes: []*Node{{Name: name, Type: File}}}
		if ValidName(name) == nil {
			t.Errorf("ValidName(%q) accepted", name)
		}
	}
	for name, tr := range bad {
		if b, err := tr.Encode(); err == nil {
			t.Errorf("%s: encoded %q", name, b)
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	file := func(name string) []byte { return rawNode(name, File, nodeOpts{}) }
	good := encode(t, testTree())
	big := uint64(1 << 40)
	two := uint64(2)
	bad := map[string][]byte{
		"trailing bytes":       append(append([]byte(nil), good...), 0),
		"truncated":            good[:len(good)-1],
		"half":                 good[:len(good)/2],
		"bad magic":            append([]byte("KPT2"), good[4:]...),
		"no magic":             good[:2],
		"no count":             []byte(magic),
		"count past data":      rawTree(file("a"))[:5],
		"count above nodes":    append(append([]byte(magic), 2), file("a")...),
		"non-canonical count":  append([]byte(magic), 0x80, 0x00),
		"unsorted":             rawTree(file("b"), file("a")),
		"duplicate":            rawTree(file("a"), file("a")),
		"type 0":               rawTree(rawNode("a", 0, nodeOpts{})),
		"type 8":               rawTree(rawNode("a", Socket+1, nodeOpts{})),
		"type 255":             rawTree(rawNode("a", 255, nodeOpts{})),
		"dir with content":     rawTree(rawNode("a", Dir, nodeOpts{chunks: []crypto.ID{{1}}, subtree: &crypto.ID{}})),
		"fifo with content":    rawTree(rawNode("a", FIFO, nodeOpts{chunks: []crypto.ID{{1}}})),
		"dir without subtree":  rawTree(rawNode("a", Dir, nodeOpts{})),
		"mode above 32 bits":   rawTree(rawNode("a", File, nodeOpts{mode: 1 << 32})),
		"uid above 32 bits":    rawTree(rawNode("a", File, nodeOpts{uid: 1 << 32})),
		"gid above 32 bits":    rawTree(rawNode("a", File, nodeOpts{gid: 1 << 32})),
		"link target too long": rawTree(rawNode("a", Symlink, nodeOpts{target: strings.Repeat("x", 4097)})),
		"xattr name too long":  rawTree(rawNode("a", File, nodeOpts{xattrs: []Xattr{{Name: strings.Repeat("x", 256)}}})),
		"xattr too large":      rawTree(rawNode("a", File, nodeOpts{xattrs: []Xattr{{Name: "x", Value: make([]byte, 64<<10+1)}}})),
		"xattr count huge":     rawTree(rawNode("a", File, nodeOpts{nxattrs: &big})),
		"xattr count short":    rawTree(rawNode("a", File, nodeOpts{nxattrs: &two, xattrs: []Xattr{{Name: "x"}}})),
		"chunk count huge":     rawTree(rawNode("a", File, nodeOpts{nchunks: &big})),
		"chunk count short":    rawTree(rawNode("a", File, nodeOpts{nchunks: &two, chunks: []crypto.ID{{1}}})),
		"name too long":        rawTree(file(strings.Repeat("n", 256))),
	}
	for _, name := range []string{"", ".", "..", "a/b", "/", "..\x00", "\x00"} {
		bad["name "+name] = rawTree(file(name))
	}
	for name, b := range bad {
		if tr, err := Decode(b); err == nil {
			t.Errorf("%s: decoded %d nodes", name, len(tr.Nodes))
		}
	}
	// The raw encoder agrees with Decode on valid input, so the rejections
	// above are for the reason their names give.
	if _, err := Decode(rawTree(file("a"), file("b"), rawNode("c", Dir, nodeOpts{subtree: &crypto.ID{1}}))); err != nil {
		t.Fatalf("valid raw tree: %v", err)
	}
}

func TestFindAndSort(t *testing.T) {
	tr := testTree()
	for i := 1; i < len(tr.Nodes); i++ {
		if tr.Nodes[i-1].Name >= tr.Nodes[i].Name {
			t.Fatalf("Sort left %q before %q", tr.Nodes[i-1].Name, tr.Nodes[i].Name)
		}
	}
	for _, n := range tr.Nodes {
		if tr.Find(n.Name) != n {
			t.Fatalf("Find(%q)", n.Name)
		}
	}
	for _, name := range []string{"", "\x00", "a", "a dir ", "zzz", "\xff\xff", "file\n"} {
		if n := tr.Find(name); n != nil {
			t.Fatalf("Find(%q) = %q", name, n.Name)
		}
	}
	if (&Tree{}).Find("a") != nil {
		t.Fatal("Find in an empty tree")
	}
	// Byte order, not UTF-8 or locale order: "B" < "a" < "\xc3\xa9" < "\xff".
	tr = &Tree{Nodes: []*Node{{Name: "\xff"}, {Name: "a"}, {Name: "\xc3\xa9"}, {Name: "B"}}}
	tr.Sort()
	var names []string
	for _, n := range tr.Nodes {
		names = append(names, n.Name)
	}
	if strings.Join(names, ",") != "B,a,\xc3\xa9,\xff" {
		t.Fatalf("sorted %q", names)
	}
}

func TestTypeString(t *testing.T) {
	want := map[Type]string{File: "file", Dir: "dir", Symlink: "symlink", FIFO: "fifo", CharDev: "chardev", BlockDev: "blockdev", Socket: "socket", 0: "type(0)", 9: "type(9)"}
	for typ, s := range want {
		if typ.String() != s {
			t.Errorf("%d: %q", typ, typ.String())
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	tr := &Tree{}
	for i := 0; i < 1000; i++ {
		tr.Nodes = append(tr.Nodes, &Node{Name: strings.Repeat("f", 10) + string(rune('a'+i%26)) + strings.Repeat("0", i/26), Type: File, Mode: 0o644, Size: 1 << 20, Content: manyChunks(2), MTime: 1e18})
	}
	tr.Sort()
	enc, err := tr.Encode()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(enc)))
	for b.Loop() {
		if _, err := Decode(enc); err != nil {
			b.Fatal(err)
		}
	}
}

func TestHoles(t *testing.T) {
	id1, id2 := crypto.Hash([]byte("1")), crypto.Hash([]byte("2"))
	sparse := &Node{Name: "sparse", Type: File, Size: 1<<40 + 10, Content: []crypto.ID{id1, id2},
		Holes: []Hole{{At: 0, Len: 5}, {At: 1, Len: 1 << 40}, {At: 2, Len: 3}}}
	tr := &Tree{Nodes: []*Node{{Name: "plain", Type: File, Content: []crypto.ID{id1}}, sparse}}
	b := encode(t, tr)
	if string(b[:4]) != "KPT2" {
		t.Fatalf("a tree with holes starts %q", b[:4])
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(normalize(got), normalize(tr)) || !bytes.Equal(encode(t, got), b) {
		t.Fatalf("holes do not round-trip: %+v", got.Nodes[1])
	}
	// Without holes the encoding is the old one, byte for byte.
	plain := &Tree{Nodes: []*Node{{Name: "plain", Type: File, Content: []crypto.ID{id1}}}}
	if pb := encode(t, plain); string(pb[:4]) != "KPT1" {
		t.Fatalf("a tree without holes starts %q", pb[:4])
	}

	pieces := sparse.Pieces()
	want := []Piece{{Hole: 5}, {ID: id1}, {Hole: 1 << 40}, {ID: id2}, {Hole: 3}}
	if !reflect.DeepEqual(pieces, want) {
		t.Fatalf("Pieces = %+v", pieces)
	}
	var n Node
	n.SetPieces([]Piece{{Hole: 2}, {Hole: 3}, {ID: id1}, {Hole: 0}, {ID: id2}})
	if !reflect.DeepEqual(n.Holes, []Hole{{At: 0, Len: 5}}) || len(n.Content) != 2 {
		t.Fatalf("SetPieces: %+v", n)
	}

	for name, h := range map[string][]Hole{
		"empty hole":   {{At: 0, Len: 0}},
		"unordered":    {{At: 1, Len: 1}, {At: 0, Len: 1}},
		"same place":   {{At: 0, Len: 1}, {At: 0, Len: 1}},
		"past content": {{At: 3, Len: 1}},
	} {
		bad := &Tree{Nodes: []*Node{{Name: "f", Type: File, Content: []crypto.ID{id1, id2}, Holes: h}}}
		if _, err := bad.Encode(); err == nil {
			t.Errorf("%s: encoded", name)
		}
		// Decode refuses the same, written by hand.
		raw := append([]byte("KPT2"), 1)
		raw = append(raw, rawNode("f", File, nodeOpts{chunks: []crypto.ID{id1, id2}})...)
		raw = binary.AppendUvarint(raw, uint64(len(h)))
		for _, x := range h {
			raw = binary.AppendUvarint(binary.AppendUvarint(raw, uint64(x.At)), x.Len)
		}
		if _, err := Decode(raw); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
	if _, err := (&Tree{Nodes: []*Node{{Name: "d", Type: Dir, Holes: []Hole{{Len: 1}}}}}).Encode(); err == nil {
		t.Error("a directory with holes encoded")
	}
	if _, err := (&Tree{Nodes: []*Node{{Name: "f", Type: File, Content: []crypto.ID{{}}}}}).Encode(); err == nil {
		t.Error("a zero chunk id encoded")
	}
	// A KPT2 tree must have a hole, or the tree would have two encodings.
	raw := append([]byte("KPT2"), 1)
	raw = append(append(raw, rawNode("f", File, nodeOpts{chunks: []crypto.ID{id1}})...), 0)
	if _, err := Decode(raw); err == nil {
		t.Error("a KPT2 tree without holes decoded")
	}
	raw = append([]byte("KPT2"), 1)
	raw = append(append(raw, rawNode("f", File, nodeOpts{chunks: []crypto.ID{id1}})...), 1, 1, 7)
	if got, err := Decode(raw); err != nil || !reflect.DeepEqual(got.Nodes[0].Holes, []Hole{{At: 1, Len: 7}}) {
		t.Fatalf("hand-written KPT2 tree: %v", err)
	}
	// A zero chunk id never decodes, in either version.
	if _, err := Decode(rawTree(rawNode("f", File, nodeOpts{chunks: []crypto.ID{{}}}))); err == nil {
		t.Error("a zero chunk id decoded")
	}
}
