package cache

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keepfs/keepfs/cache/chunkstore"
	"github.com/keepfs/keepfs/cache/meta"
	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/pack"
)

// Dead chunks: a file rewritten before the next snapshot leaves the chunks
// of the versions in between in the state directory. No walk queues them
// and eviction (of uploaded chunks only) never takes them, so without a
// sweep the state directory grows for as long as the mount runs.
//
// A chunk is dead when no inode names it, the upload queue does not hold
// it and the repository's index does not either. Open sweeps with nothing
// else running. A running mount sweeps from its background loop, and three
// things could make a chunk it found unnamed live again before it drops
// it: a commit that stores the same bytes (finding the record, it stores
// nothing), a walk that read the inode before the file changed, and a
// reader that planned its read before the file changed. So the sweep
//   - holds snapshots (no walk runs);
//   - takes the gate alone, which every commit holds shared, to start
//     noting what commits store (commits begun before have ended, their
//     inodes visible to the scan);
//   - reads every inode, without the gate;
//   - takes the gate alone again and drops what no inode named and no
//     commit stored meanwhile (every such commit has ended, and a later
//     one finds no record and stores its bytes anew), counting the drop
//     first: a read that fails across a drop is planned and read again,
//     from the file's chunks now.
//
// The sweep only ever tries the gate, never waits in Lock, so a commit
// nested in another cannot deadlock; a sweep that cannot get it within
// its wait tries again later. Writers that commit back to back hold it
// shared without a gap, though, and a sweep would never get it while they
// write (the state directory grew for as long as they did): so once a
// sweep has tried for sweepHoldOffAfter it asks new commits to hold off
// (wanted) until the commits under way end and it gets the gate, or gives
// up; a commit, nested or not, waits so for sweepGateWait at most.
// Readers never take it: many readers at once would hold it shared
// without a gap.
type sweeper struct {
	gate   sync.RWMutex
	wanted atomic.Bool // a sweep waits for the gate: commits hold off

	drops atomic.Int64 // drops begun; readers compare it (Handle.ReadAt)

	// dropped and droppedBytes count the dead chunks dropped since Open.
	dropped, droppedBytes atomic.Int64

	mu      sync.Mutex
	touched map[crypto.ID]struct{} // nil unless a sweep runs
	seen    atomic.Int64           // chunkstore.Store.Unindexed at the last sweep
	kept    atomic.Int64           // bytes of candidates an inode named then
}

// sweepAtLeast is how many bytes of chunks outside the repository and the
// upload queue make a sweep read the inodes (beyond those files named at
// the last sweep: excluded files' chunks are never uploaded), and how many
// new unuploaded bytes make a running mount look at all.
var sweepAtLeast int64 = 64 << 20

// Integration tests run the real daemon sweeping within seconds.
func init() {
	if d, err := time.ParseDuration(os.Getenv("KEEPFS_TEST_GC_EVERY")); err == nil && d > 0 {
		gcEvery = d
	}
	if n, err := strconv.ParseInt(os.Getenv("KEEPFS_TEST_SWEEP_AT"), 10, 64); err == nil && n > 0 {
		sweepAtLeast = n
	}
}

// sweepGateWait bounds how long a sweep tries for the gate;
// forcedGateWait, a forced one's (an erase's).
var (
	sweepGateWait  = 2 * time.Second
	forcedGateWait = 30 * time.Second
)

// sweepHoldOffAfter is how long a sweep tries for the gate before it asks
// new commits to hold off.
const sweepHoldOffAfter = 20 * time.Millisecond

func (s *sweeper) note1(id crypto.ID) {
	s.mu.Lock()
	if s.touched != nil {
		s.touched[id] = struct{}{}
	}
	s.mu.Unlock()
}

func (s *sweeper) note(chunks []chunkstore.Chunk) {
	s.mu.Lock()
	if s.touched != nil {
		for _, ch := range chunks {
			s.touched[ch.ID] = struct{}{}
		}
	}
	s.mu.Unlock()
}

// alone runs fn holding the gate alone, if it gets it within wait; false
// if not (or ctx ended).
func (s *sweeper) alone(ctx context.Context, wait time.Duration, fn func()) bool {
	start := time.Now()
	defer s.wanted.Store(false)
	for !s.gate.TryLock() {
		if ctx.Err() != nil || time.Since(start) > wait {
			return false
		}
		if time.Since(start) > sweepHoldOffAfter {
			s.wanted.Store(true)
		}
		time.Sleep(time.Millisecond)
	}
	s.wanted.Store(false)
	defer s.gate.Unlock()
	fn()
	return true
}

// enter takes the gate shared for a commit, first holding off while a
// sweep waits for it (sweepGateWait at most); leave lets it go.
func (s *sweeper) enter() {
	for start := time.Now(); s.wanted.Load() && time.Since(start) < sweepGateWait; {
		time.Sleep(time.Millisecond)
	}
	s.gate.RLock()
}

func (s *sweeper) leave() { s.gate.RUnlock() }

// unnamedCandidates returns the chunks kept (inline ones too: an erase
// leaves none) that neither queued nor the repository's index holds, with
// their total size.
func (c *Cache) unnamedCandidates(queued map[crypto.ID]bool) (map[crypto.ID]int64, int64, error) {
	idx := c.r.Index()
	candidates := map[crypto.ID]int64{}
	var total int64
	err := c.chunks.Each(func(id crypto.ID, size int64) {
		if !queued[id] && !idx.Has(pack.Data, id) {
			candidates[id] = size
			total += size
		}
	})
	return candidates, total, err
}

