package cache

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keepfs/keepfs/remote"
)

// TestSweepWhileMountedDropsDeadChunks: a running mount drops the chunks
// of versions of a file rewritten between snapshots (they were dropped
// only at the next Open, so a mount that ran for weeks grew its state
// directory without bound), and keeps every chunk a file names, uploaded
// or not.
func TestSweepWhileMountedDropsDeadChunks(t *testing.T) {
	defer func(v int64) { sweepAtLeast = v }(sweepAtLeast)
	sweepAtLeast = 1 << 20
	ctx := context.Background()
	be := remote.NewMem()
	c := openCache(t, newRepo(t, be), t.TempDir())
	var last []byte
	for i := range 4 {
		last = randBytes(uint64(100+i), 1<<20)
		writeFile(t, c, c.Root(), "f", last)
	}
	if _, err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		last = randBytes(uint64(200+i), 1<<20)
		writeFile(t, c, c.Root(), "f", last)
	}
	late := randBytes(300, 2<<20)
	writeFile(t, c, c.Root(), "late", late)
	before := outsideBytes(t, c)
	chunks, size, err := c.sweepDead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	after := outsideBytes(t, c)
	// Dead: versions 1-3 (never uploaded) and 5-9; version 4 is uploaded
	// (evictable), 10 and late are named.
	if size < 8<<20 || before-after != size {
		t.Fatalf("sweep dropped %d chunks, %d bytes (state directory %d → %d); want the 8 dead versions (8 MiB)", chunks, size, before, after)
	}
	if cn := c.Counters(); cn.DeadChunks != int64(chunks) || cn.DeadBytes != size {
		t.Fatalf("counters: %d chunks, %d bytes dropped; the sweep said %d, %d", cn.DeadChunks, cn.DeadBytes, chunks, size)
	}
	wantContent(t, c, lookupPath(t, c, "f").Ino, last, "f after the sweep")
	wantContent(t, c, lookupPath(t, c, "late").Ino, late, "late (never queued) after the sweep")
	if chunks, _, err := c.sweepDead(ctx); err != nil || chunks != 0 {
		t.Fatalf("second sweep dropped %d chunks (%v); nothing died since", chunks, err)
	}
	fresh := closeAndReopen(t, c, be)
	defer fresh.Close(ctx)
	wantContent(t, fresh, lookupPath(t, fresh, "f").Ino, last, "f from the remote")
	wantContent(t, fresh, lookupPath(t, fresh, "late").Ino, late, "late from the remote")
}

// TestRunningMountSweepsByItself: the background loop sweeps once enough
// new bytes came that the repository lacks.
func TestRunningMountSweepsByItself(t *testing.T) {
	defer func(v int64, d time.Duration) { sweepAtLeast, gcEvery = v, d }(sweepAtLeast, gcEvery)
	sweepAtLeast, gcEvery = 4<<20, 20*time.Millisecond
	c := openCache(t, newRepo(t, remote.NewMem()), t.TempDir())
	defer c.Close(context.Background())
	var last []byte
	for i := range 3 {
		last = randBytes(uint64(100+i), 1<<20)
		writeFile(t, c, c.Root(), "f", last)
	}
	time.Sleep(200 * time.Millisecond)
	if got := outsideBytes(t, c); got != 3<<20 {
		t.Fatalf("%d bytes of chunks kept; want 3 MiB: 3 MiB written is below the sweep's 4", got)
	}
	// A sweep once 4 MiB came, and again 4 MiB after: whenever the loop
	// looks, what is left is the live 1 MiB and less than 4 MiB dead.
	for i := range 5 {
		last = randBytes(uint64(200+i), 1<<20)
		writeFile(t, c, c.Root(), "f", last)
	}
	deadline := time.Now().Add(10 * time.Second)
	for outsideBytes(t, c) >= 5<<20 {
		if time.Now().After(deadline) {
			t.Fatalf("%d bytes of chunks kept 10 s after 7 versions died; want less than 5 MiB", outsideBytes(t, c))
		}
		time.Sleep(20 * time.Millisecond)
	}
	wantContent(t, c, lookupPath(t, c, "f").Ino, last, "f after the background sweep")
}

