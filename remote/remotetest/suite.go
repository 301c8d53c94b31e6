// Package remotetest holds what tests of remote backends share: the
// conformance suite every remote.Storage must pass (Run) and a real OpenSSH
// server on loopback for sftp tests (StartSSHD), which other packages' tests
// may use for sftp:// repositories.
package remotetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"testing"

	"github.com/keepfs/keepfs/remote"
)

// Run runs the conformance suite. newStorage must return an empty store
// each time it is called; the suite closes it when the subtest ends.
func Run(t *testing.T, newStorage func(t *testing.T) remote.Storage) {
	open := func(t *testing.T) remote.Storage {
		t.Helper()
		s := newStorage(t)
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Errorf("close: %v", err)
			}
		})
		return s
	}
	tests := []struct {
		name string
		fn   func(t *testing.T, s remote.Storage)
	}{
		{"SaveLoadEveryType", testSaveLoad},
		{"RangeLoad", testRangeLoad},
		{"RangeStream", testRangeStream},
		{"NotFound", testNotFound},
		{"NoOverwrite", testNoOverwrite},
		{"List", testList},
		{"ListStopsOnCallbackError", testListCallbackError},
		{"Remove", testRemove},
		{"EmptyObject", testEmpty},
		{"LargeObject", testLarge},
		{"BuffersAreCopied", testBuffersCopied},
		{"Concurrent", testConcurrent},
		{"ConcurrentSameName", testConcurrentSameName},
		{"ContextCancelled", testCancelled},
		{"InvalidHandles", testInvalid},
		{"Location", testLocation},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open(t)) })
	}
}

// RandomName returns a name shaped like a repository id (64 hex digits).
func RandomName() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// RandomBytes returns n random bytes.
func RandomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func save(t *testing.T, s remote.Storage, h remote.Handle, data []byte) {
	t.Helper()
	if err := s.Save(context.Background(), h, data); err != nil {
		t.Fatalf("save %s: %v", h, err)
	}
}

func load(t *testing.T, s remote.Storage, h remote.Handle, off, n int64) []byte {
	t.Helper()
	data, err := s.Load(context.Background(), h, off, n)
	if err != nil {
		t.Fatalf("load %s [%d,+%d): %v", h, off, n, err)
	}
	return data
}

func mustEqual(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: got %d bytes, want %d bytes (contents differ)", what, len(got), len(want))
	}
}

func handleOf(typ remote.Type) remote.Handle {
	if typ == remote.Config {
		return remote.Handle{Type: remote.Config}
	}
	return remote.Handle{Type: typ, Name: RandomName()}
}

func testSaveLoad(t *testing.T, s remote.Storage) {
	ctx := context.Background()
	for _, typ := range remote.Types {
		h := handleOf(typ)
		data := RandomBytes(1000 + len(typ))
		save(t, s, h, data)
		mustEqual(t, "load "+h.String(), load(t, s, h, 0, 0), data)
		fi, err := s.Stat(ctx, h)
		if err != nil {
			t.Fatalf("stat %s: %v", h, err)
		}
		if fi.Size != int64(len(data)) || fi.Handle != h {
			t.Fatalf("stat %s = %+v, want size %d", h, fi, len(data))
		}
	}
}

func testRangeLoad(t *testing.T, s remote.Storage) {
	ctx := context.Background()
	h := remote.Handle{Type: remote.Pack, Name: RandomName()}
	data := RandomBytes(1000)
	save(t, s, h, data)
	for _, r := range []struct{ off, n, wantFrom, wantTo int64 }{
		{0, 0, 0, 1000},
		{10, 0, 10, 1000},
		{0, 1, 0, 1},
		{10, 20, 10, 30},
		{990, 10, 990, 1000},
		{0, 1000, 0, 1000},
		{1000, 0, 1000, 1000},
	} {
		got := load(t, s, h, r.off, r.n)
		mustEqual(t, fmt.Sprintf("load [%d,+%d)", r.off, r.n), got, data[r.wantFrom:r.wantTo])
	}
	for _, r := range []struct{ off, n int64 }{
		{995, 10}, {1000, 1}, {1001, 0}, {0, 1001}, {5000, 1},
	} {
		got, err := s.Load(ctx, h, r.off, r.n)
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("load [%d,+%d) of 1000 bytes = %d bytes, %v; want an error wrapping io.ErrUnexpectedEOF", r.off, r.n, len(got), err)
		}
	}
	for _, r := range []struct{ off, n int64 }{{-1, 0}, {0, -1}} {
		if _, err := s.Load(ctx, h, r.off, r.n); err == nil {
			t.Errorf("load [%d,+%d) succeeded, want an error", r.off, r.n)
		}
	}
}

