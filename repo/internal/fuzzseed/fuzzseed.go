// Package fuzzseed reads and writes seed corpus files of fuzz targets that
// take one []byte, in the `go test fuzz v1` format that go test replays
// from testdata/fuzz/FuzzName. The repository's decoders keep named seeds
// there (valid-*, and ones they must refuse), written by their tests'
// -update flag and checked by name.
package fuzzseed

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Write stores each seed as dir/name, creating dir.
func Write(t testing.TB, dir string, seeds map[string][]byte) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range seeds {
		data := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// Read parses the corpus file at path, which must hold one []byte.
func Read(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) != 2 || lines[0] != "go test fuzz v1" || !strings.HasPrefix(lines[1], "[]byte(") || !strings.HasSuffix(lines[1], ")") {
		t.Fatalf("%s: not a one-argument corpus file", path)
	}
	s, err := strconv.Unquote(lines[1][len("[]byte(") : len(lines[1])-1])
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return []byte(s)
}
