package cache

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"golang.org/x/sys/unix"

	"github.com/keepfs/keepfs/cache/chunkstore"
	"github.com/keepfs/keepfs/cache/indexstore"
	"github.com/keepfs/keepfs/cache/internal/statedb"
	"github.com/keepfs/keepfs/cache/meta"
	"github.com/keepfs/keepfs/cache/namespace"
	"github.com/keepfs/keepfs/cache/snapshot"
	"github.com/keepfs/keepfs/cache/upload"
	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/crypto"
)

// Options configure a Cache; zero values pick the defaults noted.
type Options struct {
	// StateDir is absolute; created 0700 if missing.
	StateDir string
	// CacheSize bounds clean cached chunk bytes (default 1 GiB).
	CacheSize int64
	// SnapshotInterval is how often a snapshot is taken when something
	// changed (default 1m).
	SnapshotInterval time.Duration
	// Now is the one clock (default time.Now).
	Now    func() time.Time
	Logger *slog.Logger
	// LockWait is how long Open waits for a conflicting repository lock
	// (a prune or erase running) to go; 0 fails at once.
	LockWait time.Duration
	// Progress, if set, hears of long work Open does before the mount can
	// serve (the check after a power loss, the rebuild from the remote)
	// at its start, at most every 100 ms, and at its end.
	Progress func(Progress)
	// Health, if set, is where remote contact is recorded; the daemon
	// shares it with the retry decorator. Nil means a fresh one.
	Health *Health
}

// Progress is how far a piece of long work has come.
type Progress struct {
	What  string
	Done  int64
	Total int64  // 0 if not known
	Unit  string // "bytes" or "directories"
}

// progressReporter returns a function that passes the work's progress to
// Options.Progress at most every 100 ms, and always when last is set.
func (c *Cache) progressReporter(what, unit string, total int64) func(done int64, last bool) {
	if c.opts.Progress == nil {
		return func(int64, bool) {}
	}
	var at time.Time
	return func(done int64, last bool) {
		if now := time.Now(); last || now.Sub(at) >= 100*time.Millisecond {
			at = now
			c.opts.Progress(Progress{What: what, Done: done, Total: total, Unit: unit})
		}
	}
}

// Status is what `keepfs status` shows.
type Status struct {
	DirtyBytes     int64  `json:"dirty_bytes"`
	QueueBlobs     int    `json:"queue_blobs"`
	QueueBytes     int64  `json:"queue_bytes"`
	LastSnapshot   string `json:"last_snapshot"`
	LastSnapshotID string `json:"last_snapshot_id"`
	// RemoteReachable is true only if the last contact with the remote
	// succeeded. LastContactOK and LastContactFailed say when contact last
	// succeeded and failed (nil: not since the mount started), LastError
	// why it last failed.
	RemoteReachable   bool       `json:"remote_reachable"`
	LastContactOK     *time.Time `json:"last_contact_ok"`
	LastContactFailed *time.Time `json:"last_contact_failed"`
	LastError         string     `json:"last_error"`
	// QueueSince is when the upload queue last went from empty to not
	// empty (for a queue left by an earlier run: when this mount found
	// it), nil when it is empty; QueueAgeSeconds is the time since.
	QueueSince      *time.Time `json:"queue_since"`
	QueueAgeSeconds float64    `json:"queue_age_seconds"`
	CacheBytes      int64      `json:"cache_bytes"`
	// LostFiles are the paths of files whose content the last snapshot
	// could not back up: their data is held neither locally nor by the
	// remote (lost in a power loss or a disk error before its upload, or
	// by a remote that went back to an older copy of itself, see
	// rollback.go). The snapshot holds each one's
	// previous version, or leaves it out if it never had one, until the
	// file is rewritten or deleted.
	LostFiles []string `json:"lost_files"`
	// ReadOnly, if set, says why the mount takes no new writes: its
	// repository lock lapsed and has not been taken again yet.
	ReadOnly string `json:"read_only,omitempty"`
}

