package ignore

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// The oracle test generates, from a seed, a tree of files and directories
// with ignore files at several depths, asks real git about every path, and
// requires the same deciding file, line and pattern from Explain fed by
// LoadDir. Set KEEPFS_IGNORE_SEEDS=N to run N seeds instead of the default.

// oracleNames are the names files, directories and patterns are drawn from:
// close to each other so that globs hit and miss, plus names that need
// escaping in patterns.
var oracleNames = []string{
	"a", "b", "c", "ab", "abc", "ba", "foo", "bar", "foo.txt", "bar.log",
	"x.c", "x.h", ".hidden", "a b", "#c", "!d", "e ", "[f]", "k*", "é",
	"A", "B1", "build", "keep", "out.o", "lib",
}

// oracleGlobs are single-component globs.
var oracleGlobs = []string{
	"*", "?", "*.txt", "*.log", "*.[ch]", "a*", "*o*", "[a-c]", "[!a]*", "[^b]?",
	"[[:alpha:]]*", "[[:digit:]]", "?b*", "a**", "b?", "f?o*", "*[]]", "[a-]*",
	"**",
}

// patternEscape escapes what git would otherwise read as glob syntax, and a
// leading '#' or '!' that would make a comment or a negation.
func patternEscape(name string) string {
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		c := name[i]
		if isGlobSpecial(c) || (i == 0 && (c == '#' || c == '!')) {
			b.WriteByte('\\')
		}
		b.WriteByte(c)
	}
	return b.String()
}

func oracleSegment(r *rand.Rand) string {
	if r.IntN(5) < 2 {
		return oracleGlobs[r.IntN(len(oracleGlobs))]
	}
	name := oracleNames[r.IntN(len(oracleNames))]
	if r.IntN(8) == 0 {
		// Unescaped names are patterns too ("k*" is a glob, "#c" a comment).
		return name
	}
	return patternEscape(name)
}

func oracleLine(r *rand.Rand) string {
	switch r.IntN(14) {
	case 0:
		return ""
	case 1:
		return "# " + oracleSegment(r)
	}
	var segs []string
	switch r.IntN(6) {
	case 0:
		segs = append(segs, "**")
	case 1:
		segs = append(segs, "")
	}
	for n := 1 + r.IntN(2); n > 0; n-- {
		segs = append(segs, oracleSegment(r))
		if r.IntN(6) == 0 {
			segs = append(segs, "**")
		}
	}
	line := strings.Join(segs, "/")
	if r.IntN(8) == 0 {
		line += "/**"
	}
	if r.IntN(5) == 0 {
		line += "/"
	}
	if r.IntN(3) == 0 {
		line = "!" + line
	}
	switch r.IntN(12) {
	case 0:
		line += "  "
	case 1:
		line += `\ `
	case 2:
		line += `\  `
	case 3:
		line += "\r"
	}
	return line
}

// oracleTree is a generated tree: every path (slash-separated, relative),
// whether it is a directory, and the ignore files by directory.
type oracleTree struct {
	paths   []string
	isDir   map[string]bool
	ignores map[string]string
}

func genOracleTree(seed uint64) oracleTree {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	t := oracleTree{isDir: map[string]bool{}, ignores: map[string]string{}}
	var walk func(dir string, depth int)
	walk = func(dir string, depth int) {
		if dir == "" || r.IntN(5) < 2 {
			var lines []string
			for n := 4 + r.IntN(10); n > 0; n-- {
				lines = append(lines, oracleLine(r))
			}
			t.ignores[dir] = strings.Join(lines, "\n") + "\n"
		}
		used := map[string]bool{}
		pick := func() string {
			for {
				n := oracleNames[r.IntN(len(oracleNames))]
				if !used[n] {
					used[n] = true
					return n
				}
			}
		}
		for n := 3 + r.IntN(6); n > 0; n-- {
			p := path.Join(dir, pick())
			t.paths = append(t.paths, p)
		}
		if depth < 3 {
			for n := 2 + r.IntN(3); n > 0; n-- {
				p := path.Join(dir, pick())
				t.paths = append(t.paths, p)
				t.isDir[p] = true
				walk(p, depth+1)
			}
		}
	}
	walk("", 0)
	for dir := range t.ignores {
		for _, name := range []string{".gitignore", FileName} {
			t.paths = append(t.paths, path.Join(dir, name))
		}
	}
	sort.Strings(t.paths)
	return t
}

