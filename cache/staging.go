package cache

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// staging holds a file's uncommitted bytes. Small ones stay in memory;
// past memStagingMax they move to an unlinked temporary file, encrypted
// with AES-CTR under a random key that lives only in memory: the bytes are
// unreadable on disk, and gone for good after a crash (uncommitted data is
// not promised to survive one). An fsync that defers its commit links the
// file and records the key in an intent (see intent.go), inside Badger's
// encryption.
type staging struct {
	dir   string
	mem   []byte   // plaintext by file offset while f is nil
	f     *os.File // nil until the data outgrows memory
	buf   []byte   // scratch for ciphertext, reused across writes
	block cipher.Block
	key   [32]byte // kept for an fsync intent, which must name it
	iv    [aes.BlockSize]byte
	name  string // the file's name in dir once an fsync linked it, else ""
}

// memStagingMax bounds the bytes one file stages in memory. Creating a
// temporary file costs more than writing a small file through the mount.
const memStagingMax = 256 << 10

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

// rekey picks a fresh key and IV.
func (s *staging) rekey() error {
	if _, err := rand.Read(s.key[:]); err != nil {
		return err
	}
	b, err := aes.NewCipher(s.key[:])
	if err != nil {
		return err
	}
	if _, err := rand.Read(s.iv[:8]); err != nil {
		return err
	}
	s.block = b
	return nil
}

// reset empties the staging after a commit took its bytes. A file keeps
// its staging file across commits, and the next bytes staged at the same
// offsets get a fresh key: one key stream never seals two plaintexts.
func (s *staging) reset() error {
	if err := s.truncate(0); err != nil || s.f == nil {
		return err
	}
	return s.rekey()
}

// xorAt applies the key stream for file offset off.
func (s *staging) xorAt(dst, src []byte, off uint64) {
	iv := s.iv
	binary.BigEndian.PutUint64(iv[8:], off/aes.BlockSize)
	st := cipher.NewCTR(s.block, iv[:])
	if skip := off % aes.BlockSize; skip > 0 {
		var junk [aes.BlockSize]byte
		st.XORKeyStream(junk[:skip], junk[:skip])
	}
	st.XORKeyStream(dst, src)
}

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
	if cap(s.buf) < len(p) {
		s.buf = make([]byte, len(p))
	}
	buf := s.buf[:len(p)]
	s.xorAt(buf, p, off)
	_, err := s.f.WriteAt(buf, int64(off))
	return err
}

func (s *staging) readAt(p []byte, off uint64) error {
	if s.f == nil {
		n := 0
		if off < uint64(len(s.mem)) {
			n = copy(p, s.mem[off:])
		}
		clear(p[n:])
		return nil
	}
	n, err := s.f.ReadAt(p, int64(off))
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read staging: %w", err)
	}
	s.xorAt(p[:n], p[:n], off)
	clear(p[n:]) // past the end of the file: a hole
	return nil
}

func (s *staging) truncate(size uint64) error {
	if s.f == nil {
		if size < uint64(len(s.mem)) {
			clear(s.mem[size:])
			s.mem = s.mem[:size]
		}
		return nil
	}
	if err := s.f.Truncate(int64(size)); err != nil {
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
	s.mem = nil
}
