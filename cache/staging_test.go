package cache

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"testing"
)

// fileStaging returns a staging that has spilled to a file.
func fileStaging(t *testing.T) *staging {
	t.Helper()
	s, err := newStaging(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.close)
	if err := s.writeAt(randBytes(50, memStagingMax+1), 0); err != nil {
		t.Fatal(err)
	}
	if s.f == nil {
		t.Fatal("staging did not spill to a file: the test would test nothing")
	}
	return s
}

func readStaging(t *testing.T, s *staging, off uint64, n int) []byte {
	t.Helper()
	p := make([]byte, n)
	if err := s.readAt(p, off); err != nil {
		t.Fatalf("read %d bytes at %d: %v", n, off, err)
	}
	return p
}

// A staging file reused after a commit stages the next bytes under a fresh
// key.
func TestStagingRekeysAfterReset(t *testing.T) {
	s := fileStaging(t)
	key := s.key
	if err := s.reset(); err != nil {
		t.Fatal(err)
	}
	if s.key == key {
		t.Fatal("reset kept the key")
	}
	b := randBytes(52, memStagingMax+1)
	if err := s.writeAt(b, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readStaging(t, s, 0, len(b)), b) {
		t.Fatal("read after reset differs")
	}
}

// Overwriting staged bytes seals them afresh: with a reused key stream the
// XOR of the two ciphertexts would be the XOR of the two plaintexts, for
// whoever sees the disk before and after.
func TestStagingOverwriteNoKeyStreamReuse(t *testing.T) {
	s := fileStaging(t)
	const off = 10 * stageBlock
	p1, p2 := randBytes(53, 3*stageBlock), randBytes(54, 3*stageBlock)
	disk := func(p []byte) []byte {
		if err := s.writeAt(p, off); err != nil {
			t.Fatal(err)
		}
		c := make([]byte, 3*stageSealed)
		if _, err := s.f.ReadAt(c, off/stageBlock*stageSealed); err != nil {
			t.Fatal(err)
		}
		return c
	}
	c1, c2 := disk(p1), disk(p2)
	if !bytes.Equal(readStaging(t, s, off, len(p2)), p2) {
		t.Fatal("read after the overwrite differs")
	}
	for i := range 3 {
		b1 := c1[i*stageSealed+stageNonce:][:stageBlock]
		b2 := c2[i*stageSealed+stageNonce:][:stageBlock]
		x := make([]byte, stageBlock)
		for j := range x {
			x[j] = b1[j] ^ b2[j] ^ p1[i*stageBlock+j] ^ p2[i*stageBlock+j]
		}
		if bytes.Equal(x, make([]byte, stageBlock)) {
			t.Fatalf("block %d: the overwrite reused the key stream", i)
		}
		if bytes.Contains(c2, p2[i*stageBlock:][:64]) {
			t.Fatalf("block %d: plaintext on the disk", i)
		}
	}
}

// Staged bytes the disk altered, tore or lost read as an error, never as
// other bytes.
func TestStagingDamageIsAnError(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(f *os.File) error
	}{
		{"flipped bit", func(f *os.File) error {
			b := make([]byte, 1)
			if _, err := f.ReadAt(b, 2*stageSealed+100); err != nil {
				return err
			}
			b[0] ^= 1
			_, err := f.WriteAt(b, 2*stageSealed+100)
			return err
		}},
		{"zeroed block", func(f *os.File) error {
			_, err := f.WriteAt(make([]byte, stageSealed), 2*stageSealed)
			return err
		}},
		{"torn end", func(f *os.File) error { return f.Truncate(2*stageSealed + 1000) }},
		{"swapped blocks", func(f *os.File) error {
			b := make([]byte, 2*stageSealed)
			if _, err := f.ReadAt(b, stageSealed); err != nil {
				return err
			}
			_, err := f.WriteAt(append(b[stageSealed:], b[:stageSealed]...), stageSealed)
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := fileStaging(t)
			if err := tc.damage(s.f); err != nil {
				t.Fatal(err)
			}
			err := s.readAt(make([]byte, 3*stageBlock), 0)
			if !errors.Is(err, errStagingDamaged) {
				t.Fatalf("read of damaged staging: %v, want %v", err, errStagingDamaged)
			}
		})
	}
}

