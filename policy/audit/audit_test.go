package audit

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// testKeys is AES-256-GCM and HMAC-SHA-256 under fixed keys.
type testKeys struct {
	aead cipher.AEAD
	mac  []byte
}

func newTestKeys(t testing.TB) *testKeys {
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i)
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	g, err := cipher.NewGCM(b)
	if err != nil {
		t.Fatal(err)
	}
	return &testKeys{aead: g, mac: []byte("audit mac key for tests 32 bytes")}
}

func (k *testKeys) Seal(p, ad []byte) []byte {
	nonce := make([]byte, k.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		panic(err)
	}
	return k.aead.Seal(nonce, nonce, p, ad)
}

func (k *testKeys) Open(s, ad []byte) ([]byte, error) {
	n := k.aead.NonceSize()
	if len(s) < n {
		return nil, errors.New("short")
	}
	return k.aead.Open(nil, s[:n], s[n:], ad)
}

func (k *testKeys) MAC(d []byte) []byte {
	m := hmac.New(sha256.New, k.mac)
	m.Write(d)
	return m.Sum(nil)
}

// memStore is a Store in memory that never overwrites; down makes it fail.
type memStore struct {
	mu   sync.Mutex
	objs map[uint64][]byte
	down bool
}

func newMemStore() *memStore { return &memStore{objs: map[uint64][]byte{}} }

var errDown = errors.New("remote unreachable")

func (s *memStore) Append(_ context.Context, seq uint64, b []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		return errDown
	}
	if _, ok := s.objs[seq]; ok {
		return fmt.Errorf("audit/%d: %w", seq, ErrExists)
	}
	s.objs[seq] = append([]byte(nil), b...)
	return nil
}

func (s *memStore) List(context.Context) ([]uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		return nil, errDown
	}
	var out []uint64
	for k := range s.objs {
		out = append(out, k)
	}
	return out, nil
}

func (s *memStore) Load(_ context.Context, seq uint64) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		return nil, errDown
	}
	b, ok := s.objs[seq]
	if !ok {
		return nil, errors.New("not found")
	}
	return append([]byte(nil), b...), nil
}

func fixedClock() func() time.Time {
	t0 := time.Date(2026, 11, 28, 13, 5, 0, 0, time.UTC)
	var mu sync.Mutex
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		t0 = t0.Add(time.Second)
		return t0
	}
}

func newLog(t *testing.T, s Store, m *Mirror) *Log {
	return New(s, newTestKeys(t), Options{Mirror: m, User: "root", Host: "testhost", Now: fixedClock()})
}

func fill(t *testing.T, l *Log, n int) []string {
	t.Helper()
	var hashes []string
	for i := 0; i < n; i++ {
		h, err := l.Append(context.Background(), Entry{Action: ActionImport, Details: map[string]string{"i": fmt.Sprint(i)}})
		if err != nil {
			t.Fatal(err)
		}
		hashes = append(hashes, h)
	}
	return hashes
}

