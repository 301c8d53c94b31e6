package chunkstore

import (
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/keepfs/keepfs/cache/meta"
	"github.com/keepfs/keepfs/repo/crypto"
)

// Chunk plaintexts live in files beside Badger, not in its value log: the
// value log is memory-mapped (every chunk written would count towards the
// daemon's RSS) and reclaims deleted values only through value-log GC.
//
//	chunks/<xx>/<name>   name = hex(StateMAC(blob id)), xx its first byte
//	content              nonce:12 || AES-256-GCM(plaintext, ad = blob id)
//
// The AEAD key is derived from the local-state key, so the files are
// unreadable without the passphrase, and names do not reveal blob ids.
// Badger's c key for the chunk records its presence and size; a file is
// always written before its c key and removed after it.
type chunkFiles struct {
	dir  string
	aead cipher.AEAD
	mac  func([]byte) []byte
	fds  *fdCache
	// noNowait: reads without waiting for the disk (RWF_NOWAIT) are
	// refused here, so readFile reads as before.
	noNowait atomic.Bool
}

func newChunkFiles(stateDir string, k *crypto.Key, newAEAD func([]byte) (cipher.AEAD, error)) (*chunkFiles, error) {
	aead, err := newAEAD(k.StateMAC([]byte("keepfs chunk files v1")))
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(stateDir, "chunks")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create chunk directory: %w", err)
	}
	// All 256 fan-out directories up front: a small file's commit then
	// costs no directory check.
	for i := range 256 {
		if err := os.MkdirAll(filepath.Join(dir, fmt.Sprintf("%02x", i)), 0o700); err != nil {
			return nil, fmt.Errorf("create chunk directory: %w", err)
		}
	}
	// Temporary files of writes a crash interrupted hold nothing a c key
	// names.
	if tmps, err := filepath.Glob(filepath.Join(dir, "*", "*.tmp*")); err == nil {
		for _, t := range tmps {
			os.Remove(t)
		}
	}
	return &chunkFiles{dir: dir, aead: aead, mac: k.StateMAC, fds: newFDCache(openChunkFiles)}, nil
}

func (cf *chunkFiles) path(id crypto.ID) string {
	name := hex.EncodeToString(cf.mac(id[:]))
	return filepath.Join(cf.dir, name[:2], name)
}

// Chunk files are sealed in blocks so that a small random read opens the
// blocks it touches, not a whole chunk of up to 8 MiB. Format 3 (written
// now) seals 4 KiB blocks, format 2 (still read) 64 KiB ones:
//
//	format 3, block i   nonce:12 || AES-256-GCM(plaintext[i*4K : (i+1)*4K], ad = blob id || i:4 || 3)
//	format 2, block i   nonce:12 || AES-256-GCM(plaintext[i*64K : (i+1)*64K], ad = blob id || i:4)
//
// A 4 KiB read through the mount decrypts one or two 4 KiB blocks instead
// of one or two 64 KiB ones (see docs/architecture.md for the measurement);
// a whole chunk costs 0.7% more on disk. The chunk's c value says which
// format its file has (fileFormat); files of format 1, one AEAD over the
// whole chunk, are still read.
const (
	blockSize   = 4 << 10 // of blockFormat
	blockFormat = 3
	v2BlockSize = 64 << 10 // of format 2
)

// blockSizeOf is the plaintext size of the blocks of a chunk file format.
func blockSizeOf(format int) int64 {
	if format == 2 {
		return v2BlockSize
	}
	return blockSize
}

func (cf *chunkFiles) blockAD(id crypto.ID, format, i int) []byte {
	return cf.blockADTo(make([]byte, 0, blockADLen), id, format, i)
}

// blockADLen is the most bytes a block's associated data takes.
const blockADLen = len(crypto.ID{}) + 5

// blockADTo is blockAD in buf's storage, when it has room.
func (cf *chunkFiles) blockADTo(buf []byte, id crypto.ID, format, i int) []byte {
	ad := binary.BigEndian.AppendUint32(append(buf[:0], id[:]...), uint32(i))
	if format != 2 {
		ad = append(ad, byte(format))
	}
	return ad
}

