package snapshot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/user"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keepfs/keepfs/cache/meta"
	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/pack"
)

// Scheduler decides when a snapshot is taken and stores it: it counts the
// changes a snapshot would see, takes the periodic snapshots once changes
// pause, and for each one walks the namespace, has the upload queue
// become what the walk needs and drain, then saves the trees and the
// snapshot. It owns the change count, the last snapshot, the lost files
// and the callbacks that hear of new snapshots; the tree cache it uses is
// a Trees.
//
// Lock order: run (one snapshot at a time) → the mount's locks → mu → the
// tree cache's mu. mu is a leaf but for the tree cache.
type Scheduler struct {
	cfg   SchedulerConfig
	trees *Trees

	run sync.Mutex // one snapshot at a time

	mu         sync.Mutex // guards the fields below
	changeSeq  uint64     // bumped by every change a snapshot would see
	snapSeq    uint64     // changeSeq the last snapshot covered
	force      bool       // store the next snapshot even if the tree is unchanged (before a prune)
	last       *repo.Snapshot
	lost       []string // the paths of files whose content the last walk found lost
	onSnap     []func(*repo.Snapshot)
	lastChange time.Time // of the last change, for the periodic snapshot's quiet wait
	rulesSeq   uint64    // changeSeq at the last change of a .gdprignore
	// epoch is bumped when the repository changed under the mount (another
	// client pruned or erased: DropTrees, Rewritten): a walk from before
	// may name blobs that are gone, and must not be stored.
	epoch uint64

	treesBuilt    atomic.Int64 // directory trees encoded by walks
	walkInodes    atomic.Int64 // inodes walks read
	treesUploaded atomic.Int64 // of the trees built, those new to the repository
}

// Host is what a snapshot needs of the mount besides its parts below.
type Host interface {
	// CommitPending commits every file an fsync promised, so that the
	// snapshot sees it.
	CommitPending(ctx context.Context) error
	// View opens one consistent, read-only view of the namespace;
	// release ends it.
	View() (ns Namespace, release func())
}

// Queue is the durable upload queue (package cache/upload).
type Queue interface {
	// Set makes the queue exactly need, decided by a walk covering change
	// count seq.
	Set(need []crypto.ID, seq uint64) error
	// Drain returns once the queue is empty and its blobs indexed.
	Drain(ctx context.Context) error
	// Wake has the uploader try again.
	Wake()
	// Hold stops uploads until release.
	Hold() (release func())
	// Stop ends uploads of what a walk before change count seq decided,
	// until Set is called by a walk covering it (a .gdprignore changed).
	Stop(seq uint64)
}

// Writer is the repository a snapshot is stored in.
type Writer interface {
	Repository
	SaveTree(ctx context.Context, b []byte) error
	SaveSnapshot(ctx context.Context, sn *repo.Snapshot) error
	// Stats are the totals written so far.
	Stats() repo.WriteStats
}

// SchedulerConfig wires a Scheduler.
type SchedulerConfig struct {
	Host       Host
	Queue      Queue
	Repository Writer
	// Store keeps the last snapshot's id (LastKey) and the lost files
	// (LostKey) across restarts.
	Store Store
	Trees *Trees
	// Interval is the period of the periodic snapshots.
	Interval time.Duration
	// Now is the clock snapshots are named by.
	Now func() time.Time
	// Contact hears the outcome of each snapshot's dealings with the
	// remote.
	Contact func(error)
	// Stored, if set, is called after each snapshot is stored, while
	// uploads are held: every chunk uploaded so far is named by it or is
	// no longer in the live tree (the chunk store unpins them).
	Stored func()
	// Vanished is the error a snapshot fails with when a chunk it needs
	// went missing locally before its upload (wrapping ErrChunkVanished);
	// nil for ErrChunkVanished itself.
	Vanished error
	// ParentGone, if set, is asked before each snapshot is stored whether
	// the remote lost its parent (it went back to an older copy of
	// itself). If so it brings the mount in line first (the scheduler's
	// run is held; an error then says that failed), and the snapshot is
	// walked again (ErrRepoChanged).
	ParentGone func(ctx context.Context, parent *repo.Snapshot) (bool, error)
	Log        *slog.Logger
}