func verify(t *testing.T, l *Log, anchors []Anchor, mirror map[uint64]string) *Report {
	t.Helper()
	rep, err := l.Verify(context.Background(), anchors, mirror)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func wantProblem(t *testing.T, rep *Report, seq uint64, substr string) {
	t.Helper()
	if rep.OK() {
		t.Fatalf("verify passed, want a problem with entry %d (%s)", seq, substr)
	}
	for _, p := range rep.Problems {
		if p.Seq == seq && strings.Contains(p.String(), substr) {
			return
		}
	}
	t.Fatalf("want a problem with entry %d containing %q, got %v", seq, substr, rep.Problems)
}

func TestChain(t *testing.T) {
	s := newMemStore()
	l := newLog(t, s, nil)
	hashes := fill(t, l, 5)
	rep := verify(t, l, nil, nil)
	if !rep.OK() {
		t.Fatal(rep.Problems)
	}
	if rep.Head.Seq != 5 || rep.Head.Hash != hashes[4] {
		t.Fatalf("head %+v, want 5 %s", rep.Head, hashes[4])
	}
	for i, it := range rep.Items {
		if it.Entry.Seq != uint64(i+1) || it.Entry.User != "root" || it.Entry.Host != "testhost" || it.Entry.Outcome != OutcomeOK {
			t.Fatalf("entry %d: %+v", i, it.Entry)
		}
		if i > 0 && it.Entry.Prev != hashes[i-1] {
			t.Fatalf("entry %d does not name the previous hash", i+1)
		}
	}
	// A second log (another process) continues the chain.
	l2 := newLog(t, s, nil)
	fill(t, l2, 1)
	if rep := verify(t, l2, nil, nil); !rep.OK() || rep.Head.Seq != 6 {
		t.Fatal(rep.Problems, rep.Head)
	}
}

func TestEditDetected(t *testing.T) {
	s := newMemStore()
	l := newLog(t, s, nil)
	fill(t, l, 5)
	s.objs[3][len(s.objs[3])-5] ^= 1
	rep := verify(t, l, nil, nil)
	wantProblem(t, rep, 3, "edited")
}

func TestMACDetected(t *testing.T) {
	// Someone with the data key but not the audit key re-seals an edited
	// entry: the MAC fails.
	s := newMemStore()
	k := newTestKeys(t)
	l := New(s, k, Options{Now: fixedClock()})
	fill(t, l, 3)
	rec, err := k.Open(s.objs[2], []byte(sealAD))
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(rec), `"action":"import"`, `"action":"export"`, 1)
	s.objs[2] = k.Seal([]byte(edited), []byte(sealAD))
	wantProblem(t, verify(t, l, nil, nil), 2, "MAC does not verify")
}

func TestReorderDetected(t *testing.T) {
	s := newMemStore()
	l := newLog(t, s, nil)
	fill(t, l, 5)
	s.objs[2], s.objs[3] = s.objs[3], s.objs[2]
	rep := verify(t, l, nil, nil)
	wantProblem(t, rep, 2, "reordered")
	wantProblem(t, rep, 3, "reordered")
}

func TestDeleteDetected(t *testing.T) {
	for _, victim := range []uint64{1, 3} {
		t.Run(fmt.Sprint(victim), func(t *testing.T) {
			s := newMemStore()
			l := newLog(t, s, nil)
			fill(t, l, 5)
			delete(s.objs, victim)
			wantProblem(t, verify(t, l, nil, nil), victim, "missing (deleted)")
		})
	}
}

func TestTruncationDetected(t *testing.T) {
	s := newMemStore()
	m, err := OpenMirror(t.TempDir(), "repo1")
	if err != nil {
		t.Fatal(err)
	}
	l := newLog(t, s, m)
	hashes := fill(t, l, 5)
	mirror, err := m.Entries()
	if err != nil || len(mirror) != 5 {
		t.Fatal(len(mirror), err)
	}
	if rep := verify(t, l, []Anchor{{"snapshot x", Head{5, hashes[4]}}}, mirror); !rep.OK() {
		t.Fatal(rep.Problems)
	}
	delete(s.objs, 5)
	delete(s.objs, 4)
	// The chain alone cannot see it; the mirror and the snapshot can.
	if rep := verify(t, l, nil, nil); !rep.OK() {
		t.Fatal(rep.Problems)
	}
	wantProblem(t, verify(t, l, nil, mirror), 5, "truncated")
	wantProblem(t, verify(t, l, []Anchor{{"snapshot x", Head{4, hashes[3]}}}, nil), 4, "truncated")
	// A replaced entry under the anchor's seq.
	s.objs[4] = s.objs[3]
	wantProblem(t, verify(t, l, []Anchor{{"snapshot x", Head{4, hashes[3]}}}, nil), 4, "replaced")
}

