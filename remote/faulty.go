package remote

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Op names a Storage method for fault injection.
type Op string

const (
	OpSave   Op = "save"
	OpLoad   Op = "load"
	OpStat   Op = "stat"
	OpList   Op = "list"
	OpRemove Op = "remove"
)

// ErrInjected is wrapped by every failure Faulty makes up, next to
// ErrUnreachable, so a test can tell injected faults from real ones.
var ErrInjected = errors.New("injected fault")

// Faulty wraps a Storage and injects failures on demand, for tests of the
// code above the remote: retries, health events, crash consistency and
// tamper detection. With no fault set it is a transparent pass-through.
type Faulty struct {
	s Storage

	mu          sync.Mutex
	failNext    map[Op]int    // guarded by mu
	failSaves   map[Type]int  // guarded by mu
	unreachable bool          // guarded by mu
	corrupt     bool          // guarded by mu
	truncate    int           // guarded by mu
	lostAcks    int           // guarded by mu
	delay       time.Duration // guarded by mu
	calls       map[Op]int    // guarded by mu
}

var _ Storage = (*Faulty)(nil)

// NewFaulty wraps s with no faults set.
func NewFaulty(s Storage) *Faulty {
	return &Faulty{s: s, failNext: make(map[Op]int), failSaves: make(map[Type]int), calls: make(map[Op]int)}
}

// FailNext makes the next n calls of op fail with an error wrapping
// ErrUnreachable and ErrInjected, without reaching the wrapped store.
func (f *Faulty) FailNext(op Op, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failNext[op] += n
}

// FailNextSaves makes the next n saves of objects of type t (packs, say)
// fail as FailNext does, leaving saves of other types alone.
func (f *Faulty) FailNextSaves(t Type, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failSaves[t] += n
}

// Break makes every call fail as if the remote were unreachable until Heal.
func (f *Faulty) Break() { f.setUnreachable(true) }

// Heal undoes Break.
func (f *Faulty) Heal() { f.setUnreachable(false) }

func (f *Faulty) setUnreachable(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.unreachable = on
}

// CorruptLoads makes Load flip one bit in the middle of what it returns,
// as a tampering or bit-rotting remote would. The stored object is intact.
func (f *Faulty) CorruptLoads(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.corrupt = on
}

// TruncateNextSaves makes the next n saves fail as if the connection broke
// part way through the upload. As with a real backend's atomic Save, no
// object, partial or whole, becomes visible.
func (f *Faulty) TruncateNextSaves(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.truncate += n
}

// LoseNextSaveAcks makes the next n saves store the object and then report
// an unreachable error: the acknowledgement was lost, so the caller cannot
// know the object arrived.
func (f *Faulty) LoseNextSaveAcks(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lostAcks += n
}

// SetDelay makes every call wait d (or until its context ends) first, to
// model a slow link.
func (f *Faulty) SetDelay(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.delay = d
}

// Calls returns how many times op was called, failed or not.
func (f *Faulty) Calls(op Op) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

// enter counts the call, applies the delay and returns the injected
// failure, if any, for op on h.
func (f *Faulty) enter(ctx context.Context, op Op, h Handle) error {
	f.mu.Lock()
	f.calls[op]++
	delay := f.delay
	var err error
	switch {
	case f.unreachable:
		err = fmt.Errorf("%s %s: %w: %w (broken)", op, h, ErrUnreachable, ErrInjected)
	case f.failNext[op] > 0:
		f.failNext[op]--
		err = fmt.Errorf("%s %s: %w: %w", op, h, ErrUnreachable, ErrInjected)
	case op == OpSave && f.failSaves[h.Type] > 0:
		f.failSaves[h.Type]--
		err = fmt.Errorf("%s %s: %w: %w", op, h, ErrUnreachable, ErrInjected)
	case op == OpSave && f.truncate > 0:
		f.truncate--
		err = fmt.Errorf("%s %s: connection lost part way through the upload: %w: %w", op, h, ErrUnreachable, ErrInjected)
	}
	f.mu.Unlock()
	if delay > 0 {
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s %s: %w", op, h, ctx.Err())
		case <-t.C:
		}
	}
	return err
}

// Location implements Storage.
func (f *Faulty) Location() string { return f.s.Location() }

// Save implements Storage.
func (f *Faulty) Save(ctx context.Context, h Handle, data []byte) error {
	if err := f.enter(ctx, OpSave, h); err != nil {
		return err
	}
	if err := f.s.Save(ctx, h, data); err != nil {
		return err
	}
	f.mu.Lock()
	lost := f.lostAcks > 0
	if lost {
		f.lostAcks--
	}
	f.mu.Unlock()
	if lost {
		return fmt.Errorf("save %s: acknowledgement lost: %w: %w", h, ErrUnreachable, ErrInjected)
	}
	return nil
}

// Load implements Storage.
func (f *Faulty) Load(ctx context.Context, h Handle, offset, length int64) ([]byte, error) {
	if err := f.enter(ctx, OpLoad, h); err != nil {
		return nil, err
	}
	data, err := f.s.Load(ctx, h, offset, length)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	corrupt := f.corrupt
	f.mu.Unlock()
	if corrupt && len(data) > 0 {
		data[len(data)/2] ^= 0x01
	}
	return data, nil
}

// Stat implements Storage.
func (f *Faulty) Stat(ctx context.Context, h Handle) (Info, error) {
	if err := f.enter(ctx, OpStat, h); err != nil {
		return Info{}, err
	}
	return f.s.Stat(ctx, h)
}

// List implements Storage.
func (f *Faulty) List(ctx context.Context, t Type, fn func(Info) error) error {
	if err := f.enter(ctx, OpList, Handle{Type: t}); err != nil {
		return err
	}
	return f.s.List(ctx, t, fn)
}

// Remove implements Storage.
func (f *Faulty) Remove(ctx context.Context, h Handle) error {
	if err := f.enter(ctx, OpRemove, h); err != nil {
		return err
	}
	return f.s.Remove(ctx, h)
}

// Close implements Storage.
func (f *Faulty) Close() error { return f.s.Close() }

// RemoveTemp passes TempSweeper through.
func (f *Faulty) RemoveTemp(ctx context.Context) (TempRemoved, error) {
	return RemoveTemp(ctx, f.s)
}
