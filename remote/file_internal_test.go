package remote

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// The link fallback runs only on filesystems without RENAME_NOREPLACE, so
// test it directly.
func TestLinkNoReplace(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tmp := write(".tmp-1", "new")
	final := filepath.Join(dir, "obj")
	if err := linkNoReplace(tmp, final); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tmp); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("temporary file still there after link: %v", err)
	}
	tmp2 := write(".tmp-2", "other")
	if err := linkNoReplace(tmp2, final); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("link over an existing object: %v, want fs.ErrExist", err)
	}
	if got, _ := os.ReadFile(final); string(got) != "new" {
		t.Fatalf("object overwritten: %q", got)
	}
	if err := renameNoReplace(tmp2, final); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("rename over an existing object: %v, want fs.ErrExist", err)
	}
}
