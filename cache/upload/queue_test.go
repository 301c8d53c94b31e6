package upload

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keepfs/keepfs/cache/meta"
	"github.com/keepfs/keepfs/repo/crypto"
)

// errTxnTooBig stands for Badger's refusal of a transaction that changes
// too many keys.
var errTxnTooBig = errors.New("txn is too big")

// memStore is a state directory in memory. A transaction changing more
// than maxOps keys fails as Badger's does, and failAt (if set) fails the
// transaction with that number (from 1).
type memStore struct {
	mu     sync.Mutex
	keys   map[string][]byte
	maxOps int
	txns   int
	failAt int
}

type memTxn struct {
	set map[string][]byte
	del map[string]bool
}

func (t *memTxn) Set(k, v []byte) error {
	delete(t.del, string(k))
	t.set[string(k)] = bytes.Clone(v)
	return nil
}

func (t *memTxn) Delete(k []byte) error {
	delete(t.set, string(k))
	t.del[string(k)] = true
	return nil
}

func newMemStore() *memStore { return &memStore{keys: map[string][]byte{}, maxOps: 1 << 30} }

func (s *memStore) Update(fn func(Txn) error) error {
	t := &memTxn{set: map[string][]byte{}, del: map[string]bool{}}
	if err := fn(t); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.txns++
	if s.failAt == s.txns {
		return errors.New("disk full")
	}
	if len(t.set)+len(t.del) > s.maxOps {
		return errTxnTooBig
	}
	for k := range t.del {
		delete(s.keys, k)
	}
	for k, v := range t.set {
		s.keys[k] = v
	}
	return nil
}

func (s *memStore) has(k []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.keys[string(k)]
	return ok
}

func (s *memStore) count(prefix []byte) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k := range s.keys {
		if bytes.HasPrefix([]byte(k), prefix) {
			n++
		}
	}
	return n
}

// memChunks is a local chunk store in memory; its chunks also get c keys
// in the store, as the cache's do.
type memChunks struct {
	mu       sync.Mutex
	store    *memStore
	data     map[crypto.ID][]byte
	uploaded map[crypto.ID]int
	lost     []crypto.ID
}

func newMemChunks(s *memStore) *memChunks {
	return &memChunks{store: s, data: map[crypto.ID][]byte{}, uploaded: map[crypto.ID]int{}}
}

func (m *memChunks) add(id crypto.ID, data []byte) {
	m.mu.Lock()
	m.data[id] = data
	m.mu.Unlock()
	m.store.mu.Lock()
	m.store.keys[string(meta.ChunkKey(id))] = nil
	m.store.mu.Unlock()
}

func (m *memChunks) Sizes(ids []crypto.ID) (map[crypto.ID]int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[crypto.ID]int64{}
	for _, id := range ids {
		d, ok := m.data[id]
		if !ok {
			return nil, fmt.Errorf("chunk %s: vanished", id.Short())
		}
		out[id] = int64(len(d))
	}
	return out, nil
}

func (m *memChunks) WithChunk(id crypto.ID, fn func([]byte) error) error {
	m.mu.Lock()
	d, ok := m.data[id]
	m.mu.Unlock()
	if !ok {
		return fmt.Errorf("chunk %s: %w", id.Short(), os.ErrNotExist)
	}
	return fn(d)
}

func (m *memChunks) Uploaded(ids []crypto.ID, sizes []int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, id := range ids {
		m.uploaded[id] = sizes[i]
	}
}

func (m *memChunks) Lost(ids []crypto.ID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lost = append(m.lost, ids...)
}

// memSink is a repository in memory: saved blobs are indexed at Flush.
// failSaves makes that many saves fail (the remote gone); an unindexed
// id is saved but never indexed.
type memSink struct {
	mu         sync.Mutex
	pending    map[crypto.ID][]byte
	index      map[crypto.ID][]byte
	failSaves  int
	saves      int
	flushes    int
	discarded  int
	unindexed  map[crypto.ID]bool
	saveFailed chan struct{} // closed at the first failed save
	onSave     func()        // if set, called at every save before it is kept
}