func oracleSeeds(t *testing.T) []uint64 {
	n := 6
	if s := os.Getenv("KEEPFS_IGNORE_SEEDS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			t.Fatalf("KEEPFS_IGNORE_SEEDS=%q: want a positive count", s)
		}
		n = v
	}
	seeds := make([]uint64, n)
	for i := range seeds {
		seeds[i] = uint64(i + 1)
	}
	return seeds
}

func TestOracleRandomTrees(t *testing.T) {
	// What decided, over all seeds: a corpus that never exercises one of
	// these would let a whole rule go unchecked.
	var total, lines, byPattern, byNegation, byParent, unmatched int
	for _, seed := range oracleSeeds(t) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			tree := genOracleTree(seed)
			g := newGitRepo(t)
			for _, p := range tree.paths {
				if tree.isDir[p] {
					g.mkdir(p)
					continue
				}
				var content []byte
				if b := path.Base(p); b == ".gitignore" || b == FileName {
					dir := path.Dir(p)
					if dir == "." {
						dir = ""
					}
					content = []byte(tree.ignores[dir])
				}
				g.write(p, content)
			}

			m := New("")
			fsys := os.DirFS(g.dir)
			if err := m.LoadDir(fsys, nil); err != nil {
				t.Fatal(err)
			}
			for _, p := range tree.paths {
				if tree.isDir[p] {
					if err := m.LoadDir(fsys, strings.Split(p, "/")); err != nil {
						t.Fatal(err)
					}
				}
			}

			for _, content := range tree.ignores {
				lines += strings.Count(content, "\n")
			}
			want := g.checkIgnore(tree.paths)
			bad := 0
			for i, p := range tree.paths {
				comps := strings.Split(p, "/")
				d := m.Explain(comps, tree.isDir[p])
				switch {
				case !d.Matched:
					unmatched++
				case d != m.Match(comps, tree.isDir[p]):
					byParent++
				case d.Ignored:
					byPattern++
				default:
					byNegation++
				}
				got := verdictOf(d)
				if got != want[i] || d.Ignored != gitIgnored(want[i]) {
					bad++
					if bad <= 10 {
						t.Errorf("seed %d: %q (dir=%v): keepfs %v ignored=%v, git %v", seed, p, tree.isDir[p], got, d.Ignored, want[i])
					}
				}
			}
			if bad > 0 {
				var dirs []string
				for d := range tree.ignores {
					dirs = append(dirs, d)
				}
				sort.Strings(dirs)
				for _, d := range dirs {
					t.Logf("seed %d: ignore file in %q:\n%s", seed, d, tree.ignores[d])
				}
				t.Fatalf("seed %d: %d of %d paths decided differently from git", seed, bad, len(tree.paths))
			}
			total += len(tree.paths)
		})
	}
	t.Logf("%d paths under %d pattern lines agreed with git: %d ignored by their own pattern, %d by a parent directory, %d re-included by a negation, %d unmatched",
		total, lines, byPattern, byParent, byNegation, unmatched)
	if !t.Failed() && (byPattern == 0 || byParent == 0 || byNegation == 0 || unmatched == 0) {
		t.Errorf("the generated corpus no longer exercises every kind of decision")
	}
}

// TestCharacterClassesAgainstGit sweeps every byte value through each POSIX
// class, `?` and a negated range, since names may hold any byte but '/'.
func TestCharacterClassesAgainstGit(t *testing.T) {
	globs := map[string]string{
		"alnum": "x[[:alnum:]]", "alpha": "x[[:alpha:]]", "blank": "x[[:blank:]]",
		"cntrl": "x[[:cntrl:]]", "digit": "x[[:digit:]]", "graph": "x[[:graph:]]",
		"lower": "x[[:lower:]]", "print": "x[[:print:]]", "punct": "x[[:punct:]]",
		"space": "x[[:space:]]", "upper": "x[[:upper:]]", "xdigit": "x[[:xdigit:]]",
		"question": "x?", "negrange": "x[!+-9]", "escrange": `x[\]-\~]`,
	}
	g := newGitRepo(t)
	m := New("")
	var paths []string
	for dir, glob := range globs {
		content := glob + "\n"
		g.write(dir+"/.gitignore", []byte(content))
		m.AddPatterns([]string{dir}, dir+"/.gitignore", []byte(content))
		for c := 1; c < 256; c++ {
			if c == '/' {
				continue
			}
			p := dir + "/x" + string([]byte{byte(c)})
			g.write(p, nil)
			paths = append(paths, p)
		}
	}
	want := g.checkIgnore(paths)
	for i, p := range paths {
		got := verdictOf(m.Match(strings.Split(p, "/"), false))
		if got != want[i] {
			t.Errorf("%q: keepfs %v, git %v", p, got, want[i])
		}
	}
}
