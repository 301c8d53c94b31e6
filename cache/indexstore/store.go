// Package indexstore keeps the mount's copy of the repository index in
// its own Badger database, so that the daemon's memory does not grow with
// the repository.
package indexstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/keepfs/keepfs/cache/internal/statedb"
	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/index"
	"github.com/keepfs/keepfs/repo/pack"
)

// The mount's index lives in its own Badger database under
// <state>/index/<vN> (CURRENT names the live one), encrypted with the
// state key like the main one, so that the daemon's memory does not grow
// with the repository (an in-memory index costs about 100 bytes a blob).
// It implements index.Persistent: repo.LoadIndex loads only the segments
// it has not seen, and refills it into a fresh directory, swapped in when
// complete, when that is not enough (see repo/persist.go).
//
// Keys (blob and pack ids are keyed hashes; nothing here is plaintext):
//
//	"b" type:1 id:32  -> pack:32 uvarint(off) uvarint(len) uvarint(raw)
//	"p" pack:32       -> uvarint(size) uvarint(n) n*(type:1 id:32 off len raw)
//	"r" pack:32       -> uvarint(live segments naming the pack)
//	"s" segment:32    -> live:1 uvarint(n) n*pack:32 (live=0: superseded, seen)
//	"m" name          -> generation (8 bytes), filled, dirty
type Store struct {
	dir string
	key []byte // nil: plaintext (tests)
	log *slog.Logger

	wmu sync.Mutex // one change (Apply, Refill, SetGeneration) at a time

	mu     sync.RWMutex // held for reading by every use of db, for writing to swap it
	db     *badger.DB
	name   string // the live subdirectory
	closed bool
}

const indexStoreFormat = "1"

var (
	ixGen    = []byte("mgen")
	ixFilled = []byte("mfilled")
	ixDirty  = []byte("mdirty")
)

// Open opens (creating it if need be) the local index under stateDir.
func Open(stateDir string, key []byte, log *slog.Logger) (*Store, error) {
	s := &Store{dir: filepath.Join(stateDir, "index"), key: key, log: log}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return nil, fmt.Errorf("local index: %w", err)
	}
	name := "v1"
	if b, err := os.ReadFile(filepath.Join(s.dir, "CURRENT")); err == nil {
		name = strings.TrimSpace(string(b))
		if _, err := strconv.ParseUint(strings.TrimPrefix(name, "v"), 10, 64); err != nil || !strings.HasPrefix(name, "v") {
			return nil, fmt.Errorf("local index: CURRENT names %q", name)
		}
	} else if !os.IsNotExist(err) {
		return nil, fmt.Errorf("local index: %w", err)
	}
	// A refill killed half-way leaves its directory behind.
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("local index: %w", err)
	}
	for _, e := range ents {
		if e.IsDir() && e.Name() != name {
			if err := os.RemoveAll(filepath.Join(s.dir, e.Name())); err != nil {
				return nil, fmt.Errorf("local index: %w", err)
			}
		}
	}
	db, err := statedb.Open(s.options(filepath.Join(s.dir, name)))
	if err != nil {
		return nil, fmt.Errorf("open local index: %w", err)
	}
	s.db, s.name = db, name
	return s, nil
}

// indexMemTable is the local index's memtable size: half the state
// database's, whose transactions can be bigger.
const indexMemTable = 4 << 20

func (s *Store) options(dir string) badger.Options { return BadgerOptions(dir, s.key, s.log) }

// BadgerOptions are the local index's Badger options for directory dir
// (key nil: unencrypted).
func BadgerOptions(dir string, key []byte, log *slog.Logger) badger.Options {
	return badger.DefaultOptions(dir).
		WithEncryptionKey(key).
		WithLogger(statedb.Logger{L: log}).
		// Memory: as the state database's (see statedb.MemTable), with half
		// its memtable. Badger caps an entry kept in the tree, as a
		// transaction, at 15 % of the memtable: 512 KiB fits (a pack of
		// over 10,000 blobs has a bigger entry, which goes to the value
		// log), and every bulk write here is a WriteBatch, which splits.
		WithValueThreshold(512 << 10).
		WithMemTableSize(indexMemTable).
		WithNumMemtables(statedb.Memtables).
		// A refill leaves its tables in level 0 (see Refill): a tall level
		// 0 leaves them there, rather than compacting hundreds of MiB at
		// the next open (and making the unmount wait for it).
		WithNumLevelZeroTables(16).
		WithNumLevelZeroTablesStall(32).
		WithValueLogFileSize(64 << 20).
		// 16 KiB blocks and a 10 % bloom filter: a table's block index
		// and filter, read when it opens, are what grows with the
		// repository; a lookup reads one block either way.
		WithBlockSize(16 << 10).
		WithBloomFalsePositive(0.1).
		WithBlockCacheSize(statedb.BlockCache).
		WithIndexCacheSize(statedb.IndexCache).
		WithNumCompactors(2)
}