// ErrChunkVanished: a chunk a snapshot needed went missing from the local
// state before its upload, so that snapshot must not be stored; the next
// walk sees the file as lost.
var ErrChunkVanished = errors.New("went missing from the local state before its upload")

// ErrRepoChanged: another client pruned or erased between a snapshot's
// walk and its store (the mount's lock lapsed meanwhile, and reconcile ran
// when it was taken again), so the walk may name blobs and files that are
// gone: the snapshot is not stored, and the next walk decides again.
var ErrRepoChanged = errors.New("the repository changed under the snapshot (another client pruned or erased)")

// LastKey holds the id of the last snapshot; LostKey the lost files,
// NUL-separated (no path holds a NUL).
var (
	LastKey = meta.StateKey("lastsnap")
	LostKey = meta.StateKey("lost")
)

// NewScheduler returns a scheduler with no changes counted; Restore sets
// what the last session left.
func NewScheduler(cfg SchedulerConfig) *Scheduler {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Contact == nil {
		cfg.Contact = func(error) {}
	}
	if cfg.Vanished == nil {
		cfg.Vanished = ErrChunkVanished
	}
	return &Scheduler{cfg: cfg, trees: cfg.Trees}
}

// Restore sets the last snapshot and the lost files a session left, at
// Open, and counts a change: commits may have happened after the last
// snapshot, before a crash, so the first snapshot compares the tree with
// the last one.
func (s *Scheduler) Restore(last *repo.Snapshot, lost []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.changeSeq = 1
	s.last = last
	s.lost = lost
}

// Changed records that something a snapshot would show changed.
func (s *Scheduler) Changed() {
	s.mu.Lock()
	s.changeSeq++
	s.lastChange = time.Now()
	s.mu.Unlock()
}

// RulesChanged records that a .gdprignore was created, written, renamed,
// removed or had its mode changed: a change that may reach any directory
// below it, and one after which nothing the last walk decided may leave
// until a new walk has applied the new rules. Excluded bytes must not
// leave the machine even when the .gdprignore comes a moment after the
// file, once the upload has begun (DESIGN invariant 7): the running
// upload stops before its next chunk, and the snapshot waiting for it is
// taken again.
func (s *Scheduler) RulesChanged() {
	s.mu.Lock()
	s.changeSeq++
	s.lastChange = time.Now()
	s.rulesSeq = s.changeSeq
	seq := s.changeSeq
	s.mu.Unlock()
	s.cfg.Queue.Stop(seq)
}

// ErrRulesChanged: a .gdprignore changed between a snapshot's walk and the
// end of its upload, so that snapshot was not stored.
var ErrRulesChanged = errors.New("a .gdprignore changed during the snapshot; it is taken again")

// InvalidateAll records a change that may reach any directory: every
// cached tree goes, and so do those of a walk running now.
func (s *Scheduler) InvalidateAll() {
	s.mu.Lock()
	s.changeSeq++
	s.lastChange = time.Now()
	// Under mu with the change count, so that a snapshot starting now
	// either sees the count or has its walk's trees dropped.
	s.trees.InvalidateAll()
	s.mu.Unlock()
}

// Changes is the change count, which the upload queue compares with the
// one its walk covered.
func (s *Scheduler) Changes() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changeSeq
}

// Pending reports whether something changed since the last snapshot.
func (s *Scheduler) Pending() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changeSeq != s.snapSeq
}

// Force has the next snapshot stored even if the tree did not change
// (retention judges snapshots by age, before a prune), and counts a
// change.
func (s *Scheduler) Force() {
	s.mu.Lock()
	s.changeSeq++
	s.force = true
	s.mu.Unlock()
}

