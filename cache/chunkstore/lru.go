package chunkstore

import (
	"container/list"
	"sync"

	"github.com/keepfs/keepfs/repo/crypto"
)

// chunkLRU tracks clean cached chunks by recency.
type chunkLRU struct {
	mu    sync.Mutex
	ll    *list.List
	items map[crypto.ID]*list.Element
	total int64
}

type lruItem struct {
	id   crypto.ID
	size int64
}

func newChunkLRU() *chunkLRU {
	return &chunkLRU{ll: list.New(), items: map[crypto.ID]*list.Element{}}
}

func (l *chunkLRU) add(id crypto.ID, size int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.items[id]; ok {
		l.ll.MoveToFront(e)
		return
	}
	l.items[id] = l.ll.PushFront(&lruItem{id, size})
	l.total += size
}

func (l *chunkLRU) touch(id crypto.ID) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.items[id]; ok {
		l.ll.MoveToFront(e)
	}
}

func (l *chunkLRU) remove(id crypto.ID) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.items[id]; ok {
		l.ll.Remove(e)
		delete(l.items, id)
		l.total -= e.Value.(*lruItem).size
	}
}

func (l *chunkLRU) oldest() (crypto.ID, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.ll.Back()
	if e == nil {
		return crypto.ID{}, false
	}
	it := e.Value.(*lruItem)
	l.ll.Remove(e)
	delete(l.items, it.id)
	l.total -= it.size
	return it.id, true
}

func (l *chunkLRU) bytes() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// memCache keeps recently used chunk plaintexts in memory, bounded in
// bytes: a 4 KiB read should not decrypt a 1 MiB value from Badger.
type memCache struct {
	mu       sync.Mutex
	max      int64
	total    int64
	ll       *list.List
	items    map[crypto.ID]*list.Element
	fetching map[crypto.ID]bool
}

type memItem struct {
	id   crypto.ID
	data []byte
}

func newMemCache(max int64) *memCache {
	return &memCache{max: max, ll: list.New(), items: map[crypto.ID]*list.Element{}, fetching: map[crypto.ID]bool{}}
}

func (m *memCache) get(id crypto.ID) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.items[id]; ok {
		m.ll.MoveToFront(e)
		return e.Value.(*memItem).data
	}
	return nil
}

func (m *memCache) has(id crypto.ID) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.items[id]
	return ok
}

func (m *memCache) add(id crypto.ID, data []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.items[id]; ok {
		return
	}
	m.items[id] = m.ll.PushFront(&memItem{id, data})
	m.total += int64(len(data))
	for m.total > m.max && m.ll.Len() > 1 {
		e := m.ll.Back()
		it := e.Value.(*memItem)
		m.ll.Remove(e)
		delete(m.items, it.id)
		m.total -= int64(len(it.data))
	}
}

func (m *memCache) drop(id crypto.ID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.items[id]; ok {
		m.ll.Remove(e)
		delete(m.items, id)
		m.total -= int64(len(e.Value.(*memItem).data))
	}
}

// startFetch claims a background fetch of id: started if it may go
// ahead, running if one for id runs already.
func (m *memCache) startFetch(id crypto.ID) (started, running bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fetching[id] {
		return false, true
	}
	if len(m.fetching) >= 4 {
		return false, false
	}
	m.fetching[id] = true
	return true, false
}

func (m *memCache) endFetch(id crypto.ID) {
	m.mu.Lock()
	delete(m.fetching, id)
	m.mu.Unlock()
}