// Close closes the database; later uses fail.
func (s *Store) Close() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	return s.db.Close()
}

var errIndexClosed = errors.New("local index closed")

// view runs fn in a read transaction of the live database.
func (s *Store) view(fn func(*badger.Txn) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return errIndexClosed
	}
	return s.db.View(fn)
}

func blobKeyOf(t pack.BlobType, id crypto.ID) []byte {
	k := make([]byte, 0, 34)
	k = append(k, 'b', byte(t))
	return append(k, id[:]...)
}

func prefixed(p byte, id crypto.ID) []byte {
	return append([]byte{p}, id[:]...)
}

func encodeLoc(packID crypto.ID, b pack.Blob) []byte {
	v := make([]byte, 0, 48)
	v = append(v, packID[:]...)
	v = binary.AppendUvarint(v, uint64(b.Offset))
	v = binary.AppendUvarint(v, uint64(b.Length))
	return binary.AppendUvarint(v, uint64(b.RawLength))
}

// uvarints decodes n uvarints from v, returning the rest.
func uvarints(v []byte, out ...*uint64) ([]byte, error) {
	for _, o := range out {
		x, n := binary.Uvarint(v)
		if n <= 0 {
			return nil, errors.New("local index: bad varint")
		}
		*o, v = x, v[n:]
	}
	return v, nil
}

func decodeLoc(t pack.BlobType, id crypto.ID, v []byte) (index.Location, error) {
	var l index.Location
	if len(v) < 32 {
		return l, errors.New("local index: short location")
	}
	copy(l.Pack[:], v)
	var off, ln, raw uint64
	if _, err := uvarints(v[32:], &off, &ln, &raw); err != nil {
		return l, err
	}
	l.Blob = pack.Blob{Type: t, ID: id, Offset: uint32(off), Length: uint32(ln), RawLength: uint32(raw)}
	return l, nil
}

func encodePack(p index.PackEntry) []byte {
	v := binary.AppendUvarint(nil, uint64(p.Size))
	v = binary.AppendUvarint(v, uint64(len(p.Blobs)))
	for _, b := range p.Blobs {
		v = append(v, byte(b.Type))
		v = append(v, b.ID[:]...)
		v = binary.AppendUvarint(v, uint64(b.Offset))
		v = binary.AppendUvarint(v, uint64(b.Length))
		v = binary.AppendUvarint(v, uint64(b.RawLength))
	}
	return v
}

func decodePack(v []byte, withBlobs bool) (size int64, blobs []pack.Blob, err error) {
	var sz, n uint64
	if v, err = uvarints(v, &sz, &n); err != nil {
		return 0, nil, err
	}
	if !withBlobs {
		return int64(sz), nil, nil
	}
	blobs = make([]pack.Blob, 0, min(n, uint64(len(v)/36)))
	for i := uint64(0); i < n; i++ {
		if len(v) < 33 {
			return 0, nil, errors.New("local index: short pack entry")
		}
		b := pack.Blob{Type: pack.BlobType(v[0])}
		copy(b.ID[:], v[1:33])
		var off, ln, raw uint64
		if v, err = uvarints(v[33:], &off, &ln, &raw); err != nil {
			return 0, nil, err
		}
		b.Offset, b.Length, b.RawLength = uint32(off), uint32(ln), uint32(raw)
		blobs = append(blobs, b)
	}
	return int64(sz), blobs, nil
}

func encodeSeg(live bool, packs []index.PackEntry) []byte {
	v := []byte{0}
	if live {
		v[0] = 1
	}
	v = binary.AppendUvarint(v, uint64(len(packs)))
	for _, p := range packs {
		v = append(v, p.ID[:]...)
	}
	return v
}