// TestSweepRacesCommitsReadsAndSnapshots runs sweeps back to back against
// writers that rewrite their files with contents drawn from a small pool
// (so that a commit often stores again the bytes of a chunk that just
// died; each snapshot starts a new pool, salted, as the last one's are
// uploaded), readers of those files, and snapshots. Every read must
// succeed with bytes of some version, every file must read as last
// written, and the remote must hold it all.
func TestSweepRacesCommitsReadsAndSnapshots(t *testing.T) {
	defer func(v int64) { sweepAtLeast = v }(sweepAtLeast)
	sweepAtLeast = 1
	ctx := context.Background()
	be := remote.NewMem()
	c := openCache(t, newRepo(t, be), t.TempDir())
	// Contents of a small chunk in a segment, of one chunk file, and of
	// several, each in four versions.
	var pool [][]byte
	for i, size := range []int{40 << 10, 700 << 10, 3 << 20} {
		for v := range 4 {
			pool = append(pool, randBytes(uint64(1000+10*i+v), size))
		}
	}
	var phase atomic.Uint64
	salted := func(k int) []byte {
		b := bytes.Clone(pool[k])
		binary.BigEndian.PutUint64(b, phase.Load())
		return b
	}
	const writers = 3
	inos := make([]uint64, writers)
	last := make([]atomic.Pointer[[]byte], writers)
	for w := range inos {
		b := salted(w)
		inos[w] = writeFile(t, c, c.Root(), fmt.Sprintf("w%d", w), b)
		last[w].Store(&b)
	}
	var (
		stop              atomic.Bool
		wg                sync.WaitGroup
		dropped           atomic.Int64
		sweeps, effective atomic.Int64
		errs              = make(chan error, 16)
	)
	fail := func(err error) {
		select {
		case errs <- err:
		default:
		}
		stop.Store(true)
	}
	for w := range writers {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				b := salted((w*7 + i*5 + i/3) % len(pool))
				if err := rewrite(ctx, c, inos[w], b); err != nil {
					fail(fmt.Errorf("writer %d: %w", w, err))
					return
				}
				last[w].Store(&b)
				if got, err := readAllOf(ctx, c, inos[w]); err != nil {
					fail(fmt.Errorf("writer %d reading back: %w", w, err))
					return
				} else if !bytes.Equal(got, b) {
					fail(fmt.Errorf("writer %d: file reads as %d bytes, not the %d it wrote", w, len(got), len(b)))
					return
				}
				// Commits hold off sweeps (see sweeper): leave gaps.
				time.Sleep(2 * time.Millisecond)
			}
		}()
		go func() {
			defer wg.Done()
			for !stop.Load() {
				if err := readVersions(ctx, c, inos[(w+1)%writers], pool); err != nil {
					fail(fmt.Errorf("reader %d: %w", w, err))
					return
				}
			}
		}()
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			c.sweep.kept.Store(0) // every sweep reads the inodes
			n, size, err := c.sweepDead(ctx)
			if err != nil {
				fail(fmt.Errorf("sweep: %w", err))
				return
			}
			sweeps.Add(1)
			if n > 0 {
				effective.Add(1)
			} else {
				time.Sleep(time.Millisecond)
			}
			dropped.Add(size)
		}
	}()
	go func() {
		defer wg.Done()
		for !stop.Load() {
			time.Sleep(500 * time.Millisecond)
			if _, err := c.Sync(ctx); err != nil {
				fail(fmt.Errorf("sync: %w", err))
				return
			}
			phase.Add(1)
		}
	}()
	time.Sleep(5 * time.Second)
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("%d sweeps, %d dropped something, %d MiB in all", sweeps.Load(), effective.Load(), dropped.Load()>>20)
	if effective.Load() < 5 {
		t.Fatalf("only %d sweeps dropped anything: the race was hardly run", effective.Load())
	}
	for w := range writers {
		wantContent(t, c, inos[w], *last[w].Load(), fmt.Sprintf("w%d at the end", w))
	}
	fresh := closeAndReopen(t, c, be)
	defer fresh.Close(ctx)
	for w := range writers {
		wantContent(t, fresh, lookupPath(t, fresh, fmt.Sprintf("w%d", w)).Ino, *last[w].Load(), fmt.Sprintf("w%d from the remote", w))
	}
}

