package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"--version"}, {"version"}} {
		out := mustKF(t, args...)
		for _, want := range []string{"keepfs ", "revision: ", "go: go1.", "fuse protocol: 7."} {
			if !strings.Contains(out, want) {
				t.Errorf("keepfs %s: no %q in\n%s", args[0], want, out)
			}
		}
	}
	var v buildVersion
	if err := json.Unmarshal([]byte(mustKF(t, "version", "--json")), &v); err != nil || v.GoVersion == "" || v.FUSE != fuseProtocol || v.Version == "" {
		t.Fatalf("version --json: %+v %v", v, err)
	}
}

func TestCompletion(t *testing.T) {
	if out := mustKF(t, "completion", "bash"); !strings.Contains(out, "complete -o bashdefault -o default -F _keepfs_complete keepfs") {
		t.Errorf("bash completion:\n%s", out)
	}
	if out := mustKF(t, "completion", "zsh"); !strings.HasPrefix(out, "#compdef keepfs") {
		t.Errorf("zsh completion:\n%s", out)
	}
	if out := mustKF(t, "completion", "fish"); !strings.Contains(out, "complete -c keepfs") || !strings.Contains(out, "mount") {
		t.Errorf("fish completion:\n%s", out)
	}
	if code, _, _ := kf(t, "completion", "tcsh"); code != exitUsage {
		t.Errorf("completion tcsh: exit %d, want %d", code, exitUsage)
	}
	// What the bash and zsh scripts ask for: commands, then a command's
	// flags, even after a positional argument. (urfave/cli reads os.Args
	// for the word being completed.)
	complete := func(args ...string) string {
		old := os.Args
		os.Args = append([]string{"keepfs"}, args...)
		defer func() { os.Args = old }()
		return mustKF(t, args...)
	}
	if out := complete("--generate-bash-completion"); !strings.Contains(out, "mount\n") || !strings.Contains(out, "unmount\n") {
		t.Errorf("command candidates:\n%s", out)
	}
	if out := complete("mount", "/mnt", "--c", "--generate-bash-completion"); !strings.Contains(out, "--cache-size") {
		t.Errorf("mount flag candidates:\n%s", out)
	}
}

// The checked-in man pages are what the command definitions generate.
func TestManPagesCurrent(t *testing.T) {
	dir := t.TempDir()
	mustKF(t, "man", "--dir", dir)
	want, _ := filepath.Glob(filepath.Join(dir, "*.1"))
	have, _ := filepath.Glob(filepath.Join("..", "..", "docs", "man", "*.1"))
	names := func(ps []string) []string {
		var n []string
		for _, p := range ps {
			n = append(n, filepath.Base(p))
		}
		sort.Strings(n)
		return n
	}
	if strings.Join(names(want), " ") != strings.Join(names(have), " ") {
		t.Fatalf("docs/man has %v, the commands make %v: run make man", names(have), names(want))
	}
	for _, p := range want {
		gen, _ := os.ReadFile(p)
		cur, err := os.ReadFile(filepath.Join("..", "..", "docs", "man", filepath.Base(p)))
		if err != nil || !bytes.Equal(gen, cur) {
			t.Errorf("docs/man/%s is out of date: run make man", filepath.Base(p))
		}
	}
	if len(want) < 10 {
		t.Fatalf("only %d man pages", len(want))
	}
	page, _ := os.ReadFile(filepath.Join(dir, "keepfs-mount.1"))
	if !bytes.Contains(page, []byte("keepfs mount ~/safe")) {
		t.Errorf("keepfs-mount.1 lacks its examples:\n%s", page)
	}
}

// Every visible command's help has an example.
func TestEveryCommandHasExamples(t *testing.T) {
	app := newApp(nil, nil, nil)
	for _, c := range app.Commands {
		if c.Hidden {
			continue
		}
		if len(c.Subcommands) == 0 && !strings.Contains(c.Description, "Examples:") {
			t.Errorf("keepfs %s has no examples", c.Name)
		}
		for _, s := range c.Subcommands {
			if !strings.Contains(s.Description, "Example") {
				t.Errorf("keepfs %s %s has no examples", c.Name, s.Name)
			}
		}
	}
}
