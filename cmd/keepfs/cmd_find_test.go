package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// find in-process against a file remote, unmounted: repository paths,
// versions, content lines, copies, --at, --content-file, JSON (also when
// empty) and usage errors.
func TestCLIFind(t *testing.T) {
	t.Setenv("KEEPFS_PASSWORD", "secret words")
	w := t.TempDir()
	src := filepath.Join(w, "src")
	g := []string{"--repo", "file://" + filepath.Join(w, "remote"), "--state", filepath.Join(w, "state")}
	mustKF(t, append(g, "init")...)
	writeFile(t, filepath.Join(src, "hr", "alice", "record.txt"), "Alice Example, born 1990-01-01, MARK\n")
	writeFile(t, filepath.Join(src, "hr", "bob", "record.txt"), "Bob Example, born 1985-05-05\n")
	writeFile(t, filepath.Join(src, "hr", "alice", "passport-scan.bin"), "scan bytes\n")
	mustKF(t, append(g, "import", src)...)
	// Snapshots are named by the second: --at below must tell them apart.
	time.Sleep(1100 * time.Millisecond)
	writeFile(t, filepath.Join(src, "hr", "alice", "record.txt"), "Alice Example,\nborn 1990-01-01, updated, MARK\n")
	if err := os.Rename(filepath.Join(src, "hr", "alice", "passport-scan.bin"), filepath.Join(src, "hr", "alice", "id-scan.bin")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(src, "shared", "copy.bin"), "scan bytes\n")
	mustKF(t, append(g, "import", src)...)

	out := mustKF(t, append(g, "find", "--all-versions", "--content", "MARK")...)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "/hr/alice/record.txt  ") || !strings.HasSuffix(lines[0], "lines 1") ||
		!strings.HasSuffix(lines[1], "lines 2") {
		t.Fatalf("find --content:\n%s", out)
	}
	// Default: the latest snapshot only.
	out = mustKF(t, append(g, "find", "--name", "*scan*")...)
	if strings.Contains(out, "passport-scan") || !strings.Contains(out, "/hr/alice/id-scan.bin") || !strings.Contains(out, "copy of /shared/copy.bin") {
		t.Fatalf("find --name (latest):\n%s", out)
	}
	out = mustKF(t, append(g, "find", "--all-versions", "--name", "passport-scan.bin", "/hr")...)
	if !strings.Contains(out, "/hr/alice/passport-scan.bin") || !strings.Contains(out, "copy of /hr/alice/id-scan.bin") || strings.Count(out, "\n") != 1 {
		t.Fatalf("find --name --all-versions /hr:\n%s", out)
	}
	// --content-file: literal strings, any of them.
	pats := filepath.Join(w, "pats")
	writeFile(t, pats, "born 1985\n\n(not a regexp\n")
	out = mustKF(t, append(g, "find", "--all-versions", "--content-file", pats)...)
	if strings.TrimSpace(out) == "" || strings.Count(strings.TrimSpace(out), "\n") != 0 || !strings.HasPrefix(out, "/hr/bob/record.txt  ") {
		t.Fatalf("find --content-file:\n%s", out)
	}
	// --at the first snapshot, JSON.
	var snaps []struct{ Name string }
	if err := json.Unmarshal([]byte(mustKF(t, append(g, "snapshots", "--json")...)), &snaps); err != nil || len(snaps) != 2 {
		t.Fatalf("snapshots: %v %v", err, snaps)
	}
	var ms []struct {
		Path      string   `json:"path"`
		Size      int      `json:"size"`
		ContentID string   `json:"content_id"`
		Snapshots []string `json:"snapshots"`
		Live      bool     `json:"live"`
		Lines     []int    `json:"lines"`
		Copies    []string `json:"copies"`
	}
	out = mustKF(t, append(g, "find", "--at", snaps[0].Name, "--json", "--content", "born", "/hr/alice")...)
	if err := json.Unmarshal([]byte(out), &ms); err != nil || len(ms) != 1 || ms[0].Path != "/hr/alice/record.txt" ||
		len(ms[0].Snapshots) != 1 || ms[0].Snapshots[0] != snaps[0].Name || len(ms[0].Lines) != 1 || ms[0].Lines[0] != 1 || ms[0].Live {
		t.Fatalf("find --at --json: %v\n%s", err, out)
	}
	// Nothing found: exit 0, and JSON is an empty array.
	if out := mustKF(t, append(g, "find", "--json", "--name", "nothing-like-this")...); strings.TrimSpace(out) != "[]" {
		t.Fatalf("empty --json: %q", out)
	}
	if out := mustKF(t, append(g, "find", "--name", "nothing-like-this")...); out != "" {
		t.Fatalf("empty text: %q", out)
	}
	for _, args := range [][]string{
		{"find"},
		{"find", "--content", "x", "--content-file", pats},
		{"find", "--name", "x", "--at", "latest", "--all-versions"},
		{"find", "--content", "("},
		{"find", "--name", "["},
		{"find", "--name", "x", "relative/path"},
		{"find", "--name", "x", "/a", "/b"},
		{"find", "--name", "x", "--at", "yesterday"},
	} {
		if code, _, errs := kf(t, append(g, args...)...); code != exitUsage || !strings.HasPrefix(errs, "keepfs: ") {
			t.Fatalf("%v: exit %d %q, want a usage error", args, code, errs)
		}
	}
}