func newMemSink() *memSink {
	return &memSink{pending: map[crypto.ID][]byte{}, index: map[crypto.ID][]byte{},
		unindexed: map[crypto.ID]bool{}, saveFailed: make(chan struct{})}
}

var errRemoteDown = errors.New("remote unreachable")

func (s *memSink) SaveData(_ context.Context, id crypto.ID, data []byte) error {
	if s.onSave != nil {
		s.onSave()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.saves++
	if s.failSaves > 0 {
		s.failSaves--
		select {
		case <-s.saveFailed:
		default:
			close(s.saveFailed)
		}
		return errRemoteDown
	}
	s.pending[id] = bytes.Clone(data)
	return nil
}

func (s *memSink) Flush(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flushes++
	for id, d := range s.pending {
		if !s.unindexed[id] {
			s.index[id] = d
		}
	}
	clear(s.pending)
	return nil
}

func (s *memSink) Has(id crypto.ID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.index[id]
	return ok
}

func (s *memSink) DiscardUnflushed() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.pending)
	s.discarded += n
	clear(s.pending)
	return n
}

// fixture is a queue over in-memory fakes whose namespace's change count
// is changes.
type fixture struct {
	store    *memStore
	chunks   *memChunks
	sink     *memSink
	q        *Queue
	mu       sync.Mutex
	changes  uint64
	contacts []error
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{store: newMemStore(), sink: newMemSink(), changes: 1}
	f.chunks = newMemChunks(f.store)
	f.q = New(Config{Store: f.store, Chunks: f.chunks, Sink: f.sink,
		Changes: func() uint64 {
			f.mu.Lock()
			defer f.mu.Unlock()
			return f.changes
		},
		Contact: func(err error) {
			f.mu.Lock()
			f.contacts = append(f.contacts, err)
			f.mu.Unlock()
		}})
	return f
}

// chunk makes a local chunk of n bytes numbered i.
func (f *fixture) chunk(i, n int) crypto.ID {
	var id crypto.ID
	binary.BigEndian.PutUint64(id[:], uint64(i)+1)
	f.chunks.add(id, bytes.Repeat([]byte{byte(i)}, n))
	return id
}

// chunkRun adds chunks 0..count-1 of n bytes each (see chunk) and returns
// their ids.
func (f *fixture) chunkRun(count, n int) []crypto.ID {
	ids := make([]crypto.ID, count)
	for i := range ids {
		ids[i] = f.chunk(i, n)
	}
	return ids
}

// A cp -a of a large tree queues more chunks than one transaction takes:
// Set must still record them all, and drop them again, in batches.
func TestSetInBatches(t *testing.T) {
	f := newFixture(t)
	f.store.maxOps = Batch
	const n = 3*Batch + 5
	ids := f.chunkRun(n, 3)
	if err := f.q.Set(ids, 1); err != nil {
		t.Fatalf("queueing %d chunks: %v", n, err)
	}
	k, bytes, since := f.q.State()
	if keys := f.store.count(meta.QueuePrefix()); keys != n || k != n || bytes != 3*n || since.IsZero() {
		t.Fatalf("queued %d keys, %d in memory, %d bytes, since %v; want %d, %d, %d, a time", keys, k, bytes, since, n, n, 3*n)
	}
	if err := f.q.Set(ids[:10], 1); err != nil {
		t.Fatal(err)
	}
	k, bytes, _ = f.q.State()
	if keys := f.store.count(meta.QueuePrefix()); keys != 10 || k != 10 || bytes != 30 {
		t.Fatalf("after shrinking: %d keys, %d in memory, %d bytes", keys, k, bytes)
	}
	for _, id := range ids[:10] {
		if !f.store.has(meta.QueueKey(id)) {
			t.Fatalf("chunk %s still wanted lost its queue key", id.Short())
		}
	}
}

