package tree

import (
	"bytes"
	"strings"
	"testing"

	"github.com/keepfs/keepfs/repo/crypto"
)

func fzTree() *Tree {
	t := &Tree{Nodes: []*Node{
		{Name: "a dir", Type: Dir, Mode: 0o755, Subtree: crypto.ID{7}, MTime: -5},
		{Name: "file\n\xff\xfe", Type: File, Mode: 0o4755, UID: 1000, GID: 1000, Size: 3, MTime: 1e18, CTime: 2,
			Inode: 42, Links: 2, Content: []crypto.ID{{1}, {2}}, Xattrs: []Xattr{{Name: "user.x", Value: []byte{0, 1}}}},
		{Name: "link", Type: Symlink, LinkTarget: "../a dir"},
		{Name: strings.Repeat("n", 255), Type: FIFO, Mode: 0},
	}}
	t.Sort()
	return t
}

func TestTreeRoundTrip(t *testing.T) {
	tr := fzTree()
	b, err := tr.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	b2, _ := got.Encode()
	if !bytes.Equal(b, b2) || got.Find("link").LinkTarget != "../a dir" || got.Find("nope") != nil {
		t.Fatal("round trip changed the tree")
	}
	if n := got.Find("file\n\xff\xfe"); n == nil || string(n.Xattrs[0].Value) != "\x00\x01" || n.Mode != 0o4755 {
		t.Fatalf("file node: %+v", n)
	}
	for _, name := range []string{"", ".", "..", "a/b", "nul\x00", strings.Repeat("x", 256)} {
		bad := &Tree{Nodes: []*Node{{Name: name, Type: File}}}
		if _, err := bad.Encode(); err == nil {
			t.Errorf("name %q encoded", name)
		}
	}
	dup := &Tree{Nodes: []*Node{{Name: "a", Type: File}, {Name: "a", Type: File}}}
	if _, err := dup.Encode(); err == nil {
		t.Error("duplicate names encoded")
	}
	if _, err := Decode(append(b, 0)); err == nil {
		t.Error("trailing bytes decoded")
	}
}

func FuzzDecodeTree(f *testing.F) {
	b, _ := fzTree().Encode()
	f.Add(b)
	f.Add(b[:len(b)/2])
	f.Add([]byte("KPT1\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		tr, err := Decode(b)
		if err != nil {
			return
		}
		for _, n := range tr.Nodes {
			if ValidName(n.Name) != nil {
				t.Fatalf("decoded an unsafe name %q", n.Name)
			}
		}
		again, err := tr.Encode()
		if err != nil {
			t.Fatalf("decoded tree does not encode: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatal("tree does not re-encode to its bytes")
		}
	})
}
