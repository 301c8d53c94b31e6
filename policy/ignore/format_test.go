package ignore

import (
	"strings"
	"testing"
)

func TestFormat(t *testing.T) {
	cases := []struct {
		d    Decision
		path string
		want string
	}{
		{Decision{}, "a/b", "::\ta/b"},
		{Decision{Ignored: true, Matched: true, Source: ".gdprignore", Line: 3, Pattern: "*.log"}, "x.log", ".gdprignore:3:*.log\tx.log"},
		{Decision{Matched: true, Source: "a/.gdprignore", Line: 1, Pattern: "!keep"}, "a/keep", "a/.gdprignore:1:!keep\ta/keep"},
		{Decision{Ignored: true, Matched: true, Source: "é/.gdprignore", Line: 2, Pattern: "t\\ "}, "é/t\x01\"", "\"\\303\\251/.gdprignore\":2:t\\ \t\"\\303\\251/t\\001\\\"\""},
	}
	for _, c := range cases {
		if got := c.d.Format(c.path); got != c.want {
			t.Errorf("Format(%q) = %q, want %q", c.path, got, c.want)
		}
	}
}

// TestFormatAgainstGit compares Format with `git check-ignore -v -n` output
// line for line, including git's quoting of unusual names, and the set of
// ignored paths with plain `git check-ignore`, which leaves out paths whose
// deciding pattern is a negation.
func TestFormatAgainstGit(t *testing.T) {
	g := newGitRepo(t)
	m := New("")
	files := map[string]string{
		".gitignore":    "*.q\n!keep*\nsub/\n",
		"dé/.gitignore": "x*  \n",
	}
	for rel, content := range files {
		g.write(rel, []byte(content))
		dir := []string(nil)
		if i := strings.LastIndexByte(rel, '/'); i >= 0 {
			dir = strings.Split(rel[:i], "/")
		}
		m.AddPatterns(dir, rel, []byte(content))
	}
	paths := []string{
		"a b.q", "tab\t.q", "quo\"te.q", "back\\slash.q", "é.q", "new\nline.q",
		"ctl\x7f.q", "keep.q", "plain", "dé/x1", "sub/deep/y",
	}
	for _, p := range paths {
		g.write(p, nil)
	}

	args := append([]string{"check-ignore", "--no-index", "-v", "-n", "--"}, paths...)
	lines := strings.Split(strings.TrimSuffix(string(g.run(nil, args...)), "\n"), "\n")
	if len(lines) != len(paths) {
		t.Fatalf("git printed %d lines for %d paths: %q", len(lines), len(paths), lines)
	}
	var ignored []string
	for i, p := range paths {
		d := m.Explain(strings.Split(p, "/"), false)
		if got := d.Format(p); got != lines[i] {
			t.Errorf("Format(%q) = %q, git prints %q", p, got, lines[i])
		}
		if d.Ignored {
			ignored = append(ignored, p)
		}
	}

	stdin := []byte(strings.Join(paths, "\x00") + "\x00")
	out := strings.TrimSuffix(string(g.run(stdin, "check-ignore", "--no-index", "-z", "--stdin")), "\x00")
	if got, want := strings.Join(ignored, "\x00"), out; got != want {
		t.Errorf("ignored paths %q, git ignores %q", strings.Split(got, "\x00"), strings.Split(want, "\x00"))
	}
}
