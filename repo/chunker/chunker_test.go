package chunker

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand"
	"slices"
	"sync"
	"testing"
	"testing/iotest"

	restic "github.com/restic/chunker"
)

var testKey = bytes.Repeat([]byte{7}, 32)

// small keeps most tests fast while still cutting hundreds of chunks: the
// algorithm is the same at every scale.
var small = Params{Algorithm: Default.Algorithm, Min: 4 << 10, Avg: 16 << 10, Max: 64 << 10}

func chunksFrom(t testing.TB, rd io.Reader, p Params, key []byte) [][]byte {
	t.Helper()
	c, err := New(rd, p, key)
	if err != nil {
		t.Fatal(err)
	}
	return drain(t, c)
}

func drain(t testing.TB, c *Chunker) [][]byte {
	t.Helper()
	var out [][]byte
	for {
		b, err := c.Next()
		if errors.Is(err, io.EOF) {
			if b != nil {
				t.Fatal("data returned with io.EOF")
			}
			// EOF is sticky.
			if b, err := c.Next(); b != nil || !errors.Is(err, io.EOF) {
				t.Fatalf("Next after EOF: %d bytes, %v", len(b), err)
			}
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(b) == 0 {
			t.Fatal("empty chunk")
		}
		// Copy: the chunk is only valid until the next call.
		out = append(out, append([]byte(nil), b...))
	}
}

func chunks(t testing.TB, data []byte, p Params, key []byte) [][]byte {
	return chunksFrom(t, bytes.NewReader(data), p, key)
}

func randData(n int, seed int64) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

func hashes(cs [][]byte) [][32]byte {
	out := make([][32]byte, len(cs))
	for i, c := range cs {
		out[i] = sha256.Sum256(c)
	}
	return out
}

// sharedChunks counts the chunks of b whose content also is a chunk of a:
// what deduplication would not store again.
func sharedChunks(a, b [][]byte) int {
	seen := map[[32]byte]bool{}
	for _, h := range hashes(a) {
		seen[h] = true
	}
	n := 0
	for _, h := range hashes(b) {
		if seen[h] {
			n++
		}
	}
	return n
}

func checkChunks(t *testing.T, data []byte, cs [][]byte, p Params) {
	t.Helper()
	if !bytes.Equal(bytes.Join(cs, nil), data) {
		t.Fatal("chunks do not concatenate to the input")
	}
	for i, c := range cs {
		if len(c) > p.Max {
			t.Fatalf("chunk %d of %d has %d bytes, above max %d", i, len(cs), len(c), p.Max)
		}
		if len(c) < p.Min && i != len(cs)-1 {
			t.Fatalf("chunk %d of %d has %d bytes, below min %d", i, len(cs), len(c), p.Min)
		}
	}
}

// The 32 MiB buffer at the default sizes is chunked once and shared.
var big struct {
	once   sync.Once
	data   []byte
	chunks [][]byte
}

func bigChunks(t *testing.T) ([]byte, [][]byte) {
	big.once.Do(func() {
		big.data = randData(32<<20, 1)
		big.chunks = chunks(t, big.data, Default, testKey)
	})
	if big.chunks == nil {
		t.Fatal("chunking the shared buffer failed")
	}
	return big.data, big.chunks
}

func TestDefaultSizes(t *testing.T) {
	data, cs := bigChunks(t)
	checkChunks(t, data, cs, Default)
	if n := len(cs); n < 16 || n > 64 {
		t.Fatalf("%d chunks for 32 MiB at 1 MiB average", n)
	}
}

func TestInsertionMovesFewBoundaries(t *testing.T) {
	data, cs := bigChunks(t)
	shifted := append(randData(10, 2), data...)
	moved := chunks(t, shifted, Default, testKey)
	checkChunks(t, shifted, moved, Default)
	// Only the chunk holding the insertion (and rarely its neighbour, when
	// the insertion lands before the minimum size) should change.
	if shared := sharedChunks(cs, moved); shared < len(cs)-2 {
		t.Fatalf("after a 10-byte insertion only %d of %d chunks are shared", shared, len(cs))
	}
}

func TestInsertionInTheMiddle(t *testing.T) {
	data := randData(4<<20, 3)
	cs := chunks(t, data, small, testKey)
	mid := len(data) / 2
	edited := append(append(append([]byte(nil), data[:mid]...), "inserted text"...), data[mid:]...)
	moved := chunks(t, edited, small, testKey)
	checkChunks(t, edited, moved, small)
	if shared := sharedChunks(cs, moved); shared < len(cs)-3 {
		t.Fatalf("after a mid-file insertion only %d of %d chunks are shared", shared, len(cs))
	}
}

func TestDeterministic(t *testing.T) {
	data := randData(2<<20, 4)
	want := hashes(chunks(t, data, small, testKey))
	if len(want) < 50 {
		t.Fatalf("only %d chunks", len(want))
	}
	// The boundaries depend on the content alone, not on how reads split it.
	readers := map[string]io.Reader{
		"again": bytes.NewReader(data),
		"half":  iotest.HalfReader(bytes.NewReader(data)),
		"odd":   &oddReader{data: data},
	}
	for name, rd := range readers {
		got := hashes(chunksFrom(t, rd, small, testKey))
		if len(got) != len(want) {
			t.Fatalf("%s: %d chunks, want %d", name, len(got), len(want))
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("%s: chunk %d differs", name, i)
			}
		}
	}
}