// dropNamed deletes from candidates every chunk an inode names and
// returns the bytes it deleted.
func (c *Cache) dropNamed(candidates map[crypto.ID]int64) (int64, error) {
	var named int64
	err := c.eachInode(func(_ uint64, n *meta.Inode) {
		for _, ch := range n.Chunks {
			if size, ok := candidates[ch.ID]; ok {
				named += size
				delete(candidates, ch.ID)
			}
		}
	})
	return named, err
}

// sweepDeadChunks drops, at Open, the dead chunks. Nothing commits yet
// (intents are recovered after, and name staging files, not chunks), so
// what no inode names now no file can name. Inodes are read only when the
// candidates come to sweepAtLeast, as reading them all costs a pass over
// the namespace. Runs before Scan, which then drops the chunk segments
// left unnamed.
func (c *Cache) sweepDeadChunks(queued map[crypto.ID]bool) error {
	candidates, total, err := c.unnamedCandidates(queued)
	if err != nil || total < sweepAtLeast {
		return err
	}
	named, err := c.dropNamed(candidates)
	if err != nil {
		return err
	}
	c.sweep.kept.Store(named)
	if len(candidates) == 0 {
		return nil
	}
	dead := make([]crypto.ID, 0, len(candidates))
	var bytes int64
	for id, size := range candidates {
		dead = append(dead, id)
		bytes += size
	}
	if err := c.chunks.DropLost(dead, nil); err != nil {
		return err
	}
	c.sweep.dropped.Add(int64(len(dead)))
	c.sweep.droppedBytes.Add(bytes)
	c.log.Info("dropped chunks no file names and the repository does not hold (versions of files rewritten between snapshots)",
		"chunks", len(dead), "bytes", bytes)
	return nil
}

// sweepIfDue sweeps once sweepAtLeast new bytes the repository did not
// hold were stored since the last sweep.
func (c *Cache) sweepIfDue(ctx context.Context) {
	if c.chunks.Unindexed()-c.sweep.seen.Load() < sweepAtLeast {
		return
	}
	if _, _, err := c.sweepDead(ctx); err != nil {
		c.log.Warn("cannot drop the chunks no file names", "err", err)
	}
}

// sweepDead drops the dead chunks while the mount runs (see sweeper) and
// returns how many chunks and bytes went. It does nothing while a
// snapshot runs, when the candidates are fewer than sweepAtLeast bytes
// beyond those kept at the last sweep, or when the gate stays busy; the
// next call tries again.
func (c *Cache) sweepDead(ctx context.Context) (chunks int, bytes int64, err error) {
	release, ok := c.snap.TryHold()
	if !ok {
		return 0, 0, nil
	}
	defer release()
	return c.sweepHeld(ctx, false)
}

// errSweepBusy: commits kept the gate for longer than a forced sweep
// waits.
var errSweepBusy = errors.New("writers kept committing; dead chunks not dropped")

// sweepHeld is sweepDead with snapshots held by the caller. With force
// (an erase: unsnapshotted versions of an erased file have no blob for it
// to name, and this is what takes them) it drops whatever is dead however
// little, waits for the gate longer, and fails if it cannot get it.
func (c *Cache) sweepHeld(ctx context.Context, force bool) (chunks int, bytes int64, err error) {
	wait := sweepGateWait
	if force {
		wait = forcedGateWait
	}
	prev := c.sweep.seen.Swap(c.chunks.Unindexed())
	busy := func() (int, int64, error) {
		if force {
			return 0, 0, errSweepBusy
		}
		c.sweep.seen.Store(prev) // the next tick tries again
		return 0, 0, nil
	}
	queued, err := c.queuedChunks()
	if err != nil {
		return 0, 0, err
	}
	candidates, total, err := c.unnamedCandidates(queued)
	if err != nil || len(candidates) == 0 || !force && total < c.sweep.kept.Load()+sweepAtLeast {
		return 0, 0, err
	}
	if !c.sweep.alone(ctx, wait, func() {
		c.sweep.mu.Lock()
		c.sweep.touched = map[crypto.ID]struct{}{}
		c.sweep.mu.Unlock()
	}) {
		return busy()
	}
	defer func() {
		c.sweep.mu.Lock()
		c.sweep.touched = nil
		c.sweep.mu.Unlock()
	}()
	named, err := c.dropNamed(candidates)
	if err != nil {
		return 0, 0, err
	}
	c.sweep.kept.Store(named)
	if len(candidates) == 0 {
		return 0, 0, nil
	}
	idx := c.r.Index()
	if !c.sweep.alone(ctx, wait, func() {
		// Walks are held, so the queue only shrinks; read again all the
		// same, as it costs little beside what a lost chunk would.
		if queued, err = c.queuedChunks(); err != nil {
			return
		}
		c.sweep.mu.Lock()
		touched := c.sweep.touched
		c.sweep.touched = nil
		c.sweep.mu.Unlock()
		dead := make([]crypto.ID, 0, len(candidates))
		for id := range candidates {
			_, stored := touched[id]
			if !stored && !queued[id] && !idx.Has(pack.Data, id) {
				dead = append(dead, id)
			}
		}
		if len(dead) > 0 {
			c.sweep.drops.Add(1)
		}
		chunks, bytes, err = c.chunks.Drop(dead)
	}) {
		return busy()
	}
	if err != nil {
		return chunks, bytes, fmt.Errorf("drop chunks no file names: %w", err)
	}
	c.sweep.dropped.Add(int64(chunks))
	c.sweep.droppedBytes.Add(bytes)
	if chunks > 0 {
		c.log.Info("dropped chunks no file names and the repository does not hold (versions of files rewritten between snapshots)",
			"chunks", chunks, "bytes", bytes)
	}
	return chunks, bytes, nil
}
