// Package pack defines the blob codec and the pack file format.
//
// A blob is one chunk of file data or one encoded tree, identified by the
// keyed hash of its plaintext. On the remote it is stored sealed:
//
//	blob   = Seal(flag || payload, ad = type || id)   flag 0: raw, 1: zstd
//
// Binding type and id into the AEAD means a blob cannot be swapped for
// another, even inside one pack. A pack concatenates sealed blobs and ends
// with an encrypted header listing them, then the header's length:
//
//	pack   = blob* || Seal(header, ad = "keepfs pack header v1") || uint32le(len)
//	header = "KPH1" || uvarint(n) || n * (type:1 || id:32 || uvarint(len) || uvarint(rawLen))
//
// Offsets are implicit (cumulative), so a pack can be rewritten without some
// of its blobs by copying the survivors and writing a new header, and the
// index can always be rebuilt from the packs alone.
package pack

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/klauspost/compress/zstd"
)

// BlobType distinguishes file content from directory trees.
type BlobType uint8

const (
	Data BlobType = 0
	Tree BlobType = 1
)

func (t BlobType) String() string {
	switch t {
	case Data:
		return "data"
	case Tree:
		return "tree"
	}
	return fmt.Sprintf("blobtype(%d)", uint8(t))
}

// Valid reports whether t is a known type.
func (t BlobType) Valid() bool { return t == Data || t == Tree }

// Blob locates one sealed blob inside a pack.
type Blob struct {
	Type      BlobType
	ID        crypto.ID
	Offset    uint32
	Length    uint32 // sealed length, as stored
	RawLength uint32 // plaintext length
}

// MaxBlobSize bounds a blob's plaintext: the largest chunk is 8 MiB, trees of
// very large directories can be bigger, nothing legitimate nears this.
const MaxBlobSize = 128 << 20

const (
	flagRaw  = 0
	flagZstd = 1
)

var (
	// EncodeAll draws from a pool of encoders, one per CPU: with one,
	// concurrent sealing would queue behind it. The default level: the
	// better-compression level cost 25% more compression CPU on the
	// benchmark workload for 0.4% less repository. No CRC: the AEAD
	// already authenticates.
	encoder, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(0), zstd.WithEncoderCRC(false))
	// fastEncoder is zstd's fastest level, for writers that run beside the
	// user's own work (the mount's uploader): about twice the speed for a
	// few percent more stored bytes. Its 2 MiB window keeps each encoder's
	// history at 2 MiB instead of 16: the daemon's heap is bounded, and a
	// fuller heap makes its collector run more often.
	fastEncoder, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(0), zstd.WithEncoderCRC(false),
		zstd.WithWindowSize(2<<20), zstd.WithLowerEncoderMem(true))
	decoder, _ = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(MaxBlobSize), zstd.WithDecoderMaxWindow(MaxBlobSize))
)

// ErrCorrupt means stored bytes failed authentication or decoding.
var ErrCorrupt = errors.New("corrupt blob")

func blobAD(t BlobType, id crypto.ID) []byte {
	ad := make([]byte, 1+len(id))
	ad[0] = byte(t)
	copy(ad[1:], id[:])
	return ad
}

// SealBlob compresses plaintext when that pays and seals it.
func SealBlob(k *crypto.Key, t BlobType, id crypto.ID, plaintext []byte) []byte {
	var scratch []byte
	return AppendSealedBlob(nil, &scratch, k, t, id, plaintext)
}

// sampleSize is how much of a large blob is test-compressed first.
const sampleSize = 32 << 10

// pays reports whether compression saved at least 1/32 of n bytes:
// otherwise already-compressed media would be paid for at every read.
func pays(compressed, n int) bool { return compressed < n-n/32 }

// AppendSealedBlob is SealBlob appending to dst, with *scratch reused for the
// compressed form between calls (the pipeline keeps one per worker, so
// steady-state sealing allocates nothing). Blobs whose first 32 KiB do not
// compress are stored raw without trying the rest: random data and media
// would otherwise cost a full compression pass for nothing.
func AppendSealedBlob(dst []byte, scratch *[]byte, k *crypto.Key, t BlobType, id crypto.ID, plaintext []byte) []byte {
	return AppendSealed(dst, k, t, id, Encode(scratch, plaintext))
}