func TestRacingAppenders(t *testing.T) {
	s := newMemStore()
	const writers, each = 4, 10
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		l := newLog(t, s, nil)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if _, err := l.Append(context.Background(), Entry{Action: ActionMount}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	rep := verify(t, newLog(t, s, nil), nil, nil)
	if !rep.OK() || rep.Head.Seq != writers*each {
		t.Fatal(rep.Problems, rep.Head)
	}
}

func TestQueueWhileDown(t *testing.T) {
	s := newMemStore()
	dir := t.TempDir()
	m, err := OpenMirror(dir, "repo1")
	if err != nil {
		t.Fatal(err)
	}
	l := newLog(t, s, m)
	fill(t, l, 1)
	s.down = true
	if _, err := l.Append(context.Background(), Entry{Action: ActionMount}); !errors.Is(err, ErrQueued) {
		t.Fatalf("append while down: %v, want ErrQueued", err)
	}
	if _, err := l.Append(context.Background(), Entry{Action: ActionUnmount}); !errors.Is(err, ErrQueued) {
		t.Fatalf("append while down: %v, want ErrQueued", err)
	}
	if n, _ := m.Queued(); n != 2 {
		t.Fatalf("%d queued, want 2", n)
	}
	s.down = false
	if err := l.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n, _ := m.Queued(); n != 0 {
		t.Fatalf("%d still queued", n)
	}
	mirror, _ := m.Entries()
	rep := verify(t, l, nil, mirror)
	if !rep.OK() || rep.Head.Seq != 3 || rep.Items[1].Entry.Action != ActionMount || rep.Items[2].Entry.Action != ActionUnmount {
		t.Fatal(rep.Problems, rep.Head)
	}
	if _, err := OpenMirror(dir, "other"); err == nil {
		t.Fatal("a mirror of another repository opened")
	}
}

func TestHashPathKeyed(t *testing.T) {
	k := newTestKeys(t)
	h := HashPath(k, "/hr/alice/passport.bin")
	if strings.Contains(h, "alice") || len(h) != 64 || h != HashPath(k, "/hr/alice/passport.bin") || h == HashPath(k, "/hr/bob/passport.bin") {
		t.Fatal(h)
	}
}

// TestWriteFuzzCorpus regenerates the seed corpus with KEEPFS_WRITE_CORPUS=1.
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("KEEPFS_WRITE_CORPUS") == "" {
		t.Skip("set KEEPFS_WRITE_CORPUS=1 to regenerate testdata/fuzz")
	}
	k := newTestKeys(t)
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	e1 := Entry{Seq: 1, Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Action: ActionInit, Outcome: OutcomeOK, User: "root", Host: "h"}
	e2 := Entry{Seq: 2, Prev: strings.Repeat("ab", 32), Time: time.Date(2026, 1, 2, 3, 4, 6, 7, time.UTC), Action: ActionErase,
		Outcome: OutcomeOK, RequestID: "REQ-1", Paths: []string{HashPath(k, "/a")}, Details: map[string]string{"blobs": "3"}}
	for name, e := range map[string]*Entry{"init": &e1, "erase": &e2} {
		rec, err := Encode(k, e)
		if err != nil {
			t.Fatal(err)
		}
		write := func(n string, b []byte) {
			data := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
			if err := os.WriteFile(filepath.Join(dir, n), []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		write(name, rec)
		write(name+"_truncated", rec[:len(rec)/2])
		write(name+"_spaced", []byte(strings.Replace(string(rec), ":", ": ", 1)))
	}
}

func TestEditReportsOnlyTheEditedEntry(t *testing.T) {
	s := newMemStore()
	l := newLog(t, s, nil)
	fill(t, l, 5)
	s.objs[3][len(s.objs[3])-1] ^= 1
	rep := verify(t, l, nil, nil)
	if len(rep.Problems) != 1 || rep.Problems[0].Seq != 3 {
		t.Fatalf("problems %v, want one with entry 3", rep.Problems)
	}
}
