package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// log and diff in-process against a file remote: versions counted one per
// line, a rename followed, diff by exact time, prefix, suffixed name and
// latest, JSON output and usage errors.
func TestCLILogAndDiff(t *testing.T) {
	t.Setenv("KEEPFS_PASSWORD", "secret words")
	w := t.TempDir()
	src := filepath.Join(w, "src")
	g := []string{"--repo", "file://" + filepath.Join(w, "remote"), "--state", filepath.Join(w, "state")}
	mustKF(t, append(g, "init")...)
	writeFile(t, filepath.Join(src, "docs", "a.txt"), "v1\n")
	writeFile(t, filepath.Join(src, "keep.txt"), "same\n")
	mustKF(t, append(g, "import", src)...)
	writeFile(t, filepath.Join(src, "docs", "a.txt"), "version two\n")
	mustKF(t, append(g, "import", src)...)
	if err := os.Rename(filepath.Join(src, "docs", "a.txt"), filepath.Join(src, "docs", "b.txt")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(src, "new.txt"), "new\n")
	mustKF(t, append(g, "import", src)...)

	// One line per version; the rename shows as the older path.
	out := mustKF(t, append(g, "log", "/docs/b.txt")...)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasSuffix(lines[0], "  /docs/a.txt") || !strings.HasSuffix(lines[2], "  /docs/b.txt") {
		t.Fatalf("log:\n%s", out)
	}
	f0, f1, f2 := strings.Fields(lines[0]), strings.Fields(lines[1]), strings.Fields(lines[2])
	if f0[1] != "3" || f1[1] != "12" || f1[3] != f2[3] || f0[3] == f1[3] {
		t.Fatalf("log sizes or content ids:\n%s", out)
	}
	var vs []struct {
		Snapshot, Path, Content string
		Size                    int
	}
	if err := json.Unmarshal([]byte(mustKF(t, append(g, "log", "--json", "/docs/b.txt")...)), &vs); err != nil || len(vs) != 3 || vs[1].Size != 12 {
		t.Fatalf("log --json: %v %+v", err, vs)
	}
	if code, _, errs := kf(t, append(g, "log", "/docs/none.txt")...); code != 1 || !strings.Contains(errs, "/docs/none.txt") {
		t.Fatalf("log of a missing file: exit %d %q", code, errs)
	}
	if code, _, _ := kf(t, append(g, "log", "relative/path.txt")...); code != exitUsage {
		t.Fatalf("relative path outside a mount: exit %d, want usage", code)
	}

	var snaps []struct{ Name, Time string }
	if err := json.Unmarshal([]byte(mustKF(t, append(g, "snapshots", "--json")...)), &snaps); err != nil || len(snaps) != 3 {
		t.Fatalf("snapshots: %v %v", err, snaps)
	}
	// Second to last by exact time: the rename and the new file, nothing else.
	out = mustKF(t, append(g, "diff", snaps[1].Time, "latest")...)
	if want := "R /docs/a.txt -> /docs/b.txt\n+ /new.txt\n"; out != want {
		t.Fatalf("diff second latest:\n%s\nwant\n%s", out, want)
	}
	// First to last: the content changed too, so no rename.
	out = mustKF(t, append(g, "diff", snaps[0].Time, "latest")...)
	if want := "- /docs/a.txt\n+ /docs/b.txt\n+ /new.txt\n"; out != want {
		t.Fatalf("diff first latest:\n%s\nwant\n%s", out, want)
	}
	// Second against first by name (with its "-N" suffix if the two fell in
	// one second) is a modification.
	second := snaps[1].Name
	if snaps[1].Name == snaps[0].Name {
		second += "-1"
	}
	var d struct {
		From, To string
		Changes  []struct{ Kind, Path string }
	}
	out = mustKF(t, append(g, "diff", "--json", snaps[0].Time, second)...)
	if err := json.Unmarshal([]byte(out), &d); err != nil || len(d.Changes) != 1 || d.Changes[0].Kind != "modified" || d.Changes[0].Path != "/docs/a.txt" {
		t.Fatalf("diff --json: %v %s", err, out)
	}
	// A prefix (the whole day) means the newest snapshot of that day.
	if out := mustKF(t, append(g, "diff", snaps[0].Name[:10], "latest")...); out != "" {
		t.Fatalf("diff of latest against its own day: %q", out)
	}
	for _, args := range [][]string{{"diff", "latest"}, {"diff", "yesterday", "latest"}, {"log"}} {
		if code, _, errs := kf(t, append(g, args...)...); code != exitUsage {
			t.Errorf("keepfs %v: exit %d %q, want usage error", args, code, errs)
		}
	}
	if code, _, errs := kf(t, append(g, "diff", "1999-01-01", "latest")...); code != 1 || !strings.Contains(errs, "first is") {
		t.Errorf("diff before the first snapshot: exit %d %q", code, errs)
	}
}