// TestSweepNotStarvedByParallelCommits: writers that commit back to back
// hold the gate shared between them without a gap, so a sweep that only
// tried for it never got it, and the state directory grew for as long as
// they wrote. A sweep waiting for the gate holds new commits off briefly.
func TestSweepNotStarvedByParallelCommits(t *testing.T) {
	defer func(v int64) { sweepAtLeast = v }(sweepAtLeast)
	sweepAtLeast = 1
	ctx := context.Background()
	c := openCache(t, newRepo(t, remote.NewMem()), t.TempDir())
	defer c.Close(ctx)
	const writers = 8
	var (
		stop    atomic.Bool
		wg      sync.WaitGroup
		commits atomic.Int64
		errs    = make(chan error, writers)
	)
	for w := range writers {
		ino := writeFile(t, c, c.Root(), fmt.Sprintf("w%d", w), []byte("x"))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				if err := rewrite(ctx, c, ino, randBytes(uint64(w<<20+i), 512<<10)); err != nil {
					errs <- err
					return
				}
				commits.Add(1)
			}
		}()
	}
	defer func() {
		stop.Store(true)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	}()
	for commits.Load() < 4*writers {
		time.Sleep(10 * time.Millisecond)
	}
	var tries int
	for ; tries < 4; tries++ {
		c.sweep.kept.Store(0)
		n, _, err := c.sweepDead(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
	}
	t.Fatalf("%d sweeps while %d writers committed (%d commits) dropped nothing: they never got the gate", tries, writers, commits.Load())
}

// rewrite replaces ino's content with data and closes it (a commit), for
// goroutines other than the test's.
func rewrite(ctx context.Context, c *Cache, ino uint64, data []byte) error {
	h, err := c.OpenFile(ctx, ino, uint32(os.O_WRONLY|os.O_TRUNC))
	if err != nil {
		return err
	}
	if _, err := h.WriteAt(ctx, data, 0); err != nil {
		h.Release(ctx)
		return err
	}
	if err := h.Flush(ctx); err != nil {
		h.Release(ctx)
		return err
	}
	return h.Release(ctx)
}

// readVersions reads ino while it is rewritten: each read must succeed
// and return the bytes at its offset of some version in pool.
func readVersions(ctx context.Context, c *Cache, ino uint64, pool [][]byte) error {
	h, err := c.OpenFile(ctx, ino, uint32(os.O_RDONLY))
	if err != nil {
		return err
	}
	defer h.Release(ctx)
	buf := make([]byte, 96<<10)
	for off := int64(0); ; {
		n, err := h.ReadAt(ctx, buf, off)
		if err != nil {
			return fmt.Errorf("read at %d: %w", off, err)
		}
		if n == 0 {
			return nil
		}
		if !fromSomeVersion(buf[:n], off, pool) {
			return fmt.Errorf("read at %d: %d bytes of no version", off, n)
		}
		off += int64(n)
	}
}

// fromSomeVersion reports whether b, read at off, is from a version in
// pool, whose first 8 bytes are a salt.
func fromSomeVersion(b []byte, off int64, pool [][]byte) bool {
	skip := max(0, min(8-off, int64(len(b))))
	for _, v := range pool {
		if off+int64(len(b)) <= int64(len(v)) && bytes.Equal(b[skip:], v[off+skip:off+int64(len(b))]) {
			return true
		}
	}
	return false
}