// testRangeStream reads ranges with remote.OpenRange (the store's own
// Open where it has one): the bytes are Load's, a range past the end fails
// with io.ErrUnexpectedEOF from Open or a Read, and a missing object with
// ErrNotFound.
func testRangeStream(t *testing.T, s remote.Storage) {
	ctx := context.Background()
	h := remote.Handle{Type: remote.Pack, Name: RandomName()}
	data := RandomBytes(9 << 20) // more than the Load fallback's 4 MiB pieces
	save(t, s, h, data)
	read := func(off, n int64) ([]byte, error) {
		rc, err := remote.OpenRange(ctx, s, h, off, n)
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		return io.ReadAll(rc)
	}
	for _, r := range []struct{ off, n int64 }{
		{0, 1}, {10, 20}, {0, int64(len(data))}, {12345, 5 << 20}, {int64(len(data)) - 7, 7},
	} {
		got, err := read(r.off, r.n)
		if err != nil {
			t.Fatalf("stream [%d,+%d): %v", r.off, r.n, err)
		}
		mustEqual(t, fmt.Sprintf("stream [%d,+%d)", r.off, r.n), got, data[r.off:r.off+r.n])
	}
	for _, r := range []struct{ off, n int64 }{
		{int64(len(data)) - 5, 10}, {int64(len(data)), 1}, {0, int64(len(data)) + 1},
	} {
		got, err := read(r.off, r.n)
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("stream [%d,+%d) of %d bytes = %d bytes, %v; want an error wrapping io.ErrUnexpectedEOF", r.off, r.n, len(data), len(got), err)
		}
	}
	if _, err := read(0, 0); err == nil {
		t.Error("stream of an empty range succeeded, want an error")
	}
	missing := remote.Handle{Type: remote.Pack, Name: RandomName()}
	if rc, err := remote.OpenRange(ctx, s, missing, 0, 10); err == nil {
		_, err = io.ReadAll(rc)
		rc.Close()
		if !errors.Is(err, remote.ErrNotFound) {
			t.Errorf("stream of missing %s: %v, want ErrNotFound", missing, err)
		}
	} else if !errors.Is(err, remote.ErrNotFound) {
		t.Errorf("stream of missing %s: %v, want ErrNotFound", missing, err)
	}
}

func testNotFound(t *testing.T, s remote.Storage) {
	ctx := context.Background()
	for _, h := range []remote.Handle{
		{Type: remote.Config},
		{Type: remote.Key, Name: RandomName()},
		{Type: remote.Pack, Name: RandomName()},
	} {
		if _, err := s.Load(ctx, h, 0, 0); !errors.Is(err, remote.ErrNotFound) {
			t.Errorf("load missing %s: %v, want ErrNotFound", h, err)
		}
		if _, err := s.Load(ctx, h, 1, 2); !errors.Is(err, remote.ErrNotFound) {
			t.Errorf("range load missing %s: %v, want ErrNotFound", h, err)
		}
		if _, err := s.Stat(ctx, h); !errors.Is(err, remote.ErrNotFound) {
			t.Errorf("stat missing %s: %v, want ErrNotFound", h, err)
		}
		if err := s.Remove(ctx, h); !errors.Is(err, remote.ErrNotFound) {
			t.Errorf("remove missing %s: %v, want ErrNotFound", h, err)
		}
	}
}