// A transaction failing halfway through Set leaves the in-memory queue
// agreeing with the keys, and the queue undecided.
func TestSetFailureKeepsMemoryTrue(t *testing.T) {
	f := newFixture(t)
	ids := f.chunkRun(2*Batch+1, 1)
	f.store.failAt = 2
	if err := f.q.Set(ids, 1); err == nil {
		t.Fatal("Set succeeded with a failing transaction")
	}
	k, _, _ := f.q.State()
	if keys := f.store.count(meta.QueuePrefix()); keys != Batch || k != Batch {
		t.Fatalf("%d keys and %d entries in memory after one committed batch; want %d of each", keys, k, Batch)
	}
	if f.q.Decided() {
		t.Fatal("a queue whose Set failed counts as decided")
	}
}

// Set refuses a chunk the local store lacks, and drops what a failed
// upload left unflushed in the repository's writer first.
func TestSetMissingChunkAndUnflushed(t *testing.T) {
	f := newFixture(t)
	a := f.chunk(1, 10)
	f.sink.pending[a] = []byte("left by a failed pass")
	var missing crypto.ID
	missing[0] = 0xff
	if err := f.q.Set([]crypto.ID{a, missing}, 1); err == nil {
		t.Fatal("Set queued a chunk the local store lacks")
	}
	if f.sink.discarded != 1 {
		t.Fatalf("discarded %d unflushed blobs, want 1", f.sink.discarded)
	}
}

// Decided: only a queue set by a walk of the namespace as it is now.
func TestDecided(t *testing.T) {
	f := newFixture(t)
	if f.q.Decided() {
		t.Fatal("a queue no walk set counts as decided")
	}
	if err := f.q.Set([]crypto.ID{f.chunk(1, 1)}, 1); err != nil {
		t.Fatal(err)
	}
	if !f.q.Decided() {
		t.Fatal("the queue the walk of change 1 set is not decided at change 1")
	}
	f.mu.Lock()
	f.changes++
	f.mu.Unlock()
	if f.q.Decided() {
		t.Fatal("the queue counts as decided after a change")
	}
}

// Drain uploads everything, retires the queue keys and tells the chunk
// store which chunks are clean now; a chunk missing locally loses its
// queue and chunk keys instead of wedging the queue.
func TestDrainRetiresAndDropsLost(t *testing.T) {
	f := newFixture(t)
	a, b, gone := f.chunk(1, 100), f.chunk(2, 200), f.chunk(3, 300)
	if err := f.q.Set([]crypto.ID{a, b, gone}, 1); err != nil {
		t.Fatal(err)
	}
	f.chunks.mu.Lock()
	delete(f.chunks.data, gone)
	f.chunks.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.q.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if n, bytes, since := f.q.State(); n != 0 || bytes != 0 || !since.IsZero() {
		t.Fatalf("after draining: %d entries, %d bytes, since %v", n, bytes, since)
	}
	if k := f.store.count(meta.QueuePrefix()); k != 0 {
		t.Fatalf("%d queue keys left", k)
	}
	if f.store.has(meta.ChunkKey(gone)) || !f.store.has(meta.ChunkKey(a)) {
		t.Fatal("the lost chunk kept its key, or an uploaded one lost it")
	}
	if !f.sink.Has(a) || !f.sink.Has(b) || f.sink.Has(gone) {
		t.Fatal("the repository does not hold exactly the chunks kept locally")
	}
	if got := f.chunks.uploaded; len(got) != 2 || got[a] != 100 || got[b] != 200 {
		t.Fatalf("uploaded %v", got)
	}
	if len(f.chunks.lost) != 1 || f.chunks.lost[0] != gone {
		t.Fatalf("lost %v, want the missing chunk", f.chunks.lost)
	}
}

// A chunk the repository still lacks after a flush keeps its queue entry,
// and the pass fails saying so.
func TestPassKeepsWhatTheIndexLacks(t *testing.T) {
	f := newFixture(t)
	a, b := f.chunk(1, 10), f.chunk(2, 20)
	f.sink.unindexed[b] = true
	if err := f.q.Set([]crypto.ID{a, b}, 1); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := f.q.Drain(ctx); err == nil {
		t.Fatal("Drain succeeded though the repository never indexed a chunk")
	}
	if n, bytes, _ := f.q.State(); n != 1 || bytes != 20 || !f.store.has(meta.QueueKey(b)) || f.store.has(meta.QueueKey(a)) {
		t.Fatalf("left %d entries, %d bytes; want only the unindexed chunk", n, bytes)
	}
}

