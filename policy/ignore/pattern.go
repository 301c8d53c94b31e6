package ignore

import (
	"bytes"
	"strings"
)

// pattern is one effective line of an ignore file, split the way git's
// parse_path_pattern (dir.c) splits it.
type pattern struct {
	// glob is the pattern without its leading '!' and trailing '/'.
	glob string
	// display is the line as git check-ignore -v prints it: as written,
	// minus the line ending and unescaped trailing spaces.
	display string
	line    int
	// negative: the line started with '!' and re-includes what it matches.
	negative bool
	// dirOnly: the line ended with '/' and matches directories only.
	dirOnly bool
	// basename: glob holds no '/', so it is matched against the last path
	// component at any depth below the file's directory. Otherwise it is
	// anchored to that directory and matched against the relative path.
	basename bool
	// literal is how many leading bytes of glob hold no glob character. git
	// compares them as plain bytes and hands only the rest to wildmatch,
	// which is observable: in "ab**/c" the "**" then starts the sub-pattern
	// and matches across directories.
	literal int
}

var utf8BOM = []byte("\xef\xbb\xbf")

// parseFile returns the patterns of an ignore file in file order, numbering
// lines from 1 like git does (comment and blank lines count).
func parseFile(content []byte) []pattern {
	content = bytes.TrimPrefix(content, utf8BOM)
	var out []pattern
	line := 0
	for len(content) > 0 {
		line++
		var raw []byte
		if i := bytes.IndexByte(content, '\n'); i >= 0 {
			raw, content = content[:i], content[i+1:]
		} else {
			raw, content = content, nil
		}
		if len(raw) == 0 || raw[0] == '#' {
			continue
		}
		raw = bytes.TrimSuffix(raw, []byte{'\r'})
		// git holds the line as a C string, so a NUL ends it.
		if i := bytes.IndexByte(raw, 0); i >= 0 {
			raw = raw[:i]
		}
		out = append(out, parsePattern(trimTrailingSpaces(string(raw)), line))
	}
	return out
}

// trimTrailingSpaces drops trailing spaces unless a backslash escapes them.
// Only ' ' counts; tabs stay, as in git's trim_trailing_spaces.
func trimTrailingSpaces(s string) string {
	lastSpace := -1
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case ' ':
			if lastSpace < 0 {
				lastSpace = i
			}
		case '\\':
			i++
			if i >= len(s) {
				return s
			}
			lastSpace = -1
		default:
			lastSpace = -1
		}
	}
	if lastSpace >= 0 {
		return s[:lastSpace]
	}
	return s
}

// parsePattern splits an already trimmed line. Empty results (a line of
// spaces, "!", "/") are kept: they match nothing, exactly as in git.
func parsePattern(s string, line int) pattern {
	p := pattern{display: s, line: line}
	if strings.HasPrefix(s, "!") {
		p.negative = true
		s = s[1:]
	}
	n := len(s)
	if n > 0 && s[n-1] == '/' {
		n--
		p.dirOnly = true
	}
	p.glob = s[:n]
	p.basename = strings.IndexByte(p.glob, '/') < 0
	// Measured over s, trailing '/' included, then capped, as git does.
	p.literal = 0
	for p.literal < len(s) && !isGlobSpecial(s[p.literal]) {
		p.literal++
	}
	p.literal = min(p.literal, n)
	return p
}

// match reports whether the pattern matches a path. rel is the path relative
// to the directory holding the ignore file, base its last component.
func (p *pattern) match(rel, base string, isDir bool) bool {
	if p.dirOnly && !isDir {
		return false
	}
	if p.basename {
		if p.literal == len(p.glob) {
			return base == p.glob
		}
		return wildmatch(p.glob, base, false)
	}
	glob, lit := p.glob, p.literal
	if strings.HasPrefix(glob, "/") {
		glob, lit = glob[1:], lit-1
	}
	if lit > 0 {
		if lit > len(rel) || glob[:lit] != rel[:lit] {
			return false
		}
		glob, rel = glob[lit:], rel[lit:]
		if glob == "" && rel == "" {
			return true
		}
	}
	return wildmatch(glob, rel, true)
}