// Last returns the last snapshot, nil if none is known.
func (s *Scheduler) Last() *repo.Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// Lost returns the paths of the files whose content the last walk found
// lost.
func (s *Scheduler) Lost() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string{}, s.lost...)
}

// DropTrees drops every cached tree (the repository may no longer hold
// them), counts a change, and returns the last snapshot.
func (s *Scheduler) DropTrees() *repo.Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.trees.DropAll()
	s.changeSeq++
	s.epoch++
	return s.last
}

// ForgetLast forgets the last snapshot if it is still last (the
// repository no longer holds it, so the next must not name it as its
// parent) and counts a change, so that a new one is taken at the next
// chance.
func (s *Scheduler) ForgetLast(last *repo.Snapshot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.last == last {
		s.last = nil
		s.changeSeq++
	}
}

// Rewritten records that the repository's snapshots were rewritten under
// the mount (an erase): cached trees are stale, newest is the last
// snapshot now. It returns the callbacks to tell.
func (s *Scheduler) Rewritten(newest *repo.Snapshot) []func(*repo.Snapshot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.trees.DropAll()
	s.last = newest
	s.changeSeq++
	s.epoch++
	return append([]func(*repo.Snapshot){}, s.onSnap...)
}

// Callbacks returns the callbacks registered with OnSnapshot and the last
// snapshot, for a change of the set of snapshots made elsewhere.
func (s *Scheduler) Callbacks() ([]func(*repo.Snapshot), *repo.Snapshot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]func(*repo.Snapshot){}, s.onSnap...), s.last
}

// OnSnapshot registers fn to be called after each new snapshot is stored.
func (s *Scheduler) OnSnapshot(fn func(*repo.Snapshot)) {
	s.mu.Lock()
	s.onSnap = append(s.onSnap, fn)
	s.mu.Unlock()
}

// Hold stops snapshots until release (while the repository is rewritten
// under the mount).
func (s *Scheduler) Hold() (release func()) {
	s.run.Lock()
	return s.run.Unlock
}

// TryHold is Hold if no snapshot runs now; ok is false if one does.
func (s *Scheduler) TryHold() (release func(), ok bool) {
	if !s.run.TryLock() {
		return nil, false
	}
	return s.run.Unlock, true
}

// Counters are the walks' running totals: trees built, trees uploaded,
// inodes read.
func (s *Scheduler) Counters() (built, uploaded, inodes int64) {
	return s.treesBuilt.Load(), s.treesUploaded.Load(), s.walkInodes.Load()
}

// Sync takes a snapshot of everything committed and returns once the
// remote holds it. With nothing changed since the last snapshot, it
// returns that one.
func (s *Scheduler) Sync(ctx context.Context) (*repo.Snapshot, error) {
	return s.IfChanged(ctx, true)
}

// Loop takes the periodic snapshots until ctx ends it, then closes done.
// One attempt may take at most a few intervals, so that a remote that is
// down does not hold up snapshots forever.
func (s *Scheduler) Loop(ctx context.Context, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if !s.waitQuiet(ctx) {
				return
			}
			sctx, cancel := context.WithTimeout(ctx, max(3*s.cfg.Interval, 30*time.Second))
			_, err := s.ifChanged(sctx, false, false)
			switch {
			case err == nil || ctx.Err() != nil:
			case errors.Is(err, ErrRulesChanged):
				s.cfg.Log.Info("periodic snapshot abandoned; the next one applies the new .gdprignore", "err", err)
			default:
				s.cfg.Log.Warn("periodic snapshot failed; will retry", "err", err)
			}
			cancel()
		}
	}
}

// Periodic snapshots wait for snapshotQuiet without changes, so that one
// does not catch a tree half-way through a copy (a file copied before the
// .gdprignore that excludes it), but never for longer than twice the
// interval or snapshotMaxDelay: a writer that never stops still gets
// snapshots.
// maxRulesRetries bounds the walks a Sync takes again because a
// .gdprignore kept changing during their uploads.
const maxRulesRetries = 8

