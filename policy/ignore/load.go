package ignore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
)

// LoadDir adds the ignore file of dir (components relative to the root of
// fsys, nil for the root) if there is one. Its display path is the Matcher's
// root joined with dir and FileName.
//
// Like git (since 2.32) for in-tree ignore files, a symbolic link or any
// other non-regular file named FileName is not read: a link could otherwise
// pull patterns from outside the tree. A missing file is not an error; any
// other failure to read it is, since guessing would either leak data that
// was meant to be excluded or drop data that was meant to be kept.
func (m *Matcher) LoadDir(fsys fs.FS, dir []string) error {
	name := strings.Join(append(append([]string{}, dir...), FileName), "/")
	if !fs.ValidPath(name) {
		return fmt.Errorf("ignore: load %q: not a valid directory path", dir)
	}
	fi, err := fs.Lstat(fsys, name)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return nil
		}
		return fmt.Errorf("ignore: stat %s: %w", name, err)
	}
	if !fi.Mode().IsRegular() {
		return nil
	}
	content, err := fs.ReadFile(fsys, name)
	if err != nil {
		return fmt.Errorf("ignore: read %s: %w", name, err)
	}
	m.AddPatterns(dir, path.Join(m.root, name), content)
	return nil
}

// CheckPath explains a path on disk the way `git check-ignore -v` would if
// the whole file system were one tree rooted at "/": the ignore files of
// "/" and of every directory down to the path's parent apply, read from disk,
// and an ignored parent directory decides (its own ignore file is then not
// read, as git does not descend into it). A relative path is taken from the
// working directory; paths are cleaned lexically, symbolic links in them are
// not resolved. Whether the path is a directory comes from lstat; a missing
// path counts as a file.
func CheckPath(p string) (Decision, error) { return CheckPathIn("/", p) }

// CheckPathIn is CheckPath for a tree rooted at root (a keepfs mount point,
// say): only the ignore files from root down apply. p must be root or
// below it.
func CheckPathIn(root, p string) (Decision, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return Decision{}, fmt.Errorf("ignore: check %s: %w", p, err)
	}
	root = filepath.Clean(root)
	rel, err := filepath.Rel(root, abs)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return Decision{}, fmt.Errorf("ignore: %s is not below %s", p, root)
	}
	if rel == "." {
		return Decision{}, nil
	}
	comps := strings.Split(filepath.ToSlash(rel), "/")
	isDir := false
	if fi, err := os.Lstat(abs); err == nil {
		isDir = fi.IsDir()
	}
	m := New(root)
	fsys := os.DirFS(root)
	if err := m.LoadDir(fsys, nil); err != nil {
		return Decision{}, err
	}
	for k := 1; k < len(comps); k++ {
		if d := m.Match(comps[:k], true); d.Ignored {
			return d, nil
		}
		if err := m.LoadDir(fsys, comps[:k]); err != nil {
			return Decision{}, err
		}
	}
	return m.Match(comps, isDir), nil
}
