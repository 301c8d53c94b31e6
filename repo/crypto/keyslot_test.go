package crypto

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func newSlot(t *testing.T, k *Key, pass string) *Slot {
	t.Helper()
	s, err := NewSlot(k, []byte(pass), TestKDF)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// reparse is what storing and loading a slot does.
func reparse(t *testing.T, s *Slot) *Slot {
	t.Helper()
	b, err := s.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	s2, err := ParseSlot(b)
	if err != nil {
		t.Fatal(err)
	}
	return s2
}

func TestSlotRoundTrip(t *testing.T) {
	k := newKey(t)
	s := newSlot(t, k, "pass phrase")
	b, _ := s.Marshal()
	if bytes.Contains(b, k.master[:]) {
		t.Fatal("master key stored in the clear")
	}
	if s.Params != TestKDF || s.KDF != "argon2id" || s.Version != 1 || len(s.Salt) != 32 {
		t.Fatalf("slot %+v", s)
	}
	u, err := reparse(t, s).Unlock([]byte("pass phrase"))
	if err != nil {
		t.Fatalf("unlock: %v", err)
	}
	if u.master != k.master || u.BlobID([]byte("x")) != k.BlobID([]byte("x")) {
		t.Fatal("unlock gave another key")
	}
	sealed := k.Seal(nil, []byte("m"), nil)
	if got, err := u.Open(nil, sealed, nil); err != nil || string(got) != "m" {
		t.Fatal("unlocked key cannot open what the original sealed")
	}
	// Two slots for one key (key add): both unlock, with distinct salts.
	s2 := newSlot(t, k, "other")
	if bytes.Equal(s.Salt, s2.Salt) {
		t.Fatal("salt reused")
	}
	if u2, err := s2.Unlock([]byte("other")); err != nil || u2.master != k.master {
		t.Fatalf("second slot: %v", err)
	}
}

func TestSlotWrongPassphrase(t *testing.T) {
	s := reparse(t, newSlot(t, newKey(t), "pass phrase"))
	for _, p := range []string{"pass phrasE", "pass phrase ", "", "pass"} {
		if k, err := s.Unlock([]byte(p)); !errors.Is(err, ErrWrongPassword) || k != nil {
			t.Fatalf("passphrase %q: %v", p, err)
		}
	}
}

func TestSlotTampered(t *testing.T) {
	k := newKey(t)
	orig := newSlot(t, k, "pw")
	tamper := map[string]func(s *Slot){
		"salt":           func(s *Slot) { s.Salt[0] ^= 1 },
		"sealed nonce":   func(s *Slot) { s.Sealed[0] ^= 1 },
		"sealed body":    func(s *Slot) { s.Sealed[len(s.Sealed)/2] ^= 1 },
		"sealed tag":     func(s *Slot) { s.Sealed[len(s.Sealed)-1] ^= 1 },
		"sealed cut":     func(s *Slot) { s.Sealed = s.Sealed[:len(s.Sealed)-1] },
		"sealed missing": func(s *Slot) { s.Sealed = nil },
		"time":           func(s *Slot) { s.Params.Time = 2 },
		"memory":         func(s *Slot) { s.Params.Memory = 2048 },
		"threads":        func(s *Slot) { s.Params.Threads = 2 },
	}
	for name, fn := range tamper {
		s := reparse(t, orig)
		fn(s)
		if _, err := s.Unlock([]byte("pw")); !errors.Is(err, ErrWrongPassword) {
			t.Errorf("%s tampered: %v", name, err)
		}
	}
	if _, err := ParseSlot([]byte("{not json")); err == nil {
		t.Error("garbage parsed as a slot")
	}
}

// Parameters from a tampered slot must be refused before argon2 runs: it
// panics on a time or thread count of 0 and would happily allocate
// terabytes. These are not a wrong passphrase.
func TestSlotImplausibleParams(t *testing.T) {
	k := newKey(t)
	orig := newSlot(t, k, "pw")
	bad := map[string]func(s *Slot){
		"memory":        func(s *Slot) { s.Params.Memory = 1 << 30 },
		"time 0":        func(s *Slot) { s.Params.Time = 0 },
		"time huge":     func(s *Slot) { s.Params.Time = 1 << 31 },
		"threads 0":     func(s *Slot) { s.Params.Threads = 0 },
		"short salt":    func(s *Slot) { s.Salt = s.Salt[:15] },
		"no salt":       func(s *Slot) { s.Salt = nil },
		"kdf":           func(s *Slot) { s.KDF = "scrypt" },
		"version":       func(s *Slot) { s.Version = 2 },
		"version unset": func(s *Slot) { s.Version = 0 },
	}
	for name, fn := range bad {
		s := reparse(t, orig)
		fn(s)
		k, err := s.Unlock([]byte("pw"))
		if err == nil || errors.Is(err, ErrWrongPassword) || k != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	for _, p := range []KDFParams{{Time: 0, Memory: 1024, Threads: 1}, {Time: 1, Memory: 1024, Threads: 0}, {Time: 1, Memory: 1 << 30, Threads: 1}} {
		if _, err := NewSlot(k, []byte("pw"), p); err == nil {
			t.Errorf("NewSlot accepted %+v", p)
		}
	}
	if _, err := NewSlot(k, nil, TestKDF); err == nil {
		t.Fatal("empty passphrase accepted")
	}
	if err := DefaultKDF.check(); err != nil {
		t.Fatalf("default parameters refused: %v", err)
	}
}

// The bounds a slot from the remote must respect, checked before argon2
// runs: a hostile storage must not make an unlock allocate terabytes, run
// for days, or accept a slot too cheap to guess.
func TestSlotLimits(t *testing.T) {
	const mib = 1024
	for _, tc := range []struct {
		name string
		p    KDFParams
		ok   bool
	}{
		{"default", DefaultKDF, true},
		{"floor", KDFParams{Time: 1, Memory: 8 * mib, Threads: 1}, true},
		{"ceiling", KDFParams{Time: 16, Memory: 4 << 20, Threads: 16}, true},
		{"time 0", KDFParams{Time: 0, Memory: 64 * mib, Threads: 2}, false},
		{"time 17", KDFParams{Time: 17, Memory: 64 * mib, Threads: 2}, false},
		{"time 1e9", KDFParams{Time: 1e9, Memory: 64 * mib, Threads: 2}, false},
		{"memory 8 KiB", KDFParams{Time: 3, Memory: 8, Threads: 2}, false},
		{"memory just under 8 MiB", KDFParams{Time: 3, Memory: 8*mib - 1, Threads: 2}, false},
		{"memory 4 GiB + 1 KiB", KDFParams{Time: 3, Memory: 4<<20 + 1, Threads: 2}, false},
		{"memory 4 TiB (wraps uint32)", KDFParams{Time: 3, Memory: ^uint32(0), Threads: 2}, false},
		{"threads 0", KDFParams{Time: 3, Memory: 64 * mib, Threads: 0}, false},
		{"threads 17", KDFParams{Time: 3, Memory: 64 * mib, Threads: 17}, false},
		{"threads 255", KDFParams{Time: 3, Memory: 64 * mib, Threads: 255}, false},
	} {
		err := tc.p.Check(SlotLimits)
		if (err == nil) != tc.ok {
			t.Errorf("%s %+v: ok=%v, got %v", tc.name, tc.p, tc.ok, err)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error spans lines: %q", tc.name, err)
		}
	}
}

// Unlock and NewSlot refuse out-of-bounds slots before running argon2
// (a slot demanding 1e9 passes would otherwise hang this test).
func TestSlotUnlockRefusesOutOfBounds(t *testing.T) {
	k := newKey(t)
	orig := newSlot(t, k, "pw")
	for name, fn := range map[string]func(s *Slot){
		"time 1e9":     func(s *Slot) { s.Params.Time = 1e9 },
		"time 17":      func(s *Slot) { s.Params.Time = 17 },
		"threads 17":   func(s *Slot) { s.Params.Threads = 17 },
		"memory 8 KiB": func(s *Slot) { s.Params.Memory = 8 },
		"memory 5 GiB": func(s *Slot) { s.Params.Memory = 5 << 20 },
	} {
		s := reparse(t, orig)
		fn(s)
		if _, err := s.Unlock([]byte("pw")); err == nil || errors.Is(err, ErrWrongPassword) || !strings.Contains(err.Error(), "outside") {
			t.Errorf("%s: %v", name, err)
		}
		if _, err := NewSlot(k, []byte("pw"), s.Params); err == nil {
			t.Errorf("%s: NewSlot accepted %+v", name, s.Params)
		}
	}
	// The built binary enforces the 8 MiB floor; only test binaries relax it.
	if SlotLimits.MinMemory != 8<<10 || limits().MinMemory != TestKDF.Memory {
		t.Fatalf("limits: %+v / %+v", SlotLimits, limits())
	}
}