// Encode returns the unsealed stored form of plaintext (flag byte, then raw
// or zstd bytes) in *scratch's storage. Split from sealing so the costly
// compression can run outside the packer's lock.
func Encode(scratch *[]byte, plaintext []byte) []byte {
	return encode(encoder, scratch, plaintext)
}

// EncodeFast is Encode at zstd's fastest level.
func EncodeFast(scratch *[]byte, plaintext []byte) []byte {
	return encode(fastEncoder, scratch, plaintext)
}

// Compress is Encode for a caller that seals a raw blob itself with
// AppendSealedRaw: it returns the encoded form when compression pays, and
// raw true (nothing copied) when the blob is to be stored raw.
func Compress(scratch *[]byte, plaintext []byte, fast bool) (encoded []byte, raw bool) {
	enc := encoder
	if fast {
		enc = fastEncoder
	}
	buf, ok := compress(enc, scratch, plaintext)
	if !ok {
		return nil, true
	}
	return buf, false
}

// RawSealedLen is the length of AppendSealedRaw's output for n bytes.
func RawSealedLen(k *crypto.Key, n int) int { return 1 + n + k.Overhead() }

// AppendSealedRaw seals plaintext stored raw (flag byte, then the bytes),
// appending to dst: the bytes are copied once, into their place in dst,
// and encrypted there. The result is what AppendSealed gives for
// Encode's raw form.
func AppendSealedRaw(dst []byte, k *crypto.Key, t BlobType, id crypto.ID, plaintext []byte) []byte {
	return k.SealFill(dst, 1+len(plaintext), func(p []byte) {
		p[0] = flagRaw
		copy(p[1:], plaintext)
	}, blobAD(t, id))
}

func encode(encoder *zstd.Encoder, scratch *[]byte, plaintext []byte) []byte {
	buf, ok := compress(encoder, scratch, plaintext)
	if !ok {
		buf = append(buf[:0], flagRaw)
		buf = append(buf, plaintext...)
	}
	*scratch = buf
	return buf
}

// compress returns the zstd form (flag byte first) in *scratch's storage
// and whether it pays; a blob whose first sampleSize bytes do not compress
// is not tried further.
func compress(encoder *zstd.Encoder, scratch *[]byte, plaintext []byte) ([]byte, bool) {
	buf := append((*scratch)[:0], flagZstd)
	compress := len(plaintext) >= 64
	if compress && len(plaintext) > 4*sampleSize {
		sample := encoder.EncodeAll(plaintext[:sampleSize], buf)
		compress = pays(len(sample)-1, sampleSize)
		buf = sample[:1]
	}
	if compress {
		buf = encoder.EncodeAll(plaintext, buf)
		compress = pays(len(buf)-1, len(plaintext))
	}
	*scratch = buf
	return buf, compress
}

// AppendSealed seals an Encode result, appending to dst.
func AppendSealed(dst []byte, k *crypto.Key, t BlobType, id crypto.ID, encoded []byte) []byte {
	return k.Seal(dst, encoded, blobAD(t, id))
}

// OpenBlob reverses SealBlob and verifies that the plaintext hashes to id.
func OpenBlob(k *crypto.Key, t BlobType, id crypto.ID, sealed []byte) ([]byte, error) {
	return openBlob(k, t, id, sealed, false)
}

// OpenBlobInPlace is OpenBlob decrypting over sealed itself, which must
// not be used afterwards: one copy of every blob read less.
func OpenBlobInPlace(k *crypto.Key, t BlobType, id crypto.ID, sealed []byte) ([]byte, error) {
	return openBlob(k, t, id, sealed, true)
}

