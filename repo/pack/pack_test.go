package pack

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/keepfs/keepfs/repo/crypto"
)

// The fuzz seed corpora hold blobs and packs sealed under one fixed key, so
// they stay valid from run to run; it is kept as a key slot (TestKDF, so
// unlocking is instant) in testdata/key.json.
const testPassphrase = "keepfs pack test key"

var testKey *crypto.Key

func TestMain(m *testing.M) {
	flag.Parse()
	k, err := loadTestKey(*update)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	testKey = k
	os.Exit(m.Run())
}

// loadTestKey unlocks testdata/key.json, creating it first if asked to.
func loadTestKey(create bool) (*crypto.Key, error) {
	path := filepath.Join("testdata", "key.json")
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && create {
		k, err := crypto.NewMasterKey()
		if err != nil {
			return nil, err
		}
		s, err := crypto.NewSlot(k, []byte(testPassphrase), crypto.TestKDF)
		if err != nil {
			return nil, err
		}
		if b, err = s.Marshal(); err != nil {
			return nil, err
		}
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, fmt.Errorf("%v (run the tests with -update to create it)", err)
	}
	s, err := crypto.ParseSlot(b)
	if err != nil {
		return nil, err
	}
	return s.Unlock([]byte(testPassphrase))
}

func randBytes(n int, seed int64) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

// buildPack packs blobs, alternating data and tree types.
func buildPack(k *crypto.Key, blobs ...[]byte) ([]byte, []Blob) {
	p := NewPacker(nil)
	var scratch []byte
	for i, b := range blobs {
		t := Data
		if i%2 == 1 {
			t = Tree
		}
		id := k.BlobID(b)
		if i%3 == 2 {
			p.Add(t, id, SealBlob(k, t, id, b), len(b))
			continue
		}
		enc := Encode(&scratch, b)
		p.AddFunc(t, id, len(b), func(dst []byte) []byte { return AppendSealed(dst, k, t, id, enc) })
	}
	data, entries := p.Finalize(k)
	return append([]byte(nil), data...), append([]Blob(nil), entries...)
}

func TestBlobRoundTrip(t *testing.T) {
	text := bytes.Repeat([]byte("compressible text "), 10000)
	random := randBytes(200<<10, 1)
	// Random at the start, compressible after: the 32 KiB sample decides.
	mixed := append(randBytes(64<<10, 2), make([]byte, 1<<20)...)
	cases := map[string][]byte{
		"nil": nil, "one byte": []byte("x"), "63 bytes": bytes.Repeat([]byte{'a'}, 63),
		"text": text, "random": random, "mixed": mixed, "zeros": make([]byte, 8<<20),
	}
	for name, plain := range cases {
		for _, typ := range []BlobType{Data, Tree} {
			id := testKey.BlobID(plain)
			sealed := SealBlob(testKey, typ, id, plain)
			got, err := OpenBlob(testKey, typ, id, sealed)
			if err != nil || !bytes.Equal(got, plain) {
				t.Fatalf("%s as %s: %v", name, typ, err)
			}
			got, err = OpenBlobInPlace(testKey, typ, id, append([]byte(nil), sealed...))
			if err != nil || !bytes.Equal(got, plain) {
				t.Fatalf("%s as %s in place: %v", name, typ, err)
			}
		}
	}
	raw := func(plain []byte) int { return len(plain) + 1 + testKey.Overhead() }
	if n := len(SealBlob(testKey, Data, testKey.BlobID(text), text)); n > len(text)/10 {
		t.Errorf("text not compressed: %d bytes for %d", n, len(text))
	}
	if n := len(SealBlob(testKey, Data, testKey.BlobID(make([]byte, 8<<20)), make([]byte, 8<<20))); n > 64<<10 {
		t.Errorf("zeros not compressed: %d bytes", n)
	}
	// Incompressible data is stored raw: one flag byte plus the AEAD.
	for name, plain := range map[string][]byte{"random": random, "mixed": mixed, "short": []byte("x"), "63 bytes": cases["63 bytes"]} {
		if n := len(SealBlob(testKey, Data, testKey.BlobID(plain), plain)); n != raw(plain) {
			t.Errorf("%s: %d sealed bytes for %d, want raw %d", name, n, len(plain), raw(plain))
		}
	}
}

func TestEncodeReusesScratch(t *testing.T) {
	scratch := make([]byte, 0, 1<<20)
	text := bytes.Repeat([]byte("abc"), 1000)
	enc := Encode(&scratch, text)
	if &enc[0] != &scratch[:1][0] {
		t.Fatal("Encode did not use the scratch buffer")
	}
	if enc[0] != flagZstd {
		t.Fatalf("compressible text got flag %d", enc[0])
	}
	random := randBytes(1000, 3)
	if enc := Encode(&scratch, random); enc[0] != flagRaw || !bytes.Equal(enc[1:], random) {
		t.Fatal("random data not stored raw")
	}
}