const (
	snapshotQuiet    = time.Second
	snapshotMaxDelay = time.Minute
)

// waitQuiet waits until no change came for snapshotQuiet, or until the
// longest postponement; false if ctx ended first.
func (s *Scheduler) waitQuiet(ctx context.Context) bool {
	deadline := time.Now().Add(min(2*s.cfg.Interval, snapshotMaxDelay))
	for {
		s.mu.Lock()
		wait := snapshotQuiet - time.Since(s.lastChange)
		s.mu.Unlock()
		if wait <= 0 || !time.Now().Add(wait).Before(deadline) {
			return ctx.Err() == nil
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(wait):
		}
	}
}

// IfChanged stores a snapshot if anything changed since the last one (or,
// with always, if there is no snapshot at all yet).
//
// OnSnapshot callbacks run after run is released, so that they may call
// back into the mount (even Sync) without deadlocking.
func (s *Scheduler) IfChanged(ctx context.Context, always bool) (*repo.Snapshot, error) {
	return s.ifChanged(ctx, always, true)
}

// ifChanged is IfChanged; a periodic snapshot (settle false) does not walk
// again when a .gdprignore changed during its upload.
func (s *Scheduler) ifChanged(ctx context.Context, always, settle bool) (*repo.Snapshot, error) {
	sn, fns, err := s.locked(ctx, always)
	for tries := 0; tries < maxRepoChangedRetries && errors.Is(err, ErrRepoChanged); tries++ {
		s.cfg.Log.Info("the repository changed under a snapshot; walking again")
		sn, fns, err = s.locked(ctx, always)
	}
	if errors.Is(err, ErrChunkVanished) {
		// The upload found the loss and dropped the chunk's key: a second
		// walk sees the file as lost and backs up everything else.
		sn, fns, err = s.locked(ctx, always)
	}
	// A sync walks again under the new rules at once; a periodic snapshot
	// leaves it to the next period, after the quiet wait, since whoever
	// writes .gdprignore files may not be done.
	for tries := 0; settle && tries < maxRulesRetries && errors.Is(err, ErrRulesChanged); tries++ {
		sn, fns, err = s.locked(ctx, always)
	}
	for _, fn := range fns {
		fn(sn)
	}
	return sn, err
}

func (s *Scheduler) locked(ctx context.Context, always bool) (*repo.Snapshot, []func(*repo.Snapshot), error) {
	at, err := s.cut(ctx)
	if err != nil {
		return nil, nil, err
	}
	defer s.run.Unlock()
	s.mu.Lock()
	seq := s.changeSeq
	epoch := s.epoch
	last := s.last
	if seq == s.snapSeq && (last != nil || !always) {
		s.mu.Unlock()
		if always && last != nil && s.cfg.ParentGone != nil {
			// A sync vouches that the remote holds the snapshot it
			// returns. Unanswered (soon: nothing else waits on the
			// remote here), it still does, as stored; gone, the tree is
			// stored again.
			actx, cancel := context.WithTimeout(ctx, unchangedCheckWait)
			gone, err := s.cfg.ParentGone(actx, last)
			cancel()
			if gone && err != nil {
				return nil, nil, err
			} else if gone {
				return nil, nil, ErrRepoChanged
			}
		}
		return last, nil, nil
	}
	// Under mu with the change count read: a change counted after it
	// makes the walk's trees for its directories stale.
	s.trees.BeginWalk()
	s.mu.Unlock()
	defer s.trees.EndWalk()
	sn, w, err := s.take(ctx, last, seq, epoch, at)
	if errors.Is(err, ErrRulesChanged) || errors.Is(err, ErrRepoChanged) {
		return nil, nil, err // not the remote's doing
	}
	if err != nil {
		s.cfg.Contact(err)
		return nil, nil, fmt.Errorf("snapshot: %w", err)
	}
	s.mu.Lock()
	lostChanged := !slices.Equal(s.lost, w.Lost)
	s.lost = w.Lost
	s.mu.Unlock()
	if lostChanged {
		// Kept across restarts, so that status lists them before the
		// first snapshot of the next mount.
		v := []byte(strings.Join(w.Lost, "\x00"))
		if err := s.cfg.Store.Update(func(txn Txn) error { return txn.Set(LostKey, v) }); err != nil {
			s.cfg.Log.Warn("cannot record the lost files", "err", err)
		}
	}
	s.trees.Install(w.Built)
	if sn == last {
		// The tree is what the last snapshot already holds.
		s.mu.Lock()
		s.snapSeq = seq
		s.mu.Unlock()
		return last, nil, nil
	}
	s.mu.Lock()
	s.snapSeq = seq
	s.last = sn
	fns := append([]func(*repo.Snapshot){}, s.onSnap...)
	s.mu.Unlock()
	if err := s.cfg.Store.Update(func(txn Txn) error { return txn.Set(LastKey, sn.ID[:]) }); err != nil {
		s.cfg.Log.Warn("cannot record the last snapshot", "err", err)
	}
	s.cfg.Contact(nil)
	s.cfg.Log.Info("snapshot stored", "name", sn.Name(), "id", sn.ID.Short(), "blobs_new", sn.Stats.BlobsNew)
	return sn, fns, nil
}

