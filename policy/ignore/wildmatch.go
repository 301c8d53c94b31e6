package ignore

import "strings"

// This file re-implements git's wildmatch (git/wildmatch.c), the glob engine
// behind .gitignore, byte for byte: git compares bytes, not runes, so `?`
// never matches half of "é" and a bracket range covers byte values. The shape
// follows the C code closely (same return codes, same fast paths) because the
// pruning codes change which inputs match in corner cases; a "cleaner"
// backtracking matcher would disagree with git there.

// Results of dowild, as in wildmatch.c. The two abort codes let an outer `*`
// stop trying further text offsets that cannot succeed.
const (
	wmMatch           = 0
	wmNoMatch         = 1
	wmAbortAll        = -1
	wmAbortToStarStar = -2
)

// wildmatch reports whether text matches pattern. pathname is git's
// WM_PATHNAME: `*`, `?` and brackets do not match '/', and `**` between
// slashes matches any number of directories.
func wildmatch(pattern, text string, pathname bool) bool {
	return dowild(pattern, 0, text, pathname) == wmMatch
}

// byteAt returns s[i], or 0 past the end, standing in for C's NUL terminator.
// Patterns are cut at their first NUL when parsed, so 0 means "end".
func byteAt(s string, i int) byte {
	if i < len(s) {
		return s[i]
	}
	return 0
}

func isGlobSpecial(c byte) bool {
	return c == '*' || c == '?' || c == '[' || c == '\\'
}

// dowild matches p[pi:] against t. pStart is where this call's pattern begins,
// which decides whether a `**` at pi is at the start of a component.
func dowild(p string, pi int, t string, pathname bool) int {
	pStart := pi
	ti := 0
	for ; pi < len(p); pi, ti = pi+1, ti+1 {
		pCh := p[pi]
		tCh := byteAt(t, ti)
		if ti >= len(t) && pCh != '*' {
			return wmAbortAll
		}
		switch pCh {
		case '\\':
			// A trailing backslash leaves pCh at 0, which no text byte equals.
			pi++
			if tCh != byteAt(p, pi) {
				return wmNoMatch
			}
		case '?':
			if pathname && tCh == '/' {
				return wmNoMatch
			}
		case '*':
			var matchSlash bool
			pi++
			if byteAt(p, pi) == '*' {
				prev := pi - 2
				for pi++; byteAt(p, pi) == '*'; pi++ {
				}
				switch {
				case !pathname:
					matchSlash = true
				case (prev < pStart || p[prev] == '/') &&
					(pi >= len(p) || p[pi] == '/' || (p[pi] == '\\' && byteAt(p, pi+1) == '/')):
					// "**/" may match no directory at all: try the rest of
					// the pattern right here before letting ** eat text.
					if byteAt(p, pi) == '/' && dowild(p, pi+1, t[ti:], pathname) == wmMatch {
						return wmMatch
					}
					matchSlash = true
				default:
					// "**" inside a component is a plain "*".
					matchSlash = false
				}
			} else {
				matchSlash = !pathname
			}
			if pi >= len(p) {
				// A trailing "*" may not cross a slash; a trailing "**" may.
				if !matchSlash && strings.IndexByte(t[ti:], '/') >= 0 {
					return wmAbortToStarStar
				}
				return wmMatch
			}
			if !matchSlash && p[pi] == '/' {
				// "*/" consumes exactly the rest of this component; the loop
				// step then consumes the slash in both strings.
				slash := strings.IndexByte(t[ti:], '/')
				if slash < 0 {
					return wmAbortAll
				}
				ti += slash
				continue
			}
			for ti < len(t) {
				if !isGlobSpecial(p[pi]) {
					// The text up to the next occurrence of the literal that
					// follows the star must belong to the star.
					lit := p[pi]
					for ti < len(t) && (matchSlash || t[ti] != '/') && t[ti] != lit {
						ti++
					}
					tCh = byteAt(t, ti)
					if ti >= len(t) || tCh != lit {
						if matchSlash {
							return wmAbortAll
						}
						return wmAbortToStarStar
					}
				}
				m := dowild(p, pi, t[ti:], pathname)
				if m != wmNoMatch {
					if !matchSlash || m != wmAbortToStarStar {
						return m
					}
				} else if !matchSlash && tCh == '/' {
					return wmAbortToStarStar
				}
				ti++
				tCh = byteAt(t, ti)
			}
			return wmAbortAll
		case '[':
			var r int
			pi, r = matchBracket(p, pi, tCh, pathname)
			if r != wmMatch {
				return r
			}
		default:
			if tCh != pCh {
				return wmNoMatch
			}
		}
	}
	if ti < len(t) {
		return wmNoMatch
	}
	return wmMatch
}

