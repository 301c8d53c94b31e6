package ignore

import (
	"os"
	"path/filepath"
	"testing"
)

// Inside a mount only the mount's own ignore files apply, not those of the
// directories above it.
func TestCheckPathInStopsAtRoot(t *testing.T) {
	outer := t.TempDir()
	root := filepath.Join(outer, "mnt")
	if err := os.MkdirAll(filepath.Join(root, "docs"), 0o755); err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(outer, FileName), []byte("*.txt\n"), 0o644))
	must(os.WriteFile(filepath.Join(root, FileName), []byte("secret/\n"), 0o644))
	f := filepath.Join(root, "docs", "a.txt")
	must(os.WriteFile(f, nil, 0o644))
	if d, err := CheckPath(f); err != nil || !d.Ignored {
		t.Fatalf("from /: %+v %v", d, err)
	}
	if d, err := CheckPathIn(root, f); err != nil || d.Ignored {
		t.Fatalf("from the mount root: %+v %v", d, err)
	}
	d, err := CheckPathIn(root, filepath.Join(root, "secret", "p.txt"))
	if err != nil || !d.Ignored || d.Line != 1 || d.Source != filepath.Join(root, FileName) {
		t.Fatalf("secret: %+v %v", d, err)
	}
	if _, err := CheckPathIn(root, outer); err == nil {
		t.Fatal("a path above the root was accepted")
	}
}