// unchangedCheckWait bounds how long a sync of an unchanged tree waits
// for the remote to say whether it still holds the last snapshot.
const unchangedCheckWait = 5 * time.Second

// maxCutTries bounds the cuts taken again because another snapshot was
// stored between a cut and the run lock.
const maxCutTries = 3

// cut picks the time a snapshot is stamped with and returns with run
// held. A point in time resolves to the newest snapshot at or before it,
// so the stamp is taken before the fsyncs promised so far are committed
// and the namespace is read: everything closed or fsynced before the stamp
// is in the snapshot. Snapshots of one second are named NAME, NAME-1 …
// (repo.UniqueNames) in .versions and by every command, so cut neither
// waits for the next second nor stamps ahead of the clock. If another
// snapshot was stored before run was taken, cut starts again, so that
// stamps follow the parent chain.
func (s *Scheduler) cut(ctx context.Context) (time.Time, error) {
	for tries := 0; ; tries++ {
		s.mu.Lock()
		last := s.last
		s.mu.Unlock()
		at := s.cfg.Now().UTC()
		if err := s.cfg.Host.CommitPending(ctx); err != nil {
			return time.Time{}, fmt.Errorf("commit fsynced files: %w", err)
		}
		s.run.Lock()
		s.mu.Lock()
		same := s.last == last
		s.mu.Unlock()
		if same || tries >= maxCutTries {
			return at, nil
		}
		s.run.Unlock()
	}
}

// rulesChangedSince reports whether a .gdprignore changed after change
// count seq.
func (s *Scheduler) rulesChangedSince(seq uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rulesSeq > seq
}

// repoChangedSince reports whether the repository changed under the mount
// after epoch.
func (s *Scheduler) repoChangedSince(epoch uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.epoch != epoch
}

// maxRepoChangedRetries bounds the walks a snapshot takes again because
// the repository changed under it.
const maxRepoChangedRetries = 3

