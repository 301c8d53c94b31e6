package remote

import (
	"context"
	"fmt"
	"sync"
)

// Mem is an in-memory Storage for unit tests. It copies data on the way in
// and out, so a caller mutating its buffer cannot change a stored object —
// the same isolation a real backend gives.
type Mem struct {
	mu      sync.RWMutex
	objects map[Handle][]byte // guarded by mu
}

var _ Storage = (*Mem)(nil)

// NewMem returns an empty in-memory store.
func NewMem() *Mem {
	return &Mem{objects: make(map[Handle][]byte)}
}

// Location implements Storage.
func (m *Mem) Location() string { return "mem:" }

// Save implements Storage.
func (m *Mem) Save(ctx context.Context, h Handle, data []byte) error {
	if err := h.Valid(); err != nil {
		return fmt.Errorf("save: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("save %s: %w", h, err)
	}
	buf := make([]byte, len(data))
	copy(buf, data)
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.objects[h]; ok {
		return fmt.Errorf("save %s: %w", h, ErrExists)
	}
	m.objects[h] = buf
	return nil
}

// Load implements Storage.
func (m *Mem) Load(ctx context.Context, h Handle, offset, length int64) ([]byte, error) {
	if err := h.Valid(); err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("load %s: %w", h, err)
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	data, ok := m.objects[h]
	if !ok {
		return nil, fmt.Errorf("load %s: %w", h, ErrNotFound)
	}
	n, err := CheckRange(h, offset, length, int64(len(data)))
	if err != nil {
		return nil, err
	}
	out := make([]byte, n)
	copy(out, data[offset:])
	return out, nil
}

// Stat implements Storage.
func (m *Mem) Stat(ctx context.Context, h Handle) (Info, error) {
	if err := h.Valid(); err != nil {
		return Info{}, fmt.Errorf("stat: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return Info{}, fmt.Errorf("stat %s: %w", h, err)
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	data, ok := m.objects[h]
	if !ok {
		return Info{}, fmt.Errorf("stat %s: %w", h, ErrNotFound)
	}
	return Info{Handle: h, Size: int64(len(data))}, nil
}

// List implements Storage. fn runs without the lock held, so it may call
// back into the store.
func (m *Mem) List(ctx context.Context, t Type, fn func(Info) error) error {
	if err := ValidType(t); err != nil {
		return fmt.Errorf("list %s: %w", t, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("list %s: %w", t, err)
	}
	m.mu.RLock()
	var infos []Info
	for h, data := range m.objects {
		if h.Type == t {
			infos = append(infos, Info{Handle: h, Size: int64(len(data))})
		}
	}
	m.mu.RUnlock()
	for _, fi := range infos {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("list %s: %w", t, err)
		}
		if err := fn(fi); err != nil {
			return err
		}
	}
	return nil
}

// Remove implements Storage.
func (m *Mem) Remove(ctx context.Context, h Handle) error {
	if err := h.Valid(); err != nil {
		return fmt.Errorf("remove: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("remove %s: %w", h, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.objects[h]; !ok {
		return fmt.Errorf("remove %s: %w", h, ErrNotFound)
	}
	delete(m.objects, h)
	return nil
}

// Close implements Storage.
func (m *Mem) Close() error { return nil }

// Replace overwrites h with data, bypassing the no-overwrite rule. It exists
// for tests that play an attacker tampering with the remote.
func (m *Mem) Replace(h Handle, data []byte) {
	buf := make([]byte, len(data))
	copy(buf, data)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.objects[h] = buf
}