func testNoOverwrite(t *testing.T, s remote.Storage) {
	ctx := context.Background()
	for _, h := range []remote.Handle{{Type: remote.Config}, {Type: remote.Pack, Name: RandomName()}} {
		first := RandomBytes(100)
		save(t, s, h, first)
		for _, second := range [][]byte{RandomBytes(200), first, nil} {
			if err := s.Save(ctx, h, second); !errors.Is(err, remote.ErrExists) {
				t.Fatalf("second save of %s (%d bytes): %v, want ErrExists", h, len(second), err)
			}
		}
		mustEqual(t, "after refused overwrite", load(t, s, h, 0, 0), first)
	}
}

func listAll(t *testing.T, s remote.Storage, typ remote.Type) map[remote.Handle]int64 {
	t.Helper()
	got := make(map[remote.Handle]int64)
	err := s.List(context.Background(), typ, func(fi remote.Info) error {
		if fi.Handle.Type != typ {
			t.Errorf("list %s returned %s", typ, fi.Handle)
		}
		if _, dup := got[fi.Handle]; dup {
			t.Errorf("list %s returned %s twice", typ, fi.Handle)
		}
		got[fi.Handle] = fi.Size
		return nil
	})
	if err != nil {
		t.Fatalf("list %s: %v", typ, err)
	}
	return got
}

func testList(t *testing.T, s remote.Storage) {
	for _, typ := range remote.Types {
		if n := len(listAll(t, s, typ)); n != 0 {
			t.Fatalf("empty store lists %d objects of type %s", n, typ)
		}
	}
	want := make(map[remote.Type]map[remote.Handle]int64)
	for _, typ := range remote.Types {
		want[typ] = make(map[remote.Handle]int64)
		n := 3
		if typ == remote.Config {
			n = 1
		}
		if typ == remote.Pack {
			n = 40 // enough to land in many fan-out folders, some shared
		}
		for i := range n {
			h := handleOf(typ)
			if typ == remote.Pack && i < 4 {
				h.Name = "ab" + h.Name[2:] // force a shared folder
			}
			data := RandomBytes(i * 7)
			save(t, s, h, data)
			want[typ][h] = int64(len(data))
		}
	}
	// Short names are valid handles too and must not break the fan-out.
	short := remote.Handle{Type: remote.Pack, Name: "a"}
	save(t, s, short, []byte("x"))
	want[remote.Pack][short] = 1

	for _, typ := range remote.Types {
		got := listAll(t, s, typ)
		if len(got) != len(want[typ]) {
			t.Errorf("list %s: %d objects, want %d", typ, len(got), len(want[typ]))
		}
		for h, size := range want[typ] {
			if gs, ok := got[h]; !ok || gs != size {
				t.Errorf("list %s: %s size %d (listed %v), want size %d", typ, h, gs, ok, size)
			}
		}
	}
	if err := s.List(context.Background(), remote.Type("bogus"), func(remote.Info) error { return nil }); err == nil {
		t.Error("list of an unknown type succeeded")
	}
}

func testListCallbackError(t *testing.T, s remote.Storage) {
	for range 5 {
		save(t, s, remote.Handle{Type: remote.Index, Name: RandomName()}, []byte("i"))
	}
	stop := errors.New("stop here")
	calls := 0
	err := s.List(context.Background(), remote.Index, func(remote.Info) error {
		calls++
		return stop
	})
	if !errors.Is(err, stop) {
		t.Fatalf("list with a failing callback: %v, want the callback's error", err)
	}
	if calls != 1 {
		t.Fatalf("callback called %d times after failing, want 1", calls)
	}
}