// The uploader drains a decided queue by itself once the remote comes back
// after failed saves, and reports both to Contact; it leaves alone a
// queue that a change made undecided.
func TestRunHealsAndWaitsForADecision(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.q.Run(ctx)
	}()
	defer func() {
		cancel()
		<-done
	}()
	var ids []crypto.ID
	for i := range 5 {
		ids = append(ids, f.chunk(i, Eager/4))
	}
	// Undecided: the walk covered change 1, the namespace is at 2.
	f.mu.Lock()
	f.changes = 2
	f.mu.Unlock()
	if err := f.q.Set(ids, 1); err != nil {
		t.Fatal(err)
	}
	f.q.Wake()
	time.Sleep(200 * time.Millisecond) // more than queued bytes ≥ Eager lets it wait
	f.sink.mu.Lock()
	saves := f.sink.saves
	f.sink.mu.Unlock()
	if saves != 0 {
		t.Fatalf("the uploader saved %d chunks of a queue no walk decided", saves)
	}
	f.sink.mu.Lock()
	f.sink.failSaves = 3
	f.sink.mu.Unlock()
	if err := f.q.Set(ids, 2); err != nil {
		t.Fatal(err)
	}
	f.q.Wake()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if n, _, _ := f.q.State(); n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("queue not drained 30 s after the remote healed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.contacts) < 2 || !errors.Is(f.contacts[0], errRemoteDown) || f.contacts[len(f.contacts)-1] != nil {
		t.Fatalf("contacts %v: want the failure first and a success last", f.contacts)
	}
	for _, id := range ids {
		if !f.sink.Has(id) {
			t.Fatalf("chunk %s not in the repository", id.Short())
		}
	}
}

// No pass runs while someone holds the writer.
func TestHoldExcludesPasses(t *testing.T) {
	f := newFixture(t)
	if err := f.q.Set([]crypto.ID{f.chunk(1, 1)}, 1); err != nil {
		t.Fatal(err)
	}
	release := f.q.Hold()
	drained := make(chan error, 1)
	go func() { drained <- f.q.Drain(context.Background()) }()
	select {
	case err := <-drained:
		t.Fatalf("Drain returned (%v) while the writer was held", err)
	case <-time.After(100 * time.Millisecond):
	}
	release()
	if err := <-drained; err != nil {
		t.Fatal(err)
	}
}

// Restore brings back entries found at start, undecided; Forget drops one.
func TestRestoreAndForget(t *testing.T) {
	f := newFixture(t)
	a, b := f.chunk(1, 5), f.chunk(2, 7)
	f.q.Restore(map[crypto.ID]int64{a: 5, b: 7})
	if n, bytes, since := f.q.State(); n != 2 || bytes != 12 || since.IsZero() {
		t.Fatalf("restored %d entries, %d bytes, since %v", n, bytes, since)
	}
	if f.q.Decided() {
		t.Fatal("a restored queue counts as decided")
	}
	f.q.Forget(a)
	f.q.Forget(a)
	if n, bytes, _ := f.q.State(); n != 1 || bytes != 7 {
		t.Fatalf("after forgetting one: %d entries, %d bytes", n, bytes)
	}
}

// gatedSink holds every save until gate is closed, counting the saves in
// flight.
type gatedSink struct {
	*memSink
	gate   chan struct{}
	active atomic.Int32
	most   atomic.Int32
}

func (s *gatedSink) SaveData(ctx context.Context, id crypto.ID, data []byte) error {
	n := s.active.Add(1)
	for {
		m := s.most.Load()
		if n <= m || s.most.CompareAndSwap(m, n) {
			break
		}
	}
	<-s.gate
	s.active.Add(-1)
	return s.memSink.SaveData(ctx, id, data)
}

