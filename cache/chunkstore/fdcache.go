package chunkstore

import (
	"container/list"
	"os"
	"sync"
	"sync/atomic"

	"github.com/keepfs/keepfs/repo/crypto"
)

// openChunkFiles is how many chunk files the read path keeps open. Opening
// a chunk file (and looking up its c value in Badger first) for every read
// cost more than the read itself for 4 KiB random reads; 1,024 descriptors
// cover 1,024 chunks, 1 to 8 GiB of file content. With 256, 4 KiB random
// reads of a 512 MiB file (about 500 chunks) spent half their time opening
// and closing chunk files (CPU profile); the daemon's descriptor limit is
// raised to the hard limit by Go at start (20,000 here).
const openChunkFiles = 1024

// fdCache keeps the descriptors of recently read block-sealed chunk files
// open, least recently used dropped first. A descriptor stays valid while
// a reader holds it (get/put count references): one dropped meanwhile
// (evicted, or its file removed or replaced) is closed when the last
// reader puts it back, so removing a file never waits for readers and a
// reader never reads a closed descriptor.
type fdCache struct {
	mu   sync.Mutex
	max  int
	m    map[crypto.ID]*openChunk
	lru  list.List // of *openChunk, most recent at the front
	gone bool      // closed: nothing is kept any more
	// closing are files dropped under mu, closed once it is released.
	closing []*os.File
}

// openChunk is an open chunk file with what its c value said.
type openChunk struct {
	id     crypto.ID
	f      *os.File
	format int   // 2 or 3
	size   int64 // plaintext bytes
	refs   int   // readers holding it, plus one while it is in the cache
	elem   *list.Element
	// warmed is when (unix nanoseconds) a read that found the file's pages
	// not cached last had the kernel read the whole file (chunkFiles.warm).
	warmed atomic.Int64
}

func newFDCache(max int) *fdCache {
	return &fdCache{max: max, m: make(map[crypto.ID]*openChunk)}
}

// get returns the open file of id, held for the caller, or nil.
func (fc *fdCache) get(id crypto.ID) *openChunk {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	oc := fc.m[id]
	if oc == nil {
		return nil
	}
	oc.refs++
	fc.lru.MoveToFront(oc.elem)
	return oc
}

// has reports whether id's file is kept open, without holding it.
func (fc *fdCache) has(id crypto.ID) bool {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return fc.m[id] != nil
}

// add caches f, just opened for id, and returns it held for the caller. If
// another reader cached id meanwhile, f is closed and that one returned.
func (fc *fdCache) add(id crypto.ID, f *os.File, format int, size int64) *openChunk {
	fc.mu.Lock()
	defer fc.unlock()
	if oc := fc.m[id]; oc != nil {
		fc.closeLater(f)
		oc.refs++
		fc.lru.MoveToFront(oc.elem)
		return oc
	}
	oc := &openChunk{id: id, f: f, format: format, size: size, refs: 1}
	if fc.gone {
		return oc // not cached: closed when put back
	}
	oc.refs++
	oc.elem = fc.lru.PushFront(oc)
	fc.m[id] = oc
	for len(fc.m) > fc.max {
		fc.unlinkLocked(fc.lru.Back().Value.(*openChunk))
	}
	return oc
}

// closeLater closes f after the caller releases fc.mu: a close is a system
// call, and readers of other chunks wait for the lock.
func (fc *fdCache) closeLater(f *os.File) { fc.closing = append(fc.closing, f) }

// unlock releases fc.mu and closes what was dropped meanwhile.
func (fc *fdCache) unlock() {
	files := fc.closing
	fc.closing = nil
	fc.mu.Unlock()
	for _, f := range files {
		f.Close()
	}
}

// put gives back a file get or add returned.
func (fc *fdCache) put(oc *openChunk) {
	fc.mu.Lock()
	defer fc.unlock()
	fc.unrefLocked(oc)
}

// drop forgets id's file: it is about to be removed or replaced.
func (fc *fdCache) drop(id crypto.ID) {
	fc.mu.Lock()
	defer fc.unlock()
	if oc := fc.m[id]; oc != nil {
		fc.unlinkLocked(oc)
	}
}

// close drops every file; later ones are not kept.
func (fc *fdCache) close() {
	fc.mu.Lock()
	defer fc.unlock()
	fc.gone = true
	for _, oc := range fc.m {
		fc.unlinkLocked(oc)
	}
}

// len is how many files are kept open.
func (fc *fdCache) len() int {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return len(fc.m)
}

func (fc *fdCache) unlinkLocked(oc *openChunk) {
	delete(fc.m, oc.id)
	fc.lru.Remove(oc.elem)
	oc.elem = nil
	fc.unrefLocked(oc)
}

func (fc *fdCache) unrefLocked(oc *openChunk) {
	if oc.refs--; oc.refs == 0 {
		fc.closeLater(oc.f)
	}
}
