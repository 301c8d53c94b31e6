package crypto

import (
	"bytes"
	"errors"
	"strings"
	"sync"
	"testing"
)

func newKey(t testing.TB) *Key {
	t.Helper()
	k, err := NewMasterKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSealOpenRoundTrip(t *testing.T) {
	k := newKey(t)
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	for _, msg := range [][]byte{nil, {}, []byte("x"), []byte("personal data"), big} {
		for _, ad := range [][]byte{nil, []byte("ad")} {
			sealed := k.Seal(nil, msg, ad)
			if len(sealed) != len(msg)+k.Overhead() {
				t.Fatalf("sealed %d bytes to %d, overhead %d", len(msg), len(sealed), k.Overhead())
			}
			if len(msg) >= 8 && bytes.Contains(sealed, msg[:8]) {
				t.Fatal("plaintext visible in ciphertext")
			}
			got, err := k.Open(nil, sealed, ad)
			if err != nil || !bytes.Equal(got, msg) {
				t.Fatalf("open of %d bytes: %v", len(msg), err)
			}
		}
	}
}

func TestSealAppendsAndOpensInPlace(t *testing.T) {
	k := newKey(t)
	msg := []byte("appended after a prefix")
	prefix := []byte("prefix:")
	sealed := k.Seal(append([]byte(nil), prefix...), msg, nil)
	if !bytes.HasPrefix(sealed, prefix) {
		t.Fatal("Seal overwrote dst instead of appending")
	}
	sealed = sealed[len(prefix):]
	// Decrypting over the ciphertext itself is what pack.OpenBlobInPlace relies on.
	ns := k.NonceSize()
	got, err := k.Open(sealed[ns:ns], sealed, nil)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("in-place open: %q %v", got, err)
	}
}

func TestOpenRejectsTampering(t *testing.T) {
	k := newKey(t)
	msg := []byte("personal data that must not change")
	ad := []byte("ad")
	sealed := k.Seal(nil, msg, ad)
	for i := range sealed {
		for _, flip := range []byte{0x01, 0x80} {
			bad := append([]byte(nil), sealed...)
			bad[i] ^= flip
			if got, err := k.Open(nil, bad, ad); !errors.Is(err, ErrAuth) || got != nil {
				t.Fatalf("flip %#x at byte %d: %q, %v", flip, i, got, err)
			}
		}
	}
	for n := 0; n < len(sealed); n++ {
		if _, err := k.Open(nil, sealed[:n], ad); !errors.Is(err, ErrAuth) {
			t.Fatalf("truncated to %d bytes: %v", n, err)
		}
	}
	if _, err := k.Open(nil, append(append([]byte(nil), sealed...), 0), ad); !errors.Is(err, ErrAuth) {
		t.Fatal("extended ciphertext accepted")
	}
	for _, other := range [][]byte{nil, []byte("Ad"), []byte("ad\x00"), []byte("a")} {
		if _, err := k.Open(nil, sealed, other); !errors.Is(err, ErrAuth) {
			t.Fatalf("ad %q accepted", other)
		}
	}
	if _, err := newKey(t).Open(nil, sealed, ad); !errors.Is(err, ErrAuth) {
		t.Fatal("another key opened it")
	}
}

func TestSealUsesFreshNonces(t *testing.T) {
	k := newKey(t)
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		n := string(k.Seal(nil, []byte("same"), nil)[:k.NonceSize()])
		if seen[n] {
			t.Fatal("nonce repeated")
		}
		seen[n] = true
	}
}

func TestBlobIDIsKeyed(t *testing.T) {
	k, k2 := newKey(t), newKey(t)
	for _, msg := range [][]byte{nil, []byte("x"), bytes.Repeat([]byte{1}, 100000)} {
		a, b := k.BlobID(msg), k.BlobID(msg)
		if a != b {
			t.Fatal("blob id not stable under one key")
		}
		if a == k2.BlobID(msg) {
			t.Fatal("two keys give the same blob id")
		}
		if a == Hash(msg) {
			t.Fatal("blob id equals the unkeyed hash: storage could test for known content")
		}
	}
	if k.BlobID([]byte("x")) == k.BlobID([]byte("y")) {
		t.Fatal("different content, same id")
	}
	// The same master key (as after an unlock) gives the same ids.
	same, err := keyFromMaster(k.master[:])
	if err != nil {
		t.Fatal(err)
	}
	if same.BlobID([]byte("x")) != k.BlobID([]byte("x")) {
		t.Fatal("blob ids not reproducible from the master key")
	}
	if _, err := keyFromMaster(make([]byte, 16)); err == nil {
		t.Fatal("short master key accepted")
	}
}