// A drain someone waits for (Urgent: sync, unmount) compresses and seals
// on every CPU; a background one on half of them.
func TestUrgentDrainUsesEveryCPU(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4))
	for _, urgent := range []bool{false, true} {
		f := newFixture(t)
		sink := &gatedSink{memSink: f.sink, gate: make(chan struct{})}
		f.q.sink = sink
		var need []crypto.ID
		for i := range 16 {
			need = append(need, f.chunk(i, 100))
		}
		if err := f.q.Set(need, 1); err != nil {
			t.Fatal(err)
		}
		want := int32(2)
		if urgent {
			want = 4
			defer f.q.Urgent()()
		}
		done := make(chan error, 1)
		go func() { done <- f.q.Drain(context.Background()) }()
		// Wait for the saves to reach the limit; a save beyond it would
		// show in most before the gate opens.
		deadline := time.Now().Add(10 * time.Second)
		for sink.active.Load() < want && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(50 * time.Millisecond)
		close(sink.gate)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if got := sink.most.Load(); got != want {
			t.Errorf("urgent=%v: %d saves in flight at most, want %d", urgent, got, want)
		}
		if n, _, _ := f.q.State(); n != 0 {
			t.Errorf("urgent=%v: %d entries left after the drain", urgent, n)
		}
	}
}

// A .gdprignore changing while a pass uploads (Stop) ends the pass before
// its next chunk; what it saved but had not flushed never reaches the
// repository, the remote is not blamed, and nothing of the queue leaves
// until a walk after the change sets it again.
func TestStopEndsThePass(t *testing.T) {
	f := newFixture(t)
	var ids []crypto.ID
	for i := range 64 {
		ids = append(ids, f.chunk(i, 1000))
	}
	if err := f.q.Set(ids, 1); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	f.sink.onSave = func() { once.Do(func() { f.q.Stop(2) }) }
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.q.Drain(ctx); !errors.Is(err, ErrStopped) {
		t.Fatalf("Drain after Stop: %v, want ErrStopped", err)
	}
	f.sink.mu.Lock()
	saves, indexed := f.sink.saves, len(f.sink.index)
	f.sink.mu.Unlock()
	if saves > f.q.workers() || indexed != 0 {
		t.Fatalf("after Stop %d chunks were saved (workers %d) and %d reached the repository; want none flushed",
			saves, f.q.workers(), indexed)
	}
	for _, err := range f.contacts {
		if err != nil {
			t.Fatalf("the stop was reported as a remote failure: %v", err)
		}
	}
	if n, _, _ := f.q.State(); n != len(ids) {
		t.Fatalf("%d entries left, want all %d", n, len(ids))
	}
	// A walk that began before the change does not lift the stop.
	if err := f.q.Set(ids, 1); err != nil {
		t.Fatal(err)
	}
	if err := f.q.Drain(ctx); !errors.Is(err, ErrStopped) {
		t.Fatalf("Drain of a queue decided before the stop: %v, want ErrStopped", err)
	}
	f.mu.Lock()
	f.changes = 2
	f.mu.Unlock()
	if f.q.Decided() {
		t.Fatal("a stopped queue counts as decided")
	}
	// The walk under the new rules keeps ten of them.
	if err := f.q.Set(ids[:10], 2); err != nil {
		t.Fatal(err)
	}
	if err := f.q.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		if f.sink.Has(id) != (i < 10) {
			t.Fatalf("chunk %d in the repository: %v", i, f.sink.Has(id))
		}
	}
}

// A pass of many small chunks retires more queue keys than one
// transaction takes: Drain must retire them in batches, not fail every
// pass with Badger's "Txn is too big".
func TestDrainRetiresInBatches(t *testing.T) {
	f := newFixture(t)
	f.store.maxOps = Batch
	const n = 2*Batch + 7
	ids := f.chunkRun(n, 3)
	if err := f.q.Set(ids, 1); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := f.q.Drain(ctx); err != nil {
		t.Fatalf("draining %d chunks: %v", n, err)
	}
	if k, bytes, _ := f.q.State(); k != 0 || bytes != 0 {
		t.Fatalf("after draining: %d entries, %d bytes", k, bytes)
	}
	if k := f.store.count(meta.QueuePrefix()); k != 0 {
		t.Fatalf("%d queue keys left", k)
	}
	if got := len(f.chunks.uploaded); got != n {
		t.Fatalf("%d chunks reported clean, want %d", got, n)
	}
}
