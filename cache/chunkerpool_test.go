package cache

import (
	"testing"
	"time"

	"github.com/keepfs/keepfs/repo/chunker"
)

// The chunker's 12 MiB window must not outlive the commits that use it:
// the upload drain after a copy, where the daemon's RSS peaks, has no use
// for it.
func TestChunkerPoolDropsIdleChunker(t *testing.T) {
	made := 0
	p := newChunkerPool(1, 20*time.Millisecond, func() *chunker.Chunker { made++; return &chunker.Chunker{} })
	defer p.close()
	a := p.get()
	p.put(a)
	if b := p.get(); b != a || made != 1 {
		t.Fatalf("a chunker taken back at once was not reused: %d made", made)
	}
	p.put(a)
	deadline := time.Now().Add(5 * time.Second)
	for {
		// Look at the slot without get and put, which would restart the
		// countdown.
		ch := <-p.slots
		p.slots <- ch
		if ch == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("an idle chunker was still held after 5 s (idle time 20 ms)")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if c := p.get(); c == nil || made != 2 {
		t.Fatalf("after the drop, get gave %v with %d made; want a new chunker", c, made)
	}
}
