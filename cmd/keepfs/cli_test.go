package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keepfs/keepfs/remote/remotetest"
)

// kf runs the CLI in-process and returns its exit code, stdout and stderr.
func kf(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(append([]string{"keepfs"}, args...), strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

func mustKF(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errs := kf(t, args...)
	if code != 0 {
		t.Fatalf("keepfs %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

func writeFile(t *testing.T, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestCLIRoundTrip(t *testing.T) {
	t.Setenv("KEEPFS_PASSWORD", "secret words")
	w := t.TempDir()
	src := filepath.Join(w, "src")
	writeFile(t, filepath.Join(src, "docs", "a.txt"), "alpha\n")
	writeFile(t, filepath.Join(src, "docs", "b.log"), "excluded\n")
	writeFile(t, filepath.Join(src, ".gdprignore"), "*.log\n")
	g := []string{"--repo", "file://" + filepath.Join(w, "remote"), "--state", filepath.Join(w, "state")}

	mustKF(t, append(g, "init")...)
	if code, _, errs := kf(t, append(g, "init")...); code != 1 || !strings.Contains(errs, "already exists") {
		t.Fatalf("second init: exit %d %q", code, errs)
	}
	// Flags after the positional argument, global flags after the command.
	out := mustKF(t, "import", src, "--json", "--repo", g[1])
	var sum struct {
		Files, Excluded int
	}
	if err := json.Unmarshal([]byte(out), &sum); err != nil || sum.Files != 2 || sum.Excluded != 1 {
		t.Fatalf("import summary %q: %v", out, err)
	}
	out = mustKF(t, append(g, "snapshots", "--json")...)
	var snaps []map[string]any
	if err := json.Unmarshal([]byte(out), &snaps); err != nil || len(snaps) != 1 {
		t.Fatalf("snapshots: %q %v", out, err)
	}
	dst := filepath.Join(w, "out")
	mustKF(t, append(g, "restore", "/docs", "--to", dst)...)
	if b, err := os.ReadFile(filepath.Join(dst, "docs", "a.txt")); err != nil || string(b) != "alpha\n" {
		t.Fatalf("restored a.txt: %q %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(dst, "docs", "b.log")); err == nil {
		t.Fatal("excluded file restored")
	}
	if code, _, errs := kf(t, append(g, "restore", "/nope", "--to", dst)...); code != 1 || strings.Count(errs, "\n") != 1 {
		t.Fatalf("restore of a missing path: exit %d %q", code, errs)
	}
	if code, _, _ := kf(t, append(g, "restore", "/docs", "--at", "1999-01-01", "--to", dst)...); code != 1 {
		t.Fatalf("restore before the first snapshot: exit %d", code)
	}
	mustKF(t, append(g, "check", "--read-data")...)

	// Wrong passphrase: one line, exit 1.
	t.Setenv("KEEPFS_PASSWORD", "wrong")
	code, _, errs := kf(t, append(g, "snapshots")...)
	if code != 1 || strings.Count(errs, "\n") != 1 || !strings.Contains(errs, "wrong passphrase") {
		t.Fatalf("wrong passphrase: exit %d %q", code, errs)
	}
	t.Setenv("KEEPFS_PASSWORD", "")
	pwFile := filepath.Join(w, "pw")
	writeFile(t, pwFile, "secret words\n")
	mustKF(t, append(g, "--password-file", pwFile, "snapshots")...)
	mustKF(t, append(g, "--password-command", "echo 'secret words'", "snapshots")...)

	// Key slots: add a second passphrase, change it, remove it.
	t.Setenv("KEEPFS_PASSWORD", "secret words")
	t.Setenv("KEEPFS_NEW_PASSWORD", "second phrase")
	mustKF(t, append(g, "key", "add")...)
	out = mustKF(t, append(g, "key", "list", "--json")...)
	if strings.Count(out, `"id"`) != 2 {
		t.Fatalf("key list: %s", out)
	}
	t.Setenv("KEEPFS_PASSWORD", "second phrase")
	t.Setenv("KEEPFS_NEW_PASSWORD", "third phrase")
	mustKF(t, append(g, "key", "passwd")...)
	if code, _, _ := kf(t, append(g, "snapshots")...); code != 1 {
		t.Fatal("old passphrase still works after passwd")
	}
	t.Setenv("KEEPFS_PASSWORD", "third phrase")
	mustKF(t, append(g, "snapshots")...)
	// This client's own key changes are no incidents (its view follows them).
	if out := mustKF(t, append(g, "incidents")...); !strings.Contains(out, "no open incidents") {
		t.Fatalf("own key changes raised incidents:\n%s", out)
	}
}

func TestCLIUsageErrors(t *testing.T) {
	t.Setenv("KEEPFS_PASSWORD", "x")
	for _, args := range [][]string{
		{"restore", "/a"}, // no --to
		{"import"},        // no dir
		{"--repo", "file:///nonexistent", "restore", "/a", "--to", "x", "--at", "yesterday"},
		{"check", "--no-such-flag"},
		{"snapshots", "extra"},
	} {
		code, _, errs := kf(t, args...)
		if code != exitUsage || strings.Contains(errs, "goroutine") {
			t.Errorf("keepfs %v: exit %d, %q; want %d", args, code, errs, exitUsage)
		}
	}
	code, _, errs := kf(t, "snapshots")
	if code != exitUsage || !strings.Contains(errs, "--repo") {
		t.Errorf("no repo: exit %d %q", code, errs)
	}
}

func TestCLIHelpOnEveryCommand(t *testing.T) {
	app := newApp(strings.NewReader(""), &bytes.Buffer{}, &bytes.Buffer{})
	for _, c := range app.Commands {
		paths := [][]string{{c.Name}}
		for _, s := range c.Subcommands {
			paths = append(paths, []string{c.Name, s.Name})
		}
		for _, p := range paths {
			code, out, errs := kf(t, append(p, "--help")...)
			if code != 0 || !strings.Contains(out, p[len(p)-1]) {
				t.Errorf("%v --help: exit %d %q %q", p, code, out, errs)
			}
			if len(p) == 2 || len(c.Subcommands) == 0 {
				if !strings.Contains(out, "Example") && !strings.Contains(out, "keepfs ") {
					t.Errorf("%v --help has no examples", p)
				}
			}
		}
	}
}

func TestCLISFTP(t *testing.T) {
	sshd := remotetest.StartSSHD(t)
	t.Setenv("KEEPFS_PASSWORD", "sftp words")
	w := t.TempDir()
	src := filepath.Join(w, "src")
	writeFile(t, filepath.Join(src, "x", "y.txt"), "over ssh\n")
	g := []string{"--repo", sshd.URL(filepath.Join(w, "remote")), "--known-hosts", sshd.KnownHosts, "--identity", sshd.Identity}
	mustKF(t, append(g, "init")...)
	mustKF(t, append(g, "import", src)...)
	mustKF(t, append(g, "restore", "/", "--to", filepath.Join(w, "out"))...)
	if b, _ := os.ReadFile(filepath.Join(w, "out", "x", "y.txt")); string(b) != "over ssh\n" {
		t.Fatalf("restored over sftp: %q", b)
	}
	mustKF(t, append(g, "check", "--read-data")...)
	// An unknown host key is refused with a one-line error.
	empty := filepath.Join(w, "known_hosts_empty")
	writeFile(t, empty, "")
	code, _, errs := kf(t, "--repo", g[1], "--known-hosts", empty, "--identity", sshd.Identity, "snapshots")
	if code != 1 || strings.Count(errs, "\n") > 2 {
		t.Fatalf("unknown host: exit %d %q", code, errs)
	}
}