func decodeSeg(v []byte) (live bool, packs []crypto.ID, err error) {
	if len(v) < 1 {
		return false, nil, errors.New("local index: empty segment record")
	}
	live = v[0] == 1
	var n uint64
	if v, err = uvarints(v[1:], &n); err != nil {
		return false, nil, err
	}
	if uint64(len(v)) != n*32 {
		return false, nil, errors.New("local index: bad segment record")
	}
	for i := uint64(0); i < n; i++ {
		var id crypto.ID
		copy(id[:], v[i*32:])
		packs = append(packs, id)
	}
	return live, packs, nil
}

func getUvarint(txn *badger.Txn, k []byte) (uint64, bool, error) {
	it, err := txn.Get(k)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	var x uint64
	err = it.Value(func(v []byte) error {
		_, err := uvarints(v, &x)
		return err
	})
	return x, true, err
}

// Lookup finds a blob. A read error counts as not found: the blob is
// then fetched from nowhere or uploaded again, never misplaced.
func (s *Store) Lookup(t pack.BlobType, id crypto.ID) (index.Location, bool) {
	var l index.Location
	err := s.view(func(txn *badger.Txn) error {
		it, err := txn.Get(blobKeyOf(t, id))
		if err != nil {
			return err
		}
		return it.Value(func(v []byte) error {
			l, err = decodeLoc(t, id, v)
			return err
		})
	})
	if err != nil {
		if !errors.Is(err, badger.ErrKeyNotFound) {
			s.log.Warn("local index lookup failed", "err", err)
		}
		return index.Location{}, false
	}
	return l, true
}

// Has reports whether the blob is indexed.
func (s *Store) Has(t pack.BlobType, id crypto.ID) bool {
	err := s.view(func(txn *badger.Txn) error {
		_, err := txn.Get(blobKeyOf(t, id))
		return err
	})
	if err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
		s.log.Warn("local index lookup failed", "err", err)
	}
	return err == nil
}

// HasPack reports whether a pack is indexed.
func (s *Store) HasPack(id crypto.ID) bool {
	err := s.view(func(txn *badger.Txn) error {
		_, err := txn.Get(prefixed('p', id))
		return err
	})
	return err == nil
}

// Packs returns every indexed pack and its size, sorted by id.
func (s *Store) Packs() []index.PackEntry {
	var out []index.PackEntry
	err := s.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{'p'}, PrefetchValues: false})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var p index.PackEntry
			copy(p.ID[:], it.Item().Key()[1:])
			if err := it.Item().Value(func(v []byte) error {
				var err error
				p.Size, _, err = decodePack(v, false)
				return err
			}); err != nil {
				return err
			}
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		s.log.Warn("local index: list packs", "err", err)
	}
	sort.Slice(out, func(i, j int) bool { return string(out[i].ID[:]) < string(out[j].ID[:]) })
	return out
}

// PackBlobs returns every blob stored in pack id, duplicates included.
func (s *Store) PackBlobs(id crypto.ID) []pack.Blob {
	var blobs []pack.Blob
	err := s.view(func(txn *badger.Txn) error {
		it, err := txn.Get(prefixed('p', id))
		if err != nil {
			return err
		}
		return it.Value(func(v []byte) error {
			_, blobs, err = decodePack(v, true)
			return err
		})
	})
	if err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
		s.log.Warn("local index: pack blobs", "err", err)
	}
	return blobs
}

// Each calls fn for every indexed blob location.
func (s *Store) Each(fn func(index.Location)) {
	err := s.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{'b'}, PrefetchValues: false})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			var id crypto.ID
			copy(id[:], k[2:])
			var l index.Location
			if err := it.Item().Value(func(v []byte) error {
				var err error
				l, err = decodeLoc(pack.BlobType(k[1]), id, v)
				return err
			}); err != nil {
				return err
			}
			fn(l)
		}
		return nil
	})
	if err != nil {
		s.log.Warn("local index: each", "err", err)
	}
}

// Count is the number of indexed blobs (a scan: for check and tests).
func (s *Store) Count() int {
	n := 0
	_ = s.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{'b'}, PrefetchValues: false})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			n++
		}
		return nil
	})
	return n
}