func openBlob(k *crypto.Key, t BlobType, id crypto.ID, sealed []byte, inPlace bool) ([]byte, error) {
	var dst []byte
	if inPlace && len(sealed) >= k.NonceSize() {
		dst = sealed[k.NonceSize():k.NonceSize()]
	}
	inner, err := k.Open(dst, sealed, blobAD(t, id))
	if err != nil {
		return nil, fmt.Errorf("%s blob %s: %w", t, id.Short(), ErrCorrupt)
	}
	if len(inner) == 0 {
		return nil, fmt.Errorf("%s blob %s: empty: %w", t, id.Short(), ErrCorrupt)
	}
	var plain []byte
	switch inner[0] {
	case flagRaw:
		plain = inner[1:]
	case flagZstd:
		plain, err = decoder.DecodeAll(inner[1:], nil)
		if err != nil {
			return nil, fmt.Errorf("%s blob %s: decompress: %v: %w", t, id.Short(), err, ErrCorrupt)
		}
	default:
		return nil, fmt.Errorf("%s blob %s: unknown flag %d: %w", t, id.Short(), inner[0], ErrCorrupt)
	}
	if k.BlobID(plain) != id {
		return nil, fmt.Errorf("%s blob %s: content does not match its id: %w", t, id.Short(), ErrCorrupt)
	}
	return plain, nil
}

// Packer accumulates sealed blobs into one pack. Not safe for concurrent use.
type Packer struct {
	data  []byte
	blobs []Blob
}

// NewPacker returns a packer writing into buf's capacity (growing it if
// needed), so callers can recycle pack buffers instead of zeroing 16 MiB
// per pack.
func NewPacker(buf []byte) *Packer { return &Packer{data: buf[:0]} }

// Add appends a sealed blob.
func (p *Packer) Add(t BlobType, id crypto.ID, sealed []byte, rawLen int) {
	p.AddFunc(t, id, rawLen, func(dst []byte) []byte { return append(dst, sealed...) })
}

// AddFunc appends a blob that seal writes directly into the pack (seal
// appends to its argument and returns the result), saving a copy.
func (p *Packer) AddFunc(t BlobType, id crypto.ID, rawLen int, seal func(dst []byte) []byte) {
	off := len(p.data)
	p.data = seal(p.data)
	p.blobs = append(p.blobs, Blob{Type: t, ID: id, Offset: uint32(off), Length: uint32(len(p.data) - off), RawLength: uint32(rawLen)})
}

// Size is the number of bytes added so far.
func (p *Packer) Size() int { return len(p.data) }

// Count is the number of blobs added so far.
func (p *Packer) Count() int { return len(p.blobs) }

// Reset drops everything added, keeping the buffer, and returns the blobs
// that were in it.
func (p *Packer) Reset() []Blob {
	b := p.blobs
	p.data, p.blobs = p.data[:0], nil
	return b
}

const headerAD = "keepfs pack header v1"
const headerMagic = "KPH1"

// Finalize returns the complete pack bytes and the blobs in it.
func (p *Packer) Finalize(k *crypto.Key) ([]byte, []Blob) {
	hdr := EncodeHeader(p.blobs)
	start := len(p.data)
	p.data = k.Seal(p.data, hdr, []byte(headerAD))
	p.data = binary.LittleEndian.AppendUint32(p.data, uint32(len(p.data)-start))
	return p.data, p.blobs
}

// EncodeHeader is the plaintext header for blobs laid out in order.
func EncodeHeader(blobs []Blob) []byte {
	out := make([]byte, 0, 4+binary.MaxVarintLen64+len(blobs)*(1+32+6))
	out = append(out, headerMagic...)
	out = binary.AppendUvarint(out, uint64(len(blobs)))
	for _, b := range blobs {
		out = append(out, byte(b.Type))
		out = append(out, b.ID[:]...)
		out = binary.AppendUvarint(out, uint64(b.Length))
		out = binary.AppendUvarint(out, uint64(b.RawLength))
	}
	return out
}