// matchBracket matches one text byte against the bracket expression opening
// at p[pi] and returns the index of its closing ']'. A malformed bracket (no
// closing ']', unknown [:class:]) aborts the whole match, as in git.
func matchBracket(p string, pi int, tCh byte, pathname bool) (int, int) {
	pi++
	pCh := byteAt(p, pi)
	if pCh == '^' {
		pCh = '!'
	}
	negated := pCh == '!'
	if negated {
		pi++
		pCh = byteAt(p, pi)
	}
	var prev byte
	matched := false
	for {
		if pCh == 0 {
			return pi, wmAbortAll
		}
		switch {
		case pCh == '\\':
			pi++
			pCh = byteAt(p, pi)
			if pCh == 0 {
				return pi, wmAbortAll
			}
			if tCh == pCh {
				matched = true
			}
		case pCh == '-' && prev != 0 && byteAt(p, pi+1) != 0 && byteAt(p, pi+1) != ']':
			pi++
			pCh = p[pi]
			if pCh == '\\' {
				pi++
				pCh = byteAt(p, pi)
				if pCh == 0 {
					return pi, wmAbortAll
				}
			}
			if tCh <= pCh && tCh >= prev {
				matched = true
			}
			pCh = 0 // a range cannot be the start of another range
		case pCh == '[' && byteAt(p, pi+1) == ':':
			s := pi + 2
			end := s
			for end < len(p) && p[end] != ']' {
				end++
			}
			if end >= len(p) {
				return end, wmAbortAll
			}
			if end-s-1 < 0 || p[end-1] != ':' {
				// Not "[:name:]": the '[' is an ordinary member.
				pCh = '['
				if tCh == pCh {
					matched = true
				}
				break
			}
			in, ok := posixClass(p[s:end-1], tCh)
			if !ok {
				return end, wmAbortAll
			}
			if in {
				matched = true
			}
			pi = end
			pCh = 0
		default:
			if tCh == pCh {
				matched = true
			}
		}
		prev = pCh
		pi++
		pCh = byteAt(p, pi)
		if pCh == ']' {
			break
		}
	}
	if matched == negated || (pathname && tCh == '/') {
		return pi, wmNoMatch
	}
	return pi, wmMatch
}

// posixClass reports whether c is in the named class using git's own ctype
// tables (sane-ctype.h): ASCII only, and [:space:] is just \t \n \r and ' '.
// ok is false for a name git does not know.
func posixClass(name string, c byte) (in, ok bool) {
	alpha := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
	digit := c >= '0' && c <= '9'
	switch name {
	case "alnum":
		return alpha || digit, true
	case "alpha":
		return alpha, true
	case "blank":
		return c == ' ' || c == '\t', true
	case "cntrl":
		return c < 0x20 || c == 0x7f, true
	case "digit":
		return digit, true
	case "graph":
		return c > ' ' && c < 0x7f, true
	case "lower":
		return c >= 'a' && c <= 'z', true
	case "print":
		return c >= ' ' && c < 0x7f, true
	case "punct":
		return c > ' ' && c < 0x7f && !alpha && !digit, true
	case "space":
		return c == ' ' || c == '\t' || c == '\n' || c == '\r', true
	case "upper":
		return c >= 'A' && c <= 'Z', true
	case "xdigit":
		return digit || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F', true
	}
	return false, false
}
