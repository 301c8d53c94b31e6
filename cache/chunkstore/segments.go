package chunkstore

import (
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/keepfs/keepfs/repo/crypto"
)

// Chunks too big to sit inline in Badger but small (a small file's content)
// are appended to segment files: one write instead of creating and renaming
// a file per chunk, which cost more than everything else a small file's
// commit does.
//
//	segments/<n>   records  nonce:12 || AES-256-GCM(plaintext, ad = blob id)
//
// The chunk's c value says where its record is (segLoc). A record is
// written before the c key naming it, so a crash leaves at most unnamed
// bytes at a segment's end; after a restart appends go to a new segment.
// Live bytes are counted per segment (from the c keys at open, then as
// keys come and go); a segment with none left is deleted, and compact
// moves the few live records out of mostly dead ones.
type segments struct {
	dir  string
	aead cipher.AEAD

	mu      sync.Mutex
	files   map[uint32]*os.File // every segment, open for reading
	live    map[uint32]int64    // sealed bytes named by c keys
	cur     uint32              // segment appended to; 0: none yet
	curSize int64
	next    uint32
	size    int64 // segmentSize; tests make it small
}

// segmentMax is the largest chunk stored in a segment; segmentSize is
// where a segment is closed and the next one begun.
const (
	segmentMax  = 256 << 10
	segmentSize = 64 << 20
)

// segLoc is where a record lives.
type segLoc struct {
	seg uint32
	off int64
	n   uint32 // sealed length
}

// segValueLen is the length of a c value naming a segment record:
// size:8 || seg:4 || off:8 || n:4.
const segValueLen = 24

func segValue(size int, l segLoc) []byte {
	v := binary.BigEndian.AppendUint64(nil, uint64(size))
	v = binary.BigEndian.AppendUint32(v, l.seg)
	v = binary.BigEndian.AppendUint64(v, uint64(l.off))
	return binary.BigEndian.AppendUint32(v, l.n)
}

// segLocOf decodes a c value naming a segment record; ok is false for
// inline and file chunks.
func segLocOf(v []byte) (segLoc, bool) {
	if len(v) != segValueLen || inlineData(v) != nil || valueSize(v) <= inlineMax {
		return segLoc{}, false
	}
	return segLoc{seg: binary.BigEndian.Uint32(v[8:]), off: int64(binary.BigEndian.Uint64(v[12:])),
		n: binary.BigEndian.Uint32(v[20:])}, true
}

func newSegments(stateDir string, k *crypto.Key, newAEAD func([]byte) (cipher.AEAD, error)) (*segments, error) {
	aead, err := newAEAD(k.StateMAC([]byte("keepfs chunk segments v1")))
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(stateDir, "segments")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create segment directory: %w", err)
	}
	s := &segments{dir: dir, aead: aead, files: map[uint32]*os.File{}, live: map[uint32]int64{}, next: 1, size: segmentSize}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list segments: %w", err)
	}
	for _, e := range ents {
		n, err := strconv.ParseUint(e.Name(), 10, 32)
		if err != nil || n == 0 {
			continue
		}
		// Read-write, though appends go to new segments only: an erase
		// wipes records in place (wipe), whatever session wrote them.
		f, err := os.OpenFile(filepath.Join(dir, e.Name()), os.O_RDWR, 0)
		if err != nil {
			s.close()
			return nil, fmt.Errorf("open segment: %w", err)
		}
		s.files[uint32(n)] = f
		s.next = max(s.next, uint32(n)+1)
	}
	return s, nil
}

func (s *segments) path(n uint32) string {
	return filepath.Join(s.dir, strconv.FormatUint(uint64(n), 10))
}

// append seals data and appends it to the current segment; with durable
// the record reaches the disk before append returns.
func (s *segments) append(id crypto.ID, data []byte, durable bool) (segLoc, error) {
	ns := s.aead.NonceSize()
	bp := sealBufs.Get().(*[]byte)
	defer sealBufs.Put(bp)
	buf := slices.Grow((*bp)[:0], ns+len(data)+s.aead.Overhead())[:ns]
	if _, err := rand.Read(buf); err != nil {
		return segLoc{}, err
	}
	buf = s.aead.Seal(buf, buf, data, id[:])
	*bp = buf
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == 0 || s.curSize+int64(len(buf)) > s.size {
		if err := s.rotateLocked(); err != nil {
			return segLoc{}, err
		}
	}
	f := s.files[s.cur]
	if _, err := f.WriteAt(buf, s.curSize); err != nil {
		// Whatever part was written is unnamed; the next record goes after it.
		s.curSize += int64(len(buf))
		return segLoc{}, fmt.Errorf("append to segment: %w", err)
	}
	if durable {
		if err := f.Sync(); err != nil {
			return segLoc{}, fmt.Errorf("sync segment: %w", err)
		}
	}
	l := segLoc{seg: s.cur, off: s.curSize, n: uint32(len(buf))}
	s.curSize += int64(len(buf))
	// Counted at once, so the segment cannot go before the caller's c key
	// names the record; a caller that ends up not naming it drops it.
	s.live[l.seg] += int64(l.n)
	return l, nil
}

