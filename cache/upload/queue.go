// Package upload owns the mount's durable upload queue: the chunks a
// snapshot walk decided the repository needs (the state directory's q
// keys, mirrored in memory with their byte count and the time the queue
// last went from empty to not empty), and the uploader that drains it.
//
// Only a snapshot walk sets the queue (Set), to exactly the chunks of the
// files it included (DESIGN invariant 7: commits never queue). A key is
// removed only after the repository's Flush stored the pack and index
// holding its chunk, or by the next walk if that no longer needs it.
//
// The package reaches the rest of the mount through small interfaces: the
// state directory's transactions (Store), where chunk bytes come from
// (Chunks) and where blobs go (Sink). Package cache implements them over
// Badger and the repository; the tests here use in-memory fakes.
package upload

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/keepfs/keepfs/cache/meta"
	"github.com/keepfs/keepfs/repo/crypto"
)

// Txn is what the queue needs of a state-directory write transaction.
type Txn interface {
	Set(key, value []byte) error
	Delete(key []byte) error
}

// Store runs write transactions on the state directory.
type Store interface {
	// Update runs fn in one transaction; fn may run more than once (a
	// conflict retries it), so it must have no other effects.
	Update(fn func(Txn) error) error
}

// Chunks is the local chunk store the queue uploads from.
type Chunks interface {
	// Sizes returns the plaintext size of every chunk in ids as kept
	// locally, failing if one is not kept.
	Sizes(ids []crypto.ID) (map[crypto.ID]int64, error)
	// WithChunk calls fn with id's plaintext, valid only during the call.
	// Without calling fn it fails with an error wrapping os.ErrNotExist if
	// the chunk is not kept locally.
	WithChunk(id crypto.ID, fn func(data []byte) error) error
	// Uploaded hears of chunks the repository now holds (sizes[i] is
	// ids[i]'s): they are clean now, so evictable.
	Uploaded(ids []crypto.ID, sizes []int)
	// Lost hears of chunks that were queued but missing locally, whose
	// chunk keys the queue deleted with their queue keys.
	Lost(ids []crypto.ID)
}

// Sink is where blobs go: the repository's blob writer.
type Sink interface {
	SaveData(ctx context.Context, id crypto.ID, data []byte) error
	// Flush uploads what is buffered and indexes it.
	Flush(ctx context.Context) error
	// Has reports whether the repository's index holds data blob id.
	Has(id crypto.ID) bool
	// DiscardUnflushed drops blobs saved but not yet flushed; it returns
	// how many.
	DiscardUnflushed() int
}

// Config wires a Queue to the rest of the mount.
type Config struct {
	Store  Store
	Chunks Chunks
	Sink   Sink
	// Changes returns the namespace's change count: the uploader works
	// only on a queue a walk decided for the namespace as it is now.
	Changes func() uint64
	// Contact, if set, hears of every upload's outcome (nil: success).
	Contact func(error)
	// Now is the clock of the queue's age (default time.Now).
	Now func() time.Time
	Log *slog.Logger
}

// Queue is the durable upload queue and its uploader.
type Queue struct {
	store   Store
	chunks  Chunks
	sink    Sink
	changes func() uint64
	contact func(error)
	now     func() time.Time
	log     *slog.Logger

	// hold is held by every upload pass and by whoever else needs the
	// repository's blob writer to itself (SaveBlob batches vs Flush: repo
	// forbids the overlap; a prune rewriting the index).
	hold sync.Mutex

	mu    sync.Mutex // guards the fields below; a leaf
	ids   map[crypto.ID]int64
	bytes int64
	since time.Time // when the queue last became non-empty; zero while empty
	seq   uint64    // change count of the walk that set the queue (0: none yet)
	// stopSeq is the change count at the last Stop: while seq is below
	// it, the queue was decided under exclusion rules that have changed
	// since, and nothing of it may leave.
	stopSeq uint64
	// stopPass ends the pass running now, if any (Stop).
	stopPass context.CancelCauseFunc

	kick chan struct{} // wakes the uploader

	// urgent counts callers waiting for the queue to drain (sync,
	// unmount); while there are any, passes use every CPU.
	urgent atomic.Int32
}

// New returns an empty queue; Restore fills it from the state directory.
func New(cfg Config) *Queue {
	q := &Queue{store: cfg.Store, chunks: cfg.Chunks, sink: cfg.Sink, changes: cfg.Changes,
		contact: cfg.Contact, now: cfg.Now, log: cfg.Log,
		ids: map[crypto.ID]int64{}, kick: make(chan struct{}, 1)}
	if q.now == nil {
		q.now = time.Now
	}
	if q.log == nil {
		q.log = slog.Default()
	}
	if q.contact == nil {
		q.contact = func(error) {}
	}
	return q
}