// sealedBlock is the stored size of a full block of the current format.
func (cf *chunkFiles) sealedBlock() int64 { return cf.sealedBlockOf(blockFormat) }

func (cf *chunkFiles) sealedBlockOf(format int) int64 {
	return int64(cf.aead.NonceSize()+cf.aead.Overhead()) + blockSizeOf(format)
}

// sealBufs recycles the buffers chunks are sealed into, by write (up to
// 8 MiB each) and by segment appends (one per small file committed):
// allocating one per chunk made the collector run all through a big write.
var sealBufs = sync.Pool{New: func() any { return new([]byte) }}

// write stores a chunk (blockFormat); with durable it also reaches the disk.
func (cf *chunkFiles) write(id crypto.ID, data []byte, durable bool) error {
	p := cf.path(id)
	ns := cf.aead.NonceSize()
	nblocks := max(1, (len(data)+blockSize-1)/blockSize)
	bp := sealBufs.Get().(*[]byte)
	defer sealBufs.Put(bp)
	buf := slices.Grow((*bp)[:0], len(data)+nblocks*(ns+cf.aead.Overhead()))
	defer func() { *bp = buf[:0] }()
	for i := 0; i < nblocks; i++ {
		blk := data[min(i*blockSize, len(data)):min((i+1)*blockSize, len(data))]
		start := len(buf)
		buf = buf[:start+ns]
		if _, err := rand.Read(buf[start:]); err != nil {
			return err
		}
		buf = cf.aead.Seal(buf, buf[start:start+ns], blk, cf.blockAD(id, blockFormat, i))
	}
	tmp := p + ".tmp" + hex.EncodeToString(buf[:4])
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrNotExist) {
		// The fan-out directories are made at open; one went missing.
		if err = os.MkdirAll(filepath.Dir(p), 0o700); err == nil {
			f, err = os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		}
	}
	if err != nil {
		return fmt.Errorf("store chunk: %w", err)
	}
	_, err = f.Write(buf)
	if err == nil && durable {
		err = f.Sync()
		if err == nil {
			dropPages(f)
		}
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("store chunk: %w", err)
	}
	// A descriptor kept open for a file this one replaced reads the old
	// file; the c value about to be written may name another format.
	cf.fds.drop(id)
	if durable {
		SyncPath(filepath.Dir(p))
	}
	return nil
}

// dropPages asks the kernel to drop f's clean pages from its page cache.
// A file's pages are cached once through the mount already, and on a VM
// every page never touched before costs the host a fault: keeping a big
// fsync's chunk files cached as well made the fsync that wrote them twice
// as slow (fio sequential writes, 512 MiB then fsync: about 150 against
// 300 MB/s). A later read of the chunk goes to the disk instead.
func dropPages(f *os.File) {
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED) // advice only
}

// readAhead starts the kernel reading the files of the chunks ids in the
// background; chunks kept elsewhere (or not at all) are skipped. The paths
// are worked out before it returns: the goroutine may outlive the cache,
// whose key is zeroed when the repository closes.
func (cf *chunkFiles) readAhead(ids []crypto.ID) {
	paths := make([]string, len(ids))
	for i, id := range ids {
		paths[i] = cf.path(id)
	}
	go func() {
		for _, p := range paths {
			f, err := os.Open(p)
			if err != nil {
				continue
			}
			_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_WILLNEED) // advice only
			f.Close()
		}
	}()
}

// openChunk opens the block-sealed file of a chunk (format 2 or 3, size
// plaintext bytes) through the descriptor cache; os.ErrNotExist if there is
// no file. The caller puts it back with cf.fds.put.
func (cf *chunkFiles) openChunk(id crypto.ID, format int, size int64) (*openChunk, error) {
	if oc := cf.fds.get(id); oc != nil {
		return oc, nil
	}
	f, err := os.Open(cf.path(id))
	if err != nil {
		return nil, err
	}
	return cf.fds.add(id, f, format, size), nil
}

