package index

import (
	"bytes"
	"sync"
	"testing"

	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/pack"
)

func fzSegment() *Segment {
	return &Segment{
		Supersedes: []crypto.ID{{1}, {2}},
		Packs: []PackEntry{
			{ID: crypto.ID{9}, Size: 1000, Blobs: []pack.Blob{
				{Type: pack.Data, ID: crypto.ID{3}, Offset: 0, Length: 100, RawLength: 80},
				{Type: pack.Tree, ID: crypto.ID{4}, Offset: 100, Length: 50, RawLength: 200},
			}},
			{ID: crypto.ID{8}, Size: 60, Blobs: []pack.Blob{{Type: pack.Data, ID: crypto.ID{5}, Offset: 0, Length: 60, RawLength: 60}}},
		},
	}
}

func TestSegmentRoundTrip(t *testing.T) {
	k, _ := crypto.NewMasterKey()
	s := fzSegment()
	got, err := Open(k, s.Seal(k))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Encode(), s.Encode()) {
		t.Fatal("segment changed in a round trip")
	}
	sealed := s.Seal(k)
	sealed[len(sealed)/2] ^= 1
	if _, err := Open(k, sealed); err == nil {
		t.Fatal("tampered segment opened")
	}
	bad := fzSegment()
	bad.Packs[0].Blobs[1].Offset = 50 // overlaps the first blob
	if _, err := Decode(bad.Encode()); err == nil {
		t.Fatal("overlapping blobs decoded")
	}
	bad = fzSegment()
	bad.Packs[1].Size = 10 // blob past the end of its pack
	if _, err := Decode(bad.Encode()); err == nil {
		t.Fatal("blob beyond its pack decoded")
	}
	bad = fzSegment()
	bad.Packs[1].ID = bad.Packs[0].ID
	if _, err := Decode(bad.Encode()); err == nil {
		t.Fatal("duplicate pack decoded")
	}
	if _, err := Decode(append(s.Encode(), 0)); err == nil {
		t.Fatal("trailing bytes decoded")
	}
}

func TestIndexConcurrent(t *testing.T) {
	ix := New()
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			p := PackEntry{ID: crypto.ID{byte(i), 1}, Size: 10, Blobs: []pack.Blob{{Type: pack.Data, ID: crypto.ID{byte(i)}, Length: 10}}}
			ix.AddPack(p)
			if !ix.Has(pack.Data, crypto.ID{byte(i)}) || ix.Has(pack.Tree, crypto.ID{byte(i)}) {
				t.Error("lookup after add")
			}
		}(i)
	}
	wg.Wait()
	if ix.Count() != 8 || len(ix.Packs()) != 8 || len(ix.PackBlobs(crypto.ID{3, 1})) != 1 {
		t.Fatalf("count %d packs %d", ix.Count(), len(ix.Packs()))
	}
	// A blob in two packs keeps its first location.
	ix.AddPack(PackEntry{ID: crypto.ID{0xff}, Size: 10, Blobs: []pack.Blob{{Type: pack.Data, ID: crypto.ID{3}, Length: 10}}})
	if l, _ := ix.Lookup(pack.Data, crypto.ID{3}); l.Pack != (crypto.ID{3, 1}) {
		t.Fatal("duplicate moved the blob")
	}
}

func FuzzDecodeIndex(f *testing.F) {
	f.Add(fzSegment().Encode())
	f.Add((&Segment{}).Encode())
	f.Add([]byte("KPI1\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Decode(b)
		if err != nil {
			return
		}
		if !bytes.Equal(s.Encode(), b) {
			t.Fatal("segment does not re-encode to its bytes")
		}
	})
}
