package ignore

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// gitRepo is a scratch repository in which real `git check-ignore` answers
// what keepfs must answer. Git is a hard requirement of these tests: it is on
// every developer machine and in CI, and without it nothing would check that
// the semantics really are git's.
type gitRepo struct {
	t   testing.TB
	git string
	dir string
	env []string
}

func newGitRepo(t testing.TB) *gitRepo {
	t.Helper()
	git, err := exec.LookPath("git")
	if err != nil {
		t.Fatalf("git is the oracle for .gdprignore semantics and must be installed: %v", err)
	}
	home := t.TempDir()
	// Keep the user's and the system's configuration (core.excludesFile,
	// core.ignoreCase, ...) out of the oracle.
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GIT_") && !strings.HasPrefix(kv, "HOME=") && !strings.HasPrefix(kv, "XDG_CONFIG_HOME=") {
			env = append(env, kv)
		}
	}
	env = append(env, "HOME="+home, "XDG_CONFIG_HOME="+home, "GIT_CONFIG_NOSYSTEM=1",
		"GIT_CONFIG_GLOBAL="+os.DevNull, "LC_ALL=C")
	g := &gitRepo{t: t, git: git, dir: t.TempDir(), env: env}
	g.run(nil, "init", "-q", ".")
	return g
}

func (g *gitRepo) run(stdin []byte, args ...string) []byte {
	g.t.Helper()
	cmd := exec.Command(g.git, args...)
	cmd.Dir = g.dir
	cmd.Env = g.env
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	// check-ignore exits 1 when no path is ignored; that is an answer.
	if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == 1 && args[0] == "check-ignore" {
		err = nil
	}
	if err != nil {
		g.t.Fatalf("git %v: %v: %s", args, err, stderr.String())
	}
	return out
}

// write creates a file (and its parents) at a slash path inside the repo.
func (g *gitRepo) write(rel string, content []byte) {
	g.t.Helper()
	p := filepath.Join(g.dir, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		g.t.Fatal(err)
	}
	if err := os.WriteFile(p, content, 0o644); err != nil {
		g.t.Fatal(err)
	}
}

func (g *gitRepo) mkdir(rel string) {
	g.t.Helper()
	if err := os.MkdirAll(filepath.Join(g.dir, filepath.FromSlash(rel)), 0o755); err != nil {
		g.t.Fatal(err)
	}
}

// gitVerdict is one answer of `git check-ignore -v -n`: the deciding
// pattern, or all empty when none matched.
type gitVerdict struct {
	source  string
	line    int
	pattern string
}

func (v gitVerdict) String() string {
	if v.source == "" {
		return "(no match)"
	}
	return v.source + ":" + strconv.Itoa(v.line) + ":" + v.pattern
}

// checkIgnore asks git about every path (slash paths relative to the repo
// root, which must exist on disk so git can tell directories from files).
func (g *gitRepo) checkIgnore(paths []string) []gitVerdict {
	g.t.Helper()
	var in bytes.Buffer
	for _, p := range paths {
		in.WriteString(p)
		in.WriteByte(0)
	}
	out := g.run(in.Bytes(), "check-ignore", "--no-index", "-v", "-n", "-z", "--stdin")
	fields := strings.Split(string(out), "\x00")
	if len(fields) != 4*len(paths)+1 {
		g.t.Fatalf("git check-ignore: %d fields for %d paths: %q", len(fields), len(paths), out)
	}
	res := make([]gitVerdict, len(paths))
	for i := range paths {
		f := fields[4*i : 4*i+4]
		if f[3] != paths[i] {
			g.t.Fatalf("git check-ignore answered for %q, asked %q", f[3], paths[i])
		}
		if f[0] == "" {
			continue
		}
		line, err := strconv.Atoi(f[1])
		if err != nil {
			g.t.Fatalf("git check-ignore line %q: %v", f[1], err)
		}
		res[i] = gitVerdict{source: f[0], line: line, pattern: f[2]}
	}
	return res
}

// verdictOf turns a Decision into git's terms, renaming the ignore file so
// that a matcher fed from .gdprignore files compares with git's .gitignore.
func verdictOf(d Decision) gitVerdict {
	if !d.Matched {
		return gitVerdict{}
	}
	src := d.Source
	if strings.HasSuffix(src, FileName) {
		src = strings.TrimSuffix(src, FileName) + ".gitignore"
	}
	return gitVerdict{source: src, line: d.Line, pattern: d.Pattern}
}

// gitIgnored is what the verdict means for the path: git check-ignore -v
// shows negated patterns too, and those re-include.
func gitIgnored(v gitVerdict) bool {
	return v.source != "" && !strings.HasPrefix(v.pattern, "!")
}