// readSealed reads from the chunk's open block-sealed file the sealed
// blocks first..last that hold its bytes [off, off+n), into buf's storage
// when it has room for them.
func (cf *chunkFiles) readSealed(id crypto.ID, oc *openChunk, off, n int64, buf []byte) (b []byte, first, last int64, err error) {
	size, bs := oc.size, blockSizeOf(oc.format)
	if off < 0 || n < 0 || off+n > size {
		return nil, 0, 0, fmt.Errorf("chunk %s: read [%d,+%d) of %d bytes: %w", id.Short(), off, n, size, ErrCorrupt)
	}
	ns, sb := cf.aead.NonceSize(), cf.sealedBlockOf(oc.format)
	first, last = off/bs, max(off+n-1, off)/bs
	end := min((last+1)*bs, size) // plaintext end of the last block
	sealedEnd := last*sb + int64(ns) + (end - last*bs) + int64(cf.aead.Overhead())
	b = buf
	if need := sealedEnd - first*sb; int64(cap(b)) >= need {
		b = b[:need]
	} else {
		b = make([]byte, need)
	}
	if err := cf.readFile(id, oc, b, first*sb); err != nil {
		return nil, 0, 0, fmt.Errorf("chunk %s: %w (%v)", id.Short(), ErrCorrupt, err)
	}
	return b, first, last, nil
}

// readFile fills b from the chunk's open file at off. It first reads
// without waiting for the disk (RWF_NOWAIT): a read of part of a file whose
// pages are not all cached then has the kernel read the whole file in the
// background (warm), so that a random reader of a cold file pays the disk
// once per chunk, not once per read (the kernel reads nothing ahead of a
// random read). A read the cache serves costs the same one system call as
// before.
func (cf *chunkFiles) readFile(id crypto.ID, oc *openChunk, b []byte, off int64) error {
	n := 0
	if !cf.noNowait.Load() {
		var err error
		n, err = unix.Preadv2(int(oc.f.Fd()), [][]byte{b}, off, unix.RWF_NOWAIT)
		switch {
		case err == nil && (n == len(b) || n == 0):
			if n == len(b) {
				return nil
			}
			// n == 0: past the end; the read below says so.
		case err == nil || errors.Is(err, unix.EAGAIN):
			n = max(n, 0) // some of it (or none) is not cached
			if int64(len(b)) < oc.size {
				cf.warm(id, oc)
			}
		case errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS):
			cf.noNowait.Store(true) // this file system or kernel cannot
			n = 0
		default:
			n = 0
		}
	}
	_, err := oc.f.ReadAt(b[n:], off+int64(n))
	return err
}

// warmEvery is how often a chunk file whose pages are found missing may
// be read whole again; reads racing the first one's read-ahead would only
// ask for the same pages.
const warmEvery = time.Second

// warm has the kernel read the whole file of a chunk in the background.
// Chunk files hold 256 KiB to 8 MiB, and content read at random is seldom
// read just once: a random reader after a cold start (fio 4 KiB random
// reads after drop_caches) went to the disk for nearly every read.
func (cf *chunkFiles) warm(id crypto.ID, oc *openChunk) {
	now := time.Now().UnixNano()
	if last := oc.warmed.Load(); last != 0 && now-last < int64(warmEvery) {
		return
	}
	oc.warmed.Store(now)
	cf.readAhead([]crypto.ID{id})
}

