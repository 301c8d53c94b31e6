package crypto

import (
	"bytes"
	"errors"
	"testing"
)

func TestSealOpen(t *testing.T) {
	k, err := NewMasterKey()
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("personal data")
	sealed := k.Seal(nil, msg, []byte("ad"))
	if bytes.Contains(sealed, msg) {
		t.Fatal("plaintext visible in ciphertext")
	}
	got, err := k.Open(nil, sealed, []byte("ad"))
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("open: %v", err)
	}
	if _, err := k.Open(nil, sealed, []byte("other ad")); !errors.Is(err, ErrAuth) {
		t.Fatal("wrong ad accepted")
	}
	for i := range sealed {
		bad := append([]byte(nil), sealed...)
		bad[i] ^= 0x40
		if _, err := k.Open(nil, bad, []byte("ad")); !errors.Is(err, ErrAuth) {
			t.Fatalf("flip at byte %d accepted", i)
		}
	}
	if bytes.Equal(sealed, k.Seal(nil, msg, []byte("ad"))) {
		t.Fatal("two seals of the same message are equal (nonce reuse)")
	}
	other, _ := NewMasterKey()
	if _, err := other.Open(nil, sealed, []byte("ad")); !errors.Is(err, ErrAuth) {
		t.Fatal("another key opened it")
	}
}

func TestKeyedIDsAndSubkeys(t *testing.T) {
	k, _ := NewMasterKey()
	k2, _ := NewMasterKey()
	a, b := k.BlobID([]byte("x")), k.BlobID([]byte("x"))
	if a != b || a == k2.BlobID([]byte("x")) {
		t.Fatal("blob ids must be stable per key and differ across keys")
	}
	subs := [][]byte{k.StateKey(), k.ChunkerKey(), k.mac[:], k.audit[:]}
	for i := range subs {
		for j := range subs {
			if i != j && bytes.Equal(subs[i], subs[j]) {
				t.Fatalf("subkeys %d and %d are equal", i, j)
			}
		}
	}
	if !EqualMAC(k.AuditMAC([]byte("e")), k.AuditMAC([]byte("e"))) || EqualMAC(k.AuditMAC([]byte("e")), k.AuditMAC([]byte("f"))) {
		t.Fatal("audit MAC")
	}
	k.Zero()
	if k.master != ([KeySize]byte{}) || k.state != ([KeySize]byte{}) {
		t.Fatal("Zero left key material")
	}
}

func TestKeySlot(t *testing.T) {
	k, _ := NewMasterKey()
	s, err := NewSlot(k, []byte("pass phrase"), TestKDF)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := s.Marshal()
	if bytes.Contains(b, k.master[:]) {
		t.Fatal("master key stored in the clear")
	}
	s2, err := ParseSlot(b)
	if err != nil {
		t.Fatal(err)
	}
	u, err := s2.Unlock([]byte("pass phrase"))
	if err != nil || u.master != k.master {
		t.Fatalf("unlock: %v", err)
	}
	if _, err := s2.Unlock([]byte("pass phrasE")); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("wrong passphrase: %v", err)
	}
	s2.Salt[0] ^= 1
	if _, err := s2.Unlock([]byte("pass phrase")); !errors.Is(err, ErrWrongPassword) {
		t.Fatal("tampered salt unlocked")
	}
	s2.Params.Memory = 1 << 30
	if _, err := s2.Unlock([]byte("pass phrase")); err == nil || errors.Is(err, ErrWrongPassword) {
		t.Fatalf("implausible parameters: %v", err)
	}
	if _, err := NewSlot(k, nil, TestKDF); err == nil {
		t.Fatal("empty passphrase accepted")
	}
}

func BenchmarkSeal1MiB(b *testing.B) {
	k, _ := NewMasterKey()
	msg := make([]byte, 1<<20)
	dst := make([]byte, 0, len(msg)+64)
	b.SetBytes(int64(len(msg)))
	for i := 0; i < b.N; i++ {
		dst = k.Seal(dst[:0], msg, nil)
	}
}

func BenchmarkBlobID1MiB(b *testing.B) {
	k, _ := NewMasterKey()
	msg := make([]byte, 1<<20)
	b.SetBytes(int64(len(msg)))
	for i := 0; i < b.N; i++ {
		k.BlobID(msg)
	}
}
