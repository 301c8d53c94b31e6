package tree

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/internal/fuzzseed"
)

// The seed corpus lives in testdata/fuzz/FuzzDecode so that plain `go test`
// replays it; `go test -run TestSeedCorpus ./repo/tree -update` rewrites it.
// Files named valid-* must decode (they are fixtures of the format), trunc-*
// must not; other files are crashers the fuzzer once found.

var update = flag.Bool("update", false, "rewrite the fuzz seed corpus in testdata/fuzz")

func FuzzDecode(f *testing.F) {
	// The seeds are the files in testdata: testTree itself is too big a seed.
	f.Fuzz(func(t *testing.T, b []byte) {
		tr, err := Decode(b)
		if err != nil {
			return
		}
		for i, n := range tr.Nodes {
			// Nothing decoded may escape the directory it is restored into.
			if ValidName(n.Name) != nil {
				t.Fatalf("decoded an unsafe name %q", n.Name)
			}
			if i > 0 && tr.Nodes[i-1].Name >= n.Name {
				t.Fatalf("decoded unsorted names %q, %q", tr.Nodes[i-1].Name, n.Name)
			}
			if tr.Find(n.Name) != n {
				t.Fatalf("Find(%q) misses a decoded node", n.Name)
			}
		}
		// The encoding is canonical: Encode(Decode(x)) == x.
		again, err := tr.Encode()
		if err != nil {
			t.Fatalf("decoded tree does not encode: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatal("tree does not re-encode to its bytes")
		}
	})
}

func TestSeedCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	if *update {
		// testTree without its bulk: large seeds slow every mutation.
		compact := testTree()
		for _, n := range compact.Nodes {
			if len(n.Content) > 3 {
				n.Content = n.Content[:3]
			}
			if len(n.LinkTarget) > 64 {
				n.LinkTarget = n.LinkTarget[:64]
			}
			for i := range n.Xattrs {
				if len(n.Xattrs[i].Value) > 16 {
					n.Xattrs[i].Value = n.Xattrs[i].Value[:16]
				}
			}
		}
		all := encode(t, compact)
		small := encode(t, &Tree{Nodes: []*Node{
			{Name: "docs", Type: Dir, Mode: 0o755, Subtree: crypto.Hash([]byte("docs"))},
			{Name: "notes.txt", Type: File, Mode: 0o644, Size: 12, Content: []crypto.ID{crypto.Hash([]byte("c"))}},
		}})
		holes := encode(t, &Tree{Nodes: []*Node{
			{Name: "sparse", Type: File, Mode: 0o644, Size: 1<<40 + 7, Content: []crypto.ID{crypto.Hash([]byte("c"))},
				Holes: []Hole{{At: 0, Len: 4096}, {At: 1, Len: 1 << 40}}},
			{Name: "z", Type: File, Mode: 0o600},
		}})
		seeds := map[string][]byte{
			"valid-holes":     holes,
			"trunc-holes":     holes[:len(holes)-2],
			"valid-all-kinds": all,
			"valid-small":     small,
			"valid-empty":     encode(t, &Tree{}),
			"valid-xattr": encode(t, &Tree{Nodes: []*Node{{Name: "x\xff\n", Type: Symlink, LinkTarget: "/etc/passwd",
				Xattrs: []Xattr{{Name: "security.selinux", Value: []byte("system_u:object_r:tmp_t:s0\x00")}}}}}),
			"trunc-small":   small[:len(small)-1],
			"trunc-subtree": small[:len(small)-40],
			"trunc-magic":   small[:3],
			"trunc-all":     all[:len(all)/3],
		}
		fuzzseed.Write(t, dir, seeds)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	valid, trunc := 0, 0
	for _, e := range ents {
		_, err := Decode(fuzzseed.Read(t, filepath.Join(dir, e.Name())))
		switch {
		case strings.HasPrefix(e.Name(), "valid-"):
			valid++
			if err != nil {
				t.Errorf("%s no longer decodes: %v", e.Name(), err)
			}
		case strings.HasPrefix(e.Name(), "trunc-"):
			trunc++
			if err == nil {
				t.Errorf("%s decodes", e.Name())
			}
		}
	}
	if valid < 2 || trunc < 2 {
		t.Errorf("%d valid and %d truncated seeds; run with -update", valid, trunc)
	}
}