// oddReader returns short reads of varying sizes, and sometimes nothing.
type oddReader struct {
	data []byte
	n    int
}

func (r *oddReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	r.n++
	k := min(len(p), len(r.data), (r.n*7919)%20000)
	copy(p, r.data[:k])
	r.data = r.data[k:]
	return k, nil
}

func TestMinMaxHonoured(t *testing.T) {
	inputs := map[string][]byte{
		"random": randData(3<<20, 5),
		// Constant input never matches the mask: every chunk is cut at max.
		"zeros": make([]byte, 1<<20+123),
		"ones":  bytes.Repeat([]byte{0xff}, 1<<20),
		// A short period can match the mask over and over.
		"pattern": bytes.Repeat([]byte("abcdefgh"), 1<<17),
	}
	for name, data := range inputs {
		cs := chunks(t, data, small, testKey)
		t.Run(name, func(t *testing.T) { checkChunks(t, data, cs, small) })
	}
	zeros := chunks(t, inputs["zeros"], small, testKey)
	for i, c := range zeros[:len(zeros)-1] {
		if len(c) != small.Max {
			t.Fatalf("zero chunk %d has %d bytes, want max %d", i, len(c), small.Max)
		}
	}
}

func TestShortInputs(t *testing.T) {
	if cs := chunks(t, nil, Default, testKey); len(cs) != 0 {
		t.Fatalf("empty input gave %d chunks", len(cs))
	}
	for _, n := range []int{1, small.Min - 1, small.Min, small.Min + 1, small.Max, small.Max + 1} {
		data := randData(n, int64(n))
		cs := chunks(t, data, small, testKey)
		checkChunks(t, data, cs, small)
		if n <= small.Min && len(cs) != 1 {
			t.Fatalf("%d bytes gave %d chunks, want 1", n, len(cs))
		}
	}
}

func TestReset(t *testing.T) {
	a, b := randData(1<<20, 6), randData(1<<20+77, 7)
	want := hashes(chunks(t, b, small, testKey))
	c, err := New(bytes.NewReader(a), small, testKey)
	if err != nil {
		t.Fatal(err)
	}
	// Reset in the middle of a stream as well as after its end.
	if _, err := c.Next(); err != nil {
		t.Fatal(err)
	}
	c.Reset(bytes.NewReader(b))
	if got := hashes(drain(t, c)); len(got) != len(want) || got[0] != want[0] || got[len(got)-1] != want[len(want)-1] {
		t.Fatal("Reset mid-stream changed the chunking")
	}
	c.Reset(bytes.NewReader(b))
	got := drain(t, c)
	checkChunks(t, b, got, small)
	if sharedChunks(got, chunks(t, b, small, testKey)) != len(want) {
		t.Fatal("Reset after EOF changed the chunking")
	}
	c.Reset(bytes.NewReader(nil))
	if cs := drain(t, c); len(cs) != 0 {
		t.Fatal("empty stream after Reset gave chunks")
	}
}

func TestKeyed(t *testing.T) {
	data := randData(2<<20, 8)
	cs := chunks(t, data, small, testKey)
	other := chunks(t, data, small, bytes.Repeat([]byte{8}, 32))
	checkChunks(t, data, other, small)
	// With another gear table the cut points (and so the chunk sizes the
	// storage sees) must be unrelated.
	if n := sharedChunks(cs, other); n > len(cs)/10 {
		t.Fatalf("different keys share %d of %d chunks", n, len(cs))
	}
	if n := sharedChunks(cs, chunks(t, data, small, append([]byte(nil), testKey...))); n != len(cs) {
		t.Fatal("the same key cut differently")
	}
}