// Cache is the local state of one mounted repository.
type Cache struct {
	r        *repo.Repository
	opts     Options
	log      *slog.Logger
	lockFile *os.File
	staging  string // directory for staging files
	stateID  []byte

	nsMu sync.Mutex // serialises namespace mutations

	mu        sync.Mutex // guards the fields below
	open      map[uint64]*openFile
	nextIno   uint64 // next inode number to hand out
	inoLimit  uint64 // persisted high-water mark; nextIno < inoLimit
	health    *Health
	onRemoved func(path string) // the kernel must forget a path the cache removed itself
	// marks: files whose other names include a .gdprignore (namespace.RulesMarks)
	marks *namespace.RulesMarks

	cleanStart bool // the last session closed (see powerloss.go)

	unchecked      atomic.Int64 // bytes written or committed since the last free-space check
	chunksVerified atomic.Int64 // chunks read back after a power loss
	chunksLost     atomic.Int64 // of those, chunks that did not survive it

	up       *upload.Queue       // the durable upload queue and its uploader (uploadqueue.go)
	trees    *snapshot.Trees     // the tree-id cache (wired in treecache.go)
	snap     *snapshot.Scheduler // snapshot scheduling and storing (wired in snapshot.go)
	chunks   *chunkstore.Store   // chunk records and bytes (wired in chunks.go)
	ix       *indexstore.Store   // the repository's index, on disk
	meta     *namespace.MetaCache
	chunkers *chunkerPool
	sweep    sweeper // drops dead chunks (sweep.go)

	beforeBgCommit     func()                 // tests: runs as a background commit after an fsync starts
	duringBgCommit     func()                 // tests: runs once it holds the file, before committing
	inCommit           func(ino uint64) error // tests: runs in a commit before its chunking; an error fails it
	inReadDuringCommit func()                 // tests: runs in a read let in by a commit
	stagingSynced      func(string, *os.File) // tests: runs with a staging file's name once its bytes reached the disk
	inPrune            func()                 // tests: runs in Prune once it holds uploads, before the repository prunes

	// dbp is the Badger store, replaced whole when an erase rebuilds it
	// (see rebuild.go); dbWrite is held by every update for reading and
	// by the rebuild for writing.
	dbp     atomic.Pointer[dbRef]
	dbWrite sync.RWMutex

	bg     context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed bool
	rlock  *repo.Lock

	stopSnaps context.CancelFunc
	snapsDone chan struct{}
}

// memCacheSize bounds chunk plaintexts kept in memory (just committed ones
// for the uploader, just read ones for readers). The daemon's live heap is
// this, Badger's memtables and caches, one chunker (12 MiB; only files past
// the chunker's minimum size need it) and the repository's pack buffers
// (16 MiB each): well under the daemon's memory limit, whose distance from
// the live heap sets how often the collector runs.
const memCacheSize = 8 << 20