func TestOpenBlobRejects(t *testing.T) {
	plain := bytes.Repeat([]byte("blob "), 100)
	id := testKey.BlobID(plain)
	sealed := SealBlob(testKey, Data, id, plain)
	corrupt := func(name string, k *crypto.Key, typ BlobType, id crypto.ID, b []byte) {
		t.Helper()
		got, err := OpenBlob(k, typ, id, b)
		if !errors.Is(err, ErrCorrupt) || got != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	for i := range sealed {
		bad := append([]byte(nil), sealed...)
		bad[i] ^= 0x10
		corrupt("flipped byte", testKey, Data, id, bad)
	}
	for _, n := range []int{0, 1, testKey.NonceSize(), testKey.Overhead(), len(sealed) - 1} {
		corrupt("truncated", testKey, Data, id, sealed[:n])
	}
	corrupt("wrong type", testKey, Tree, id, sealed)
	other := id
	other[0] ^= 1
	corrupt("wrong id", testKey, Data, other, sealed)
	k2, _ := crypto.NewMasterKey()
	corrupt("wrong key", k2, Data, id, sealed)

	// Authentic but malformed inner forms, as a buggy writer could make.
	seal := func(inner []byte) []byte { return AppendSealed(nil, testKey, Data, id, inner) }
	corrupt("empty inner", testKey, Data, id, seal(nil))
	corrupt("unknown flag", testKey, Data, id, seal(append([]byte{2}, plain...)))
	corrupt("bad zstd", testKey, Data, id, seal(append([]byte{flagZstd}, plain...)))
	corrupt("content not matching id", testKey, Data, id, seal(append([]byte{flagRaw}, "other"...)))
	if got, err := OpenBlob(testKey, Data, id, seal(append([]byte{flagRaw}, plain...))); err != nil || !bytes.Equal(got, plain) {
		t.Errorf("raw inner form: %v", err)
	}
}

func TestPackRoundTrip(t *testing.T) {
	blobs := [][]byte{[]byte("one"), bytes.Repeat([]byte("two"), 5000), []byte("three"), randBytes(100<<10, 4), nil}
	data, entries := buildPack(testKey, blobs...)
	if len(entries) != len(blobs) {
		t.Fatalf("%d entries for %d blobs", len(entries), len(blobs))
	}
	parsed, err := ParsePack(testKey, data)
	if err != nil {
		t.Fatal(err)
	}
	var off uint32
	for i, e := range parsed {
		if e != entries[i] {
			t.Fatalf("entry %d: parsed %+v, packer said %+v", i, e, entries[i])
		}
		if e.Offset != off {
			t.Fatalf("entry %d at %d, want %d", i, e.Offset, off)
		}
		off += e.Length
		wantType := Data
		if i%2 == 1 {
			wantType = Tree
		}
		got, err := OpenBlob(testKey, e.Type, e.ID, data[e.Offset:e.Offset+e.Length])
		if err != nil || !bytes.Equal(got, blobs[i]) || int(e.RawLength) != len(blobs[i]) || e.Type != wantType || e.ID != testKey.BlobID(blobs[i]) {
			t.Fatalf("blob %d: %+v %v", i, e, err)
		}
	}

	// Only the tail, read as a backend would: the trailer, then the header.
	size := int64(len(data))
	hl, err := HeaderLength(data[size-TrailerSize:], size)
	if err != nil {
		t.Fatal(err)
	}
	if int64(off)+hl+TrailerSize != size {
		t.Fatalf("blobs %d + header %d + trailer != pack %d", off, hl, size)
	}
	tail := append([]byte(nil), data[size-TrailerSize-hl:size-TrailerSize]...)
	again, err := OpenHeader(testKey, tail, size)
	if err != nil || len(again) != len(entries) || again[3] != entries[3] {
		t.Fatalf("header from tail: %v", err)
	}
	if _, err := OpenHeader(testKey, tail, size+1); err == nil {
		t.Fatal("header accepted for a pack of another size")
	}
	// The header does not leak ids or lengths in the clear.
	if bytes.Contains(data, entries[0].ID[:8]) {
		t.Fatal("blob id visible in the pack")
	}
}

func TestPackerReusesBuffer(t *testing.T) {
	buf := make([]byte, 0, 1<<20)
	p := NewPacker(buf)
	if p.Size() != 0 || p.Count() != 0 {
		t.Fatal("new packer not empty")
	}
	id := testKey.BlobID([]byte("a"))
	sealed := SealBlob(testKey, Data, id, []byte("a"))
	p.Add(Data, id, sealed, 1)
	p.Add(Data, id, sealed, 1) // duplicates are allowed; prune removes them
	if p.Size() != 2*len(sealed) || p.Count() != 2 {
		t.Fatalf("size %d count %d", p.Size(), p.Count())
	}
	data, _ := p.Finalize(testKey)
	if &data[0] != &buf[:1][0] {
		t.Fatal("packer did not write into the given buffer")
	}
	if entries, err := ParsePack(testKey, data); err != nil || len(entries) != 2 {
		t.Fatalf("parse: %v", err)
	}
}

func TestEmptyPack(t *testing.T) {
	data, entries := buildPack(testKey)
	if len(entries) != 0 {
		t.Fatal("entries in an empty pack")
	}
	if got, err := ParsePack(testKey, data); err != nil || len(got) != 0 {
		t.Fatalf("empty pack: %v %v", got, err)
	}
}

func TestParsePackRejects(t *testing.T) {
	data, _ := buildPack(testKey, []byte("one"), []byte("two"))
	bad := map[string][]byte{
		"empty":           nil,
		"three bytes":     data[:3],
		"trailer only":    data[len(data)-TrailerSize:],
		"cut":             data[:len(data)-1],
		"prefixed":        append([]byte{0}, data...),
		"suffixed":        append(append([]byte(nil), data...), 0, 0, 0, 0),
		"first blob gone": data[len(SealBlob(testKey, Data, crypto.ID{}, []byte("one"))):],
	}
	for _, i := range []int{len(data) - TrailerSize - 1, len(data) - TrailerSize - 20, len(data) - 1, len(data) - TrailerSize} {
		b := append([]byte(nil), data...)
		b[i] ^= 1
		bad["flipped byte"] = b
		for name, b := range bad {
			if _, err := ParsePack(testKey, b); err == nil {
				t.Errorf("%s: parsed", name)
			}
		}
	}
	k2, _ := crypto.NewMasterKey()
	if _, err := ParsePack(k2, data); !errors.Is(err, crypto.ErrAuth) {
		t.Errorf("another key: %v", err)
	}
}

func TestHeaderLength(t *testing.T) {
	le := func(n uint32) []byte { return binary.LittleEndian.AppendUint32(nil, n) }
	if n, err := HeaderLength(le(100), 104); err != nil || n != 100 {
		t.Fatalf("%d %v", n, err)
	}
	for _, c := range []struct {
		trailer []byte
		size    int64
	}{{le(0), 100}, {le(101), 104}, {le(math.MaxUint32), 1 << 20}, {le(5)[:3], 100}, {append(le(5), 0), 100}, {le(5), 3}} {
		if _, err := HeaderLength(c.trailer, c.size); err == nil {
			t.Errorf("trailer %x for %d bytes accepted", c.trailer, c.size)
		}
	}
}

func header(entries ...[]byte) []byte {
	out := []byte(headerMagic)
	out = binary.AppendUvarint(out, uint64(len(entries)))
	for _, e := range entries {
		out = append(out, e...)
	}
	return out
}

func entry(t byte, l, raw uint64) []byte {
	e := append([]byte{t}, make([]byte, 32)...)
	e = binary.AppendUvarint(e, l)
	return binary.AppendUvarint(e, raw)
}

func TestDecodeHeader(t *testing.T) {
	good := header(entry(0, 100, 80), entry(1, 50, 200))
	blobs, err := DecodeHeader(good, 150)
	if err != nil || len(blobs) != 2 || blobs[1].Offset != 100 || blobs[1].Length != 50 || blobs[1].RawLength != 200 || blobs[1].Type != Tree {
		t.Fatalf("%+v %v", blobs, err)
	}
	if !bytes.Equal(EncodeHeader(blobs), good) {
		t.Fatal("EncodeHeader does not reproduce the header")
	}
	nonCanonical := append(append([]byte{0}, make([]byte, 32)...), 0x81, 0x00, 1) // length 1 in two bytes
	bad := map[string]struct {
		hdr []byte
		n   int64
	}{
		"entries exceed data":    {good, 149},
		"entries short of data":  {good, 151},
		"trailing bytes":         {append(append([]byte(nil), good...), 0), 150},
		"bad magic":              {append([]byte("KPH2"), good[4:]...), 150},
		"no magic":               {good[:3], 0},
		"no count":               {[]byte(headerMagic), 0},
		"count exceeds entries":  {header(entry(0, 100, 80))[:5], 0},
		"truncated entry":        {good[:len(good)-1], 150},
		"unknown type":           {header(entry(2, 10, 10)), 10},
		"implausible length":     {header(entry(0, MaxBlobSize+2048, 10)), MaxBlobSize + 2048},
		"implausible raw length": {header(entry(0, 10, MaxBlobSize+1)), 10},
		"non-canonical varint":   {header(nonCanonical), 1},
		"negative data length":   {header(), -1},
	}
	// Offsets are uint32: a header covering more than 4 GiB of data would
	// have them wrap and name the wrong bytes.
	var many [][]byte
	for i := 0; i < 33; i++ {
		many = append(many, entry(0, MaxBlobSize, 1))
	}
	bad["data past 4 GiB"] = struct {
		hdr []byte
		n   int64
	}{header(many...), 33 * MaxBlobSize}
	for name, c := range bad {
		if b, err := DecodeHeader(c.hdr, c.n); err == nil {
			t.Errorf("%s: decoded %+v", name, b)
		}
	}
	if b, err := DecodeHeader(header(), 0); err != nil || len(b) != 0 {
		t.Fatalf("empty header: %v", err)
	}
}

func TestBlobType(t *testing.T) {
	if Data.String() != "data" || Tree.String() != "tree" || BlobType(7).String() != "blobtype(7)" {
		t.Fatal("String")
	}
	if !Data.Valid() || !Tree.Valid() || BlobType(2).Valid() {
		t.Fatal("Valid")
	}
}

func BenchmarkSealBlobRandom1MiB(b *testing.B) {
	plain := randBytes(1<<20, 5)
	id := testKey.BlobID(plain)
	var scratch, dst []byte
	b.SetBytes(int64(len(plain)))
	for b.Loop() {
		dst = AppendSealedBlob(dst[:0], &scratch, testKey, Data, id, plain)
	}
}

func BenchmarkOpenBlobText1MiB(b *testing.B) {
	plain := bytes.Repeat([]byte("some text that compresses "), (1<<20)/26)
	id := testKey.BlobID(plain)
	sealed := SealBlob(testKey, Data, id, plain)
	b.SetBytes(int64(len(plain)))
	for b.Loop() {
		if _, err := OpenBlob(testKey, Data, id, sealed); err != nil {
			b.Fatal(err)
		}
	}
}

// The fast level writes blobs any reader opens, compresses what pays and
// stores the rest raw, like the default level.
func TestEncodeFast(t *testing.T) {
	text := bytes.Repeat([]byte("compressible text "), 10000)
	random := randBytes(200<<10, 4)
	for name, plain := range map[string][]byte{"text": text, "random": random, "empty": nil} {
		var scratch []byte
		id := testKey.BlobID(plain)
		sealed := AppendSealed(nil, testKey, Data, id, EncodeFast(&scratch, plain))
		got, err := OpenBlob(testKey, Data, id, sealed)
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("%s: %v", name, err)
		}
	}
	var scratch []byte
	if enc := EncodeFast(&scratch, text); enc[0] != flagZstd || len(enc) > len(text)/10 {
		t.Fatalf("text at the fast level: flag %d, %d bytes", enc[0], len(enc))
	}
	if enc := EncodeFast(&scratch, random); enc[0] != flagRaw {
		t.Fatal("random data not stored raw at the fast level")
	}
}

