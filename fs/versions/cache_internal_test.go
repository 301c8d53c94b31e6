package versions

import (
	"bytes"
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/pack"
	"github.com/keepfs/keepfs/repo/tree"
)

// countingSource serves 100-byte blobs named by their first byte and counts
// the loads, slowly enough for concurrent readers to overlap.
type countingSource struct {
	loads atomic.Int32
	size  int
}

func (s *countingSource) Snapshots(context.Context) ([]*repo.Snapshot, error) { return nil, nil }
func (s *countingSource) LoadTree(context.Context, crypto.ID) (*tree.Tree, error) {
	return nil, repo.ErrPathNotFound
}
func (s *countingSource) LoadBlob(ctx context.Context, t pack.BlobType, id crypto.ID) ([]byte, error) {
	s.loads.Add(1)
	time.Sleep(10 * time.Millisecond)
	return bytes.Repeat([]byte{id[0]}, s.size), nil
}
func (s *countingSource) BlobSize(pack.BlobType, crypto.ID) (uint32, bool) {
	return uint32(s.size), true
}

func id(b byte) crypto.ID { return crypto.ID{b} }

func TestChunkCacheLRU(t *testing.T) {
	ctx := context.Background()
	src := &countingSource{size: 100}
	c := newChunkCache(300) // three chunks
	for _, b := range []byte{1, 2, 3, 1, 4} {
		got, err := c.get(ctx, src, id(b))
		if err != nil || got[0] != b {
			t.Fatalf("get %d: %v %v", b, got[:1], err)
		}
	}
	// 1 was used after 2, so adding 4 evicted 2, not 1.
	if n := src.loads.Load(); n != 4 {
		t.Fatalf("%d loads for 4 distinct chunks", n)
	}
	if _, err := c.get(ctx, src, id(1)); err != nil || src.loads.Load() != 4 {
		t.Fatalf("recently used chunk 1 was evicted (%d loads)", src.loads.Load())
	}
	if _, err := c.get(ctx, src, id(2)); err != nil || src.loads.Load() != 5 {
		t.Fatalf("least recently used chunk 2 was kept (%d loads)", src.loads.Load())
	}
	if c.size > c.max {
		t.Fatalf("cache holds %d bytes, bound %d", c.size, c.max)
	}
}

func TestChunkCacheSharesConcurrentLoads(t *testing.T) {
	src := &countingSource{size: 10}
	c := newChunkCache(1 << 20)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.get(context.Background(), src, id(9)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := src.loads.Load(); n != 1 {
		t.Fatalf("8 concurrent readers caused %d loads", n)
	}
}

func TestPrefetchLoadsInBackground(t *testing.T) {
	src := &countingSource{size: 10}
	c := newChunkCache(1 << 20)
	c.prefetch(src, id(5), nopLog{})
	deadline := time.Now().Add(5 * time.Second)
	for {
		c.mu.Lock()
		_, ok := c.m[id(5)]
		c.mu.Unlock()
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("prefetched chunk never arrived")
		}
		time.Sleep(5 * time.Millisecond)
	}
	c.prefetch(src, id(5), nopLog{})
	if _, err := c.get(context.Background(), src, id(5)); err != nil || src.loads.Load() != 1 {
		t.Fatalf("prefetched chunk loaded again: %d loads, %v", src.loads.Load(), err)
	}
}

type nopLog struct{}

func (nopLog) Debug(string, ...any) {}
