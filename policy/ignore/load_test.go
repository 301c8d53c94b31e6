package ignore

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
)

func TestLoadDir(t *testing.T) {
	fsys := fstest.MapFS{
		".gdprignore":   {Data: []byte("*.log\n")},
		"a/.gdprignore": {Data: []byte("# keep this one\n!keep.log\n")},
		"b/file":        {Data: nil},
		"c/.gdprignore": {Mode: fs.ModeDir},
	}
	m := New("/srv/tree")
	for _, dir := range [][]string{nil, {"a"}, {"b"}, {"c"}, {"missing"}, {"b", "file"}} {
		if err := m.LoadDir(fsys, dir); err != nil {
			t.Fatalf("LoadDir(%q): %v", dir, err)
		}
	}
	cases := []struct {
		path string
		want Decision
	}{
		{"x.log", Decision{Ignored: true, Matched: true, Source: "/srv/tree/.gdprignore", Line: 1, Pattern: "*.log"}},
		{"a/keep.log", Decision{Matched: true, Source: "/srv/tree/a/.gdprignore", Line: 2, Pattern: "!keep.log"}},
		{"c/keep.log", Decision{Ignored: true, Matched: true, Source: "/srv/tree/.gdprignore", Line: 1, Pattern: "*.log"}},
		{"b/x.txt", Decision{}},
	}
	for _, c := range cases {
		if got := m.Explain(strings.Split(c.path, "/"), false); got != c.want {
			t.Errorf("%s: got %+v, want %+v", c.path, got, c.want)
		}
	}

	if err := New("").LoadDir(fsys, []string{"..", "x"}); err == nil {
		t.Error("LoadDir accepted a directory outside the tree")
	}
}

type failingFS struct{ err error }

func (f failingFS) Open(name string) (fs.File, error) {
	return nil, &fs.PathError{Op: "open", Path: name, Err: f.err}
}

func TestLoadDirReportsReadErrors(t *testing.T) {
	err := New("").LoadDir(failingFS{fs.ErrPermission}, []string{"a"})
	if !errors.Is(err, fs.ErrPermission) || !strings.Contains(err.Error(), "a/.gdprignore") {
		t.Fatalf("got %v, want a permission error naming a/.gdprignore", err)
	}
}

// TestSymlinkedIgnoreFileNotRead: git (since 2.32) does not follow a
// symbolic link named .gitignore inside the tree; neither does LoadDir.
func TestSymlinkedIgnoreFileNotRead(t *testing.T) {
	g := newGitRepo(t)
	outside := filepath.Join(t.TempDir(), "patterns")
	if err := os.WriteFile(outside, []byte("*\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	g.mkdir("a")
	for _, name := range []string{".gitignore", FileName} {
		if err := os.Symlink(outside, filepath.Join(g.dir, "a", name)); err != nil {
			t.Fatal(err)
		}
	}
	g.write("a/x", nil)
	if v := g.checkIgnore([]string{"a/x"})[0]; v.source != "" {
		t.Fatalf("git followed the symlinked .gitignore: %v", v)
	}
	m := New("")
	if err := m.LoadDir(os.DirFS(g.dir), []string{"a"}); err != nil {
		t.Fatal(err)
	}
	if d := m.Explain([]string{"a", "x"}, false); d.Matched {
		t.Errorf("patterns read through a symlink: %+v", d)
	}
	// A "directory" that is a file on disk (ENOTDIR) has no ignore file.
	if err := m.LoadDir(os.DirFS(g.dir), []string{"a", "x"}); err != nil {
		t.Errorf("LoadDir below a file: %v", err)
	}
}

func TestCheckPath(t *testing.T) {
	dir := t.TempDir()
	write := func(rel, content string) {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(FileName, "*.log\nsecret/\n!keep.log\n")
	// Inside an ignored directory: must not be read, or it would re-include.
	write("secret/"+FileName, "!*\n")
	write("secret/s.txt", "")
	write("sub/"+FileName, "!x.log\n")
	write("sub/x.log", "")
	write("a.log", "")
	write("keep.log", "")
	if err := os.Mkdir(filepath.Join(dir, "dir.log"), 0o755); err != nil {
		t.Fatal(err)
	}
	rootFile := filepath.Join(dir, FileName)

	cases := []struct {
		path string
		want Decision
	}{
		{"a.log", Decision{Ignored: true, Matched: true, Source: rootFile, Line: 1, Pattern: "*.log"}},
		{"missing.log", Decision{Ignored: true, Matched: true, Source: rootFile, Line: 1, Pattern: "*.log"}},
		{"dir.log", Decision{Ignored: true, Matched: true, Source: rootFile, Line: 1, Pattern: "*.log"}},
		{"keep.log", Decision{Matched: true, Source: rootFile, Line: 3, Pattern: "!keep.log"}},
		{"secret", Decision{Ignored: true, Matched: true, Source: rootFile, Line: 2, Pattern: "secret/"}},
		{"secret/s.txt", Decision{Ignored: true, Matched: true, Source: rootFile, Line: 2, Pattern: "secret/"}},
		{"sub/x.log", Decision{Matched: true, Source: filepath.Join(dir, "sub", FileName), Line: 1, Pattern: "!x.log"}},
		{"sub", Decision{}},
	}
	for _, c := range cases {
		got, err := CheckPath(filepath.Join(dir, c.path))
		if err != nil {
			t.Fatalf("CheckPath(%s): %v", c.path, err)
		}
		if got != c.want {
			t.Errorf("CheckPath(%s) = %+v, want %+v", c.path, got, c.want)
		}
	}
	// "secret" only matches as a directory: a file of that name is kept.
	write("other/secret", "")
	if got, err := CheckPath(filepath.Join(dir, "other", "secret")); err != nil || got.Matched {
		t.Errorf("CheckPath(other/secret file) = %+v, %v; want no match", got, err)
	}

	t.Chdir(dir)
	if got, err := CheckPath("a.log"); err != nil || !got.Ignored || got.Source != rootFile {
		t.Errorf("CheckPath(relative a.log) = %+v, %v", got, err)
	}
	if got, err := CheckPath("/"); err != nil || got != (Decision{}) {
		t.Errorf("CheckPath(/) = %+v, %v; the root is never ignored", got, err)
	}
}
