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
	ra := remote.WithReadAhead(c, remote.ReadAheadOptions{Window: 64 << 10, Windows: 4})
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
