// Package index maps blobs to their place in packs.
//
// An index segment is one remote object `index/<id>` listing, for a set of
// packs, every blob each holds. Segments are written after the packs they
// describe (so the remote never names a blob it lacks) and can be rewritten:
// a segment lists the segments it supersedes, which a reader then ignores and
// a writer deletes once the new segment is stored.
//
//	segment = Seal(zstd(plain), ad = "keepfs index v1")
//	plain   = "KPI1" || uvarint(ns) || ns * id:32
//	          || uvarint(np) || np * (pack:32 || uvarint(packSize) || uvarint(nb)
//	                                   || nb * (type:1 || id:32 || uvarint(off) || uvarint(len) || uvarint(raw)))
package index

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sort"
	"sync"

	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/pack"
	"github.com/klauspost/compress/zstd"
)

// PackEntry is one pack and its blobs.
type PackEntry struct {
	ID    crypto.ID
	Size  int64
	Blobs []pack.Blob
}

// Segment is the decoded content of one index object.
type Segment struct {
	Supersedes []crypto.ID
	Packs      []PackEntry
}

const magic = "KPI1"
const segmentAD = "keepfs index v1"

// Encode serialises s (unsealed).
func (s *Segment) Encode() []byte {
	out := []byte(magic)
	out = binary.AppendUvarint(out, uint64(len(s.Supersedes)))
	for _, id := range s.Supersedes {
		out = append(out, id[:]...)
	}
	out = binary.AppendUvarint(out, uint64(len(s.Packs)))
	for _, p := range s.Packs {
		out = append(out, p.ID[:]...)
		out = binary.AppendUvarint(out, uint64(p.Size))
		out = binary.AppendUvarint(out, uint64(len(p.Blobs)))
		for _, b := range p.Blobs {
			out = append(out, byte(b.Type))
			out = append(out, b.ID[:]...)
			out = binary.AppendUvarint(out, uint64(b.Offset))
			out = binary.AppendUvarint(out, uint64(b.Length))
			out = binary.AppendUvarint(out, uint64(b.RawLength))
		}
	}
	return out
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) uvarint(max uint64) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	// Only the shortest encoding is accepted: one segment, one encoding.
	if n <= 0 || n != len(binary.AppendUvarint(nil, v)) {
		r.err = errors.New("index: bad varint")
		return 0
	}
	if v > max {
		r.err = fmt.Errorf("index: value %d out of range", v)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) id() crypto.ID {
	var id crypto.ID
	if r.err != nil {
		return id
	}
	if len(r.b) < len(id) {
		r.err = errors.New("index: truncated id")
		return id
	}
	copy(id[:], r.b)
	r.b = r.b[len(id):]
	return id
}

// Decode parses an unsealed segment, rejecting anything inconsistent: a
// blob outside its pack, overlapping blobs, duplicated packs.
func Decode(b []byte) (*Segment, error) {
	if len(b) < len(magic) || string(b[:len(magic)]) != magic {
		return nil, errors.New("index: bad magic")
	}
	r := &reader{b: b[len(magic):]}
	s := &Segment{}
	ns := r.uvarint(uint64(len(r.b) / 32))
	for i := uint64(0); i < ns && r.err == nil; i++ {
		s.Supersedes = append(s.Supersedes, r.id())
	}
	np := r.uvarint(uint64(len(r.b) / 34))
	seen := map[crypto.ID]bool{}
	for i := uint64(0); i < np && r.err == nil; i++ {
		p := PackEntry{ID: r.id()}
		if seen[p.ID] {
			return nil, fmt.Errorf("index: pack %s listed twice", p.ID.Short())
		}
		seen[p.ID] = true
		p.Size = int64(r.uvarint(1 << 40))
		nb := r.uvarint(uint64(len(r.b) / 36))
		var end uint64
		for j := uint64(0); j < nb && r.err == nil; j++ {
			var bl pack.Blob
			t := r.uvarint(255)
			bl.Type = pack.BlobType(t)
			bl.ID = r.id()
			// Offsets and lengths are uint32 in pack.Blob: 1<<32 would wrap to 0.
			off := r.uvarint(math.MaxUint32)
			l := r.uvarint(math.MaxUint32)
			raw := r.uvarint(pack.MaxBlobSize)
			if r.err != nil {
				break
			}
			if !bl.Type.Valid() {
				return nil, fmt.Errorf("index: unknown blob type %d", t)
			}
			if off < end || off+l > uint64(p.Size) {
				return nil, fmt.Errorf("index: pack %s: blob %s at [%d,+%d) overlaps or exceeds pack", p.ID.Short(), bl.ID.Short(), off, l)
			}
			end = off + l
			bl.Offset, bl.Length, bl.RawLength = uint32(off), uint32(l), uint32(raw)
			p.Blobs = append(p.Blobs, bl)
		}
		s.Packs = append(s.Packs, p)
	}
	if r.err != nil {
		return nil, r.err
	}
	if len(r.b) != 0 {
		return nil, errors.New("index: trailing bytes")
	}
	return s, nil
}

