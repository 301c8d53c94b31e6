package ignore

import (
	"sort"
	"strings"
	"testing"
)

// ruleCase is one semantic rule: ignore files (directory -> content, "" is
// the root), a path, and what must decide it. want is "FILE:LINE:PATTERN" as
// git check-ignore -v prints it, or "" when no pattern applies.
type ruleCase struct {
	name    string
	files   map[string]string
	path    string
	dir     bool
	want    string
	ignored bool
}

func root(content string) map[string]string { return map[string]string{"": content} }

var ruleCases = []ruleCase{
	// Basename patterns (no slash) match at any depth, files and directories.
	{"basename at depth", root("foo"), "a/b/foo", false, ".gitignore:1:foo", true},
	{"basename matches a dir", root("foo"), "foo", true, ".gitignore:1:foo", true},
	{"basename glob", root("*.log"), "x/y.log", false, ".gitignore:1:*.log", true},
	{"basename is whole name", root("foo"), "foobar", false, "", false},
	{"star matches dotfiles", root("*"), ".hidden", false, ".gitignore:1:*", true},

	// Trailing slash: directories only, but their contents follow them.
	{"dir-only skips files", root("foo/"), "foo", false, "", false},
	{"dir-only matches dirs", root("foo/"), "a/foo", true, ".gitignore:1:foo/", true},
	{"dir-only excludes contents", root("foo/"), "foo/x", false, ".gitignore:1:foo/", true},
	{"any dir", root("**/"), "a", true, ".gitignore:1:**/", true},
	{"any dir skips files", root("**/"), "a", false, "", false},

	// Anchoring: a slash at the start or in the middle anchors to the base.
	{"leading slash anchors", root("/foo"), "a/foo", false, "", false},
	{"leading slash at base", root("/foo"), "foo", false, ".gitignore:1:/foo", true},
	{"middle slash anchors", root("a/foo"), "x/a/foo", false, "", false},
	{"middle slash at base", root("a/foo"), "a/foo", false, ".gitignore:1:a/foo", true},
	{"star stays in a component", root("a/*.c"), "a/b/x.c", false, "", false},
	{"question mark not slash", root("/a?b"), "a/b", false, "", false},
	{"only slash matches nothing", root("/"), "a", true, "", false},

	// Double stars.
	{"leading ** any depth", root("**/foo"), "x/y/foo", false, ".gitignore:1:**/foo", true},
	{"leading ** zero depth", root("**/foo"), "foo", false, ".gitignore:1:**/foo", true},
	{"leading ** with path", root("**/foo/bar"), "x/foo/bar", false, ".gitignore:1:**/foo/bar", true},
	{"middle ** zero dirs", root("a/**/b"), "a/b", false, ".gitignore:1:a/**/b", true},
	{"middle ** many dirs", root("a/**/b"), "a/x/y/b", false, ".gitignore:1:a/**/b", true},
	{"middle ** backtracks", root("a/**/b/c"), "a/b/x/b/c", false, ".gitignore:1:a/**/b/c", true},
	{"trailing ** not the dir", root("foo/**"), "foo", true, "", false},
	{"trailing ** contents", root("foo/**"), "foo/x/y", false, ".gitignore:1:foo/**", true},
	{"trailing **/ dirs only", root("foo/**/"), "foo/x", false, "", false},
	{"trailing **/ dir", root("foo/**/"), "foo/x", true, ".gitignore:1:foo/**/", true},
	{"** inside name is star", root("a**b"), "axyb", false, ".gitignore:1:a**b", true},
	{"anchored ** inside name", root("/x/a**b"), "x/ax/yb", false, "", false},
	// git compares the literal head "ab" first and matches the rest on its
	// own, so this "**" starts a sub-pattern and spans directories.
	{"** after literal head", root("/ab**/c"), "abx/y/c", false, ".gitignore:1:/ab**/c", true},
	{"lone ** matches all", root("**"), "a/b", false, ".gitignore:1:**", true},

	// Character classes.
	{"range", root("[a-c].txt"), "b.txt", false, ".gitignore:1:[a-c].txt", true},
	{"range miss", root("[a-c].txt"), "d.txt", false, "", false},
	{"bang negates", root("[!a-c].txt"), "d.txt", false, ".gitignore:1:[!a-c].txt", true},
	{"caret negates", root("[^a].txt"), "a.txt", false, "", false},
	{"bracket first", root("[]]x"), "]x", false, ".gitignore:1:[]]x", true},
	{"dash last", root("[a-]x"), "-x", false, ".gitignore:1:[a-]x", true},
	{"posix class", root("[[:digit:]]x"), "7x", false, ".gitignore:1:[[:digit:]]x", true},
	{"unknown class", root("[[:nope:]]x"), "7x", false, "", false},
	{"unterminated bracket", root("a["), "a[", false, "", false},
	{"question is one byte", root("?"), "é", false, "", false},
	{"two questions one rune", root("??"), "é", false, ".gitignore:1:??", true},

	// Negation and precedence.
	{"negation re-includes", root("*.log\n!keep.log"), "keep.log", false, ".gitignore:2:!keep.log", false},
	{"last line wins", root("!keep.log\n*.log"), "keep.log", false, ".gitignore:2:*.log", true},
	{"deeper file wins", map[string]string{"": "*.log", "a": "!*.log"}, "a/x.log", false, "a/.gitignore:1:!*.log", false},
	{"deeper file wins to exclude", map[string]string{"": "!x.log", "a": "x.log"}, "a/x.log", false, "a/.gitignore:1:x.log", true},
	{"excluded dir stays excluded", root("build/\n!build/keep"), "build/keep", false, ".gitignore:1:build/", true},
	{"outermost excluded dir decides", root("a/\nb/"), "a/b/c", false, ".gitignore:1:a/", true},
	{"contents re-include", root("build/*\n!build/keep"), "build/keep", false, ".gitignore:2:!build/keep", false},
	{"no file inside excluded dir", map[string]string{"": "a/", "a": "!x"}, "a/x", false, ".gitignore:1:a/", true},
	{"star then dirs back", root("*\n!*/"), "a", true, ".gitignore:2:!*/", false},
	{"star then dirs back file", root("*\n!*/"), "a/x", false, ".gitignore:1:*", true},
	{"lone bang matches nothing", root("!"), "a", false, "", false},

	// Patterns of a deeper file are relative to its directory.
	{"sub anchored", map[string]string{"a": "/b"}, "a/b", false, "a/.gitignore:1:/b", true},
	{"sub anchored deeper miss", map[string]string{"a": "/b"}, "a/c/b", false, "", false},
	{"sub middle slash", map[string]string{"a": "b/c"}, "a/x/b/c", false, "", false},
	{"sub basename only below", map[string]string{"a": "x"}, "b/x", false, "", false},
	{"sub file not its own dir", map[string]string{"a": "a"}, "a", true, "", false},

	// Lines: comments, escapes, spaces, line endings.
	{"comment", root("#foo"), "#foo", false, "", false},
	{"escaped hash", root(`\#foo`), "#foo", false, `.gitignore:1:\#foo`, true},
	{"escaped bang", root(`\!imp`), "!imp", false, `.gitignore:1:\!imp`, true},
	{"escaped star", root(`\*`), "a", false, "", false},
	{"escaped star literal", root(`\*`), "*", false, `.gitignore:1:\*`, true},
	{"trailing spaces dropped", root("foo   "), "foo", false, ".gitignore:1:foo", true},
	{"escaped trailing space", root(`foo\ `), "foo ", false, `.gitignore:1:foo\ `, true},
	{"escaped space then space", root(`foo\  `), "foo ", false, `.gitignore:1:foo\ `, true},
	{"trailing tab kept", root("foo\t"), "foo", false, "", false},
	{"trailing tab matches", root("foo\t"), "foo\t", false, ".gitignore:1:foo\t", true},
	{"trailing backslash", root(`foo\`), "foo", false, "", false},
	{"blank and comment lines count", root("\n\n# c\nfoo"), "foo", false, ".gitignore:4:foo", true},
	{"crlf", root("foo\r\nbar\r\n"), "bar", false, ".gitignore:2:bar", true},
	{"bom", root("\xef\xbb\xbffoo"), "foo", false, ".gitignore:1:foo", true},
}

// matcherFor builds a Matcher from a case's files, named like git names them.
func matcherFor(files map[string]string) *Matcher {
	m := New("")
	dirs := make([]string, 0, len(files))
	for d := range files {
		dirs = append(dirs, d)
	}
	sort.Strings(dirs)
	for _, d := range dirs {
		var comps []string
		src := ".gitignore"
		if d != "" {
			comps = strings.Split(d, "/")
			src = d + "/.gitignore"
		}
		m.AddPatterns(comps, src, []byte(files[d]))
	}
	return m
}

func TestRules(t *testing.T) {
	for _, c := range ruleCases {
		t.Run(c.name, func(t *testing.T) {
			d := matcherFor(c.files).Explain(strings.Split(c.path, "/"), c.dir)
			if got := verdictOf(d); got.String() != verdictString(c.want) {
				t.Errorf("files %q, path %q dir=%v: decided by %v, want %v", c.files, c.path, c.dir, got, verdictString(c.want))
			}
			if d.Ignored != c.ignored {
				t.Errorf("files %q, path %q dir=%v: ignored=%v, want %v", c.files, c.path, c.dir, d.Ignored, c.ignored)
			}
		})
	}
}

func verdictString(want string) string {
	if want == "" {
		return gitVerdict{}.String()
	}
	return want
}

// TestRulesAgreeWithGit checks the expectations of TestRules themselves
// against git, so the table cannot encode a misunderstanding of git.
func TestRulesAgreeWithGit(t *testing.T) {
	for _, c := range ruleCases {
		t.Run(c.name, func(t *testing.T) {
			g := newGitRepo(t)
			for d, content := range c.files {
				rel := ".gitignore"
				if d != "" {
					rel = d + "/.gitignore"
				}
				g.write(rel, []byte(content))
			}
			if c.dir {
				g.mkdir(c.path)
			} else {
				g.write(c.path, nil)
			}
			v := g.checkIgnore([]string{c.path})[0]
			if v.String() != verdictString(c.want) {
				t.Errorf("git decides %q by %v, table says %v", c.path, v, verdictString(c.want))
			}
			if gitIgnored(v) != c.ignored {
				t.Errorf("git ignored=%v for %q, table says %v", gitIgnored(v), c.path, c.ignored)
			}
		})
	}
}

// TestMatchIgnoresParents pins the difference between Match and Explain:
// Match looks at the path alone, for walkers that prune excluded directories.
func TestMatchIgnoresParents(t *testing.T) {
	m := matcherFor(root("build/\n!build/keep\na/*"))
	cases := []struct {
		path          string
		match         string
		matchIgnored  bool
		explain       string
		explainIgnore bool
	}{
		{"build/keep", ".gitignore:2:!build/keep", false, ".gitignore:1:build/", true},
		{"a/b/c", "", false, ".gitignore:3:a/*", true},
		{"a/b", ".gitignore:3:a/*", true, ".gitignore:3:a/*", true},
	}
	for _, c := range cases {
		p := strings.Split(c.path, "/")
		md, ed := m.Match(p, false), m.Explain(p, false)
		if got := verdictOf(md).String(); got != verdictString(c.match) || md.Ignored != c.matchIgnored {
			t.Errorf("Match(%q) = %v ignored=%v, want %v ignored=%v", c.path, got, md.Ignored, verdictString(c.match), c.matchIgnored)
		}
		if got := verdictOf(ed).String(); got != verdictString(c.explain) || ed.Ignored != c.explainIgnore {
			t.Errorf("Explain(%q) = %v ignored=%v, want %v ignored=%v", c.path, got, ed.Ignored, verdictString(c.explain), c.explainIgnore)
		}
	}
	if d := m.Explain(nil, true); d.Matched || d.Ignored {
		t.Errorf("the root itself must never be ignored, got %+v", d)
	}
}

// TestAddPatternsAppends: a second file for one directory acts as if it were
// appended to the first, so its lines win.
func TestAddPatternsAppends(t *testing.T) {
	m := New("")
	m.AddPatterns(nil, "one", []byte("*.log"))
	m.AddPatterns(nil, "two", []byte("!keep.log"))
	d := m.Match([]string{"keep.log"}, false)
	if d.Ignored || d.Source != "two" || d.Line != 1 {
		t.Errorf("got %+v, want not ignored by two:1", d)
	}
	if d := m.Match([]string{"x.log"}, false); !d.Ignored || d.Source != "one" {
		t.Errorf("got %+v, want ignored by one:1", d)
	}
}
