package index

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"runtime"
	"sync"
	"testing"

	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/pack"
)

func testSegment() *Segment {
	return &Segment{
		Supersedes: []crypto.ID{{1}, {2}},
		Packs: []PackEntry{
			{ID: crypto.ID{9}, Size: 1000, Blobs: []pack.Blob{
				{Type: pack.Data, ID: crypto.ID{3}, Offset: 0, Length: 100, RawLength: 80},
				{Type: pack.Tree, ID: crypto.ID{4}, Offset: 100, Length: 50, RawLength: 200},
				// A gap (a blob repack dropped) is fine; overlap is not.
				{Type: pack.Data, ID: crypto.ID{6}, Offset: 200, Length: 700, RawLength: 700},
			}},
			{ID: crypto.ID{8}, Size: 60, Blobs: []pack.Blob{{Type: pack.Data, ID: crypto.ID{5}, Offset: 0, Length: 60, RawLength: 60}}},
			{ID: crypto.ID{7}, Size: 0}, // an empty pack
		},
	}
}

// bigSegment has many packs of many blobs, ids all distinct.
func bigSegment(packs, blobs int) *Segment {
	s := &Segment{}
	for p := 0; p < packs; p++ {
		pe := PackEntry{ID: crypto.Hash([]byte{byte(p), byte(p >> 8), 'p'})}
		var off uint32
		for b := 0; b < blobs; b++ {
			l := uint32(1000 + b*37%5000)
			pe.Blobs = append(pe.Blobs, pack.Blob{Type: pack.BlobType(b % 2), ID: crypto.Hash([]byte{byte(p), byte(p >> 8), byte(b), byte(b >> 8)}), Offset: off, Length: l, RawLength: l * 3})
			off += l
		}
		pe.Size = int64(off) + 400
		s.Packs = append(s.Packs, pe)
	}
	return s
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	for name, s := range map[string]*Segment{
		"small": testSegment(), "empty": {}, "supersedes only": {Supersedes: []crypto.ID{{5}}}, "big": bigSegment(20, 300),
	} {
		b := s.Encode()
		got, err := Decode(b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !reflect.DeepEqual(got, s) {
			t.Fatalf("%s: decoded %+v, want %+v", name, got, s)
		}
		if !bytes.Equal(got.Encode(), b) {
			t.Fatalf("%s: re-encoding differs", name)
		}
	}
}

func TestSealOpen(t *testing.T) {
	k, _ := crypto.NewMasterKey()
	s := bigSegment(5, 100)
	sealed := s.Seal(k)
	if plain := s.Encode(); len(sealed) >= len(plain) {
		t.Errorf("segment not compressed: %d sealed bytes for %d", len(sealed), len(plain))
	}
	got, err := Open(k, sealed)
	if err != nil || !reflect.DeepEqual(got, s) {
		t.Fatalf("open: %v", err)
	}
	for _, i := range []int{0, len(sealed) / 2, len(sealed) - 1} {
		bad := append([]byte(nil), sealed...)
		bad[i] ^= 1
		if _, err := Open(k, bad); !errors.Is(err, crypto.ErrAuth) {
			t.Fatalf("tampered at %d: %v", i, err)
		}
	}
	k2, _ := crypto.NewMasterKey()
	if _, err := Open(k2, sealed); !errors.Is(err, crypto.ErrAuth) {
		t.Fatalf("another key: %v", err)
	}
	// Another object type sealed under the same key is not an index.
	if _, err := Open(k, k.Seal(nil, s.Encode(), []byte("keepfs pack header v1"))); !errors.Is(err, crypto.ErrAuth) {
		t.Fatalf("other ad: %v", err)
	}
	// Authentic but not zstd, or zstd of garbage: errors, not panics.
	if _, err := Open(k, k.Seal(nil, []byte("not zstd"), []byte(segmentAD))); err == nil {
		t.Fatal("non-zstd segment opened")
	}
}

// encodeRaw writes a segment without Encode's types, so a test can put
// anything in any field.
func encodeRaw(supersedes int, packs ...[]byte) []byte {
	out := []byte(magic)
	out = binary.AppendUvarint(out, uint64(supersedes))
	out = append(out, make([]byte, 32*supersedes)...)
	out = binary.AppendUvarint(out, uint64(len(packs)))
	for _, p := range packs {
		out = append(out, p...)
	}
	return out
}

func rawPack(id byte, size uint64, blobs ...[]byte) []byte {
	out := append([]byte{id}, make([]byte, 31)...)
	out = binary.AppendUvarint(out, size)
	out = binary.AppendUvarint(out, uint64(len(blobs)))
	for _, b := range blobs {
		out = append(out, b...)
	}
	return out
}

func rawBlob(typ byte, id byte, off, l, raw uint64) []byte {
	out := append([]byte{typ, id}, make([]byte, 31)...)
	out = binary.AppendUvarint(out, off)
	out = binary.AppendUvarint(out, l)
	return binary.AppendUvarint(out, raw)
}

func TestDecodeRejects(t *testing.T) {
	mod := func(fn func(s *Segment)) []byte {
		s := testSegment()
		fn(s)
		return s.Encode()
	}
	good := testSegment().Encode()
	bad := map[string][]byte{
		"overlapping blobs":   mod(func(s *Segment) { s.Packs[0].Blobs[1].Offset = 50 }),
		"same offset twice":   mod(func(s *Segment) { s.Packs[0].Blobs[1].Offset = 0 }),
		"out of order":        mod(func(s *Segment) { s.Packs[0].Blobs[0], s.Packs[0].Blobs[1] = s.Packs[0].Blobs[1], s.Packs[0].Blobs[0] }),
		"blob past pack size": mod(func(s *Segment) { s.Packs[1].Size = 59 }),
		"blob in empty pack":  mod(func(s *Segment) { s.Packs[2].Blobs = s.Packs[1].Blobs }),
		"duplicate pack":      mod(func(s *Segment) { s.Packs[1].ID = s.Packs[0].ID }),
		"unknown blob type":   mod(func(s *Segment) { s.Packs[0].Blobs[0].Type = 2 }),
		"trailing bytes":      append(append([]byte(nil), good...), 0),
		"truncated":           good[:len(good)-1],
		"half":                good[:len(good)/2],
		"bad magic":           append([]byte("KPI2"), good[4:]...),
		"no magic":            good[:3],
		"magic only":          good[:4],
		"non-canonical count": append([]byte(magic), 0x80, 0x00, 0x00),
		// Offsets and lengths are uint32 in memory: 2^32 would wrap to 0.
		"offset 2^32":     encodeRaw(0, rawPack(1, 1<<33, rawBlob(0, 1, 1<<32, 10, 10))),
		"length 2^32":     encodeRaw(0, rawPack(1, 1<<33, rawBlob(0, 1, 0, 1<<32, 10))),
		"raw too large":   encodeRaw(0, rawPack(1, 100, rawBlob(0, 1, 0, 10, pack.MaxBlobSize+1))),
		"pack size huge":  encodeRaw(0, rawPack(1, 1<<41)),
		"count past data": append([]byte(magic), 3),
	}
	for name, b := range bad {
		if s, err := Decode(b); err == nil {
			t.Errorf("%s: decoded %+v", name, s)
		}
	}
	if _, err := Decode(encodeRaw(0, rawPack(1, 1<<33, rawBlob(0, 1, 1<<32-11, 10, 10)))); err != nil {
		t.Errorf("blob ending just below 4 GiB: %v", err)
	}
}

func TestIndex(t *testing.T) {
	ix := New()
	if ix.Count() != 0 || len(ix.Packs()) != 0 || ix.Has(pack.Data, crypto.ID{3}) {
		t.Fatal("new index not empty")
	}
	for _, p := range testSegment().Packs {
		ix.AddPack(p)
	}
	if ix.Count() != 4 {
		t.Fatalf("count %d", ix.Count())
	}
	l, ok := ix.Lookup(pack.Tree, crypto.ID{4})
	if !ok || l.Pack != (crypto.ID{9}) || l.Offset != 100 || l.Length != 50 || l.RawLength != 200 || l.Type != pack.Tree {
		t.Fatalf("lookup: %+v %v", l, ok)
	}
	// The type is part of the key: a tree and a data blob with one id are two blobs.
	if ix.Has(pack.Data, crypto.ID{4}) || !ix.Has(pack.Tree, crypto.ID{4}) {
		t.Fatal("type not part of the key")
	}
	if _, ok := ix.Lookup(pack.Data, crypto.ID{99}); ok {
		t.Fatal("unknown blob found")
	}
	if !ix.HasPack(crypto.ID{7}) || !ix.HasPack(crypto.ID{8}) || ix.HasPack(crypto.ID{3}) {
		t.Fatal("HasPack")
	}
	packs := ix.Packs()
	want := []PackEntry{{ID: crypto.ID{7}, Size: 0}, {ID: crypto.ID{8}, Size: 60}, {ID: crypto.ID{9}, Size: 1000}}
	if !reflect.DeepEqual(packs, want) {
		t.Fatalf("Packs: %+v", packs)
	}
	if got := ix.PackBlobs(crypto.ID{9}); len(got) != 3 || got[2].ID != (crypto.ID{6}) {
		t.Fatalf("PackBlobs: %+v", got)
	}
	seen := map[crypto.ID]bool{}
	ix.Each(func(l Location) { seen[l.ID] = true })
	if len(seen) != 4 {
		t.Fatalf("Each visited %d blobs", len(seen))
	}

	// A blob in two packs keeps its first location; both packs list it.
	ix.AddPack(PackEntry{ID: crypto.ID{0xff}, Size: 10, Blobs: []pack.Blob{{Type: pack.Data, ID: crypto.ID{3}, Length: 10}}})
	if l, _ := ix.Lookup(pack.Data, crypto.ID{3}); l.Pack != (crypto.ID{9}) {
		t.Fatal("a duplicate moved the blob")
	}
	if ix.Count() != 4 || len(ix.PackBlobs(crypto.ID{0xff})) != 1 || len(ix.Packs()) != 4 {
		t.Fatal("duplicate not recorded as pack content only")
	}
}

// Readers look blobs up while the uploader adds packs; run with -race.
func TestIndexConcurrent(t *testing.T) {
	ix := New()
	seg := bigSegment(16, 50)
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < len(seg.Packs); i += 4 {
				p := seg.Packs[i]
				ix.AddPack(p)
				for _, b := range p.Blobs {
					if l, ok := ix.Lookup(b.Type, b.ID); !ok || l.Pack != p.ID || l.Blob != b {
						t.Errorf("blob not found right after its pack was added")
						return
					}
				}
			}
		}(w)
	}
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				p := seg.Packs[i%len(seg.Packs)]
				b := p.Blobs[i%len(p.Blobs)]
				if l, ok := ix.Lookup(b.Type, b.ID); ok && l.Pack != p.ID {
					t.Errorf("blob found in the wrong pack")
					return
				}
				ix.HasPack(p.ID)
				ix.Count()
				ix.Packs()
				ix.PackBlobs(p.ID)
				ix.Each(func(Location) {})
			}
		}()
	}
	wg.Wait()
	if ix.Count() != 16*50 || len(ix.Packs()) != 16 {
		t.Fatalf("count %d packs %d", ix.Count(), len(ix.Packs()))
	}
}

func BenchmarkDecode(b *testing.B) {
	enc := bigSegment(64, 16).Encode() // about one index segment of 1 GiB of packs
	b.SetBytes(int64(len(enc)))
	for b.Loop() {
		if _, err := Decode(enc); err != nil {
			b.Fatal(err)
		}
	}
}

// The segment encoder lives as long as the process: what it allocates for
// its first seal (the history, above all) stays allocated in the mount
// daemon. With zstd's default 8 MiB window that is over 16 MiB.
func TestSegmentEncoderMemory(t *testing.T) {
	in := bigSegment(1000, 100).Encode()
	if len(in) < 2*segmentWindow {
		t.Fatalf("segment of %d bytes does not fill the window", len(in))
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	enc := newSegmentEncoder()
	out := enc.EncodeAll(in, make([]byte, 0, len(in)))
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(enc)
	extra := int64(after.TotalAlloc-before.TotalAlloc) - int64(cap(out))
	t.Logf("input %d bytes, output %d, encoder allocated %d", len(in), len(out), extra)
	if extra > 6<<20 {
		t.Errorf("the segment encoder allocated %d MiB for one seal, want at most 6", extra>>20)
	}
}
