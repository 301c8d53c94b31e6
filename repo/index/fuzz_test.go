package index

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
// replays it; `go test -run TestSeedCorpus -update ./repo/index` rewrites it.
// Files named valid-* must decode (they are fixtures of the format), trunc-*
// must not; other files are crashers the fuzzer once found.

var update = flag.Bool("update", false, "rewrite the fuzz seed corpus in testdata/fuzz")

func FuzzDecode(f *testing.F) {
	f.Add(testSegment().Encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Decode(b)
		if err != nil {
			return
		}
		// The format is canonical: one segment, one encoding.
		if !bytes.Equal(s.Encode(), b) {
			t.Fatal("segment does not re-encode to its bytes")
		}
		seen := map[crypto.ID]bool{}
		for _, p := range s.Packs {
			if seen[p.ID] {
				t.Fatalf("pack %s twice", p.ID.Short())
			}
			seen[p.ID] = true
			var end int64
			for _, bl := range p.Blobs {
				if !bl.Type.Valid() {
					t.Fatalf("blob type %d", bl.Type)
				}
				if int64(bl.Offset) < end || int64(bl.Offset)+int64(bl.Length) > p.Size {
					t.Fatalf("blob [%d,+%d) overlaps or leaves its pack of %d bytes", bl.Offset, bl.Length, p.Size)
				}
				end = int64(bl.Offset) + int64(bl.Length)
			}
		}
	})
}

func TestSeedCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	if *update {
		small := testSegment().Encode()
		big := bigSegment(4, 20).Encode()
		seeds := map[string][]byte{
			"valid-small":      small,
			"valid-empty":      (&Segment{}).Encode(),
			"valid-supersedes": (&Segment{Supersedes: []crypto.ID{crypto.Hash([]byte("old"))}}).Encode(),
			"valid-big":        big,
			"trunc-small":      small[:len(small)-1],
			"trunc-big":        big[:len(big)/2],
			"trunc-magic":      small[:3],
		}
		fuzzseed.Write(t, dir, seeds)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	valid, trunc := 0, 0
	for _, e := range ents {
		b := fuzzseed.Read(t, filepath.Join(dir, e.Name()))
		_, err := Decode(b)
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