// take stores a snapshot of the namespace, or returns parent if nothing
// changed since; the walk tells which trees it built and which files it
// found lost. seq is the change count the walk covers at least, epoch the
// repository's as the mount saw it before the walk, at the snapshot's
// time (cut).
func (s *Scheduler) take(ctx context.Context, parent *repo.Snapshot, seq, epoch uint64, at time.Time) (*repo.Snapshot, *Walk, error) {
	cached := s.trees.Copy()
	r := s.cfg.Repository
	ns, release := s.cfg.Host.View()
	w := New(ctx, Config{Namespace: ns, Repository: r,
		Cached: cached, Parent: parent, Log: s.cfg.Log, Inodes: &s.walkInodes, Built: &s.treesBuilt})
	root, err := w.Root()
	release()
	if err != nil {
		return nil, nil, err
	}
	if len(w.Lost) > 0 {
		s.cfg.Log.Error("files whose content was lost keep their last backed-up version in the snapshot (left out if they had none); rewrite or delete them", "files", len(w.Lost), "first", w.Lost[0])
	}
	// Chunks first: the queue becomes exactly what this walk decided the
	// repository needs, then drains. Commits never queue, so this is the
	// only way a chunk is ever uploaded (DESIGN invariant 7).
	if err := s.cfg.Queue.Set(w.Need, seq); err != nil {
		return nil, nil, err
	}
	s.mu.Lock()
	force := s.force
	s.force = false
	s.mu.Unlock()
	if parent != nil && root.ID == parent.Tree && len(w.Need) == 0 && !force {
		return parent, w, nil
	}
	// What this snapshot adds is counted from before its drain: the data
	// it uploads as well as its trees.
	before := r.Stats()
	if err := s.cfg.Queue.Drain(ctx); err != nil {
		if s.rulesChangedSince(seq) {
			return nil, nil, ErrRulesChanged
		}
		// The uploader retries in the background for as long as nothing
		// changes; a change has the next snapshot decide again.
		s.cfg.Queue.Wake()
		return nil, nil, err
	}
	if s.rulesChangedSince(seq) {
		// Too late to stop bytes that already left, but the snapshot is
		// not stored: the next walk leaves the excluded files out of it.
		return nil, nil, ErrRulesChanged
	}
	for _, id := range w.Need {
		// Dropped by the uploader as missing locally: the remote must
		// never name a blob it does not hold. The next snapshot sees the
		// chunk as lost (lostContent).
		if !r.Has(pack.Data, id) {
			return nil, nil, fmt.Errorf("chunk %s: %w", id.Short(), s.cfg.Vanished)
		}
	}
	// The drain may have waited out a lapsed lock, and another client
	// pruned or erased meanwhile: what the walk deduplicated against may be
	// gone. (Writes are refused while the lock is lapsed, and the relock
	// bumps the epoch before it allows them again.)
	if s.repoChangedSince(epoch) {
		return nil, nil, ErrRepoChanged
	}
	// The walk deduplicated against the index: were the parent gone, the
	// remote may have lost what the index says it holds. Asked after the
	// drain, which waits out a remote that does not answer.
	if parent != nil && s.cfg.ParentGone != nil {
		if gone, err := s.cfg.ParentGone(ctx, parent); err != nil {
			return nil, nil, err
		} else if gone {
			return nil, nil, ErrRepoChanged
		}
	}
	defer s.cfg.Queue.Hold()()
	for _, b := range w.Trees {
		if err := r.SaveTree(ctx, b); err != nil {
			return nil, nil, err
		}
		s.treesUploaded.Add(1)
	}
	after := r.Stats()
	sn := &repo.Snapshot{Time: at, Tree: root.ID, Source: "keepfs mount", Stats: root.Stats}
	// Stored with the snapshot, for `keepfs snapshots`.
	sn.Stats.BlobsNew = after.BlobsNew - before.BlobsNew
	sn.Stats.BytesAdded = after.BytesStored - before.BytesStored
	sn.Hostname, _ = os.Hostname()
	if u, err := user.Current(); err == nil {
		sn.Username = u.Username
	}
	if parent != nil {
		p := parent.ID
		sn.Parent = &p
		// A child is newer than its parent, even if the clock went back
		// (or stands still in a test).
		if !sn.Time.After(parent.Time) {
			sn.Time = parent.Time.Add(time.Nanosecond)
		}
	}
	if s.repoChangedSince(epoch) {
		return nil, nil, ErrRepoChanged
	}
	if err := r.SaveSnapshot(ctx, sn); err != nil {
		return nil, nil, err
	}
	if s.cfg.Stored != nil {
		s.cfg.Stored()
	}
	return sn, w, nil
}