// Random writes at any offset and length, truncates and resets, against a
// plain byte slice: every byte read back is the last one written there.
func TestStagingMatchesModel(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	s := fileStaging(t)
	model := randBytes(50, memStagingMax+1)                 // what fileStaging wrote
	written := extents{{Start: 0, End: uint64(len(model))}} // where the model may be read
	const span = 80 * stageBlock
	for step := range 3000 {
		switch op := rng.IntN(20); {
		case op < 15:
			off := rng.IntN(span)
			n := 1 + rng.IntN(3*stageBlock)
			if rng.IntN(4) == 0 {
				n = stageBlock * (1 + rng.IntN(4))
				off = off / stageBlock * stageBlock
			}
			p := randBytes(uint64(step), n)
			if err := s.writeAt(p, uint64(off)); err != nil {
				t.Fatalf("step %d: write %d at %d: %v", step, n, off, err)
			}
			if len(model) < off+n {
				model = append(model, make([]byte, off+n-len(model))...)
			}
			copy(model[off:], p)
			written, _ = written.add(uint64(off), uint64(off+n))
		case op < 19:
			size := rng.IntN(span + 1)
			if err := s.truncate(uint64(size)); err != nil {
				t.Fatal(err)
			}
			if size < len(model) {
				model = model[:size]
			}
			written = written.clip(uint64(size))
		default:
			if err := s.reset(); err != nil {
				t.Fatal(err)
			}
			model, written = nil, nil
		}
		for _, x := range written {
			got := make([]byte, x.End-x.Start)
			if err := s.readAt(got, x.Start); err != nil {
				t.Fatalf("step %d: read [%d, %d): %v", step, x.Start, x.End, err)
			}
			if !bytes.Equal(got, model[x.Start:x.End]) {
				t.Fatalf("step %d: [%d, %d) differs from what was written", step, x.Start, x.End)
			}
		}
	}
}

// FuzzStagingRead reads any bytes as a staging file: a read fails or
// returns, never panics, and a block that opens is the one written there.
// Run it with -fuzzminimizetime 0: in this package's large test binary the
// engine's minimisation of its multi-block inputs takes nearly all the
// time (719 executions in 4 minutes, against about 9000 a second without).
func FuzzStagingRead(f *testing.F) {
	key := [32]byte{1, 2, 3}
	plain := randBytes(55, 3*stageBlock+100)
	sealed := func(p []byte, off uint64) []byte {
		s := &staging{dir: f.TempDir(), key: key}
		file, err := os.CreateTemp(s.dir, "seed")
		if err != nil {
			f.Fatal(err)
		}
		defer file.Close()
		s.f = file
		if err := s.setKey(); err != nil {
			f.Fatal(err)
		}
		if err := s.writeAt(p, off); err != nil {
			f.Fatal(err)
		}
		b, err := os.ReadFile(file.Name())
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	f.Add(sealed(plain, 0), uint32(0), uint32(len(plain)))
	f.Add(sealed(plain, 0), uint32(100), uint32(stageBlock))
	f.Add(sealed(plain, 0)[:2*stageSealed+7], uint32(5000), uint32(10))
	f.Add([]byte{}, uint32(0), uint32(1))
	file, err := os.CreateTemp(f.TempDir(), "s")
	if err != nil {
		f.Fatal(err)
	}
	defer file.Close()
	s := &staging{f: file, key: key}
	if err := s.setKey(); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, disk []byte, off, n uint32) {
		if len(disk) > 1<<20 {
			return
		}
		off, n = off%(1<<20), n%(1<<16)
		if err := file.Truncate(0); err != nil {
			t.Fatal(err)
		}
		if _, err := file.WriteAt(disk, 0); err != nil {
			t.Fatal(err)
		}
		p := make([]byte, n)
		if err := s.readAt(p, uint64(off)); err != nil {
			if !errors.Is(err, errStagingDamaged) {
				t.Fatalf("read: %v, want %v", err, errStagingDamaged)
			}
			return
		}
		// Every block the read covered opened: the seeds' blocks hold
		// plain at offset 0, and nothing else is sealed under this key.
		if len(disk) > 0 && n > 0 && uint64(off)+uint64(n) <= uint64(len(plain)) {
			if !bytes.Equal(p, plain[off:off+n]) {
				t.Fatalf("read %d at %d: other bytes than were sealed", n, off)
			}
		}
	})
}
