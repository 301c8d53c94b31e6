package chunker

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand"
	"testing"

	restic "github.com/restic/chunker"
)

var testKey = bytes.Repeat([]byte{7}, 32)

func chunks(t testing.TB, data []byte, p Params, key []byte) [][]byte {
	c, err := New(bytes.NewReader(data), p, key)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for {
		b, err := c.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, append([]byte(nil), b...))
	}
}

func randData(n int, seed int64) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

func TestChunkBoundaries(t *testing.T) {
	data := randData(32<<20, 1)
	cs := chunks(t, data, Default, testKey)
	if !bytes.Equal(bytes.Join(cs, nil), data) {
		t.Fatal("chunks do not concatenate to the input")
	}
	for i, c := range cs {
		if len(c) > Default.Max || (len(c) < Default.Min && i != len(cs)-1) {
			t.Fatalf("chunk %d has %d bytes", i, len(c))
		}
	}
	if n := len(cs); n < 16 || n > 64 {
		t.Fatalf("%d chunks for 32 MiB at 1 MiB average", n)
	}
	if len(chunks(t, nil, Default, testKey)) != 0 {
		t.Fatal("empty input gave chunks")
	}
	// An insertion near the start moves few boundaries.
	shifted := append(append(randData(10, 2), data[:1000]...), data[1000:]...)
	shared := sharedChunks(cs, chunks(t, shifted, Default, testKey))
	if shared < len(cs)-3 {
		t.Fatalf("after a 10-byte insertion only %d of %d chunks are shared", shared, len(cs))
	}
	// The gear table is keyed: another key cuts elsewhere.
	if sharedChunks(cs, chunks(t, data, Default, bytes.Repeat([]byte{8}, 32))) > len(cs)/2 {
		t.Fatal("different keys cut the same boundaries")
	}
	// Reset reuses the chunker for the next stream with the same result.
	c, _ := New(bytes.NewReader(randData(3<<20, 3)), Default, testKey)
	for {
		if _, err := c.Next(); err != nil {
			break
		}
	}
	c.Reset(bytes.NewReader(data))
	var again [][]byte
	for {
		b, err := c.Next()
		if err != nil {
			break
		}
		again = append(again, append([]byte(nil), b...))
	}
	if sharedChunks(cs, again) != len(cs) {
		t.Fatal("Reset changed the chunking")
	}
	if err := (Params{Algorithm: "x", Min: 1, Avg: 2, Max: 3}).Validate(); err == nil {
		t.Fatal("bad params accepted")
	}
}

func sharedChunks(a, b [][]byte) int {
	seen := map[[32]byte]bool{}
	for _, c := range a {
		seen[sha256.Sum256(c)] = true
	}
	n := 0
	for _, c := range b {
		if seen[sha256.Sum256(c)] {
			n++
		}
	}
	return n
}

// The two candidates of the design, on 64 MiB of random data with the same
// size targets; ReportMetric adds the share of chunks kept after a 10-byte
// insertion at the front.
func BenchmarkFastCDC(b *testing.B) {
	data := randData(64<<20, 1)
	b.SetBytes(int64(len(data)))
	c, _ := New(nil, Default, testKey)
	for i := 0; i < b.N; i++ {
		c.Reset(bytes.NewReader(data))
		for {
			if _, err := c.Next(); err != nil {
				break
			}
		}
	}
	orig := chunks(b, data, Default, testKey)
	moved := chunks(b, append(randData(10, 5), data...), Default, testKey)
	b.ReportMetric(float64(sharedChunks(orig, moved))/float64(len(orig)), "kept/insert")
}

func resticChunks(data []byte) [][]byte {
	c := restic.NewWithBoundaries(bytes.NewReader(data), restic.Pol(0x3DA3358B4DC173), 512<<10, 8<<20)
	buf := make([]byte, 8<<20)
	var out [][]byte
	for {
		ch, err := c.Next(buf)
		if err != nil {
			return out
		}
		out = append(out, append([]byte(nil), ch.Data...))
	}
}

func BenchmarkResticChunker(b *testing.B) {
	data := randData(64<<20, 1)
	b.SetBytes(int64(len(data)))
	buf := make([]byte, 8<<20)
	for i := 0; i < b.N; i++ {
		c := restic.NewWithBoundaries(bytes.NewReader(data), restic.Pol(0x3DA3358B4DC173), 512<<10, 8<<20)
		for {
			if _, err := c.Next(buf); err != nil {
				break
			}
		}
	}
	orig := resticChunks(data)
	moved := resticChunks(append(randData(10, 5), data...))
	b.ReportMetric(float64(sharedChunks(orig, moved))/float64(len(orig)), "kept/insert")
}