// rotateLocked starts a new segment; the old one is deleted if nothing in it
// is live.
func (s *segments) rotateLocked() error {
	f, err := os.OpenFile(s.path(s.next), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create segment: %w", err)
	}
	old := s.cur
	s.cur, s.curSize = s.next, 0
	s.next++
	s.files[s.cur] = f
	if old != 0 {
		s.dropIfDeadLocked(old)
	}
	return nil
}

// read returns the plaintext of the record at l.
func (s *segments) read(id crypto.ID, l segLoc) ([]byte, error) {
	s.mu.Lock()
	f := s.files[l.seg]
	s.mu.Unlock()
	ns := s.aead.NonceSize()
	if f == nil || int(l.n) < ns+s.aead.Overhead() {
		return nil, fmt.Errorf("chunk %s: segment %d missing: %w", id.Short(), l.seg, ErrCorrupt)
	}
	b := make([]byte, l.n)
	if _, err := f.ReadAt(b, l.off); err != nil {
		return nil, fmt.Errorf("chunk %s: read segment %d: %w", id.Short(), l.seg, err)
	}
	out, err := s.aead.Open(b[ns:ns], b[:ns], b[ns:], id[:])
	if err != nil {
		return nil, fmt.Errorf("chunk %s: %w", id.Short(), ErrCorrupt)
	}
	return out, nil
}

// addLive counts a record a c key now names.
func (s *segments) addLive(l segLoc) {
	s.mu.Lock()
	s.live[l.seg] += int64(l.n)
	s.mu.Unlock()
}

// dropLive uncounts a record whose c key is gone; a segment left with
// nothing live is deleted, and in one that stays the record is punched
// out. Left in place, an evicted record's bytes stayed until the segment
// went, where an erase of its file (which wipes the records c keys name)
// could not reach them.
func (s *segments) dropLive(l segLoc) {
	s.mu.Lock()
	s.live[l.seg] -= int64(l.n)
	s.dropIfDeadLocked(l.seg)
	f := s.files[l.seg]
	s.mu.Unlock()
	if f != nil {
		// No append can reach the range: appends go past every record.
		punch(f, l)
	}
}

// punch turns a record's range into a hole (zeros where the file system
// cannot punch). Failures are left: the bytes go with the segment.
func punch(f *os.File, l segLoc) {
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	// Control holds the descriptor open for the call: a segment closed
	// meanwhile fails it rather than freeing the number for another file.
	var perr error
	if err := rc.Control(func(fd uintptr) {
		perr = unix.Fallocate(int(fd), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, l.off, int64(l.n))
	}); err != nil {
		return
	}
	if errors.Is(perr, unix.EOPNOTSUPP) {
		_, _ = f.WriteAt(make([]byte, l.n), l.off)
	}
}

func (s *segments) dropIfDeadLocked(n uint32) {
	if n == s.cur || s.live[n] > 0 {
		return
	}
	delete(s.live, n)
	if f := s.files[n]; f != nil {
		f.Close()
		delete(s.files, n)
		os.Remove(s.path(n))
	}
}

// dropDead deletes every segment nothing names, after the count at open.
func (s *segments) dropDead() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for n := range s.files {
		s.dropIfDeadLocked(n)
	}
}

// sparse lists closed segments for compact to move the records out of:
// those under a quarter live, and then, while the dead bytes left in closed
// segments exceed budget, the least live of the others. The cache's bound
// counts chunks, not what evicted ones leave behind in segments; the
// budget bounds that.
func (s *segments) sparse(budget int64) []uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	type seg struct {
		n          uint32
		size, live int64
	}
	var all []seg
	var dead int64
	for n, f := range s.files {
		if n == s.cur {
			continue
		}
		if fi, err := f.Stat(); err == nil {
			all = append(all, seg{n, fi.Size(), s.live[n]})
			dead += fi.Size() - s.live[n]
		}
	}
	// Least live first: compacting those frees the most for the least
	// copying.
	sort.Slice(all, func(i, j int) bool { return all[i].live*all[j].size < all[j].live*all[i].size })
	var out []uint32
	for _, g := range all {
		if g.size >= s.size/4 && g.live < g.size/4 || dead > budget {
			out = append(out, g.n)
			dead -= g.size - g.live
		}
	}
	return out
}

// sync makes segment n durable; a segment deleted meanwhile holds nothing
// live and needs nothing.
func (s *segments) sync(n uint32) error {
	s.mu.Lock()
	f := s.files[n]
	s.mu.Unlock()
	if f == nil {
		return nil
	}
	if err := f.Sync(); err != nil && !errors.Is(err, os.ErrClosed) {
		return err
	}
	return nil
}

func (s *segments) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.files {
		f.Close()
	}
	s.files = map[uint32]*os.File{}
}

// wipe overwrites a record with zeros, so that a record of erased data is
// gone from the file at once rather than at the next compaction.
func (s *segments) wipe(l segLoc) error {
	s.mu.Lock()
	f := s.files[l.seg]
	s.mu.Unlock()
	if f == nil {
		return nil // the whole segment went already
	}
	if _, err := f.WriteAt(make([]byte, l.n), l.off); err != nil {
		return fmt.Errorf("wipe segment record: %w", err)
	}
	return f.Sync()
}