// readBlocks returns the plaintext of the chunk's bytes [off, off+n) from
// its open block-sealed file. The result lives in buf's storage when buf
// has room for the sealed blocks (buf may be nil), with buf's spare
// capacity after it.
func (cf *chunkFiles) readBlocks(id crypto.ID, oc *openChunk, off, n int64, buf []byte) ([]byte, error) {
	b, first, last, err := cf.readSealed(id, oc, off, n, buf)
	if err != nil {
		return nil, err
	}
	bs, ns, sb := blockSizeOf(oc.format), cf.aead.NonceSize(), cf.sealedBlockOf(oc.format)
	// Each block is opened in place and its plaintext moved down to follow
	// the previous one's: the read buffer becomes the result, and a read
	// allocates once, not twice.
	w := 0
	ad := cf.blockAD(id, oc.format, 0)
	for i := first; i <= last; i++ {
		rec := b[(i-first)*sb : min((i-first+1)*sb, int64(len(b)))]
		if len(rec) < ns+cf.aead.Overhead() {
			return nil, fmt.Errorf("chunk %s: truncated file: %w", id.Short(), ErrCorrupt)
		}
		binary.BigEndian.PutUint32(ad[len(id):], uint32(i))
		pt, err := cf.aead.Open(rec[ns:ns], rec[:ns], rec[ns:], ad)
		if err != nil {
			return nil, fmt.Errorf("chunk %s: %w", id.Short(), ErrCorrupt)
		}
		w += copy(b[w:], pt)
	}
	lo := off - first*bs
	return b[lo : lo+n], nil
}

// readBlocksInto decrypts the chunk's bytes [off, off+len(dst)) from its
// open block-sealed file straight into dst: each whole block is opened into
// its place in dst, and only a first or last block the range cuts goes
// through a block-sized buffer. A read then costs one copy of the data
// (the file's pages into scratch), not three (into a chunk buffer, out of
// it, into the reply). scratch takes the sealed blocks when it has room,
// and after them the associated data and a cut block's plaintext when it
// has room for those too (readScratch).
func (cf *chunkFiles) readBlocksInto(id crypto.ID, oc *openChunk, off int64, dst, scratch []byte) error {
	n := int64(len(dst))
	if n == 0 {
		if off < 0 || off > oc.size {
			return fmt.Errorf("chunk %s: read [%d,+0) of %d bytes: %w", id.Short(), off, oc.size, ErrCorrupt)
		}
		return nil
	}
	b, first, last, err := cf.readSealed(id, oc, off, n, scratch)
	if err != nil {
		return err
	}
	size, bs := oc.size, blockSizeOf(oc.format)
	ns, sb := cf.aead.NonceSize(), cf.sealedBlockOf(oc.format)
	// scratch's room past the sealed blocks, if any, holds the associated
	// data and the plaintext of a block the range cuts: a 4 KiB random read
	// of a file cuts two blocks whenever its chunk starts at an offset not
	// a multiple of 4 KiB, and a buffer per read kept the collector busy.
	rest := b[len(b):cap(b)]
	var ad []byte
	if len(rest) >= blockADLen {
		ad, rest = cf.blockADTo(rest[:0:blockADLen], id, oc.format, 0), rest[blockADLen:]
	} else {
		ad = cf.blockAD(id, oc.format, 0)
	}
	var part []byte // plaintext of a block the range cuts
	for i := first; i <= last; i++ {
		rec := b[(i-first)*sb : min((i-first+1)*sb, int64(len(b)))]
		if len(rec) < ns+cf.aead.Overhead() {
			return fmt.Errorf("chunk %s: truncated file: %w", id.Short(), ErrCorrupt)
		}
		binary.BigEndian.PutUint32(ad[len(id):], uint32(i))
		bStart, bEnd := i*bs, min((i+1)*bs, size) // plaintext of block i in the chunk
		var err error
		if bStart >= off && bEnd <= off+n {
			_, err = cf.aead.Open(dst[bStart-off:bStart-off], rec[:ns], rec[ns:], ad)
		} else {
			if part == nil {
				if int64(len(rest)) >= bs {
					part = rest[:0:bs]
				} else {
					part = make([]byte, 0, bs)
				}
			}
			var pt []byte
			if pt, err = cf.aead.Open(part[:0], rec[:ns], rec[ns:], ad); err == nil {
				lo, hi := max(off, bStart), min(off+n, bEnd)
				if int64(len(pt)) < hi-bStart {
					err = ErrCorrupt
				} else {
					copy(dst[lo-off:hi-off], pt[lo-bStart:hi-bStart])
				}
			}
		}
		if err != nil {
			return fmt.Errorf("chunk %s: %w", id.Short(), ErrCorrupt)
		}
	}
	return nil
}

