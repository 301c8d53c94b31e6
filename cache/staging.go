package cache

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/keepfs/keepfs/cache/meta"
)

// staging holds a file's uncommitted bytes. Small ones stay in memory;
// past memStagingMax they move to an unlinked temporary file, sealed with
// AES-256-GCM under a random key that lives only in memory: the bytes are
// unreadable on disk, and gone for good after a crash (uncommitted data is
// not promised to survive one). An fsync that defers its commit links the
// file and records the key in an intent (see intent.go), inside Badger's
// encryption.
//
// The file is a row of sealed blocks, one per stageBlock bytes of the
// file's offsets: a random nonce, the ciphertext and the tag, with the
// block's number as additional data. Each write of a block seals it under
// a fresh nonce, so overwriting staged bytes never reuses a key stream (a
// stream cipher would leak the XOR of the two plaintexts to whoever sees
// the disk twice), and a block the disk lost, tore or altered fails to
// open: it reads as an error, never as other bytes.
type staging struct {
	dir   string
	mem   []byte   // plaintext by file offset while f is nil
	f     *os.File // nil until the data outgrows memory
	buf   []byte   // scratch for sealed blocks, reused across writes
	plain []byte   // scratch for one block a write changes in part
	aead  cipher.AEAD
	key   [32]byte // kept for an fsync intent, which must name it
	name  string   // the file's name in dir once an fsync linked it, else ""
	// named: f has had a name. Once that name is gone, f cannot get
	// another: linkat names an unlinked file only if O_TMPFILE made it
	// and it was never linked (the kernel's I_LINKABLE), so reset drops
	// f and the next bytes spill into a fresh file.
	named bool
}

// memStagingMax bounds the bytes one file stages in memory. Creating a
// temporary file costs more than writing a small file through the mount.
const memStagingMax = 256 << 10

const (
	stageBlock  = 4096                         // plaintext bytes per sealed block: the page size
	stageNonce  = 12                           // GCM's standard nonce
	stageSealed = stageNonce + stageBlock + 16 // a block on disk: nonce, ciphertext, tag
	stageBatch  = 64                           // blocks a read takes from the disk at a time
)

// errStagingDamaged marks staged bytes the disk did not give back as
// written.
var errStagingDamaged = errors.New("staged bytes lost or damaged")

// stageReads holds scratch for reads, which may run at the same time as
// each other (see Handle.ReadAt): stageBatch sealed blocks and one plain.
var stageReads = sync.Pool{New: func() any {
	b := make([]byte, stageBatch*stageSealed+stageBlock)
	return &b
}}

func newStaging(dir string) (*staging, error) { return &staging{dir: dir}, nil }

// spill moves the staged bytes from memory to an encrypted file.
func (s *staging) spill() error {
	fd, err := unix.Open(s.dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	var f *os.File
	if err == nil {
		f = os.NewFile(uintptr(fd), "staging")
	} else {
		// No O_TMPFILE on this file system: create and unlink at once.
		f, err = os.CreateTemp(s.dir, "s")
		if err != nil {
			return fmt.Errorf("create staging file: %w", err)
		}
		os.Remove(f.Name())
	}
	if err := s.rekey(); err != nil {
		f.Close()
		return err
	}
	s.f = f
	mem := s.mem
	s.mem = nil
	if len(mem) > 0 {
		if err := s.writeAt(mem, 0); err != nil {
			s.f, s.mem = nil, mem
			f.Close()
			return err
		}
	}
	return nil
}

// rekey picks a fresh key.
func (s *staging) rekey() error {
	if _, err := rand.Read(s.key[:]); err != nil {
		return err
	}
	return s.setKey()
}

func (s *staging) setKey() error {
	b, err := aes.NewCipher(s.key[:])
	if err != nil {
		return err
	}
	s.aead, err = cipher.NewGCM(b)
	return err
}

// reset empties the staging after a commit took its bytes. A file keeps
// its staging file across commits, unless that file had a name (see
// named), and the next bytes are staged under a fresh key.
func (s *staging) reset() error {
	if s.f != nil && s.named && s.name == "" {
		s.f.Close()
		s.f, s.named = nil, false
		return s.rekey()
	}
	if err := s.truncate(0); err != nil || s.f == nil {
		return err
	}
	return s.rekey()
}

func blockAD(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }

func (s *staging) writeAt(p []byte, off uint64) error {
	if s.f == nil {
		end := off + uint64(len(p))
		if end <= memStagingMax {
			if end > uint64(len(s.mem)) {
				s.mem = append(s.mem, make([]byte, end-uint64(len(s.mem)))...)
			}
			copy(s.mem[off:], p)
			return nil
		}
		if err := s.spill(); err != nil {
			return err
		}
	}
	if len(p) == 0 {
		return nil
	}
	end := off + uint64(len(p))
	first, last := off/stageBlock, (end-1)/stageBlock
	n := int(last - first + 1)
	if cap(s.buf) < n*stageSealed {
		s.buf = make([]byte, n*stageSealed)
	}
	buf := s.buf[:n*stageSealed]
	for i := range n {
		out := buf[i*stageSealed : (i+1)*stageSealed]
		if _, err := rand.Read(out[:stageNonce]); err != nil {
			return err
		}
		b := first + uint64(i)
		lo, hi := max(b*stageBlock, off), min((b+1)*stageBlock, end)
		plain := p[lo-off : hi-off]
		if hi-lo < stageBlock {
			// Part of the block: keep what was staged around the write.
			if s.plain == nil {
				s.plain = make([]byte, stageBlock)
			}
			if err := s.loadBlock(s.plain, b); err != nil {
				return err
			}
			copy(s.plain[lo-b*stageBlock:], plain)
			plain = s.plain
		}
		s.aead.Seal(out[stageNonce:stageNonce], out[:stageNonce], plain, blockAD(b))
	}
	_, err := s.f.WriteAt(buf, int64(first*stageSealed))
	return err
}

// loadBlock opens block b into plain; a block never written (past the end
// of the file, or in a hole) reads as zeros.
func (s *staging) loadBlock(plain []byte, b uint64) error {
	var sealed [stageSealed]byte
	n, err := s.f.ReadAt(sealed[:], int64(b*stageSealed))
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read staging: %w", err)
	}
	if n == 0 || sealed == [stageSealed]byte{} {
		clear(plain)
		return nil
	}
	return s.openBlock(plain, sealed[:n], b)
}