// Open opens (or creates) the state directory for r. With an empty state
// directory it rebuilds the namespace from the remote's latest snapshot;
// file data is then fetched lazily on read.
func Open(ctx context.Context, r *repo.Repository, opts Options) (*Cache, error) {
	if opts.StateDir == "" || !filepath.IsAbs(opts.StateDir) {
		return nil, fmt.Errorf("cache: state directory %q must be an absolute path", opts.StateDir)
	}
	if opts.CacheSize <= 0 {
		opts.CacheSize = 1 << 30
	}
	if opts.SnapshotInterval <= 0 {
		opts.SnapshotInterval = time.Minute
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Health == nil {
		opts.Health = NewHealth()
	}
	// The caller has just opened the repository, index and all, through
	// the remote: that was a successful contact.
	opts.Health.recordOpened()
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if err := os.MkdirAll(opts.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("create state directory: %w", err)
	}
	lf, err := os.OpenFile(filepath.Join(opts.StateDir, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open state lock: %w", err)
	}
	if err := unix.Flock(int(lf.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lf.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s: %w", opts.StateDir, ErrLocked)
		}
		return nil, fmt.Errorf("lock state directory: %w", err)
	}
	c := &Cache{r: r, opts: opts, log: opts.Logger, lockFile: lf,
		open: map[uint64]*openFile{}, health: opts.Health,
		meta: namespace.NewMetaCache(namespace.MetaCacheEntries)}
	c.up = c.newUploadQueue()
	c.trees = c.newTrees()
	c.snap = c.newScheduler()
	ok := false
	defer func() {
		if !ok {
			if d := c.dbp.Load(); d != nil {
				d.db.Close()
			}
			if c.chunks != nil {
				c.chunks.Close()
			}
			if c.ix != nil {
				c.ix.Close()
			}
			lf.Close()
		}
	}()
	// Staging files are unlinked at creation, and linked only for an fsync
	// intent: recoverIntents removes what no intent names.
	c.staging = filepath.Join(opts.StateDir, "staging")
	if err := os.MkdirAll(c.staging, 0o700); err != nil {
		return nil, fmt.Errorf("create staging directory: %w", err)
	}
	if c.chunks, err = c.openChunkStore(); err != nil {
		return nil, err
	}
	if err := c.openDB(); err != nil {
		return nil, err
	}
	if err := c.openIndex(ctx); err != nil {
		return nil, err
	}
	if err := c.checkPowerLoss(ctx); err != nil {
		return nil, err
	}
	if err := c.loadState(ctx); err != nil {
		return nil, err
	}
	c.chunkers = newChunkerPool(1, chunkerIdle, r.NewChunker)
	// A daemon killed earlier may have left chunks in the page cache only;
	// nothing here remembers them, so make them all durable now.
	if err := c.chunks.Sync(); err != nil {
		return nil, err
	}
	c.bg, c.cancel = context.WithCancel(context.Background())
	if err := c.recoverIntents(ctx); err != nil {
		c.cancel()
		return nil, err
	}
	rl, err := c.acquireRemoteLock(ctx)
	if err != nil {
		c.cancel()
		return nil, err
	}
	c.rlock = rl
	// The snapshot loop stops first in Close, before the final snapshot.
	var sctx context.Context
	sctx, c.stopSnaps = context.WithCancel(c.bg)
	c.snapsDone = make(chan struct{})
	go c.snap.Loop(sctx, c.snapsDone)
	c.wg.Add(2)
	go func() {
		defer c.wg.Done()
		c.up.Run(c.bg)
	}()
	go c.gcLoop()
	// The durable queue is not uploaded yet: a .gdprignore may have come
	// since the walk that filled it. The first snapshot decides again.
	ok = true
	return c, nil
}

// valueThreshold is Badger's: larger values go to the value log.
const valueThreshold = 4 << 10

// An inline chunk's value (size prefix + data) must stay below it.
const _ = uint(valueThreshold - (8 + chunkstore.InlineMax) - 1)

func (c *Cache) openDB() error {
	name, err := currentDBDir(c.opts.StateDir)
	if err != nil {
		return err
	}
	db, err := statedb.Open(c.badgerOptions(filepath.Join(c.opts.StateDir, name)))
	if err != nil {
		return fmt.Errorf("open local state %s: %w", c.opts.StateDir, err)
	}
	c.dbp.Store(&dbRef{db: db, dir: name})
	return nil
}

func (c *Cache) badgerOptions(dir string) badger.Options {
	// Badger keeps the key for data-key rotation: it must not be cleared.
	var key []byte
	if !plaintextStateForTests {
		key = c.r.Key().StateKey()
	}
	return badger.DefaultOptions(dir).
		WithEncryptionKey(key).
		WithLogger(statedb.Logger{L: c.log}).
		// Metadata and inline chunks stay in the LSM tree; only long
		// chunk lists of big files go to the value log.
		WithValueThreshold(valueThreshold).
		// Memory: see statedb.MemTable.
		WithMemTableSize(statedb.MemTable).
		WithNumMemtables(statedb.Memtables).
		WithNumLevelZeroTables(4).
		WithNumLevelZeroTablesStall(8).
		WithValueLogFileSize(128 << 20).
		WithBlockCacheSize(statedb.BlockCache).
		WithIndexCacheSize(statedb.IndexCache).
		// Keep the default data-key rotation: a rotation period longer than
		// the time since 1970 makes Badger v4 write tables unencrypted.
		WithNumCompactors(2)
}

// loadState reads counters, cleans orphans and, on a fresh state
// directory, rebuilds the namespace from the remote.
func (c *Cache) loadState(ctx context.Context) error {
	err := c.update(func(txn *wtxn) error {
		v, err := getValue(txn, meta.StateKey("stateid"))
		if errors.Is(err, badger.ErrKeyNotFound) {
			v = make([]byte, 16)
			if _, err := rand.Read(v); err != nil {
				return err
			}
			return txn.Set(meta.StateKey("stateid"), v)
		}
		c.stateID = v
		return err
	})
	if err != nil {
		return fmt.Errorf("state id: %w", err)
	}
	if c.stateID == nil {
		if err := c.view(func(txn *badger.Txn) error {
			v, err := getValue(txn, meta.StateKey("stateid"))
			c.stateID = v
			return err
		}); err != nil {
			return err
		}
	}
	if err := c.view(func(txn *badger.Txn) error {
		v, err := getValue(txn, meta.StateKey("nextino"))
		if err == nil && len(v) == 8 {
			c.inoLimit = binary.BigEndian.Uint64(v)
		} else if err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		return nil
	}); err != nil {
		return fmt.Errorf("read inode counter: %w", err)
	}
	if c.inoLimit <= meta.RootIno {
		c.inoLimit = meta.RootIno + 1
	}
	c.nextIno = c.inoLimit
	marks, err := namespace.LoadRulesMarks(c.view)
	if err != nil {
		return err
	}
	c.marks = marks
	if _, err := c.getInode(meta.RootIno); errors.Is(err, ErrNotFound) {
		if err := c.bootstrap(ctx); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	if err := c.removeOrphans(); err != nil {
		return err
	}
	var last *repo.Snapshot
	var lost []string
	var lastID *crypto.ID
	if err := c.view(func(txn *badger.Txn) error {
		v, err := getValue(txn, snapshot.LastKey)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		lastID = new(crypto.ID)
		copy(lastID[:], v)
		return nil
	}); err != nil {
		return err
	}
	if lastID != nil {
		sn, err := c.r.LoadSnapshot(ctx, *lastID)
		if errors.Is(err, remote.ErrNotFound) {
			// An erase rewrote it: one run while this state directory
			// was not mounted, or a mount's erase cut short.
			sn, err = c.rewriteOf(ctx, *lastID)
		}
		if err != nil {
			// Only Status and the parent link need it.
			c.log.Warn("cannot load the last snapshot", "id", lastID.Short(), "err", err)
		} else {
			last = sn
		}
	}
	if err := c.view(func(txn *badger.Txn) error {
		v, err := getValue(txn, snapshot.LostKey)
		if err == nil && len(v) > 0 {
			lost = strings.Split(string(v), "\x00")
		}
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		return err
	}); err != nil {
		return fmt.Errorf("read the lost files: %w", err)
	}
	// Commits may have happened after the last snapshot, before a crash:
	// Restore counts a change, so the first snapshot compares the tree
	// with the last one.
	c.snap.Restore(last, lost)
	if err := c.scanChunks(); err != nil {
		return err
	}
	return c.trees.Load(c.cleanStart)
}

// rewriteOf returns the snapshot an erase stored in place of the snapshot
// id (its Rewrites names id), or the newest rewrite of that one in turn.
func (c *Cache) rewriteOf(ctx context.Context, id crypto.ID) (*repo.Snapshot, error) {
	snaps, err := c.r.Snapshots(ctx)
	if err != nil {
		return nil, err
	}
	by := make(map[crypto.ID]*repo.Snapshot, len(snaps))
	for _, sn := range snaps {
		if sn.Rewrites != nil {
			by[*sn.Rewrites] = sn
		}
	}
	sn := by[id]
	if sn == nil {
		return nil, fmt.Errorf("snapshot %s is gone and no snapshot names it as the one it rewrote", id.Short())
	}
	// A rewrite that a later erase rewrote again, if that erase was cut
	// short before deleting it. Bounded: a chain cannot be longer.
	for range snaps {
		next := by[sn.ID]
		if next == nil {
			break
		}
		sn = next
	}
	return sn, nil
}

// removeOrphans deletes inodes with no links left: files unlinked while
// open when the process died.
func (c *Cache) removeOrphans() error {
	var orphans []uint64
	err := c.eachInode(func(ino uint64, n *meta.Inode) {
		if n.Nlink == 0 && ino != meta.RootIno {
			orphans = append(orphans, ino)
		}
	})
	if err != nil {
		return fmt.Errorf("scan inodes: %w", err)
	}
	for _, ino := range orphans {
		if err := c.update(func(txn *wtxn) error { return txn.DelInode(ino) }); err != nil {
			return err
		}
	}
	return nil
}

// eachInode calls fn with every inode record, in one read transaction.
func (c *Cache) eachInode(fn func(ino uint64, n *meta.Inode)) error {
	return c.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: meta.InodePrefix(), PrefetchValues: true, PrefetchSize: 100})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			n, err := meta.DecodeInode(v)
			if err != nil {
				return err
			}
			fn(meta.InoFromInodeKey(it.Item().Key()), n)
		}
		return nil
	})
}