// Restore adds entries found in the state directory at start (id → plaintext
// size). They are not decided by any walk of this session: the uploader
// leaves them to the first snapshot.
func (q *Queue) Restore(ids map[crypto.ID]int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for id, size := range ids {
		if _, ok := q.ids[id]; !ok {
			q.ids[id] = size
			q.bytes += size
		}
	}
}

// Hold gives the caller the repository's blob writer to itself: no upload
// pass runs until release is called.
func (q *Queue) Hold() (release func()) {
	q.hold.Lock()
	return q.hold.Unlock
}

// Forget drops id from the in-memory queue; the caller deleted its queue
// key (an erase purging the chunk).
func (q *Queue) Forget(id crypto.ID) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if n, ok := q.ids[id]; ok {
		q.bytes -= n
		delete(q.ids, id)
	}
}

// State reports the queue for status: entries, plaintext bytes and since
// when it has not been empty (zero when it is).
func (q *Queue) State() (n int, bytes int64, since time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.noteLocked()
	return len(q.ids), q.bytes, q.since
}

// noteLocked keeps since true to the queue: set when it has entries and
// was not, cleared when it is empty. The uploader calls it whenever it is
// woken and after each pass, State before reporting. The caller holds mu.
func (q *Queue) noteLocked() {
	switch {
	case len(q.ids) == 0:
		q.since = time.Time{}
	case q.since.IsZero():
		q.since = q.now()
	}
}

func (q *Queue) note() {
	q.mu.Lock()
	q.noteLocked()
	q.mu.Unlock()
}

func (q *Queue) queuedBytes() int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.bytes
}

// Decided reports whether the queue is what a snapshot walk decided for
// the namespace as it is now: nothing changed since that walk. Only then
// may the background uploader work on it; otherwise the next snapshot
// decides again (after a restart, always).
func (q *Queue) Decided() bool {
	q.mu.Lock()
	seq, stopped := q.seq, q.stoppedLocked()
	q.mu.Unlock()
	return seq != 0 && !stopped && seq == q.changes()
}

// ErrStopped: the exclusion rules changed after the walk that set the
// queue (Stop), so nothing more of it is uploaded until a later walk sets
// it again.
var ErrStopped = errors.New("upload stopped: a .gdprignore changed since the walk that queued it")

// Stop is called when a .gdprignore changed, at change count seq: the
// walk that set the queue may have included files the new rules exclude
// (DESIGN invariant 7 holds until the bytes leave, not only until the
// walk). The pass running now ends before its next chunk and drops what
// it had not sent; no pass starts until Set is called by a walk covering
// seq.
func (q *Queue) Stop(seq uint64) {
	q.mu.Lock()
	q.stopSeq = max(q.stopSeq, seq)
	stop := q.stopPass
	q.mu.Unlock()
	if stop != nil {
		stop(ErrStopped)
	}
}

func (q *Queue) stoppedLocked() bool { return q.seq < q.stopSeq }

// Batch bounds the queue keys one transaction changes.
const Batch = 4096