type failingReader struct {
	data []byte
	err  error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

// A read error must surface: reporting it as the end of the stream would
// silently store a truncated file.
func TestReadErrorIsNotEOF(t *testing.T) {
	boom := errors.New("disk on fire")
	for _, n := range []int{0, 100, small.Max * 5} {
		c, err := New(&failingReader{data: randData(n, 9), err: boom}, small, testKey)
		if err != nil {
			t.Fatal(err)
		}
		total := 0
		for {
			b, err := c.Next()
			if err != nil {
				if !errors.Is(err, boom) {
					t.Fatalf("%d bytes then an error: got %v", n, err)
				}
				break
			}
			total += len(b)
		}
		if total > n {
			t.Fatalf("returned %d bytes of %d", total, n)
		}
	}
}

func TestValidate(t *testing.T) {
	if err := Default.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := small.Validate(); err != nil {
		t.Fatal(err)
	}
	bad := []Params{
		{},
		{Algorithm: "rabin", Min: Default.Min, Avg: Default.Avg, Max: Default.Max},
		{Algorithm: Default.Algorithm, Min: 32, Avg: 128, Max: 512},         // min too small
		{Algorithm: Default.Algorithm, Min: 1024, Avg: 1024, Max: 4096},     // avg not above min
		{Algorithm: Default.Algorithm, Min: 1024, Avg: 3000, Max: 8192},     // avg not a power of two
		{Algorithm: Default.Algorithm, Min: 1024, Avg: 4096, Max: 4096},     // max not above avg
		{Algorithm: Default.Algorithm, Min: 1024, Avg: 4096, Max: 65 << 20}, // max too large
	}
	for _, p := range bad {
		if err := p.Validate(); err == nil {
			t.Errorf("%+v accepted", p)
		}
		if _, err := New(bytes.NewReader(nil), p, testKey); err == nil {
			t.Errorf("New accepted %+v", p)
		}
	}
}

// FuzzChunker checks the invariants every input must keep, at sizes small
// enough that the fuzzer's short inputs still cut several chunks. Beyond
// the sizes: the cuts depend on the bytes alone, not on how the reader
// hands them over or on an earlier stream through the same chunker, and
// a cut resynchronises (what follows a boundary is chunked as if the
// stream began there), which is what deduplication rests on.
func FuzzChunker(f *testing.F) {
	f.Add([]byte{}, byte(0))
	f.Add(make([]byte, 3000), byte(1))
	f.Add(randData(5000, 1), byte(2))
	p := Params{Algorithm: Default.Algorithm, Min: 64, Avg: 256, Max: 1024}
	f.Fuzz(func(t *testing.T, data []byte, k byte) {
		key := bytes.Repeat([]byte{k}, 32)
		c, err := New(bytes.NewReader(data), p, key)
		if err != nil {
			t.Fatal(err)
		}
		cs := drain(t, c)
		checkChunks(t, data, cs, p)
		if len(data) > 64<<10 {
			return
		}
		c.Reset(iotest.OneByteReader(bytes.NewReader(data)))
		if again := drain(t, c); !slices.EqualFunc(again, cs, bytes.Equal) {
			t.Fatalf("one byte per read, after a Reset: %d chunks, not %d, or other cuts", len(again), len(cs))
		}
		if len(cs) > 1 {
			rest := chunks(t, data[len(cs[0]):], p, key)
			if !slices.EqualFunc(rest, cs[1:], bytes.Equal) {
				t.Fatalf("from the first cut on: %d chunks, not %d, or other cuts", len(rest), len(cs)-1)
			}
		}
	})
}

// The two candidates of the design on 64 MiB of random data with the same
// size targets. ReportMetric adds the share of chunks still deduplicated
// after a 10-byte insertion at the front (kept/insert) and the mean chunk
// size in KiB.
func BenchmarkFastCDC(b *testing.B) {
	data := randData(64<<20, 1)
	c, err := New(nil, Default, testKey)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for b.Loop() {
		c.Reset(bytes.NewReader(data))
		for {
			if _, err := c.Next(); err != nil {
				break
			}
		}
	}
	b.StopTimer()
	orig := chunks(b, data, Default, testKey)
	moved := chunks(b, append(randData(10, 5), data...), Default, testKey)
	reportDedup(b, data, orig, moved)
}

var resticPol = restic.Pol(0x3DA3358B4DC173)

func resticChunks(data []byte) [][]byte {
	c := restic.NewWithBoundaries(bytes.NewReader(data), resticPol, 512<<10, 8<<20)
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
	buf := make([]byte, 8<<20)
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for b.Loop() {
		c := restic.NewWithBoundaries(bytes.NewReader(data), resticPol, 512<<10, 8<<20)
		for {
			if _, err := c.Next(buf); err != nil {
				break
			}
		}
	}
	b.StopTimer()
	orig := resticChunks(data)
	moved := resticChunks(append(randData(10, 5), data...))
	reportDedup(b, data, orig, moved)
}

func reportDedup(b *testing.B, data []byte, orig, moved [][]byte) {
	if !bytes.Equal(bytes.Join(orig, nil), data) {
		b.Fatal("chunks do not concatenate to the input")
	}
	b.ReportMetric(float64(sharedChunks(orig, moved))/float64(len(orig)), "kept/insert")
	b.ReportMetric(float64(len(data))/float64(len(orig))/1024, "KiB/chunk")
}