// readV1 returns the plaintext of a format 1 chunk file; os.ErrNotExist if
// there is no file.
func (cf *chunkFiles) readV1(id crypto.ID) ([]byte, error) {
	b, err := os.ReadFile(cf.path(id))
	if err != nil {
		return nil, err
	}
	ns := cf.aead.NonceSize()
	if len(b) < ns+cf.aead.Overhead() {
		return nil, fmt.Errorf("chunk %s: truncated file: %w", id.Short(), ErrCorrupt)
	}
	out, err := cf.aead.Open(b[ns:ns], b[:ns], b[ns:], id[:])
	if err != nil {
		return nil, fmt.Errorf("chunk %s: %w", id.Short(), ErrCorrupt)
	}
	return out, nil
}

// remove deletes a chunk's file (closing a descriptor kept for it first).
func (cf *chunkFiles) remove(id crypto.ID) error {
	cf.fds.drop(id)
	err := os.Remove(cf.path(id))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// inlineMax is the largest chunk kept inside its c value instead of a
// file: for tiny files a file per chunk costs more system calls than the
// data is worth. It stays below Badger's value threshold, so inline chunks
// live in the LSM tree, not in the memory-mapped value log, whose written
// pages count as the daemon's memory (a tree of small files would
// otherwise add its whole size to the daemon's RSS).
const inlineMax = 3 << 10

// chunkValue encodes the value of a c key for an inline chunk (the
// plaintext size, then the plaintext) or a chunk file (the size, then the
// file's format).
func chunkValue(data []byte) []byte {
	v := binary.BigEndian.AppendUint64(nil, uint64(len(data)))
	if len(data) <= inlineMax {
		return append(v, data...)
	}
	return append(v, blockFormat)
}

// fileFormat is the format of the chunk file a c value names: 1, 2 or
// blockFormat; 0 if it names none (inline or segment chunks).
func fileFormat(v []byte) int {
	if valueSize(v) <= inlineMax || inlineData(v) != nil {
		return 0
	}
	switch {
	case len(v) == 8:
		return 1
	case len(v) == 9:
		return int(v[8])
	}
	return 0
}

func valueSize(v []byte) int64 {
	if len(v) < 8 {
		return 0
	}
	return int64(binary.BigEndian.Uint64(v))
}

// inlineData returns the plaintext of an inline chunk's value, or nil.
func inlineData(v []byte) []byte {
	if len(v) < 8 || valueSize(v) > legacyInlineMax || int64(len(v)-8) != valueSize(v) {
		return nil
	}
	return v[8:]
}

// legacyInlineMax is the largest inline chunk any version wrote (state
// directories outlive upgrades).
const legacyInlineMax = 16 << 10

// readScratch is the scratch buffer readBlocksInto needs to read n bytes
// without allocating: the sealed blocks they touch, the associated data
// and a block for the plaintext of one the range cuts.
func (cf *chunkFiles) readScratch(n int) int {
	return (n/blockSize+2)*int(cf.sealedBlock()) + blockADLen + blockSize
}

// Load returns a chunk kept in the state directory; an error wrapping
// os.ErrNotExist if it is not.
func (s *Store) Load(id crypto.ID) ([]byte, error) {
	return s.LoadRange(id, 0, -1)
}

// LoadRange is Load for the chunk's bytes [off, off+n) (n < 0: to the
// end). Only block-sealed files are read in part; other chunks are small
// or old and read whole.
func (s *Store) LoadRange(id crypto.ID, off, n int64) ([]byte, error) {
	return s.loadRangeBuf(id, off, n, nil)
}

// loadRangeBuf is LoadRange reading a chunk kept in a file into buf's
// storage when it has room (see readBlocks); other chunks are returned as
// LoadRange returns them.
func (s *Store) loadRangeBuf(id crypto.ID, off, n int64, buf []byte) ([]byte, error) {
	return s.loadRangeTo(id, off, n, buf, nil)
}

// errBadRead is a read whose destination does not fit the range asked for.
var errBadRead = errors.New("read does not fit its buffer")

// loadRangeTo is loadRangeBuf; with dst (n bytes long) the bytes land in
// dst, a chunk file's decrypted straight into it with buf holding the
// sealed blocks, and dst is returned.
func (s *Store) loadRangeTo(id crypto.ID, off, n int64, buf, dst []byte) ([]byte, error) {
	readFile := func(oc *openChunk) ([]byte, error) {
		if n < 0 {
			n = oc.size - off
		}
		if dst == nil {
			return s.files.readBlocks(id, oc, off, n, buf)
		}
		if int64(len(dst)) != n {
			return nil, fmt.Errorf("chunk %s: read of %d bytes into %d: %w", id.Short(), n, len(dst), errBadRead)
		}
		if err := s.files.readBlocksInto(id, oc, off, dst, buf); err != nil {
			return nil, err
		}
		return dst, nil
	}
	// A chunk file opened before needs no look in Badger: the descriptor
	// is dropped before its file goes (remove) or is replaced (write).
	if oc := s.files.fds.get(id); oc != nil {
		defer s.files.fds.put(oc)
		return readFile(oc)
	}
	for attempt := 0; ; attempt++ {
		// A record is never empty: v is nil only when there is none (and
		// a flag set in the closure would cost the read an allocation).
		var v []byte
		err := s.db.View(func(txn Reader) error {
			var err error
			v, _, err = txn.Value(meta.ChunkKey(id))
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("read chunk %s: %w", id.Short(), err)
		}
		if v == nil {
			return nil, fmt.Errorf("chunk %s: %w", id.Short(), os.ErrNotExist)
		}
		size := valueSize(v)
		if n < 0 {
			n = size - off
		}
		if off < 0 || n < 0 || off+n > size {
			return nil, fmt.Errorf("chunk %s: read [%d,+%d) of %d bytes: %w", id.Short(), off, n, size, ErrCorrupt)
		}
		var data []byte
		switch format := fileFormat(v); {
		case size == 0:
		case inlineData(v) != nil:
			data = append([]byte{}, inlineData(v)...)
		case format == 2 || format == blockFormat:
			oc, err := s.files.openChunk(id, format, size)
			if err != nil {
				return nil, err
			}
			defer s.files.fds.put(oc)
			return readFile(oc)
		case format == 1:
			data, err = s.files.readV1(id)
		case format != 0:
			return nil, fmt.Errorf("chunk %s: unknown file format %d: %w", id.Short(), format, ErrCorrupt)
		default:
			l, ok := segLocOf(v)
			if !ok {
				return nil, fmt.Errorf("chunk %s: bad value: %w", id.Short(), ErrCorrupt)
			}
			data, err = s.segs.read(id, l)
			// Compaction may have moved the record, and its old segment
			// gone, since we read the value: look again once.
			if err != nil && attempt == 0 {
				continue
			}
		}
		if err != nil {
			return nil, err
		}
		if int64(len(data)) != size {
			return nil, fmt.Errorf("chunk %s: %d bytes, want %d: %w", id.Short(), len(data), size, ErrCorrupt)
		}
		if dst != nil {
			if int64(len(dst)) != n {
				return nil, fmt.Errorf("chunk %s: read of %d bytes into %d: %w", id.Short(), n, len(dst), errBadRead)
			}
			copy(dst, data[off:off+n])
			return dst, nil
		}
		return data[off : off+n], nil
	}
}

// InlineMax is the largest chunk kept inside its record rather than in a
// segment or a file: the state directory's store must keep records of
// 8 + InlineMax bytes in its tree (see inlineMax).
const InlineMax = inlineMax
