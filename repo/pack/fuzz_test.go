package pack

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Decoders of untrusted bytes must never panic. The seed corpora live in
// testdata/fuzz/<FuzzName>/ so that plain `go test` replays them; they are
// written by `go test -run TestSeedCorpus -update ./repo/pack`. Files named
// valid-* must decode (they double as fixtures of the format: if one stops
// decoding, old repositories would too), trunc-* must not.

var update = flag.Bool("update", false, "rewrite the fuzz seed corpora in testdata/fuzz")

// fuzzPlain is the only plaintext FuzzOpenBlob's id admits.
var fuzzPlain = bytes.Repeat([]byte("some blob content "), 20)

func FuzzDecodeHeader(f *testing.F) {
	f.Add(header(entry(0, 100, 80), entry(1, 50, 200)), int64(150))
	f.Fuzz(func(t *testing.T, hdr []byte, dataLen int64) {
		blobs, err := DecodeHeader(hdr, dataLen)
		if err != nil {
			return
		}
		// The format is canonical: one header, one encoding.
		if !bytes.Equal(EncodeHeader(blobs), hdr) {
			t.Fatal("header does not re-encode to its bytes")
		}
		var off int64
		for i, b := range blobs {
			if !b.Type.Valid() {
				t.Fatalf("entry %d: type %d", i, b.Type)
			}
			if int64(b.Offset) != off {
				t.Fatalf("entry %d at offset %d, want %d", i, b.Offset, off)
			}
			off += int64(b.Length)
		}
		if off != dataLen {
			t.Fatalf("entries cover %d bytes of %d", off, dataLen)
		}
	})
}

func FuzzOpenBlob(f *testing.F) {
	id := testKey.BlobID(fuzzPlain)
	f.Add(SealBlob(testKey, Data, id, fuzzPlain))
	f.Fuzz(func(t *testing.T, b []byte) {
		// b as a stored blob: without the key nothing but the one sealed
		// plaintext may come out.
		got, err := OpenBlob(testKey, Data, id, b)
		if err == nil && !bytes.Equal(got, fuzzPlain) {
			t.Fatal("a forged blob opened to other bytes")
		}
		if err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("error is not ErrCorrupt: %v", err)
		}
		// b as the inner form behind an authentic seal (flag and payload):
		// this reaches the decompressor with arbitrary input.
		sealed := AppendSealed(nil, testKey, Data, id, b)
		got, err = OpenBlob(testKey, Data, id, sealed)
		if err == nil && !bytes.Equal(got, fuzzPlain) {
			t.Fatal("an inner form opened to bytes that do not match the id")
		}
		if err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("error is not ErrCorrupt: %v", err)
		}
		got2, err2 := OpenBlobInPlace(testKey, Data, id, sealed)
		if (err == nil) != (err2 == nil) || !bytes.Equal(got, got2) {
			t.Fatalf("in place disagrees: %v vs %v", err, err2)
		}
	})
}

func FuzzParsePack(f *testing.F) {
	data, _ := buildPack(testKey, []byte("hello"), bytes.Repeat([]byte("x"), 3000))
	f.Add(data)
	f.Fuzz(func(t *testing.T, b []byte) {
		blobs, err := ParsePack(testKey, b)
		if err != nil {
			return
		}
		hl, err := HeaderLength(b[len(b)-TrailerSize:], int64(len(b)))
		if err != nil {
			t.Fatalf("parsed, but the trailer is bad: %v", err)
		}
		dataEnd := int64(len(b)) - TrailerSize - hl
		for _, bl := range blobs {
			if int64(bl.Offset)+int64(bl.Length) > dataEnd {
				t.Fatalf("blob [%d,+%d) outside the %d data bytes", bl.Offset, bl.Length, dataEnd)
			}
			_, _ = OpenBlob(testKey, bl.Type, bl.ID, b[bl.Offset:bl.Offset+bl.Length])
		}
	})
}

// seed is one corpus file: its name and the fuzz arguments.
type seed struct {
	name string
	args []any
}