// Set makes the queue exactly need: chunks of files the walk of the
// namespace at change count seq included. Entries an earlier walk left (a
// snapshot whose upload failed) go, since their files may have been
// excluded or removed since. Holding the writer, no upload pass overlaps.
func (q *Queue) Set(need []crypto.ID, seq uint64) error {
	defer q.Hold()()
	// A failed pass may have left chunks in the repository's unfinished
	// pack; the next Flush would ship them whatever this walk decided.
	if n := q.sink.DiscardUnflushed(); n > 0 {
		q.log.Debug("dropped blobs a failed upload left unsent; the queue decides again", "blobs", n)
	}
	want, err := q.chunks.Sizes(need)
	if err != nil {
		return err
	}
	// The queue keys change in batches: after a cp -a of a large tree one
	// transaction holding them all is more than Badger takes ("Txn is too
	// big"). The in-memory queue follows each committed batch, so a
	// failure halfway leaves the two agreeing and the next walk decides
	// again from there.
	type change struct {
		id   crypto.ID
		size int64 // -1: no longer wanted
	}
	var changes []change
	q.mu.Lock()
	for id, size := range want {
		if _, ok := q.ids[id]; !ok {
			changes = append(changes, change{id, size})
		}
	}
	for id := range q.ids {
		if _, ok := want[id]; !ok {
			changes = append(changes, change{id, -1})
		}
	}
	q.mu.Unlock()
	for len(changes) > 0 {
		batch := changes[:min(len(changes), Batch)]
		changes = changes[len(batch):]
		err := q.store.Update(func(txn Txn) error {
			for _, ch := range batch {
				var err error
				if ch.size < 0 {
					err = txn.Delete(meta.QueueKey(ch.id))
				} else {
					err = txn.Set(meta.QueueKey(ch.id), nil)
				}
				if err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("set the upload queue: %w", err)
		}
		q.mu.Lock()
		for _, ch := range batch {
			if ch.size < 0 {
				q.bytes -= q.ids[ch.id]
				delete(q.ids, ch.id)
			} else {
				q.ids[ch.id] = ch.size
				q.bytes += ch.size
			}
		}
		q.mu.Unlock()
	}
	q.mu.Lock()
	q.bytes = 0
	for _, size := range q.ids {
		q.bytes += size
	}
	q.seq = seq
	q.mu.Unlock()
	return nil
}

// Wake nudges the uploader.
func (q *Queue) Wake() {
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

// MaxBackoff bounds the uploader's wait between failed passes (it is
// jittered to between half and one and a half times this): the queue
// starts moving within seconds of the remote's return.
const MaxBackoff = 10 * time.Second

// The uploader starts a pass once Eager bytes are queued, or Delay after
// the first wake.
const (
	Eager = 8 << 20
	Delay = 2 * time.Second
)

// Run is the uploader: it drains the queue in the background whenever
// woken, backing off while the remote fails, until ctx ends.
func (q *Queue) Run(ctx context.Context) {
	backoff := time.Duration(0)
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-q.kick:
			q.note()
			// Let small commits gather into fuller packs; Sync and Close
			// drain at once without waiting here.
			deadline := time.After(Delay)
		gather:
			for q.queuedBytes() < Eager {
				select {
				case <-ctx.Done():
					return
				case <-q.kick:
				case <-deadline:
					break gather
				}
			}
		case <-retry:
		}
		retry = nil
		q.note()
		if !q.Decided() {
			// Something changed since the walk that queued these: the
			// next snapshot decides again what may leave (DESIGN
			// invariant 7), and uploads it.
			continue
		}
		more, err := q.pass(ctx)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, ErrStopped) {
			continue // the next snapshot decides again; the remote is fine
		}
		if err != nil {
			q.contact(err)
			q.log.Warn("upload failed; will retry", "err", err, "in", backoff)
			backoff = min(max(2*backoff, 200*time.Millisecond), MaxBackoff)
			retry = time.After(backoff/2 + time.Duration(rand.Int64N(int64(backoff))))
			continue
		}
		backoff = 0
		if more {
			q.Wake()
		}
	}
}