// State returns what the store holds.
func (s *Store) State() (index.PersistentState, error) {
	st := index.PersistentState{Segments: map[crypto.ID]bool{}}
	err := s.view(func(txn *badger.Txn) error {
		if it, err := txn.Get(ixFilled); err == nil {
			_ = it.Value(func(v []byte) error {
				st.Filled = string(v) == indexStoreFormat
				return nil
			})
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		if _, err := txn.Get(ixDirty); err == nil {
			st.Dirty = true
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		if it, err := txn.Get(ixGen); err == nil {
			if err := it.Value(func(v []byte) error {
				if len(v) != 8 {
					return errors.New("local index: bad generation")
				}
				st.Generation = binary.BigEndian.Uint64(v)
				return nil
			}); err != nil {
				return err
			}
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{'s'}, PrefetchValues: false})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var id crypto.ID
			copy(id[:], it.Item().Key()[1:])
			if err := it.Item().Value(func(v []byte) error {
				if len(v) < 1 {
					return errors.New("local index: empty segment record")
				}
				st.Segments[id] = v[0] == 1
				return nil
			}); err != nil {
				return err
			}
		}
		return nil
	})
	return st, err
}

// setMeta writes or (v nil) deletes one meta key.
func (s *Store) setMeta(k, v []byte) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return errIndexClosed
	}
	return s.db.Update(func(txn *badger.Txn) error {
		if v == nil {
			return txn.Delete(k)
		}
		return txn.Set(k, v)
	})
}

// SetGeneration notes that the store matches generation gen.
func (s *Store) SetGeneration(gen uint64) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.setMeta(ixGen, binary.BigEndian.AppendUint64(nil, gen))
}

// AddSegment records one stored segment.
func (s *Store) AddSegment(id crypto.ID, seg *index.Segment) error {
	return s.Apply([]index.Held{{ID: id, Segment: seg, Live: true}}, nil)
}