// allocIno hands out an inode number, persisting the high-water mark in
// steps so that numbers are never reused after a crash.
func (c *Cache) allocIno() (uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nextIno >= c.inoLimit {
		lim := c.nextIno + 1024
		var v [8]byte
		binary.BigEndian.PutUint64(v[:], lim)
		if err := c.update(func(t *wtxn) error { return t.Set(meta.StateKey("nextino"), v[:]) }); err != nil {
			return 0, err
		}
		c.inoLimit = lim
	}
	ino := c.nextIno
	c.nextIno++
	return ino, nil
}

// Repository returns the repository the cache writes to.
func (c *Cache) Repository() *repo.Repository { return c.r }

// OnSnapshot registers fn to be called after each new snapshot is stored,
// and after a prune removed snapshots (with the latest, possibly nil).
func (c *Cache) OnSnapshot(fn func(*repo.Snapshot)) { c.snap.OnSnapshot(fn) }

// OnRemoved registers fn to hear of paths (from the root) that the cache
// removed by itself, not through the kernel (an erase), so that the
// kernel's cached entries can be dropped.
func (c *Cache) OnRemoved(fn func(path string)) {
	c.mu.Lock()
	c.onRemoved = fn
	c.mu.Unlock()
}

// Status reports the state for `keepfs status`.
func (c *Cache) Status() Status {
	var dirty int64
	c.mu.Lock()
	files := make([]*openFile, 0, len(c.open))
	for _, f := range c.open {
		files = append(files, f)
	}
	c.mu.Unlock()
	st := Status{LostFiles: c.snap.Lost()}
	if last := c.snap.Last(); last != nil {
		st.LastSnapshot = last.Name()
		st.LastSnapshotID = last.ID.String()
	}
	var since time.Time
	st.QueueBlobs, st.QueueBytes, since = c.up.State()
	if !since.IsZero() {
		st.QueueSince = &since
		st.QueueAgeSeconds = c.opts.Now().Sub(since).Seconds()
	}
	for _, f := range files {
		dirty += f.dirtyBytes.Load()
	}
	st.DirtyBytes = dirty
	st.CacheBytes = c.chunks.CleanBytes()
	h := c.health.state()
	st.RemoteReachable, st.LastError = h.Reachable, h.LastError
	if !h.LastOK.IsZero() {
		st.LastContactOK = &h.LastOK
	}
	if !h.LastFail.IsZero() {
		st.LastContactFailed = &h.LastFail
	}
	if err := c.readOnly(); err != nil {
		st.ReadOnly = err.Error()
	}
	return st
}