func (s *staging) openBlock(plain, sealed []byte, b uint64) error {
	if len(sealed) != stageSealed {
		return fmt.Errorf("staging block %d: %w", b, errStagingDamaged)
	}
	if _, err := s.aead.Open(plain[:0], sealed[:stageNonce], sealed[stageNonce:], blockAD(b)); err != nil {
		return fmt.Errorf("staging block %d: %w", b, errStagingDamaged)
	}
	return nil
}

// readAt fills p with the staged bytes at off. The caller reads only
// bytes it staged: any block it touches must open.
func (s *staging) readAt(p []byte, off uint64) error {
	if s.f == nil {
		n := 0
		if off < uint64(len(s.mem)) {
			n = copy(p, s.mem[off:])
		}
		clear(p[n:])
		return nil
	}
	if len(p) == 0 {
		return nil
	}
	scratch := stageReads.Get().(*[]byte)
	defer stageReads.Put(scratch)
	sealed, plain := (*scratch)[:stageBatch*stageSealed], (*scratch)[stageBatch*stageSealed:]
	end := off + uint64(len(p))
	last := (end - 1) / stageBlock
	for b := off / stageBlock; b <= last; {
		n := min(last-b+1, stageBatch)
		got, err := s.f.ReadAt(sealed[:n*stageSealed], int64(b*stageSealed))
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read staging: %w", err)
		}
		for i := range n {
			lo, hi := max(b*stageBlock, off), min((b+1)*stageBlock, end)
			blk := sealed[min(int(i)*stageSealed, got):min(int(i+1)*stageSealed, got)]
			if hi-lo == stageBlock {
				// The whole block: open it in place.
				if err := s.openBlock(p[lo-off:hi-off], blk, b); err != nil {
					return err
				}
			} else {
				if err := s.openBlock(plain, blk, b); err != nil {
					return err
				}
				copy(p[lo-off:hi-off], plain[lo-b*stageBlock:])
			}
			b++
		}
	}
	return nil
}

// sync makes the staged bytes durable (not the file's name: see link).
func (s *staging) sync() error {
	if err := unix.Fdatasync(int(s.f.Fd())); err != nil {
		return fmt.Errorf("sync staging file: %w", err)
	}
	return nil
}

// verify reads the staged bytes at rs, to find damage before a commit
// relies on them.
func (s *staging) verify(rs []meta.Range) error {
	buf := make([]byte, stageBatch*stageBlock)
	for _, r := range rs {
		for off := r.Start; off < r.End; off += uint64(len(buf)) {
			if err := s.readAt(buf[:min(uint64(len(buf)), r.End-off)], off); err != nil {
				return err
			}
		}
	}
	return nil
}

// truncate drops the blocks wholly past size. The rest of a block that
// size cuts stays: no read asks for it before a write stages it again.
func (s *staging) truncate(size uint64) error {
	if s.f == nil {
		if size < uint64(len(s.mem)) {
			clear(s.mem[size:])
			s.mem = s.mem[:size]
		}
		return nil
	}
	blocks := (size + stageBlock - 1) / stageBlock
	if err := s.f.Truncate(int64(blocks * stageSealed)); err != nil {
		return fmt.Errorf("truncate staging: %w", err)
	}
	return nil
}

// close closes the staging file. A linked one stays on the disk: an
// intent names it until a commit has taken its bytes.
func (s *staging) close() {
	if s.f != nil {
		s.f.Close()
	}
	clear(s.mem)
	clear(s.key[:])
	clear(s.plain)
	s.mem = nil
}

// link gives the staging file a name, so that it outlives the process.
func (s *staging) link() error {
	if s.name != "" {
		return nil
	}
	var r [12]byte
	if _, err := rand.Read(r[:]); err != nil {
		return err
	}
	name := hex.EncodeToString(r[:])
	// A file made with O_TMPFILE links through /proc without privileges.
	fd := "/proc/self/fd/" + strconv.Itoa(int(s.f.Fd()))
	if err := unix.Linkat(unix.AT_FDCWD, fd, unix.AT_FDCWD, filepath.Join(s.dir, name), unix.AT_SYMLINK_FOLLOW); err != nil {
		return fmt.Errorf("link staging file: %w", err)
	}
	s.name, s.named = name, true
	return nil
}

// unlink removes the staging file's name once no intent needs it.
func (s *staging) unlink(log *slog.Logger) {
	if s == nil || s.name == "" {
		return
	}
	if err := os.Remove(filepath.Join(s.dir, s.name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		log.Warn("cannot remove a staging file", "err", err)
	}
	s.name = ""
}
