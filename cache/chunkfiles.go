package cache

import (
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	badger "github.com/dgraph-io/badger/v4"

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
}

func newChunkFiles(stateDir string, k *crypto.Key) (*chunkFiles, error) {
	aead, err := crypto.NewAEAD(k.StateMAC([]byte("keepfs chunk files v1")))
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
	return &chunkFiles{dir: dir, aead: aead, mac: k.StateMAC}, nil
}

func (cf *chunkFiles) path(id crypto.ID) string {
	name := hex.EncodeToString(cf.mac(id[:]))
	return filepath.Join(cf.dir, name[:2], name)
}

// write stores a chunk; with durable it also reaches the disk.
func (cf *chunkFiles) write(id crypto.ID, data []byte, durable bool) error {
	p := cf.path(id)
	buf := make([]byte, cf.aead.NonceSize(), cf.aead.NonceSize()+len(data)+cf.aead.Overhead())
	if _, err := rand.Read(buf); err != nil {
		return err
	}
	buf = cf.aead.Seal(buf, buf, data, id[:])
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
	if durable {
		if d, err := os.Open(filepath.Dir(p)); err == nil {
			d.Sync()
			d.Close()
		}
	}
	return nil
}

// read returns a chunk's plaintext; os.ErrNotExist if there is no file.
func (cf *chunkFiles) read(id crypto.ID) ([]byte, error) {
	b, err := os.ReadFile(cf.path(id))
	if err != nil {
		return nil, err
	}
	ns := cf.aead.NonceSize()
	if len(b) < ns+cf.aead.Overhead() {
		return nil, fmt.Errorf("chunk %s: truncated file: %w", id.Short(), errCorruptState)
	}
	out, err := cf.aead.Open(b[ns:ns], b[:ns], b[ns:], id[:])
	if err != nil {
		return nil, fmt.Errorf("chunk %s: %w", id.Short(), errCorruptState)
	}
	return out, nil
}

func (cf *chunkFiles) remove(id crypto.ID) error {
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

// chunkValue encodes the value of a c key: the plaintext size, then the
// plaintext itself for inline chunks.
func chunkValue(data []byte) []byte {
	v := binary.BigEndian.AppendUint64(nil, uint64(len(data)))
	if len(data) <= inlineMax {
		v = append(v, data...)
	}
	return v
}

func valueSize(v []byte) int64 {
	if len(v) < 8 {
		return 0
	}
	return int64(binary.BigEndian.Uint64(v))
}

// inlineData returns the plaintext of an inline chunk's value, or nil.
func inlineData(v []byte) []byte {
	if len(v) < 8 || valueSize(v) > inlineMax || int64(len(v)-8) != valueSize(v) {
		return nil
	}
	return v[8:]
}

// loadLocal returns a chunk kept in the state directory; an error wrapping
// os.ErrNotExist if it is not.
func (c *Cache) loadLocal(id crypto.ID) ([]byte, error) {
	for attempt := 0; ; attempt++ {
		var v []byte
		err := c.view(func(txn *badger.Txn) error {
			var err error
			v, err = getValue(txn, meta.ChunkKey(id))
			return err
		})
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil, fmt.Errorf("chunk %s: %w", id.Short(), os.ErrNotExist)
		}
		if err != nil {
			return nil, fmt.Errorf("read chunk %s: %w", id.Short(), err)
		}
		if valueSize(v) <= inlineMax {
			if d := inlineData(v); d != nil || valueSize(v) == 0 {
				return append([]byte{}, d...), nil
			}
		}
		l, ok := segLocOf(v)
		if !ok {
			return c.files.read(id)
		}
		data, err := c.segs.read(id, l)
		// Compaction may have moved the record, and its old segment gone,
		// since we read the value: look again once.
		if err != nil && attempt == 0 {
			continue
		}
		return data, err
	}
}