// noteChange records that something a snapshot would show changed.
func (c *Cache) noteChange() { c.snap.Changed() }

// setRemoteHealth records the outcome of a remote operation (see Health).
func (c *Cache) setRemoteHealth(err error) { c.health.Record(err) }

// Close commits, takes a final snapshot if anything changed, waits for its
// upload (bounded by ctx) and closes the local state.
func (c *Cache) Close(ctx context.Context) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	files := make([]*openFile, 0, len(c.open))
	for _, f := range c.open {
		files = append(files, f)
	}
	c.mu.Unlock()
	c.stopSnaps()
	<-c.snapsDone
	defer c.up.Urgent()() // unmount waits for the final upload
	var errs []error
	for _, f := range files {
		if err := c.commit(ctx, f, false); err != nil {
			errs = append(errs, err)
		}
	}
	if _, err := c.snap.IfChanged(ctx, false); err != nil {
		errs = append(errs, fmt.Errorf("final snapshot: %w", err))
	}
	// Only a queue the final walk decided leaves (if that walk failed, an
	// older one may name files excluded since); else the next Open's
	// first snapshot decides again.
	if c.up.Decided() {
		if err := c.up.Drain(ctx); err != nil {
			errs = append(errs, fmt.Errorf("upload queue not drained: %w", err))
		} else {
			// The remote answers: the session's own index segments
			// become one (see repo/compact.go).
			mctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			if err := c.r.MergeOwnIndex(mctx); err != nil {
				c.log.Warn("cannot merge this mount's index segments; prune will", "err", err)
			}
			cancel()
		}
	}
	c.cancel()
	c.wg.Wait()
	c.chunks.Wait()
	if c.rlock != nil {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		c.rlock.Release(rctx)
		cancel()
	}
	c.mu.Lock()
	for _, f := range c.open {
		f.closeStaging()
	}
	c.mu.Unlock()
	// Without the mark, the next Open drops the tree cache: it may miss
	// changes (see treecache.go).
	if err := c.trees.Save(); err != nil {
		c.log.Warn("cannot record the tree cache; the next mount walks everything", "err", err)
	}
	// Closed only once everything written so far is on the disk: the next
	// Open trusts the local chunks then, whatever happens in between.
	if err := c.chunks.Sync(); err != nil {
		errs = append(errs, err)
	} else if err := c.recordSession(sessionClosed); err != nil {
		errs = append(errs, err)
	}
	if err := c.dbp.Load().db.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close local state: %w", err))
	}
	c.chunks.Close()
	c.chunkers.close()
	if err := c.ix.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close local index: %w", err))
	}
	c.lockFile.Close()
	return errors.Join(errs...)
}

