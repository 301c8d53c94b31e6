package audit

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// FuzzDecode: whatever decodes re-encodes to the same bytes, and nothing
// panics. The seed corpus (testdata/fuzz/FuzzDecode, valid records made
// with the fixed test keys plus truncated and non-canonical ones) runs in
// every go test.
func FuzzDecode(f *testing.F) {
	k := newTestKeys(f)
	f.Fuzz(func(t *testing.T, rec []byte) {
		e, err := Decode(k, rec)
		if err != nil {
			return
		}
		again, err := Encode(k, e)
		if err != nil {
			t.Fatalf("decoded entry does not encode: %v", err)
		}
		if !bytes.Equal(again, rec) {
			t.Fatalf("re-encoding differs:\n%q\n%q", rec, again)
		}
	})
}

// TestSeedsDecode pins that the valid seeds decode, so the corpus covers
// the accepting path too.
func TestSeedsDecode(t *testing.T) {
	k := newTestKeys(t)
	for _, name := range []string{"init", "erase"} {
		b, err := os.ReadFile(filepath.Join("testdata", "fuzz", "FuzzDecode", name))
		if err != nil {
			t.Fatal(err)
		}
		s := strings.TrimPrefix(strings.TrimSpace(string(b)), "go test fuzz v1\n[]byte(")
		rec, err := strconv.Unquote(strings.TrimSuffix(s, ")"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Decode(k, []byte(rec)); err != nil {
			t.Fatalf("seed %s: %v", name, err)
		}
	}
}
