package crypto

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
	if len(s.Salt) < 16 {
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

// check refuses parameters argon2 would panic on (time or threads of 0) and
// absurd ones from a tampered slot, which would otherwise exhaust memory or
// time before the passphrase could even be tried.
func (p KDFParams) check() error {
	if p.Time == 0 || p.Time > 100 || p.Threads == 0 || p.Memory > 4<<20 {
		return fmt.Errorf("key slot: implausible kdf parameters (time %d, memory %d KiB, threads %d)", p.Time, p.Memory, p.Threads)
	}
	return nil
}

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