// DecodeHeader parses a plaintext header; dataLen is the number of bytes of
// blobs before the header, which the entries must exactly cover.
func DecodeHeader(hdr []byte, dataLen int64) ([]Blob, error) {
	// Blob offsets are uint32: past 4 GiB they would wrap and name the
	// wrong bytes, so such a pack cannot be valid.
	if dataLen < 0 || dataLen > math.MaxUint32 {
		return nil, fmt.Errorf("pack header: data length %d out of range", dataLen)
	}
	if len(hdr) < len(headerMagic) || string(hdr[:len(headerMagic)]) != headerMagic {
		return nil, errors.New("pack header: bad magic")
	}
	r := hdr[len(headerMagic):]
	n, k := uvarint(r)
	if k <= 0 {
		return nil, errors.New("pack header: bad count")
	}
	r = r[k:]
	if n > uint64(len(r))/34 {
		return nil, fmt.Errorf("pack header: count %d exceeds header size", n)
	}
	blobs := make([]Blob, 0, n)
	var off uint64
	for i := uint64(0); i < n; i++ {
		if len(r) < 33 {
			return nil, errors.New("pack header: truncated entry")
		}
		b := Blob{Type: BlobType(r[0])}
		if !b.Type.Valid() {
			return nil, fmt.Errorf("pack header: entry %d: unknown type %d", i, r[0])
		}
		copy(b.ID[:], r[1:33])
		r = r[33:]
		l, k1 := uvarint(r)
		if k1 <= 0 {
			return nil, errors.New("pack header: bad length")
		}
		r = r[k1:]
		raw, k2 := uvarint(r)
		if k2 <= 0 {
			return nil, errors.New("pack header: bad raw length")
		}
		r = r[k2:]
		if l > MaxBlobSize+1024 || raw > MaxBlobSize {
			return nil, fmt.Errorf("pack header: entry %d: implausible length", i)
		}
		b.Offset, b.Length, b.RawLength = uint32(off), uint32(l), uint32(raw)
		off += l
		if off > uint64(dataLen) {
			return nil, fmt.Errorf("pack header: entries exceed pack data (%d > %d)", off, dataLen)
		}
		blobs = append(blobs, b)
	}
	if len(r) != 0 {
		return nil, errors.New("pack header: trailing bytes")
	}
	if off != uint64(dataLen) {
		return nil, fmt.Errorf("pack header: entries cover %d of %d data bytes", off, dataLen)
	}
	return blobs, nil
}

// uvarint decodes only the shortest encoding, so a header has exactly one.
func uvarint(b []byte) (uint64, int) {
	v, n := binary.Uvarint(b)
	if n > 0 && n != len(binary.AppendUvarint(nil, v)) {
		return 0, -1
	}
	return v, n
}

// TrailerSize is the size of the fixed trailer holding the header length.
const TrailerSize = 4

// HeaderLength reads the trailer; packSize bounds it.
func HeaderLength(trailer []byte, packSize int64) (int64, error) {
	if len(trailer) != TrailerSize {
		return 0, errors.New("pack trailer: wrong size")
	}
	n := int64(binary.LittleEndian.Uint32(trailer))
	if n <= 0 || n > packSize-TrailerSize {
		return 0, fmt.Errorf("pack trailer: header length %d does not fit pack of %d bytes", n, packSize)
	}
	return n, nil
}

// OpenHeader decrypts and parses a sealed header of a pack of packSize bytes.
func OpenHeader(k *crypto.Key, sealed []byte, packSize int64) ([]Blob, error) {
	hdr, err := k.Open(nil, sealed, []byte(headerAD))
	if err != nil {
		return nil, fmt.Errorf("pack header: %w", err)
	}
	return DecodeHeader(hdr, packSize-int64(len(sealed))-TrailerSize)
}

// ParsePack splits a whole pack into its blobs, checking the header.
func ParsePack(k *crypto.Key, data []byte) ([]Blob, error) {
	if len(data) < TrailerSize {
		return nil, errors.New("pack: too short")
	}
	hl, err := HeaderLength(data[len(data)-TrailerSize:], int64(len(data)))
	if err != nil {
		return nil, err
	}
	start := int64(len(data)) - TrailerSize - hl
	return OpenHeader(k, data[start:int64(len(data))-TrailerSize], int64(len(data)))
}
