package ignore

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
)

// FileName is the name of an ignore file inside any directory of a tree.
const FileName = ".gdprignore"

// Decision says whether a path is ignored and which pattern decided.
type Decision struct {
	// Ignored is true when the deciding pattern excludes the path, or when
	// (Explain only) a parent directory is excluded.
	Ignored bool
	// Matched is false when no pattern matched; the other fields are then
	// zero and the path is not ignored.
	Matched bool
	// Source is the display path of the ignore file holding the pattern.
	Source string
	// Line is the 1-based line of the pattern in Source.
	Line int
	// Pattern is the line as git check-ignore -v shows it: as written,
	// without the line ending and unescaped trailing spaces, with its '!'.
	Pattern string
}

// Format renders the decision for path like `git check-ignore -v -n`:
// "SOURCE:LINE:PATTERN<TAB>PATH", or "::<TAB>PATH" when nothing matched.
// Like git, a negated pattern is shown even though the path is not ignored
// (git check-ignore -v prints the last matching pattern whatever its sign;
// only without -v are negated matches left out, which Ignored expresses), and
// SOURCE and PATH are quoted the way git quotes paths (core.quotePath).
func (d Decision) Format(path string) string {
	if !d.Matched {
		return "::\t" + quotePath(path)
	}
	return fmt.Sprintf("%s:%d:%s\t%s", quotePath(d.Source), d.Line, d.Pattern, quotePath(path))
}

// Matcher holds the ignore files of one tree. Paths are given as components
// relative to the tree's root; the root itself is never ignored.
// A Matcher is safe for concurrent use.
type Matcher struct {
	root string

	mu sync.RWMutex
	// files maps a directory (components joined by "/", "" for the root)
	// to the ignore files added for it, in the order they were added.
	files map[string][]*ignoreFile
}

type ignoreFile struct {
	source   string
	patterns []pattern
}

// New returns an empty Matcher for the tree rooted at root, a directory on
// disk or any label; LoadDir uses it to build display paths of ignore files.
func New(root string) *Matcher {
	return &Matcher{root: root, files: make(map[string][]*ignoreFile)}
}

// Root returns the root given to New.
func (m *Matcher) Root() string { return m.root }

// AddPatterns adds the content of the ignore file found in dir (components
// relative to the root, nil for the root). source is the file's display
// path, reported in decisions. Adding a second file for the same directory
// behaves as if it were appended to the first.
func (m *Matcher) AddPatterns(dir []string, source string, content []byte) {
	f := &ignoreFile{source: source, patterns: parseFile(content)}
	if len(f.patterns) == 0 {
		return
	}
	key := strings.Join(dir, "/")
	m.mu.Lock()
	m.files[key] = append(m.files[key], f)
	m.mu.Unlock()
}

// Match decides a path from the patterns of the ignore files in its
// ancestor directories: the last matching line wins, and a deeper file's
// lines come after a shallower file's. Match does not look at the path's
// parent directories; a caller walking a tree must not descend into a
// directory that is ignored (git does not either). Explain does both.
func (m *Matcher) Match(path []string, isDir bool) Decision {
	if len(path) == 0 {
		return Decision{}
	}
	full := strings.Join(path, "/")
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.matchLocked(path, full, isDir)
}

// Explain decides a path the way git check-ignore does: if one of its parent
// directories is ignored, the pattern that ignores the outermost such
// directory decides, since nothing below an excluded directory can be
// re-included. Otherwise it is Match.
func (m *Matcher) Explain(path []string, isDir bool) Decision {
	if len(path) == 0 {
		return Decision{}
	}
	full := strings.Join(path, "/")
	m.mu.RLock()
	defer m.mu.RUnlock()
	end := 0
	for k := 1; k < len(path); k++ {
		end += len(path[k-1])
		if k > 1 {
			end++
		}
		if d := m.matchLocked(path[:k], full[:end], true); d.Ignored {
			return d
		}
	}
	return m.matchLocked(path, full, isDir)
}

// matchLocked scans ignore files from the deepest ancestor of path up to the
// root and, within a file, from the last line up: the first hit decides.
// full is path joined by "/". The caller holds m.mu.
func (m *Matcher) matchLocked(path []string, full string, isDir bool) Decision {
	if len(m.files) == 0 {
		return Decision{}
	}
	base := path[len(path)-1]
	// dirEnd is the length of full's prefix naming the ancestor at depth k.
	dirEnd := len(full) - len(base) - 1
	for k := len(path) - 1; k >= 0; k-- {
		var dir, rel string
		if k == 0 {
			dir, rel = "", full
		} else {
			dir, rel = full[:dirEnd], full[dirEnd+1:]
		}
		files := m.files[dir]
		for i := len(files) - 1; i >= 0; i-- {
			f := files[i]
			for j := len(f.patterns) - 1; j >= 0; j-- {
				p := &f.patterns[j]
				if p.match(rel, base, isDir) {
					return Decision{
						Ignored: !p.negative,
						Matched: true,
						Source:  f.source,
						Line:    p.line,
						Pattern: p.display,
					}
				}
			}
		}
		if k > 0 {
			dirEnd -= len(path[k-1]) + 1
		}
	}
	return Decision{}
}

// quotePath quotes s like git's quote_c_style with core.quotePath=true: left
// alone unless it holds '"', '\\', a control byte or a non-ASCII byte, then
// wrapped in double quotes with C escapes and octal for the rest.
func quotePath(s string) string {
	needs := false
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			needs = true
			break
		}
	}
	if !needs {
		return s
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '\a':
			b.WriteString(`\a`)
		case '\b':
			b.WriteString(`\b`)
		case '\t':
			b.WriteString(`\t`)
		case '\n':
			b.WriteString(`\n`)
		case '\v':
			b.WriteString(`\v`)
		case '\f':
			b.WriteString(`\f`)
		case '\r':
			b.WriteString(`\r`)
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		default:
			if c < 0x20 || c >= 0x7f {
				b.WriteByte('\\')
				b.WriteString(strconv.FormatUint(uint64(c)|0o1000, 8)[1:])
			} else {
				b.WriteByte(c)
			}
		}
	}
	b.WriteByte('"')
	return b.String()
}