// gcEvery is gcLoop's period.
var gcEvery = time.Minute

// gcLoop drops dead chunks and compacts chunk segments every minute (when
// due) and runs Badger's value-log GC every five; it stops with Close.
func (c *Cache) gcLoop() {
	defer c.wg.Done()
	t := time.NewTicker(gcEvery)
	defer t.Stop()
	for tick := 1; ; tick++ {
		select {
		case <-c.bg.Done():
			return
		case <-t.C:
			c.sweepIfDue(c.bg)
			if err := c.chunks.Compact(c.bg); err != nil {
				c.log.Warn("cannot compact chunk segments", "err", err)
			}
			if c.chunks.Unsynced() > 0 {
				if err := c.chunks.Sync(); err != nil {
					c.log.Warn("cannot sync the state directory", "err", err)
				}
			}
			if tick%5 != 0 {
				continue
			}
			d := c.dbAcquire()
			for d.db.RunValueLogGC(0.5) == nil {
				if c.bg.Err() != nil {
					break
				}
			}
			d.release()
		}
	}
}

// view runs a read-only transaction.
func (c *Cache) view(fn func(*badger.Txn) error) error {
	d := c.dbAcquire()
	defer d.release()
	return d.db.View(fn)
}

// update runs fn in a read-write transaction, retrying a bounded number of
// times with jittered backoff when Badger reports a conflict.
func (c *Cache) update(fn func(*wtxn) error) error {
	c.dbWrite.RLock()
	defer c.dbWrite.RUnlock()
	d := c.dbAcquire()
	defer d.release()
	var err error
	for attempt := 0; attempt < 8; attempt++ {
		var t *wtxn
		err = d.db.Update(func(txn *badger.Txn) error {
			t = &wtxn{namespace.NewTxn(txn, c.meta, c.marks)}
			return fn(t)
		})
		if err == nil {
			t.Apply()
		}
		if !errors.Is(err, badger.ErrConflict) {
			return err
		}
		time.Sleep(time.Duration(mrand.IntN(1000*(attempt+1))) * time.Microsecond)
	}
	return fmt.Errorf("local state: %w (gave up after retries)", err)
}

// getter is what reads need of a Badger transaction.
type getter interface {
	Get(key []byte) (*badger.Item, error)
}

// getValue returns a copy of key's value; badger.ErrKeyNotFound if absent.
func getValue(txn getter, key []byte) ([]byte, error) {
	it, err := txn.Get(key)
	if err != nil {
		return nil, err
	}
	return it.ValueCopy(nil)
}

// sync makes everything written so far durable in the state directory.
func (c *Cache) sync() error {
	d := c.dbAcquire()
	defer d.release()
	if err := d.db.Sync(); err != nil {
		return fmt.Errorf("sync local state: %w", err)
	}
	return nil
}

// openIndex opens the local index and makes it the repository's, loading
// what it lacks of the remote's index.
func (c *Cache) openIndex(ctx context.Context) error {
	var key []byte
	if !plaintextStateForTests {
		key = c.r.Key().StateKey()
	}
	ix, err := indexstore.Open(c.opts.StateDir, key, c.log)
	if err != nil {
		return err
	}
	c.ix = ix
	c.r.SetIndexStore(ix)
	start := time.Now()
	if err := c.r.LoadIndex(ctx); err != nil {
		c.setRemoteHealth(err)
		// A filled store serves what the state directory needs before
		// the repository lock is taken; the load is tried again under it
		// (acquireRemoteLock), which fails Open if the remote is still out
		// of reach.
		if st, serr := ix.State(); serr != nil || !st.Filled || st.Dirty {
			return fmt.Errorf("load the index: %w", err)
		}
		c.log.Warn("cannot bring the local index up to date yet", "err", err)
		return nil
	}
	c.log.Debug("index loaded", "took", time.Since(start))
	return nil
}