func packSeeds() map[string][]seed {
	id := testKey.BlobID(fuzzPlain)
	var scratch []byte
	zstdInner := append([]byte(nil), Encode(&scratch, fuzzPlain)...)
	rawInner := append([]byte{flagRaw}, fuzzPlain...)
	sealedZstd := AppendSealed(nil, testKey, Data, id, zstdInner)
	sealedRaw := AppendSealed(nil, testKey, Data, id, rawInner)

	pk, entries := buildPack(testKey, []byte("hello"), bytes.Repeat([]byte("x"), 3000), randBytes(2000, 1))
	hdr := EncodeHeader(entries)
	dataLen := int64(entries[2].Offset + entries[2].Length)
	empty, _ := buildPack(testKey)

	return map[string][]seed{
		"FuzzDecodeHeader": {
			{"valid-three", []any{hdr, dataLen}},
			{"valid-empty", []any{EncodeHeader(nil), int64(0)}},
			{"valid-big", []any{header(entry(0, MaxBlobSize+1024, MaxBlobSize), entry(1, 1, 0)), int64(MaxBlobSize + 1025)}},
			{"trunc-entry", []any{hdr[:len(hdr)-1], dataLen}},
			{"trunc-half", []any{hdr[:len(hdr)/2], dataLen}},
			{"trunc-magic", []any{hdr[:2], int64(0)}},
		},
		"FuzzOpenBlob": {
			{"valid-sealed-zstd", []any{sealedZstd}},
			{"valid-sealed-raw", []any{sealedRaw}},
			{"valid-inner-zstd", []any{zstdInner}},
			{"valid-inner-raw", []any{rawInner}},
			{"trunc-sealed", []any{sealedZstd[:len(sealedZstd)-1]}},
			{"trunc-inner-zstd", []any{zstdInner[:len(zstdInner)/2]}},
			{"trunc-nonce", []any{sealedRaw[:5]}},
		},
		"FuzzParsePack": {
			{"valid-three", []any{pk}},
			{"valid-empty", []any{empty}},
			{"trunc-trailer", []any{pk[:len(pk)-1]}},
			{"trunc-header", []any{append(append([]byte(nil), pk[:len(pk)-TrailerSize-1]...), pk[len(pk)-TrailerSize:]...)}},
			{"trunc-front", []any{pk[1:]}},
		},
	}
}

// decodes reports whether a seed's arguments decode, by the rule its fuzz
// target tests.
func decodes(fuzzName, name string, args []any) bool {
	switch fuzzName {
	case "FuzzDecodeHeader":
		_, err := DecodeHeader(args[0].([]byte), args[1].(int64))
		return err == nil
	case "FuzzOpenBlob":
		b, id := args[0].([]byte), testKey.BlobID(fuzzPlain)
		if strings.HasPrefix(name, "valid-inner") || strings.HasPrefix(name, "trunc-inner") {
			b = AppendSealed(nil, testKey, Data, id, b)
		}
		_, err := OpenBlob(testKey, Data, id, b)
		return err == nil
	case "FuzzParsePack":
		_, err := ParsePack(testKey, args[0].([]byte))
		return err == nil
	}
	panic(fuzzName)
}

func TestSeedCorpus(t *testing.T) {
	if *update {
		for fuzzName, seeds := range packSeeds() {
			writeCorpus(t, fuzzName, seeds)
		}
	}
	for _, fuzzName := range []string{"FuzzDecodeHeader", "FuzzOpenBlob", "FuzzParsePack"} {
		valid, trunc := 0, 0
		for name, args := range readCorpus(t, fuzzName) {
			switch {
			case strings.HasPrefix(name, "valid-"):
				valid++
				if !decodes(fuzzName, name, args) {
					t.Errorf("%s/%s no longer decodes", fuzzName, name)
				}
			case strings.HasPrefix(name, "trunc-"):
				trunc++
				if decodes(fuzzName, name, args) {
					t.Errorf("%s/%s decodes", fuzzName, name)
				}
			}
		}
		if valid < 2 || trunc < 2 {
			t.Errorf("%s: %d valid and %d truncated seeds; run with -update", fuzzName, valid, trunc)
		}
	}
}

// writeCorpus writes seeds in the `go test fuzz v1` format.
func writeCorpus(t *testing.T, fuzzName string, seeds []seed) {
	t.Helper()
	dir := filepath.Join("testdata", "fuzz", fuzzName)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, s := range seeds {
		var b strings.Builder
		b.WriteString("go test fuzz v1\n")
		for _, a := range s.args {
			switch v := a.(type) {
			case []byte:
				fmt.Fprintf(&b, "[]byte(%q)\n", v)
			case int64:
				fmt.Fprintf(&b, "int64(%d)\n", v)
			default:
				t.Fatalf("unsupported seed type %T", a)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, s.name), []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// readCorpus parses the corpus files of fuzzName (only the types used here).
func readCorpus(t *testing.T, fuzzName string) map[string][]any {
	t.Helper()
	dir := filepath.Join("testdata", "fuzz", fuzzName)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]any{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		if lines[0] != "go test fuzz v1" {
			t.Fatalf("%s: not a corpus file", e.Name())
		}
		var args []any
		for _, l := range lines[1:] {
			switch {
			case strings.HasPrefix(l, "[]byte(") && strings.HasSuffix(l, ")"):
				s, err := strconv.Unquote(l[len("[]byte(") : len(l)-1])
				if err != nil {
					t.Fatalf("%s: %v", e.Name(), err)
				}
				args = append(args, []byte(s))
			case strings.HasPrefix(l, "int64(") && strings.HasSuffix(l, ")"):
				n, err := strconv.ParseInt(l[len("int64("):len(l)-1], 10, 64)
				if err != nil {
					t.Fatalf("%s: %v", e.Name(), err)
				}
				args = append(args, n)
			default:
				t.Fatalf("%s: unsupported line %q", e.Name(), l)
			}
		}
		out[e.Name()] = args
	}
	return out
}