func testRemove(t *testing.T, s remote.Storage) {
	ctx := context.Background()
	keep := remote.Handle{Type: remote.Pack, Name: RandomName()}
	gone := remote.Handle{Type: remote.Pack, Name: RandomName()}
	save(t, s, keep, []byte("keep"))
	save(t, s, gone, []byte("gone"))
	if err := s.Remove(ctx, gone); err != nil {
		t.Fatalf("remove: %v", err)
	}
	if _, err := s.Stat(ctx, gone); !errors.Is(err, remote.ErrNotFound) {
		t.Fatalf("stat after remove: %v, want ErrNotFound", err)
	}
	if _, err := s.Load(ctx, gone, 0, 0); !errors.Is(err, remote.ErrNotFound) {
		t.Fatalf("load after remove: %v, want ErrNotFound", err)
	}
	if err := s.Remove(ctx, gone); !errors.Is(err, remote.ErrNotFound) {
		t.Fatalf("second remove: %v, want ErrNotFound", err)
	}
	listed := listAll(t, s, remote.Pack)
	if _, ok := listed[gone]; ok || len(listed) != 1 {
		t.Fatalf("list after remove = %v, want only %s", listed, keep)
	}
	mustEqual(t, "untouched neighbour", load(t, s, keep, 0, 0), []byte("keep"))
	// A removed name can be saved again (repack writes fresh packs, but
	// locks and the config come and go under fixed names).
	save(t, s, gone, []byte("again"))
	mustEqual(t, "saved after remove", load(t, s, gone, 0, 0), []byte("again"))
}

func testEmpty(t *testing.T, s remote.Storage) {
	ctx := context.Background()
	h := remote.Handle{Type: remote.Lock, Name: RandomName()}
	save(t, s, h, nil)
	if got := load(t, s, h, 0, 0); len(got) != 0 {
		t.Fatalf("empty object loads as %d bytes", len(got))
	}
	fi, err := s.Stat(ctx, h)
	if err != nil || fi.Size != 0 {
		t.Fatalf("stat empty object = %+v, %v", fi, err)
	}
	if _, err := s.Load(ctx, h, 0, 1); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("load 1 byte of empty object: %v, want io.ErrUnexpectedEOF", err)
	}
	if got := listAll(t, s, remote.Lock); got[h] != 0 || len(got) != 1 {
		t.Fatalf("list = %v, want the empty object", got)
	}
}

func testLarge(t *testing.T, s remote.Storage) {
	h := remote.Handle{Type: remote.Pack, Name: RandomName()}
	const size = 17<<20 + 123 // past 16 MiB, not a multiple of any packet size
	data := RandomBytes(size)
	save(t, s, h, data)
	mustEqual(t, "large load", load(t, s, h, 0, 0), data)
	mustEqual(t, "large range", load(t, s, h, 5<<20+7, 9<<20), data[5<<20+7:14<<20+7])
	mustEqual(t, "large tail", load(t, s, h, size-100, 0), data[size-100:])
	fi, err := s.Stat(context.Background(), h)
	if err != nil || fi.Size != size {
		t.Fatalf("stat large object = %+v, %v", fi, err)
	}
}

func testBuffersCopied(t *testing.T, s remote.Storage) {
	h := remote.Handle{Type: remote.Snapshot, Name: RandomName()}
	data := []byte("original content")
	want := bytes.Clone(data)
	save(t, s, h, data)
	data[0] = 'X'
	got := load(t, s, h, 0, 0)
	mustEqual(t, "after caller changed its buffer", got, want)
	got[0] = 'Y'
	mustEqual(t, "after caller changed a loaded buffer", load(t, s, h, 0, 0), want)
}

func testConcurrent(t *testing.T, s remote.Storage) {
	ctx := context.Background()
	const n, workers = 64, 8
	handles := make([]remote.Handle, n)
	contents := make([][]byte, n)
	for i := range handles {
		handles[i] = remote.Handle{Type: remote.Pack, Name: RandomName()}
		contents[i] = RandomBytes(1 + i*997)
	}
	run := func(fn func(i int) error) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make(chan error, n)
		next := make(chan int)
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range next {
					if err := fn(i); err != nil {
						errs <- err
					}
				}
			}()
		}
		for i := range n {
			next <- i
		}
		close(next)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	}
	run(func(i int) error { return s.Save(ctx, handles[i], contents[i]) })
	run(func(i int) error {
		got, err := s.Load(ctx, handles[i], 0, 0)
		if err != nil {
			return err
		}
		if !bytes.Equal(got, contents[i]) {
			return fmt.Errorf("concurrent load of %s returned wrong content", handles[i])
		}
		if _, err := s.Stat(ctx, handles[i]); err != nil {
			return err
		}
		return nil
	})
	if got := listAll(t, s, remote.Pack); len(got) != n {
		t.Fatalf("list after concurrent saves: %d objects, want %d", len(got), n)
	}
	run(func(i int) error { return s.Remove(ctx, handles[i]) })
	if got := listAll(t, s, remote.Pack); len(got) != 0 {
		t.Fatalf("list after concurrent removes: %d objects, want 0", len(got))
	}
}

