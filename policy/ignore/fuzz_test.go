package ignore

import (
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary ignore-file content and paths through parsing and
// matching: nothing may panic, and the same input must always decide the
// same way, whichever way the matcher was built.
func FuzzParse(f *testing.F) {
	f.Add([]byte("*.log\n!keep.log\n"), "a/keep.log", false)
	f.Add([]byte("a/**/b/\n"), "a/x/b", true)
	f.Fuzz(func(t *testing.T, content []byte, p string, isDir bool) {
		build := func() *Matcher {
			m := New("")
			m.AddPatterns(nil, ".gdprignore", content)
			m.AddPatterns([]string{"a"}, "a/.gdprignore", content)
			return m
		}
		m1, m2 := build(), build()
		path := strings.Split(p, "/")
		e1, e2 := m1.Explain(path, isDir), m2.Explain(path, isDir)
		if e1 != e2 || m1.Explain(path, isDir) != e1 {
			t.Fatalf("Explain not deterministic: %+v, %+v", e1, e2)
		}
		mt := m1.Match(path, isDir)
		if !e1.Ignored && mt != e1 {
			t.Fatalf("no parent is ignored, yet Explain %+v differs from Match %+v", e1, mt)
		}
		for _, d := range []Decision{e1, mt} {
			if !d.Matched {
				if d != (Decision{}) {
					t.Fatalf("unmatched decision carries data: %+v", d)
				}
				continue
			}
			lines := strings.Split(string(content), "\n")
			if d.Line < 1 || d.Line > len(lines) {
				t.Fatalf("line %d outside the %d lines of the file", d.Line, len(lines))
			}
			if d.Ignored == strings.HasPrefix(d.Pattern, "!") {
				t.Fatalf("ignored=%v disagrees with pattern %q", d.Ignored, d.Pattern)
			}
			if !strings.Contains(lines[d.Line-1], d.Pattern) {
				t.Fatalf("pattern %q is not on line %d %q", d.Pattern, d.Line, lines[d.Line-1])
			}
			if !strings.Contains(d.Format(p), "\t") {
				t.Fatalf("Format lacks the tab: %q", d.Format(p))
			}
		}
		// The raw bytes as one glob against the path, both modes: no panic,
		// and a glob always matches itself once its specials are escaped.
		wildmatch(string(content), p, true)
		wildmatch(string(content), p, false)
		if lit := patternEscape(p); !wildmatch(lit, p, true) || !wildmatch(lit, p, false) {
			t.Fatalf("escaped %q does not match itself", p)
		}
	})
}
