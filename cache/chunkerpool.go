package cache

import (
	"time"

	"github.com/keepfs/keepfs/repo/chunker"
)

// chunkerIdle is how long the chunker may sit unused before its scan
// window (12 MiB with the default chunk sizes) is let go. A copy of big
// files takes it back within milliseconds each time; the upload drain
// after the copy, where the daemon's RSS peaks, never uses it, and a new
// window costs about a millisecond to allocate.
const chunkerIdle = 2 * time.Second

// chunkerPool lends chunkers to commits. A slot holds nil once its
// chunker was dropped; get allocates a fresh one for it.
type chunkerPool struct {
	newChunker func() *chunker.Chunker
	slots      chan *chunker.Chunker
	idle       time.Duration
	timer      *time.Timer
}

func newChunkerPool(n int, idle time.Duration, newChunker func() *chunker.Chunker) *chunkerPool {
	p := &chunkerPool{newChunker: newChunker, slots: make(chan *chunker.Chunker, n), idle: idle}
	for range n {
		p.slots <- nil
	}
	p.timer = time.AfterFunc(time.Hour, p.drop)
	p.timer.Stop()
	return p
}

// get waits for a free slot and returns its chunker.
func (p *chunkerPool) get() *chunker.Chunker {
	ch := <-p.slots
	if ch == nil {
		ch = p.newChunker()
	}
	return ch
}

// put returns ch and restarts the idle countdown.
func (p *chunkerPool) put(ch *chunker.Chunker) {
	p.slots <- ch
	p.timer.Reset(p.idle)
}

// drop lets go of the chunkers not lent out. One lent out meanwhile is
// returned by put, which starts the countdown again.
func (p *chunkerPool) drop() {
	for range cap(p.slots) {
		select {
		case <-p.slots:
			p.slots <- nil
		default:
			return
		}
	}
}

func (p *chunkerPool) close() { p.timer.Stop() }