// Drain uploads until the queue is empty, retrying failures until ctx
// ends.
func (q *Queue) Drain(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	for {
		more, err := q.pass(ctx)
		if err == nil && !more {
			return nil
		}
		if errors.Is(err, ErrStopped) {
			return err
		}
		if err != nil {
			q.contact(err)
			select {
			case <-ctx.Done():
				return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
		}
	}
}

// passBytes bounds the plaintext one pass uploads before its Flush, so
// queue entries are retired as the upload goes.
const passBytes = 256 << 20

// pass uploads queued chunks, flushes, and retires the queue entries the
// index now holds. more reports that entries are left.
func (q *Queue) pass(ctx context.Context) (more bool, err error) {
	defer q.Hold()()
	// The in-memory copy of the queue saves iterating over Badger's
	// tombstones of retired entries on every pass.
	var ids []crypto.ID
	var total int64
	q.mu.Lock()
	if q.stoppedLocked() {
		q.mu.Unlock()
		return false, ErrStopped
	}
	ctx, stop := context.WithCancelCause(ctx)
	q.stopPass = stop
	defer func() {
		q.mu.Lock()
		q.stopPass = nil
		q.mu.Unlock()
		// Only now: Flush waited for every pack upload the pass began.
		stop(nil)
	}()
	for id, size := range q.ids {
		if total >= passBytes {
			more = true
			break
		}
		ids = append(ids, id)
		total += size
	}
	q.mu.Unlock()
	if len(ids) == 0 {
		return false, nil
	}
	if err := q.upload(ctx, ids); err != nil {
		if context.Cause(ctx) == ErrStopped {
			return false, ErrStopped
		}
		return more, err
	}
	q.contact(nil)
	return more, nil
}

// workers is how many chunks are compressed and sealed at once: half the
// CPUs, so that a background upload never takes every core from the
// user's own reads and writes through the mount (on 2 cores, reading a
// file back while its upload ran went from about 120 to 200 MB/s with one
// worker). While someone waits for the drain (Urgent: a sync or an
// unmount) the upload is what the user waits for, so it takes every CPU.
func (q *Queue) workers() int {
	n := runtime.GOMAXPROCS(0)
	if q.urgent.Load() > 0 {
		return min(n, 8)
	}
	return min(max(n/2, 1), 4)
}

// Urgent marks a caller waiting for the queue to drain until release is
// called: passes started meanwhile use every CPU (see workers).
func (q *Queue) Urgent() (release func()) {
	q.urgent.Add(1)
	return func() { q.urgent.Add(-1) }
}

// upload saves ids, flushes, and retires their queue entries. The caller
// holds the writer.
func (q *Queue) upload(ctx context.Context, ids []crypto.ID) error {
	// Not errgroup.WithContext: SaveData hands its ctx to the background
	// pack upload, which must outlive this group.
	var g errgroup.Group
	g.SetLimit(q.workers())
	sizes := make([]int, len(ids))
	lost := make([]bool, len(ids))
	for i, id := range ids {
		g.Go(func() error {
			if ctx.Err() != nil {
				return context.Cause(ctx) // stopped: not one more chunk
			}
			read := false
			err := q.chunks.WithChunk(id, func(data []byte) error {
				read = true
				sizes[i] = len(data)
				return q.sink.SaveData(ctx, id, data)
			})
			if !read && errors.Is(err, os.ErrNotExist) {
				// Nothing to upload, ever: keeping the entry would wedge
				// the queue. A snapshot needing it reports the loss.
				q.log.Error("queued chunk missing from the local state; dropping its queue entry", "chunk", id.Short())
				lost[i] = true
				return nil
			}
			if !read && err != nil {
				return fmt.Errorf("queued chunk %s: %w", id.Short(), err)
			}
			return err
		})
	}
	werr := g.Wait()
	if context.Cause(ctx) == ErrStopped {
		// What waits in the unfinished pack was decided under the old
		// rules: it must not ride out with the Flush below.
		q.sink.DiscardUnflushed()
	}
	// Flush even after a failed save: it indexes the packs that did
	// arrive and clears the writer's upload error, without which every
	// later SaveData would fail and the queue would never drain again.
	if err := errors.Join(werr, q.sink.Flush(ctx)); err != nil {
		return err
	}
	// Retired in batches of up to Batch keys (a lost chunk deletes two), as
	// Set queues them: a pass of many small chunks (up to passBytes of
	// them) deletes more keys than one transaction takes, and a "Txn is
	// too big" here would fail every pass again. An entry is retired only
	// once the index holds its chunk, so a batch failing after others
	// committed leaves entries that the next pass finds already stored.
	retired := 0
	isRetired := make([]bool, len(ids))
	var rerr error
	for start := 0; start < len(ids); start += Batch / 2 {
		end := min(start+Batch/2, len(ids))
		var done []int
		var gone []crypto.ID
		err := q.store.Update(func(txn Txn) error {
			done, gone = done[:0], gone[:0]
			for i := start; i < end; i++ {
				id := ids[i]
				if !lost[i] && !q.sink.Has(id) {
					continue
				}
				if err := txn.Delete(meta.QueueKey(id)); err != nil {
					return err
				}
				if lost[i] {
					// Its key names nothing: the next snapshot must see the
					// chunk as lost, not queue it again.
					if err := txn.Delete(meta.ChunkKey(id)); err != nil {
						return err
					}
					gone = append(gone, id)
				}
				done = append(done, i)
			}
			return nil
		})
		if err != nil {
			rerr = fmt.Errorf("retire upload queue entries: %w", err)
			break
		}
		if len(gone) > 0 {
			q.chunks.Lost(gone) // their c keys went: reads must miss them
		}
		q.mu.Lock()
		for _, i := range done {
			q.bytes -= q.ids[ids[i]]
			delete(q.ids, ids[i])
			isRetired[i] = true
		}
		q.noteLocked()
		q.mu.Unlock()
		retired += len(done)
	}
	// Only what was retired: an entry kept is still the queue's, and its
	// chunk must not count as clean (evictable) yet.
	var up []crypto.ID
	var upSizes []int
	for i, id := range ids {
		if !lost[i] && isRetired[i] {
			up = append(up, id)
			upSizes = append(upSizes, sizes[i])
		}
	}
	q.chunks.Uploaded(up, upSizes)
	if rerr != nil {
		return rerr
	}
	if retired < len(ids) {
		return fmt.Errorf("%d queued chunks are still not in the repository after a flush", len(ids)-retired)
	}
	return nil
}