// Apply records add and forgets drop (see index.Persistent).
func (s *Store) Apply(add []index.Held, drop []crypto.ID) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return errIndexClosed
	}
	// First, what changes, read without writing: how many live segments
	// name each pack afterwards.
	type count struct{ old, now int64 }
	refs := map[crypto.ID]*count{}
	var adding []index.Held
	var dropping []crypto.ID
	seen := map[crypto.ID]bool{} // ids added
	err := s.db.View(func(txn *badger.Txn) error {
		ref := func(p crypto.ID) (*count, error) {
			if c, ok := refs[p]; ok {
				return c, nil
			}
			n, _, err := getUvarint(txn, prefixed('r', p))
			c := &count{int64(n), int64(n)}
			refs[p] = c
			return c, err
		}
		// Drops first: a segment both dropped and added (live and now
		// superseded) is replaced.
		dropped := map[crypto.ID]bool{}
		for _, id := range drop {
			if dropped[id] {
				continue
			}
			it, err := txn.Get(prefixed('s', id))
			if errors.Is(err, badger.ErrKeyNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			dropped[id] = true
			var packs []crypto.ID
			var live bool
			if err := it.Value(func(v []byte) error {
				live, packs, err = decodeSeg(v)
				return err
			}); err != nil {
				return err
			}
			dropping = append(dropping, id)
			if !live {
				continue
			}
			for _, p := range packs {
				c, err := ref(p)
				if err != nil {
					return err
				}
				c.now--
			}
		}
		for _, h := range add {
			if seen[h.ID] {
				continue
			}
			seen[h.ID] = true
			if !dropped[h.ID] {
				if _, err := txn.Get(prefixed('s', h.ID)); err == nil {
					continue // held already
				} else if !errors.Is(err, badger.ErrKeyNotFound) {
					return err
				}
			}
			adding = append(adding, h)
			if !h.Live {
				continue
			}
			for _, p := range h.Segment.Packs {
				c, err := ref(p.ID)
				if err != nil {
					return err
				}
				c.now++
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, c := range refs {
		if c.now <= 0 {
			return index.ErrRefill
		}
	}
	if len(adding) == 0 && len(dropping) == 0 {
		return nil
	}
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(ixDirty, nil) }); err != nil {
		return err
	}
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	written := map[crypto.ID]bool{}
	for _, h := range adding {
		if !h.Live {
			if err := wb.Set(prefixed('s', h.ID), encodeSeg(false, nil)); err != nil {
				return err
			}
			continue
		}
		if err := wb.Set(prefixed('s', h.ID), encodeSeg(true, h.Segment.Packs)); err != nil {
			return err
		}
		for _, p := range h.Segment.Packs {
			if refs[p.ID].old > 0 || written[p.ID] {
				continue
			}
			written[p.ID] = true
			if err := s.writePack(wb, p, true); err != nil {
				return err
			}
		}
	}
	for _, id := range dropping {
		if seen[id] {
			continue // replaced above
		}
		if err := wb.Delete(prefixed('s', id)); err != nil {
			return err
		}
	}
	for p, c := range refs {
		if c.now != c.old {
			if err := wb.Set(prefixed('r', p), binary.AppendUvarint(nil, uint64(c.now))); err != nil {
				return err
			}
		}
	}
	if err := wb.Flush(); err != nil {
		return err
	}
	return s.db.Update(func(txn *badger.Txn) error { return txn.Delete(ixDirty) })
}

// writePack writes a pack's entry and its blobs' locations. With
// keepFirst, a blob already indexed (a duplicate in another pack) keeps
// its location.
func (s *Store) writePack(wb *badger.WriteBatch, p index.PackEntry, keepFirst bool) error {
	if err := wb.Set(prefixed('p', p.ID), encodePack(p)); err != nil {
		return err
	}
	for _, b := range p.Blobs {
		k := blobKeyOf(b.Type, b.ID)
		if keepFirst {
			err := s.db.View(func(txn *badger.Txn) error {
				_, err := txn.Get(k)
				return err
			})
			if err == nil {
				continue
			}
			if !errors.Is(err, badger.ErrKeyNotFound) {
				return err
			}
		}
		if err := wb.Set(k, encodeLoc(p.ID, b)); err != nil {
			return err
		}
	}
	return nil
}

// Refill replaces the content with what fill adds, in a new directory
// that becomes the live one only once complete.
func (s *Store) Refill(gen uint64, fill func(add func(index.Held) error) error) (err error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.RLock()
	closed, cur := s.closed, s.name
	s.mu.RUnlock()
	if closed {
		return errIndexClosed
	}
	n, _ := strconv.ParseUint(strings.TrimPrefix(cur, "v"), 10, 64)
	name := "v" + strconv.FormatUint(n+1, 10)
	dir := filepath.Join(s.dir, name)
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	// Filled with big memtables and a tall level 0, so that the bulk
	// load flushes and compacts less; reopened with the small ones after.
	db, err := badger.Open(s.options(dir).
		WithMemTableSize(64 << 20).
		WithBaseTableSize(16 << 20))
	if err != nil {
		return fmt.Errorf("open new local index: %w", err)
	}
	done := false
	defer func() {
		if !done {
			if db != nil {
				db.Close()
			}
			os.RemoveAll(dir)
		}
	}()
	fresh := &Store{db: db, log: s.log}
	wb := db.NewWriteBatch()
	defer wb.Cancel()
	var mu sync.Mutex
	refs := map[crypto.ID]uint64{}
	err = fill(func(h index.Held) error {
		mu.Lock()
		defer mu.Unlock()
		if !h.Live {
			return wb.Set(prefixed('s', h.ID), encodeSeg(false, nil))
		}
		if err := wb.Set(prefixed('s', h.ID), encodeSeg(true, h.Segment.Packs)); err != nil {
			return err
		}
		for _, p := range h.Segment.Packs {
			refs[p.ID]++
			if refs[p.ID] == 1 {
				if err := fresh.writePack(wb, p, false); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for p, c := range refs {
		if err := wb.Set(prefixed('r', p), binary.AppendUvarint(nil, c)); err != nil {
			return err
		}
	}
	if err := wb.Set(ixGen, binary.BigEndian.AppendUint64(nil, gen)); err != nil {
		return err
	}
	if err := wb.Set(ixFilled, []byte(indexStoreFormat)); err != nil {
		return err
	}
	if err := wb.Flush(); err != nil {
		return err
	}
	if err := db.Close(); err != nil {
		return err
	}
	if db, err = statedb.Open(s.options(dir)); err != nil {
		return fmt.Errorf("reopen new local index: %w", err)
	}
	if err := db.Sync(); err != nil {
		return err
	}
	if err := statedb.ReplaceFile(filepath.Join(s.dir, "CURRENT"), []byte(name+"\n")); err != nil {
		return err
	}
	done = true
	s.mu.Lock()
	old, oldName := s.db, s.name
	s.db, s.name = db, name
	s.mu.Unlock()
	if err := old.Close(); err != nil {
		s.log.Warn("local index: close the old store", "err", err)
	}
	if err := os.RemoveAll(filepath.Join(s.dir, oldName)); err != nil {
		s.log.Warn("local index: remove the old store", "err", err)
	}
	return nil
}

var _ index.Persistent = (*Store)(nil)
