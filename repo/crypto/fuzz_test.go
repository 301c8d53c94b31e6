package crypto

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keepfs/keepfs/repo/internal/fuzzseed"
)

// A key slot is the one structured object read from the remote before
// anything authenticates it: ParseSlot and Unlock see hostile bytes first.
// The seed corpus lives in testdata/fuzz/FuzzParseSlot so that plain
// `go test` replays it; `go test -run TestSlotSeedCorpus -update
// ./repo/crypto` rewrites it. Files named valid-* must unlock with
// fuzzPass, bad-* must not; other files are inputs the fuzzer once found.

var update = flag.Bool("update", false, "rewrite the fuzz seed corpus in testdata/fuzz")

var (
	fuzzPass   = []byte("fuzz passphrase")
	fuzzMaster = bytes.Repeat([]byte{0x5a}, KeySize)
)

// fuzzSlot is a fresh slot of fuzzMaster under fuzzPass.
func fuzzSlot(tb testing.TB) []byte {
	tb.Helper()
	k, err := keyFromMaster(fuzzMaster)
	if err != nil {
		tb.Fatal(err)
	}
	s, err := NewSlot(k, fuzzPass, TestKDF)
	if err != nil {
		tb.Fatal(err)
	}
	b, err := s.Marshal()
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// cheapKDF bounds the argon2 work one fuzz input may ask for: parameters
// inside SlotLimits but above this are valid yet too slow to fuzz.
func cheapKDF(p KDFParams) bool {
	return p.Time <= 2 && p.Memory <= 4<<10 && p.Threads <= 4
}

func FuzzParseSlot(f *testing.F) {
	f.Add(fuzzSlot(f))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseSlot(b)
		if err != nil {
			return
		}
		// What parses is stored back unchanged by a rewrite (keepfs key
		// passwd re-marshals slots it did not make).
		m1, err := s.Marshal()
		if err != nil {
			t.Fatalf("parsed slot does not marshal: %v", err)
		}
		s2, err := ParseSlot(m1)
		if err != nil {
			t.Fatalf("marshalled slot does not parse: %v", err)
		}
		if m2, _ := s2.Marshal(); !bytes.Equal(m1, m2) {
			t.Fatalf("slot not stable under marshal:\n%s\n%s", m1, m2)
		}
		limitErr := s.Params.check()
		if limitErr == nil && !cheapKDF(s.Params) {
			return
		}
		k, err := s.Unlock(fuzzPass)
		if err != nil {
			// A refused slot fails before argon2 (which panics on a
			// zero time or thread count): out of bounds is not a wrong
			// passphrase.
			if limitErr != nil && errors.Is(err, ErrWrongPassword) {
				t.Fatalf("params %+v out of bounds (%v), yet Unlock says %v", s.Params, limitErr, err)
			}
			return
		}
		// Nothing opens but the master key sealed under fuzzPass.
		if !bytes.Equal(k.master[:], fuzzMaster) {
			t.Fatalf("slot unlocked to another master key")
		}
		if s.Version != 1 || s.KDF != "argon2id" || limitErr != nil || len(s.Salt) < minSaltLen {
			t.Fatalf("unlocked a slot Unlock should refuse: %+v", s)
		}
	})
}

func TestSlotSeedCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzParseSlot")
	if *update {
		valid := fuzzSlot(t)
		edit := func(old, new string) []byte {
			if !bytes.Contains(valid, []byte(old)) {
				t.Fatalf("%q not in %s", old, valid)
			}
			return bytes.Replace(valid, []byte(old), []byte(new), 1)
		}
		seeds := map[string][]byte{
			"valid-testkdf":    valid,
			"bad-memory-huge":  edit(`"memory_kib":1024`, `"memory_kib":4294967295`),
			"bad-time-zero":    edit(`"time":1`, `"time":0`),
			"bad-threads-zero": edit(`"threads":1`, `"threads":0`),
			"bad-version":      edit(`"version":1`, `"version":2`),
			"bad-kdf":          edit(`"kdf":"argon2id"`, `"kdf":"scrypt"`),
			"bad-salt-short":   edit(`"salt":"`, `"salt":"AAAA","x":"`),
			"bad-sealed-null":  edit(`"sealed":"`, `"sealed":null,"x":"`),
			"bad-truncated":    valid[:len(valid)/2],
		}
		fuzzseed.Write(t, dir, seeds)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	valid, bad := 0, 0
	for _, e := range ents {
		b := fuzzseed.Read(t, filepath.Join(dir, e.Name()))
		var k *Key
		s, err := ParseSlot(b)
		if err == nil {
			k, err = s.Unlock(fuzzPass)
		}
		switch {
		case strings.HasPrefix(e.Name(), "valid-"):
			valid++
			if err != nil {
				t.Errorf("%s no longer unlocks: %v", e.Name(), err)
			} else if !bytes.Equal(k.master[:], fuzzMaster) {
				t.Errorf("%s unlocks to another master key", e.Name())
			}
		case strings.HasPrefix(e.Name(), "bad-"):
			bad++
			if err == nil {
				t.Errorf("%s unlocks", e.Name())
			}
		}
	}
	if valid < 1 || bad < 5 {
		t.Errorf("%d valid and %d bad seeds; run with -update", valid, bad)
	}
}