// The pooled hashers must not leak state between concurrent callers.
func TestBlobIDConcurrent(t *testing.T) {
	k := newKey(t)
	msgs := make([][]byte, 16)
	want := make([]ID, len(msgs))
	for i := range msgs {
		msgs[i] = bytes.Repeat([]byte{byte(i)}, 1000*i)
		want[i] = k.BlobID(msgs[i])
	}
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := 0; r < 50; r++ {
				for i, m := range msgs {
					if k.BlobID(m) != want[i] {
						t.Error("concurrent BlobID gave another id")
						return
					}
				}
			}
		}()
	}
	wg.Wait()
}

func TestSubkeysDiffer(t *testing.T) {
	k := newKey(t)
	subs := map[string][]byte{
		"master": k.master[:], "mac": k.mac[:], "audit": k.audit[:],
		"state": k.StateKey(), "gear": k.ChunkerKey(),
	}
	for a, x := range subs {
		if bytes.Equal(x, make([]byte, KeySize)) {
			t.Fatalf("subkey %s is zero", a)
		}
		for b, y := range subs {
			if a != b && bytes.Equal(x, y) {
				t.Fatalf("subkeys %s and %s are equal", a, b)
			}
		}
	}
	// The data key is only reachable through the AEAD: a seal under it must
	// not open under an AEAD keyed with any other subkey.
	sealed := k.Seal(nil, []byte("m"), nil)
	for name, sub := range subs {
		aead, err := NewAEAD(sub)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := openWith(aead, nil, sealed, nil); err == nil {
			t.Fatalf("data key equals the %s key", name)
		}
	}
	// Callers get copies they may clear.
	clear(k.StateKey())
	clear(k.ChunkerKey())
	if bytes.Equal(k.state[:], make([]byte, KeySize)) || bytes.Equal(k.gear[:], make([]byte, KeySize)) {
		t.Fatal("StateKey or ChunkerKey returned the key itself")
	}
	// Another master key, other subkeys.
	k2 := newKey(t)
	if bytes.Equal(k.StateKey(), k2.StateKey()) || bytes.Equal(k.ChunkerKey(), k2.ChunkerKey()) {
		t.Fatal("subkeys do not depend on the master key")
	}
}

func TestMACs(t *testing.T) {
	k := newKey(t)
	e, f := []byte("e"), []byte("f")
	if !EqualMAC(k.AuditMAC(e), k.AuditMAC(e)) || EqualMAC(k.AuditMAC(e), k.AuditMAC(f)) {
		t.Fatal("audit MAC not a function of its input")
	}
	if EqualMAC(k.AuditMAC(e), k.StateMAC(e)) {
		t.Fatal("audit and state MACs share a key")
	}
	if EqualMAC(k.AuditMAC(e), newKey(t).AuditMAC(e)) {
		t.Fatal("audit MAC not keyed")
	}
	if len(k.AuditMAC(e)) != 32 || len(k.StateMAC(e)) != 32 {
		t.Fatal("MACs are not 32 bytes")
	}
}

func TestZero(t *testing.T) {
	k := newKey(t)
	k.BlobID([]byte("fill the hasher pool"))
	k.Zero()
	var zero [KeySize]byte
	if k.master != zero || k.mac != zero || k.audit != zero || k.state != zero || k.gear != zero {
		t.Fatal("Zero left key material")
	}
	if k.data != nil {
		t.Fatal("Zero kept the AEAD")
	}
	if h := k.macs.Get(); h != nil {
		t.Fatal("Zero kept a keyed hasher in the pool")
	}
}

func TestIDs(t *testing.T) {
	id := Hash([]byte("object"))
	if id.IsNull() || !(ID{}).IsNull() {
		t.Fatal("IsNull")
	}
	if len(id.String()) != 64 || !strings.HasPrefix(id.String(), id.Short()) || len(id.Short()) != 8 {
		t.Fatalf("String %q Short %q", id.String(), id.Short())
	}
	back, err := ParseID(id.String())
	if err != nil || back != id {
		t.Fatalf("ParseID: %v", err)
	}
	if Hash([]byte("object")) != id || Hash([]byte("objecT")) == id {
		t.Fatal("Hash not a function of its input")
	}
	for _, bad := range []string{"", id.String()[:63], id.String() + "0", strings.Repeat("g", 64), " " + id.String()[1:]} {
		if _, err := ParseID(bad); err == nil {
			t.Errorf("ParseID(%q) accepted", bad)
		}
	}
}

func BenchmarkSeal1MiB(b *testing.B) {
	k := newKey(b)
	msg := make([]byte, 1<<20)
	dst := make([]byte, 0, len(msg)+64)
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		dst = k.Seal(dst[:0], msg, nil)
	}
}

func BenchmarkOpen1MiB(b *testing.B) {
	k := newKey(b)
	sealed := k.Seal(nil, make([]byte, 1<<20), nil)
	dst := make([]byte, 0, len(sealed))
	b.SetBytes(1 << 20)
	for b.Loop() {
		if _, err := k.Open(dst[:0], sealed, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBlobID1MiB(b *testing.B) {
	k := newKey(b)
	msg := make([]byte, 1<<20)
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		k.BlobID(msg)
	}
}
