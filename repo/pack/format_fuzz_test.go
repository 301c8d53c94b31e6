package pack

import (
	"bytes"
	"errors"
	"math/rand"
	"testing"

	"github.com/keepfs/keepfs/repo/crypto"
)

var fzKey, _ = crypto.NewMasterKey()

func fzPack(blobs ...[]byte) []byte {
	p := NewPacker(nil)
	var scratch []byte
	for i, b := range blobs {
		t := Data
		if i%2 == 1 {
			t = Tree
		}
		id := fzKey.BlobID(b)
		enc := Encode(&scratch, b)
		p.AddFunc(t, id, len(b), func(dst []byte) []byte { return AppendSealed(dst, fzKey, t, id, enc) })
	}
	data, _ := p.Finalize(fzKey)
	return append([]byte(nil), data...)
}

func TestBlobRoundTrip(t *testing.T) {
	text := bytes.Repeat([]byte("compressible text "), 10000)
	random := make([]byte, 200<<10)
	rand.New(rand.NewSource(1)).Read(random)
	for _, plain := range [][]byte{nil, []byte("x"), text, random} {
		id := fzKey.BlobID(plain)
		sealed := SealBlob(fzKey, Data, id, plain)
		got, err := OpenBlob(fzKey, Data, id, sealed)
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("round trip of %d bytes: %v", len(plain), err)
		}
		if _, err := OpenBlob(fzKey, Tree, id, sealed); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("wrong type accepted: %v", err)
		}
		bad := append([]byte(nil), sealed...)
		bad[len(bad)/2] ^= 1
		if _, err := OpenBlob(fzKey, Data, id, bad); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("tampered blob accepted: %v", err)
		}
	}
	if n := len(SealBlob(fzKey, Data, fzKey.BlobID(text), text)); n > len(text)/10 {
		t.Errorf("text not compressed: %d bytes", n)
	}
	if n := len(SealBlob(fzKey, Data, crypto.ID{}, random)); n != len(random)+1+fzKey.Overhead() {
		t.Errorf("incompressible data not stored raw: %d bytes for %d", n, len(random))
	}
}

func TestPackRoundTrip(t *testing.T) {
	blobs := [][]byte{[]byte("one"), bytes.Repeat([]byte("two"), 5000), []byte("three")}
	data := fzPack(blobs...)
	entries, err := ParsePack(fzKey, data)
	if err != nil || len(entries) != 3 {
		t.Fatalf("parse: %v %v", entries, err)
	}
	for i, e := range entries {
		got, err := OpenBlob(fzKey, e.Type, e.ID, data[e.Offset:e.Offset+e.Length])
		if err != nil || !bytes.Equal(got, blobs[i]) || int(e.RawLength) != len(blobs[i]) {
			t.Fatalf("blob %d: %v", i, err)
		}
	}
	// The header alone, read from the tail as a backend would.
	hl, err := HeaderLength(data[len(data)-TrailerSize:], int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	sealed := data[int64(len(data))-TrailerSize-hl : len(data)-TrailerSize]
	if again, err := OpenHeader(fzKey, sealed, int64(len(data))); err != nil || len(again) != 3 {
		t.Fatalf("header from tail: %v", err)
	}
	for _, bad := range [][]byte{data[:len(data)-1], append([]byte{0}, data...), data[:3]} {
		if _, err := ParsePack(fzKey, bad); err == nil {
			t.Errorf("damaged pack of %d bytes parsed", len(bad))
		}
	}
	hdr := EncodeHeader(entries)
	if _, err := DecodeHeader(hdr, 10); err == nil {
		t.Error("header covering more than the data decoded")
	}
	if _, err := DecodeHeader(append(hdr, 0), int64(entries[2].Offset+entries[2].Length)); err == nil {
		t.Error("trailing bytes accepted")
	}
}

// Decoders of untrusted bytes must never panic, and a header that decodes
// must re-encode to the same bytes (the format is canonical).
func FuzzPackHeader(f *testing.F) {
	data := fzPack([]byte("a"), []byte("bb"))
	entries, _ := ParsePack(fzKey, data)
	hdr := EncodeHeader(entries)
	f.Add(hdr, int64(entries[1].Offset+entries[1].Length))
	f.Add(hdr[:len(hdr)-3], int64(10))
	f.Add([]byte("KPH1\x00"), int64(0))
	f.Fuzz(func(t *testing.T, b []byte, dataLen int64) {
		blobs, err := DecodeHeader(b, dataLen)
		if err != nil {
			return
		}
		if !bytes.Equal(EncodeHeader(blobs), b) {
			t.Fatalf("header does not re-encode to its bytes")
		}
	})
}

func FuzzParsePack(f *testing.F) {
	f.Add(fzPack([]byte("hello"), bytes.Repeat([]byte("x"), 3000)))
	f.Add(fzPack())
	f.Add([]byte{1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		blobs, err := ParsePack(fzKey, b)
		if err != nil {
			return
		}
		for _, bl := range blobs {
			if int64(bl.Offset)+int64(bl.Length) > int64(len(b)) {
				t.Fatalf("blob outside the pack")
			}
			_, _ = OpenBlob(fzKey, bl.Type, bl.ID, b[bl.Offset:bl.Offset+bl.Length])
		}
	})
}

func FuzzOpenBlob(f *testing.F) {
	plain := []byte("some blob content")
	id := fzKey.BlobID(plain)
	f.Add(SealBlob(fzKey, Data, id, plain))
	f.Add([]byte{})
	f.Add(make([]byte, 40))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := OpenBlob(fzKey, Data, id, b)
		if err == nil && !bytes.Equal(got, plain) {
			t.Fatalf("a forged blob opened to other bytes")
		}
	})
}
