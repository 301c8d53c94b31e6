// Package statedb holds what the daemon's two Badger databases in the
// state directory (the state and the local index) share: the memory
// bounds, the logger, and the durable replace of the file that names a
// database's live directory.
package statedb

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	badger "github.com/dgraph-io/badger/v4"
)

// The Badger memory of each of the daemon's two databases (the state and
// the local index), all of it Go heap. A memtable is an arena of about
// 1.3 times MemTable, allocated whole; a full one waits in a queue of
// Memtables while another is flushed, and the flush builds its table
// in memory. With 2 queued, each database held up to 31 MiB of arenas while
// cp -a wrote, and the caches (16 + 8 MiB each) had filled by the end of
// the mount bench. The memtable stays at 8 MiB: Badger caps a transaction
// at 15 % of it (and the index's 1 MiB value threshold must fit under
// that), so a smaller one would reject big transactions (a 4 MiB one
// stalled the first sync after cp -a of the bench workload).
//
// The block caches are the smallest Badger allows with encryption, 1 MiB
// each: during the upload drain after cp -a, where the daemon's RSS peaks,
// they filled to 13 MiB of the 16 MiB between them, while a miss costs a
// page of a memory-mapped table and an AES-CTR pass over a 4 KiB (index:
// 16 KiB) block (hit ratio 0.24 at 1 MiB; see docs/architecture.md for
// the A/B).
const (
	MemTable   = 8 << 20
	Memtables  = 1
	BlockCache = 1 << 20
	IndexCache = 4 << 20
)

// Open opens the Badger database of opts with an index cache that holds
// every table's index twice over, and at least opts.IndexCacheSize. With
// encryption, Badger keeps a table's block index and bloom filter only in
// that cache, and a table whose index is not there decrypts all of it
// again for every block it reads: at 5 million blobs the local index's
// eleven tables carry 5.5 MB of indexes, and with the 4 MiB cache a
// lookup took 1.1-1.6 ms instead of 40 us (docs/architecture.md).
//
// The cache only ever holds indexes of open tables, so a generous bound
// costs nothing: it is guessed from the tables' bytes on disk before the
// open (indexes are 1-10 % of a table here, by entry size), and checked
// against the opened tables' index sizes after it, opening the database
// a second time if the guess fell short. The headroom is for the tables
// a session adds.
func Open(opts badger.Options) (*badger.DB, error) {
	opts = opts.WithIndexCacheSize(max(opts.IndexCacheSize, roundMiB(tableBytes(opts.Dir)/guessShare)))
	db, err := badger.Open(opts)
	if err != nil {
		return nil, err
	}
	want := IndexCacheFor(db.Tables())
	if want <= opts.IndexCacheSize {
		return db, nil
	}
	if err := db.Close(); err != nil {
		return nil, err
	}
	return badger.Open(opts.WithIndexCacheSize(want))
}

// IndexCacheFor is the least index cache Open gives a database with
// tables: twice their indexes, rounded up to a MiB.
func IndexCacheFor(tables []badger.TableInfo) int64 {
	var n int64
	for _, t := range tables {
		n += int64(t.IndexSz)
	}
	return roundMiB(2 * n)
}

// guessShare is what share of a table Open guesses its index to be, at
// most; a test raises it to take the second open.
var guessShare int64 = 4

func roundMiB(n int64) int64 {
	const mib = 1 << 20
	return (n + mib - 1) / mib * mib
}

// tableBytes is the size of the tables (.sst files) in dir; 0 if there
// are none yet.
func tableBytes(dir string) int64 {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	var n int64
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".sst") {
			continue
		}
		if fi, err := e.Info(); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// Logger routes Badger's logging into slog.
type Logger struct{ L *slog.Logger }

func (b Logger) Errorf(f string, a ...any)   { b.log(slog.LevelError, f, a) }
func (b Logger) Warningf(f string, a ...any) { b.log(slog.LevelWarn, f, a) }
func (b Logger) Infof(f string, a ...any)    { b.log(slog.LevelDebug, f, a) }
func (b Logger) Debugf(f string, a ...any)   { b.log(slog.LevelDebug, f, a) }

// log formats only what will be written: Badger logs a debug line for
// every memtable flush and compaction step.
func (b Logger) log(level slog.Level, f string, a []any) {
	// The caches are small on purpose (see BlockCache): Badger's
	// minutely advice to grow them is not news to the user.
	if level == slog.LevelWarn && (strings.Contains(f, "might be too small") || strings.HasPrefix(f, "Cache life expectancy")) {
		level = slog.LevelDebug
	}
	if !b.L.Enabled(context.Background(), level) {
		return
	}
	b.L.Log(context.Background(), level, "badger: "+fmt.Sprintf(f, a...))
}

// ReplaceFile replaces name with b durably (temporary file, fsync,
// rename, fsync of the directory).
func ReplaceFile(name string, b []byte) error {
	tmp := name + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, name); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(name))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
