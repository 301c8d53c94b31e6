package crypto

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"golang.org/x/crypto/argon2"
)

// ErrWrongPassword means no key slot opened with the given passphrase.
var ErrWrongPassword = errors.New("wrong passphrase")

// KDFParams are the argon2id parameters stored with each key slot, so they
// can be raised later without breaking old slots.
type KDFParams struct {
	Time    uint32 `json:"time"`
	Memory  uint32 `json:"memory_kib"`
	Threads uint8  `json:"threads"`
}

// DefaultKDF costs about a quarter of a second and 64 MiB on the machines we
// target: cheap for an unlock, expensive for a guessing attack.
var DefaultKDF = KDFParams{Time: 3, Memory: 64 * 1024, Threads: 2}

// TestKDF is for tests only, where thousands of unlocks must stay fast.
var TestKDF = KDFParams{Time: 1, Memory: 1024, Threads: 1}

// Slot is one stored key slot: the master key sealed under a passphrase key.
// It is stored as JSON; only the sealed field is secret, and it is sealed.
type Slot struct {
	Version  int       `json:"version"`
	KDF      string    `json:"kdf"`
	Params   KDFParams `json:"params"`
	Salt     []byte    `json:"salt"`
	Sealed   []byte    `json:"sealed"`
	Created  time.Time `json:"created"`
	Hostname string    `json:"hostname,omitempty"`
	Username string    `json:"username,omitempty"`
}

const slotAD = "keepfs key slot v1"

// NewSlot wraps k's master key under passphrase.
func NewSlot(k *Key, passphrase []byte, p KDFParams) (*Slot, error) {
	if len(passphrase) == 0 {
		return nil, errors.New("empty passphrase")
	}
	if err := p.check(); err != nil {
		return nil, err
	}
	s := &Slot{Version: 1, KDF: "argon2id", Params: p, Salt: make([]byte, 32), Created: time.Now().UTC()}
	if _, err := io.ReadFull(rand.Reader, s.Salt); err != nil {
		return nil, fmt.Errorf("salt: %w", err)
	}
	wk := argon2.IDKey(passphrase, s.Salt, p.Time, p.Memory, p.Threads, KeySize)
	defer clear(wk)
	aead, err := NewAEAD(wk)
	if err != nil {
		return nil, err
	}
	s.Sealed = sealWith(aead, nil, k.master[:], []byte(slotAD))
	return s, nil
}

// Unlock opens the slot with passphrase.
func (s *Slot) Unlock(passphrase []byte) (*Key, error) {
	// An unknown version or kdf is a slot from a newer keepfs, not a wrong
	// passphrase, and the error says so.
	if s.Version != 1 {
		return nil, fmt.Errorf("key slot: unsupported version %d", s.Version)
	}
	if s.KDF != "argon2id" {
		return nil, fmt.Errorf("key slot: unsupported kdf %q", s.KDF)
	}
	if err := s.Params.check(); err != nil {
		return nil, err
	}
	if len(s.Salt) < minSaltLen {
		return nil, fmt.Errorf("key slot: salt of %d bytes is too short", len(s.Salt))
	}
	wk := argon2.IDKey(passphrase, s.Salt, s.Params.Time, s.Params.Memory, s.Params.Threads, KeySize)
	defer clear(wk)
	aead, err := NewAEAD(wk)
	if err != nil {
		return nil, err
	}
	m, err := openWith(aead, nil, s.Sealed, []byte(slotAD))
	if err != nil {
		return nil, ErrWrongPassword
	}
	defer clear(m)
	return keyFromMaster(m)
}

// KDFLimits bound the argon2id parameters a key slot may carry. A slot
// comes from the remote, which is not trusted: without bounds a hostile
// storage could make every unlock allocate terabytes or run for days, and
// below them a slot would be too cheap to guess.
type KDFLimits struct {
	MinTime, MaxTime       uint32
	MinMemory, MaxMemory   uint32 // KiB
	MinThreads, MaxThreads uint8
}

// SlotLimits are the bounds enforced on every slot made or unlocked:
// time 1..16 passes, memory 8 MiB..4 GiB, 1..16 threads. DefaultKDF
// (t=3, 64 MiB, 2 threads) lies well inside.
var SlotLimits = KDFLimits{
	MinTime: 1, MaxTime: 16,
	MinMemory: 8 << 10, MaxMemory: 4 << 20,
	MinThreads: 1, MaxThreads: 16,
}

// minSaltLen is the shortest salt a slot may have.
const minSaltLen = 16

// limits returns SlotLimits, with the memory floor lowered to TestKDF's in
// test binaries only (testing.Testing), where thousands of unlocks must stay
// fast; the built keepfs binary always enforces SlotLimits.
func limits() KDFLimits {
	l := SlotLimits
	if testing.Testing() {
		l.MinMemory = TestKDF.Memory
	}
	return l
}

// Check refuses parameters outside l, before argon2 runs (it panics on a
// time or thread count of 0).
func (p KDFParams) Check(l KDFLimits) error {
	switch {
	case p.Time < l.MinTime || p.Time > l.MaxTime:
		return fmt.Errorf("key slot: kdf time %d is outside %d..%d; the slot was tampered with or made by another program", p.Time, l.MinTime, l.MaxTime)
	case p.Memory < l.MinMemory || p.Memory > l.MaxMemory:
		return fmt.Errorf("key slot: kdf memory %d KiB is outside %d..%d KiB; the slot was tampered with or made by another program", p.Memory, l.MinMemory, l.MaxMemory)
	case p.Threads < l.MinThreads || p.Threads > l.MaxThreads:
		return fmt.Errorf("key slot: kdf parallelism %d is outside %d..%d; the slot was tampered with or made by another program", p.Threads, l.MinThreads, l.MaxThreads)
	}
	return nil
}

func (p KDFParams) check() error { return p.Check(limits()) }

// Marshal encodes the slot for storage.
func (s *Slot) Marshal() ([]byte, error) { return json.Marshal(s) }

// ParseSlot decodes a stored slot.
func ParseSlot(b []byte) (*Slot, error) {
	var s Slot
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("parse key slot: %w", err)
	}
	return &s, nil
}