func testConcurrentSameName(t *testing.T, s remote.Storage) {
	ctx := context.Background()
	h := remote.Handle{Type: remote.Lock, Name: RandomName()}
	const n = 8
	contents := make([][]byte, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		contents[i] = RandomBytes(4096 + i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.Save(ctx, h, contents[i])
		}()
	}
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Fatalf("saves %d and %d of the same name both succeeded", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, remote.ErrExists):
			t.Fatalf("racing save %d: %v, want success or ErrExists", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no racing save succeeded")
	}
	mustEqual(t, "winner's content", load(t, s, h, 0, 0), contents[winner])
	var names []string
	for _, typ := range remote.Types {
		for h := range listAll(t, s, typ) {
			names = append(names, h.String())
		}
	}
	sort.Strings(names)
	if len(names) != 1 {
		t.Fatalf("store holds %v after racing saves, want only %s", names, h)
	}
}

func testCancelled(t *testing.T, s remote.Storage) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	existing := remote.Handle{Type: remote.Index, Name: RandomName()}
	save(t, s, existing, []byte("x"))
	fresh := remote.Handle{Type: remote.Index, Name: RandomName()}

	check := func(op string, err error) {
		t.Helper()
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a cancelled context: %v, want context.Canceled", op, err)
		}
	}
	check("save", s.Save(ctx, fresh, RandomBytes(1<<20)))
	_, err := s.Load(ctx, existing, 0, 0)
	check("load", err)
	_, err = s.Stat(ctx, existing)
	check("stat", err)
	called := false
	check("list", s.List(ctx, remote.Index, func(remote.Info) error { called = true; return nil }))
	if called {
		t.Error("list with a cancelled context called its callback")
	}
	check("remove", s.Remove(ctx, existing))

	if _, err := s.Stat(context.Background(), fresh); !errors.Is(err, remote.ErrNotFound) {
		t.Errorf("cancelled save left an object behind: stat = %v", err)
	}
	if _, err := s.Stat(context.Background(), existing); err != nil {
		t.Errorf("cancelled remove removed the object: stat = %v", err)
	}
}

func testInvalid(t *testing.T, s remote.Storage) {
	ctx := context.Background()
	for _, h := range []remote.Handle{
		{Type: "bogus", Name: "x"},
		{Type: "", Name: "x"},
		{Type: remote.Pack},
		{Type: remote.Pack, Name: "../config"},
		{Type: remote.Pack, Name: "ab/cd"},
		{Type: remote.Key, Name: ".tmp-123"},
		{Type: remote.Key, Name: ".."},
		{Type: remote.Config, Name: "x"},
		{Type: remote.Index, Name: string(bytes.Repeat([]byte("a"), 129))},
	} {
		if err := s.Save(ctx, h, []byte("x")); !errors.Is(err, remote.ErrInvalidHandle) {
			t.Errorf("save %q: %v, want ErrInvalidHandle", h, err)
		}
		if _, err := s.Load(ctx, h, 0, 0); !errors.Is(err, remote.ErrInvalidHandle) {
			t.Errorf("load %q: %v, want ErrInvalidHandle", h, err)
		}
		if _, err := s.Stat(ctx, h); !errors.Is(err, remote.ErrInvalidHandle) {
			t.Errorf("stat %q: %v, want ErrInvalidHandle", h, err)
		}
		if err := s.Remove(ctx, h); !errors.Is(err, remote.ErrInvalidHandle) {
			t.Errorf("remove %q: %v, want ErrInvalidHandle", h, err)
		}
	}
	for _, typ := range remote.Types {
		if n := len(listAll(t, s, typ)); n != 0 {
			t.Errorf("invalid saves left %d objects of type %s", n, typ)
		}
	}
}

func testLocation(t *testing.T, s remote.Storage) {
	if s.Location() == "" {
		t.Fatal("empty Location")
	}
}
