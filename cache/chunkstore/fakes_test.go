package chunkstore

import (
	"bytes"
	"context"
	"crypto/cipher"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/keepfs/keepfs/cache/meta"
	"github.com/keepfs/keepfs/remote/disktest"
	"github.com/keepfs/keepfs/repo/crypto"
)

// memDB is the state directory's store as an in-memory map: View and
// Update see a consistent map (one at a time), and an Update's writes land
// only if its fn succeeds.
type memDB struct {
	mu sync.Mutex
	m  map[string][]byte
	// failUpdate, if set, fails every Update after fn ran (a commit that
	// did not happen).
	failUpdate error
	// retry, if set, makes every Update run fn once more on a discarded
	// transaction first, as a conflict does.
	retry bool
}

func newMemDB() *memDB { return &memDB{m: map[string][]byte{}} }

type memTxn struct {
	db  *memDB
	set map[string][]byte // nil value: deleted
}

func (t *memTxn) Value(key []byte) ([]byte, bool, error) {
	if v, ok := t.set[string(key)]; ok {
		return bytes.Clone(v), v != nil, nil
	}
	v, ok := t.db.m[string(key)]
	return bytes.Clone(v), ok, nil
}

func (t *memTxn) Has(key []byte) (bool, error) {
	_, found, err := t.Value(key)
	return found, err
}

func (t *memTxn) Set(key, value []byte) error {
	if t.set == nil {
		return errors.New("write in a read-only transaction")
	}
	t.set[string(key)] = bytes.Clone(value)
	return nil
}

func (t *memTxn) Delete(key []byte) error {
	if t.set == nil {
		return errors.New("write in a read-only transaction")
	}
	t.set[string(key)] = nil
	return nil
}

func (d *memDB) View(fn func(Reader) error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return fn(&memTxn{db: d})
}

func (d *memDB) Update(fn func(Txn) error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.retry {
		if err := fn(&memTxn{db: d, set: map[string][]byte{}}); err != nil {
			return err
		}
	}
	t := &memTxn{db: d, set: map[string][]byte{}}
	if err := fn(t); err != nil {
		return err
	}
	if d.failUpdate != nil {
		return d.failUpdate
	}
	for k, v := range t.set {
		if v == nil {
			delete(d.m, k)
		} else {
			d.m[k] = v
		}
	}
	return nil
}

func (d *memDB) Chunks(fn func(id crypto.ID, v []byte) error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var keys []string
	for k := range d.m {
		if strings.HasPrefix(k, string(meta.ChunkPrefix())) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := fn(meta.IDFromKey([]byte(k)), d.m[k]); err != nil {
			return err
		}
	}
	return nil
}

// record is chunk id's record, nil if there is none.
func (d *memDB) record(id crypto.ID) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.m[string(meta.ChunkKey(id))]
}

// fakeRepo is a repository index and remote: indexed blobs are clean.
type fakeRepo struct {
	mu      sync.Mutex
	indexed map[crypto.ID]bool
	blobs   map[crypto.ID][]byte
	loads   int
}

func newFakeRepo() *fakeRepo {
	return &fakeRepo{indexed: map[crypto.ID]bool{}, blobs: map[crypto.ID][]byte{}}
}

func (r *fakeRepo) Has(id crypto.ID) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.indexed[id]
}

func (r *fakeRepo) Load(_ context.Context, id crypto.ID) ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.loads++
	b, ok := r.blobs[id]
	if !ok {
		return nil, errors.New("no such blob in the remote")
	}
	return bytes.Clone(b), nil
}

// upload puts data in the remote and its index.
func (r *fakeRepo) upload(id crypto.ID, data []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.indexed[id] = true
	r.blobs[id] = bytes.Clone(data)
}

// env is a store over an in-memory DB and repository; reopen makes a new
// store over the same state directory and DB, as after a restart.
type env struct {
	t    *testing.T
	dir  string
	key  *crypto.Key
	db   *memDB
	repo *fakeRepo
	s    *Store
	// aead, if set, replaces the sealing (PlaintextAEAD: plaintext on disk).
	aead func([]byte) (cipher.AEAD, error)
}

func newEnv(t *testing.T, cacheSize int64) *env {
	t.Helper()
	return newEnvIn(t, t.TempDir(), cacheSize)
}

// newEnvIn is newEnv with the state directory dir.
func newEnvIn(t *testing.T, dir string, cacheSize int64) *env {
	t.Helper()
	k, err := crypto.NewMasterKey()
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, dir: dir, key: k, db: newMemDB(), repo: newFakeRepo()}
	e.open(cacheSize)
	return e
}

func (e *env) open(cacheSize int64) *Store {
	e.t.Helper()
	s, err := Open(Config{Dir: e.dir, Key: e.key, NewAEAD: e.aead, DB: e.db, Repo: e.repo,
		CacheSize: cacheSize, MemSize: 8 << 20, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := s.Scan(nil); err != nil {
		e.t.Fatal(err)
	}
	e.s = s
	e.t.Cleanup(func() { s.Wait(); s.Close() })
	return s
}

// put stores data as a chunk and returns its id.
func (e *env) put(data []byte, durable bool) crypto.ID {
	e.t.Helper()
	id := e.key.BlobID(data)
	if err := e.s.Put([]Chunk{{ID: id, Data: data}}, durable); err != nil {
		e.t.Fatal(err)
	}
	return id
}

var randBytes = disktest.RandBytes

func countFiles(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// grepDir returns a file under dir holding s, or "".
func grepDir(t *testing.T, dir, s string) string {
	t.Helper()
	found := ""
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || found != "" {
			return err
		}
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(b, []byte(s)) {
			found = p
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}
