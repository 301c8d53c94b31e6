package cache

import (
	"crypto/cipher"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/keepfs/keepfs/cache/chunkstore"
	"github.com/keepfs/keepfs/cache/internal/statedb"
	"github.com/keepfs/keepfs/repo/crypto"
)

// Erased data must not stay readable in the state directory, and Badger
// keeps deleted keys and values in its tables and logs until compaction
// gets round to them, if ever. So an erase rebuilds the store: every live
// key is copied into a new Badger directory (with fresh data keys of its
// own, wrapped by the local-state key), <state>/db.current is switched to
// it atomically, and the old directory, with its data keys, is deleted
// once the last transaction on it ends. Readers go on during the copy;
// writers wait for it (dbWrite).

// dbRef is one open store and the transactions using it.
type dbRef struct {
	db   *badger.DB
	dir  string // directory name under the state directory
	refs atomic.Int64
}

// dbAcquire returns the current store, counted as in use until release.
func (c *Cache) dbAcquire() *dbRef {
	for {
		d := c.dbp.Load()
		d.refs.Add(1)
		if c.dbp.Load() == d {
			return d
		}
		d.refs.Add(-1)
	}
}

func (d *dbRef) release() { d.refs.Add(-1) }

// plaintextStateForTests turns off the encryption of the local state, so
// that white-box tests can prove by a raw byte scan that erased data is
// gone from the state directory (with encryption on, a scan proves
// nothing). Never set outside tests.
var plaintextStateForTests = false

const dbCurrent = "db.current"

// currentDBDir names the store's directory (db unless a rebuild switched
// it) and removes what a rebuild killed half-way left.
func currentDBDir(stateDir string) (string, error) {
	name := "db"
	b, err := os.ReadFile(filepath.Join(stateDir, dbCurrent))
	switch {
	case err == nil:
		name = strings.TrimSpace(string(b))
		if name == "" || strings.ContainsAny(name, "/\x00") || !strings.HasPrefix(name, "db") {
			return "", fmt.Errorf("local state: %s names %q", dbCurrent, name)
		}
	case !os.IsNotExist(err):
		return "", fmt.Errorf("local state: %w", err)
	}
	ents, err := os.ReadDir(stateDir)
	if err != nil {
		return "", fmt.Errorf("local state: %w", err)
	}
	for _, e := range ents {
		if e.IsDir() && strings.HasPrefix(e.Name(), "db") && e.Name() != name {
			if err := os.RemoveAll(filepath.Join(stateDir, e.Name())); err != nil {
				return "", fmt.Errorf("local state: remove an old store: %w", err)
			}
		}
	}
	return name, nil
}

// rebuildDB copies the live keys into a new store and deletes the old one.
func (c *Cache) rebuildDB() error {
	start := time.Now()
	c.dbWrite.Lock()
	old := c.dbp.Load()
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		c.dbWrite.Unlock()
		return err
	}
	name := fmt.Sprintf("db-%x", rnd)
	dir := filepath.Join(c.opts.StateDir, name)
	// The copy gets the same tables, so the same index cache (see
	// statedb.Open), though it has none yet when it opens.
	fresh, err := badger.Open(c.badgerOptions(dir).WithIndexCacheSize(old.db.Opts().IndexCacheSize))
	if err != nil {
		c.dbWrite.Unlock()
		return fmt.Errorf("rebuild local state: %w", err)
	}
	keys := 0
	err = old.db.View(func(txn *badger.Txn) error {
		wb := fresh.NewWriteBatch()
		defer wb.Cancel()
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 256})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			if err := wb.Set(it.Item().KeyCopy(nil), v); err != nil {
				return err
			}
			keys++
		}
		return wb.Flush()
	})
	if err == nil {
		err = fresh.Sync()
	}
	if err == nil {
		err = statedb.ReplaceFile(filepath.Join(c.opts.StateDir, dbCurrent), []byte(name+"\n"))
	}
	if err != nil {
		fresh.Close()
		os.RemoveAll(dir)
		c.dbWrite.Unlock()
		return fmt.Errorf("rebuild local state: %w", err)
	}
	c.dbp.Store(&dbRef{db: fresh, dir: name})
	c.dbWrite.Unlock()
	for old.refs.Load() > 0 {
		time.Sleep(time.Millisecond)
	}
	if err := old.db.Close(); err != nil {
		c.log.Warn("closing the old local store", "err", err)
	}
	if err := os.RemoveAll(filepath.Join(c.opts.StateDir, old.dir)); err != nil {
		return fmt.Errorf("remove the old local store: %w", err)
	}
	c.log.Info("local state rebuilt", "keys", keys, "took", time.Since(start))
	return nil
}

// stateAEAD is the AEAD of chunk files and segments under key.
func stateAEAD(key []byte) (cipher.AEAD, error) {
	if plaintextStateForTests {
		return chunkstore.PlaintextAEAD{}, nil
	}
	return crypto.NewAEAD(key)
}
