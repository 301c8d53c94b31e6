package cache

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/dgraph-io/badger/v4"

	"github.com/keepfs/keepfs/cache/chunkstore"
	"github.com/keepfs/keepfs/cache/meta"
)

// An fsync of many changed bytes does not wait for their commit (chunk,
// hash, compress, seal, store: several times the cost of writing them).
// It makes the staged bytes durable instead, with an intent record in
// Badger naming the staging file, its key and what changed, and commits
// in the background. fsync's promise holds: after kill -9 or a power loss
// Open commits every intent it finds before the mount serves anything.
//
// Until its commit, a file with an intent stays open in memory, every
// commit of it is durable (its transaction deletes the record; only then
// may the staging bytes go), and a snapshot commits it first, so that a
// snapshot still shows each file as of its last close or fsync.

// deferCommitMin is the fewest changed bytes an fsync defers the commit
// of: below it a commit costs little more than the syncs of an intent.
const deferCommitMin = 4 << 20

// deferCommitLocked records an intent for f's changes instead of
// committing them, if f qualifies: its staging is a file, and the caller
// is an fsync of enough bytes or f has an intent already (a close then
// refreshes it without syncing Badger: closed data has to survive kill -9
// only). It reports whether it did.
func (c *Cache) deferCommitLocked(f *openFile, durable bool) (bool, error) {
	s := f.stage
	if s == nil || s.f == nil {
		return false, nil
	}
	if !f.intent.Load() && (!durable || f.written.total() < deferCommitMin) {
		return false, nil
	}
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed && !f.intent.Load() {
		return false, nil // Close commits everything anyway
	}
	linked := s.name != ""
	if err := s.link(); err != nil {
		if f.intent.Load() {
			return false, err
		}
		c.log.Warn("cannot keep a staging file; fsync commits at once", "err", err)
		return false, nil
	}
	if durable {
		// The chunks the record's base names, stored by closes, first.
		if err := c.chunks.SyncNoted(); err != nil {
			return false, err
		}
		if !linked {
			if err := chunkstore.SyncPath(c.staging); err != nil {
				return false, fmt.Errorf("sync staging directory: %w", err)
			}
		}
	}
	if err := c.recordIntentLocked(f); err != nil {
		return false, err
	}
	if durable {
		if err := c.sync(); err != nil {
			return false, err
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !f.bgCommit && !c.closed {
		f.bgCommit = true
		f.refs++
		c.wg.Add(1)
		started := make(chan struct{})
		f.bgStarted.Store(&started)
		go c.commitInBackground(f, started)
	}
	return true, nil
}

// recordIntentLocked writes (or rewrites) f's intent record, without
// syncing Badger. The staged bytes it names reach the disk first, even
// when only kill -9 has to be survived: Badger may write the record back
// before a power loss that loses bytes it names, and Open could then never
// commit it (such blocks do not open); the file would fail every snapshot.
func (c *Cache) recordIntentLocked(f *openFile) error {
	if err := f.stage.sync(); err != nil {
		return err
	}
	if c.stagingSynced != nil {
		c.stagingSynced(f.stage.name, f.stage.f)
	}
	rec := f.intentLocked()
	err := c.update(func(txn *wtxn) error {
		return txn.Set(meta.IntentKey(f.ino), meta.EncodeIntent(rec))
	})
	clear(rec.Key[:])
	if err != nil {
		return fmt.Errorf("record fsync intent: %w", err)
	}
	f.intent.Store(true)
	return nil
}

// commitInBackground commits f's intent; it holds a reference on f.
//
// A close while it runs returns at once (see Handle.Flush): the record is
// first brought up to date with writes made since the fsync, and none can
// be made while the commit holds f.mu, so the record covers everything
// the close has to keep until the commit lands.
//
// started is closed once the record is up to date and committing is set,
// or once it is clear there is nothing to commit.
func (c *Cache) commitInBackground(f *openFile, started chan struct{}) {
	defer c.wg.Done()
	if c.beforeBgCommit != nil {
		c.beforeBgCommit()
	}
	f.lockCommit()
	hide := f.showLocked() // from the start: the record is rewritten first
	f.bgCommit = false
	var err error
	if f.intent.Load() {
		if rerr := c.recordIntentLocked(f); rerr == nil {
			f.committing.Store(true)
		}
		close(started)
		if c.duringBgCommit != nil {
			c.duringBgCommit()
		}
		err = c.commitLocked(c.bg, f, true, false)
		f.committing.Store(false)
	} else {
		close(started)
	}
	hide()
	f.unlockCommit()
	if err != nil {
		c.log.Warn("commit after an fsync failed; its changes stay staged and the next snapshot retries", "ino", f.ino, "err", err)
	}
	c.mu.Lock()
	f.refs--
	c.mu.Unlock()
	if err := c.forgetIfIdle(f); err != nil {
		c.log.Warn("cannot drop an unlinked file", "ino", f.ino, "err", err)
	}
}

// commitIntents commits every open file with an intent, so that a
// snapshot sees what was fsynced before it.
func (c *Cache) commitIntents(ctx context.Context) error {
	c.mu.Lock()
	var files []*openFile
	for _, f := range c.open {
		if f.intent.Load() {
			files = append(files, f)
		}
	}
	c.mu.Unlock()
	var errs []error
	for _, f := range files {
		f.lockCommit()
		var err error
		if f.intent.Load() {
			err = c.commitLocked(ctx, f, true, false)
		}
		f.unlockCommit()
		errs = append(errs, err, c.forgetIfIdle(f))
	}
	return errors.Join(errs...)
}

// dropIntentLocked forgets f's intent without committing it: the file is
// gone. A failure leaves a record that Open drops for the same reason.
func (c *Cache) dropIntentLocked(f *openFile) {
	if !f.intent.Load() {
		return
	}
	if err := c.deleteIntent(f.ino); err != nil {
		c.log.Warn("cannot drop an fsync intent", "ino", f.ino, "err", err)
		return
	}
	f.intent.Store(false)
	f.stage.unlink(c.log)
}

func (c *Cache) deleteIntent(ino uint64) error {
	return c.update(func(txn *wtxn) error { return txn.Delete(meta.IntentKey(ino)) })
}

// intentLocked describes f's uncommitted changes.
func (f *openFile) intentLocked() *meta.Intent {
	rec := &meta.Intent{Staging: f.stage.name, Key: f.stage.key,
		Base: chunksDigest(f.chunks), Size: f.size, Mtime: f.mtime, Ctime: f.ctime,
		Mode: f.attrs.mode, UID: f.attrs.uid, GID: f.attrs.gid, Atime: f.attrs.atime,
		Points: f.points}
	for _, x := range f.dirty {
		rec.Dirty = append(rec.Dirty, meta.Range{Start: x.Start, End: x.End})
	}
	for _, x := range f.written {
		rec.Written = append(rec.Written, meta.Range{Start: x.Start, End: x.End})
	}
	return rec
}

// chunksDigest identifies a chunk list, so that an intent is applied to
// the content it was made against and nothing else.
func chunksDigest(chunks []meta.Chunk) [32]byte {
	h := sha256.New()
	for _, ch := range chunks {
		if ch.IsHole() {
			h.Write(binary.BigEndian.AppendUint64(ch.ID[:], ch.Len))
			continue
		}
		h.Write(binary.BigEndian.AppendUint32(ch.ID[:], uint32(ch.Len)))
	}
	var d [32]byte
	h.Sum(d[:0])
	return d
}

// recoverIntents commits, at Open, the intents a crash left, then removes
// staging files no intent names.
func (c *Cache) recoverIntents(ctx context.Context) error {
	type item struct {
		ino uint64
		rec []byte
	}
	var items []item
	err := c.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: meta.IntentPrefix(), PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			items = append(items, item{meta.InoFromInodeKey(it.Item().Key()), v})
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("read fsync intents: %w", err)
	}
	keep := map[string]bool{}
	for _, it := range items {
		rec, err := meta.DecodeIntent(it.rec)
		if err != nil {
			err = fmt.Errorf("%w: %v", errIntentUnusable, err)
		} else {
			err = c.recoverIntent(ctx, it.ino, rec)
		}
		switch {
		case err == nil:
			// Committed: its transaction deleted the record.
		case errors.Is(err, errIntentUnusable):
			c.log.Error("data fsynced before a crash is lost", "ino", it.ino, "err", err)
			if err := c.deleteIntent(it.ino); err != nil {
				return err
			}
		default:
			// Kept for the next attempt (a full disk, say): the file
			// stays open in memory with its changes.
			keep[rec.Staging] = true
			c.log.Error("cannot commit data fsynced before a crash; will retry", "ino", it.ino, "err", err)
		}
	}
	ents, err := os.ReadDir(c.staging)
	if err != nil {
		return fmt.Errorf("read staging directory: %w", err)
	}
	for _, e := range ents {
		if !keep[e.Name()] {
			os.Remove(filepath.Join(c.staging, e.Name()))
		}
	}
	return nil
}

// errIntentUnusable marks an intent that can never be committed.
var errIntentUnusable = errors.New("fsync intent unusable")

func (c *Cache) recoverIntent(ctx context.Context, ino uint64, rec *meta.Intent) error {
	f, err := c.acquire(ctx, ino)
	if errors.Is(err, ErrNotFound) {
		// Deleted before the crash: nothing to keep.
		return c.deleteIntent(ino)
	}
	if errors.Is(err, ErrIsDir) || errors.Is(err, ErrInvalid) {
		return fmt.Errorf("%w: inode %d is no longer a file", errIntentUnusable, ino)
	}
	if err != nil {
		return err
	}
	f.mu.Lock()
	err = f.applyIntentLocked(c.staging, rec)
	if err == nil {
		f.intent.Store(true)
		err = c.commitLocked(ctx, f, true, false)
	}
	f.mu.Unlock()
	c.mu.Lock()
	f.refs--
	c.mu.Unlock()
	return errors.Join(err, c.forgetIfIdle(f))
}

// applyIntentLocked puts rec's changes back on f, freshly loaded.
func (f *openFile) applyIntentLocked(dir string, rec *meta.Intent) error {
	if chunksDigest(f.chunks) != rec.Base {
		return fmt.Errorf("%w: the file changed after it", errIntentUnusable)
	}
	if rec.Staging == "" || filepath.Base(rec.Staging) != rec.Staging {
		return fmt.Errorf("%w: bad staging file name", errIntentUnusable)
	}
	sf, err := os.OpenFile(filepath.Join(dir, rec.Staging), os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("%w: %v", errIntentUnusable, err)
	}
	s := &staging{dir: dir, f: sf, key: rec.Key, name: rec.Staging, named: true}
	if err := s.setKey(); err != nil {
		sf.Close()
		return err
	}
	if err := s.verify(rec.Written); err != nil {
		sf.Close()
		if errors.Is(err, errStagingDamaged) {
			// No commit could take these bytes, and retrying would fail
			// every snapshot: the file keeps its last committed content.
			return fmt.Errorf("%w: %v", errIntentUnusable, err)
		}
		return err
	}
	f.closeStagingLocked()
	f.stage = s
	f.size, f.mtime, f.ctime, f.changed = rec.Size, rec.Mtime, rec.Ctime, true
	f.attrs = pendingAttrs{mode: rec.Mode, uid: rec.UID, gid: rec.GID, atime: rec.Atime}
	f.dirty, f.written = nil, nil
	for _, r := range rec.Dirty {
		f.dirty, _ = f.dirty.add(r.Start, r.End)
	}
	for _, r := range rec.Written {
		f.written, _ = f.written.add(r.Start, r.End)
	}
	f.points = rec.Points
	f.dirtyBytes.Store(f.written.total())
	return nil
}
