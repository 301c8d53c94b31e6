package statedb

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"testing"

	badger "github.com/dgraph-io/badger/v4"
)

// An encrypted database whose table indexes outgrow the configured index
// cache gets one that holds them all: each index is then decrypted once,
// not again for nearly every lookup.
func TestOpenSizesIndexCacheToTables(t *testing.T) {
	dir := t.TempDir()
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i)
	}
	const floor = 64 << 10 // stands in for IndexCache at a test's scale
	opts := badger.DefaultOptions(dir).
		WithEncryptionKey(key).
		WithLogger(Logger{L: slog.New(slog.DiscardHandler)}).
		WithMemTableSize(2 << 20).
		WithValueThreshold(1 << 10).
		WithBlockCacheSize(1 << 20).
		WithIndexCacheSize(floor)
	db, err := badger.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	const n = 200_000
	keyOf := func(i uint64) []byte {
		k := make([]byte, 33)
		k[0] = 'b'
		binary.BigEndian.PutUint64(k[1:], i*0x9e3779b97f4a7c15)
		return k
	}
	wb := db.NewWriteBatch()
	val := make([]byte, 40)
	for i := uint64(0); i < n; i++ {
		if err := wb.Set(keyOf(i), val); err != nil {
			t.Fatal(err)
		}
	}
	if err := wb.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	for _, share := range []int64{guessShare, 1 << 40} {
		t.Run(fmt.Sprintf("guess 1/%d", share), func(t *testing.T) {
			defer func(s int64) { guessShare = s }(guessShare)
			guessShare = share // 1<<40: no guess, the check after the open
			checkIndexCache(t, opts, keyOf, n, floor)
		})
	}

	// A database that fits keeps the configured size.
	small := t.TempDir()
	db2, err := Open(badger.DefaultOptions(small).WithEncryptionKey(key).
		WithLogger(Logger{L: slog.New(slog.DiscardHandler)}).WithIndexCacheSize(IndexCache))
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	if got := db2.Opts().IndexCacheSize; got != IndexCache {
		t.Fatalf("empty database: index cache %d, want %d", got, IndexCache)
	}
}

// checkIndexCache opens the database of opts with Open and checks that
// its index cache holds every table's index: n random lookups of keyOf
// miss it about once a table.
func checkIndexCache(t *testing.T, opts badger.Options, keyOf func(uint64) []byte, n uint64, floor int64) {
	db, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tables := db.Tables()
	var sum int64
	for _, ti := range tables {
		sum += int64(ti.IndexSz)
	}
	if len(tables) < 2 || sum <= floor {
		t.Fatalf("set-up: %d tables with %d bytes of indexes; want several over %d", len(tables), sum, floor)
	}
	t.Logf("%d tables, %d bytes of indexes, cache %d", len(tables), sum, db.Opts().IndexCacheSize)
	if got := db.Opts().IndexCacheSize; got < 2*sum || got%(1<<20) != 0 {
		t.Fatalf("index cache %d bytes for %d bytes of table indexes", got, sum)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	const lookups = 5000
	err = db.View(func(txn *badger.Txn) error {
		for i := 0; i < lookups; i++ {
			if _, err := txn.Get(keyOf(rng.Uint64N(n))); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Ristretto admits asynchronously, so a few first misses may repeat.
	m := db.IndexCacheMetrics().Misses()
	t.Logf("%d index cache misses in %d lookups", m, lookups)
	if m > uint64(4*len(tables)) {
		t.Fatalf("%d index cache misses in %d lookups over %d tables", m, lookups, len(tables))
	}
}