// A raw blob sealed in place opens like one sealed from Encode's raw form,
// and Compress decides as Encode does.
func TestSealRawInPlace(t *testing.T) {
	random := make([]byte, 200<<10)
	rand.New(rand.NewSource(1)).Read(random)
	text := bytes.Repeat([]byte("compressible text "), 10000)
	for _, plain := range [][]byte{random, text, []byte("x"), nil} {
		id := testKey.BlobID(plain)
		var s1, s2 []byte
		encoded := Encode(&s1, plain)
		got, raw := Compress(&s2, plain, false)
		if raw != (encoded[0] == flagRaw) || (!raw && !bytes.Equal(got, encoded)) {
			t.Fatalf("%d bytes: Compress says raw=%v, Encode flag %d", len(plain), raw, encoded[0])
		}
		if !raw {
			continue
		}
		prefix := []byte("pack so far")
		sealed := AppendSealedRaw(append([]byte(nil), prefix...), testKey, Data, id, plain)
		if !bytes.Equal(sealed[:len(prefix)], prefix) || len(sealed)-len(prefix) != RawSealedLen(testKey, len(plain)) {
			t.Fatalf("%d bytes: sealed length %d, want %d after the prefix", len(plain), len(sealed)-len(prefix), RawSealedLen(testKey, len(plain)))
		}
		back, err := OpenBlob(testKey, Data, id, sealed[len(prefix):])
		if err != nil || !bytes.Equal(back, plain) {
			t.Fatalf("%d bytes: open: %v", len(plain), err)
		}
	}
}