var (
	// zenc's history is what stays allocated between seals: at the default
	// 8 MiB window it is 16 MiB, held for the life of the process (the
	// mount daemon's largest single allocation after its first upload).
	// A segment is mostly random blob ids, which no window compresses, so
	// a 1 MiB window with the history sized to the input costs nothing.
	zenc    = newSegmentEncoder()
	zdec, _ = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(1<<30))
)

// segmentWindow is zenc's window (see there).
const segmentWindow = 1 << 20

func newSegmentEncoder() *zstd.Encoder {
	e, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1),
		zstd.WithWindowSize(segmentWindow), zstd.WithLowerEncoderMem(true))
	return e
}

// Seal compresses and encrypts s for storage.
func (s *Segment) Seal(k *crypto.Key) []byte {
	return k.Seal(nil, zenc.EncodeAll(s.Encode(), nil), []byte(segmentAD))
}

// Open decrypts and decodes a stored segment.
func Open(k *crypto.Key, sealed []byte) (*Segment, error) {
	z, err := k.Open(nil, sealed, []byte(segmentAD))
	if err != nil {
		return nil, fmt.Errorf("index: %w", err)
	}
	plain, err := zdec.DecodeAll(z, nil)
	if err != nil {
		return nil, fmt.Errorf("index: decompress: %w", err)
	}
	return Decode(plain)
}

// Location is where a blob lives.
type Location struct {
	Pack crypto.ID
	pack.Blob
}

type blobKey struct {
	t  pack.BlobType
	id crypto.ID
}

// Index is the in-memory union of segments. Safe for concurrent use.
type Index struct {
	mu    sync.RWMutex
	blobs map[blobKey]Location
	packs map[crypto.ID]int64 // pack -> size
	// contents lists every blob each pack holds, duplicates included: prune
	// and repack need it, Lookup does not.
	contents map[crypto.ID][]pack.Blob
}

// New returns an empty index.
func New() *Index {
	return &Index{blobs: map[blobKey]Location{}, packs: map[crypto.ID]int64{}, contents: map[crypto.ID][]pack.Blob{}}
}

// AddPack records the blobs of one pack. A blob already known elsewhere
// keeps its first location: duplicates are harmless and prune removes them.
func (ix *Index) AddPack(p PackEntry) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.packs[p.ID] = p.Size
	ix.contents[p.ID] = p.Blobs
	for _, b := range p.Blobs {
		k := blobKey{b.Type, b.ID}
		if _, ok := ix.blobs[k]; !ok {
			ix.blobs[k] = Location{Pack: p.ID, Blob: b}
		}
	}
}

// Lookup finds a blob.
func (ix *Index) Lookup(t pack.BlobType, id crypto.ID) (Location, bool) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	l, ok := ix.blobs[blobKey{t, id}]
	return l, ok
}

// Has reports whether the blob is indexed.
func (ix *Index) Has(t pack.BlobType, id crypto.ID) bool {
	_, ok := ix.Lookup(t, id)
	return ok
}

// HasPack reports whether a pack is indexed.
func (ix *Index) HasPack(id crypto.ID) bool {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	_, ok := ix.packs[id]
	return ok
}

// Packs returns every indexed pack and its expected size, sorted by id.
func (ix *Index) Packs() []PackEntry {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	out := make([]PackEntry, 0, len(ix.packs))
	for id, size := range ix.packs {
		out = append(out, PackEntry{ID: id, Size: size})
	}
	sort.Slice(out, func(i, j int) bool { return string(out[i].ID[:]) < string(out[j].ID[:]) })
	return out
}

// PackBlobs returns every blob stored in pack id, duplicates included.
func (ix *Index) PackBlobs(id crypto.ID) []pack.Blob {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return ix.contents[id]
}

// Count is the number of indexed blobs.
func (ix *Index) Count() int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return len(ix.blobs)
}

// Each calls fn for every indexed blob location.
func (ix *Index) Each(fn func(Location)) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	for _, l := range ix.blobs {
		fn(l)
	}
}
