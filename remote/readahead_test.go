package remote_test

import (
	"bytes"
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/remote/remotetest"
)

func TestReadAheadConformance(t *testing.T) {
	t.Parallel()
	remotetest.Run(t, func(t *testing.T) remote.Storage {
		return remote.WithReadAhead(remote.NewMem(), remote.ReadAheadOptions{Window: 4096, Windows: 2})
	})
}

type countingLoads struct {
	remote.Storage
	loads atomic.Int32
}

func (c *countingLoads) Load(ctx context.Context, h remote.Handle, off, n int64) ([]byte, error) {
	c.loads.Add(1)
	return c.Storage.Load(ctx, h, off, n)
}

// Reading a pack's small blobs in order, from several goroutines at once,
// costs one underlying Load per window, and every answer is right.
func TestReadAheadFewerLoads(t *testing.T) {
	ctx := context.Background()
	mem := remote.NewMem()
	c := &countingLoads{Storage: mem}
	// Windows enough for the whole pack: with fewer, a reader the
	// scheduler held back while the others read on past the kept windows
	// fetched its window again, and the count overran under CI's load
	// (38 loads for 16 windows once).
	ra := remote.WithReadAhead(c, remote.ReadAheadOptions{Window: 64 << 10, Windows: 16})
	h := remote.Handle{Type: remote.Pack, Name: remotetest.RandomName()}
	data := remotetest.RandomBytes(1 << 20)
	if err := mem.Save(ctx, h, data); err != nil {
		t.Fatal(err)
	}
	const blob = 1000
	var wg sync.WaitGroup
	next := make(chan int64)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for off := range next {
				n := min(int64(blob), int64(len(data))-off)
				got, err := ra.Load(ctx, h, off, n)
				if err != nil || !bytes.Equal(got, data[off:off+n]) {
					t.Errorf("load [%d,+%d): %d bytes, %v", off, n, len(got), err)
				}
			}
		}()
	}
	for off := int64(0); off < int64(len(data)); off += blob {
		next <- off
	}
	close(next)
	wg.Wait()
	blobs, windows := (len(data)+blob-1)/blob, len(data)/(64<<10)
	if got := int(c.loads.Load()); got > 2*windows+4 {
		t.Fatalf("%d small loads made %d underlying loads, want about %d", blobs, got, windows)
	}
	// A removed pack is forgotten.
	if err := ra.Remove(ctx, h); err != nil {
		t.Fatal(err)
	}
	if _, err := ra.Load(ctx, h, 0, 10); err == nil {
		t.Fatal("load of a removed pack answered from the read-ahead")
	}
}

type rangeLog struct {
	remote.Storage
	mu     sync.Mutex
	ranges [][2]int64
	stats  int
}

func (c *rangeLog) Load(ctx context.Context, h remote.Handle, off, n int64) ([]byte, error) {
	c.mu.Lock()
	c.ranges = append(c.ranges, [2]int64{off, n})
	c.mu.Unlock()
	return c.Storage.Load(ctx, h, off, n)
}

func (c *rangeLog) Stat(ctx context.Context, h remote.Handle) (remote.Info, error) {
	c.mu.Lock()
	c.stats++
	c.mu.Unlock()
	return c.Storage.Stat(ctx, h)
}

// A Load under WithoutReadAhead asks the store for exactly its range, with
// no Stat and no window, and is not answered from a window either.
func TestWithoutReadAheadLoadsExactRanges(t *testing.T) {
	ctx := context.Background()
	mem := remote.NewMem()
	c := &rangeLog{Storage: mem}
	ra := remote.WithReadAhead(c, remote.ReadAheadOptions{Window: 64 << 10, Windows: 4})
	h := remote.Handle{Type: remote.Pack, Name: remotetest.RandomName()}
	data := remotetest.RandomBytes(256 << 10)
	if err := mem.Save(ctx, h, data); err != nil {
		t.Fatal(err)
	}
	// A window of [0, 64 KiB) fetched normally must not answer the
	// marked Loads below either.
	if _, err := ra.Load(ctx, h, 0, 100); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	c.ranges, c.stats = nil, 0
	c.mu.Unlock()
	nctx := remote.WithoutReadAhead(ctx)
	want := [][2]int64{{1000, 500}, {70000, 3000}, {5000, 100}}
	for _, rg := range want {
		got, err := ra.Load(nctx, h, rg[0], rg[1])
		if err != nil || !bytes.Equal(got, data[rg[0]:rg[0]+rg[1]]) {
			t.Fatalf("load [%d,+%d): %d bytes, %v", rg[0], rg[1], len(got), err)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stats != 0 {
		t.Errorf("%d Stats under WithoutReadAhead, want none", c.stats)
	}
	if len(c.ranges) != len(want) {
		t.Fatalf("store asked for %v, want exactly %v", c.ranges, want)
	}
	for i := range want {
		if c.ranges[i] != want[i] {
			t.Fatalf("store asked for %v, want exactly %v", c.ranges, want)
		}
	}
}
