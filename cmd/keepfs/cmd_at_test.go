package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keepfs/keepfs/remote/location"
	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/archiver"
)

// Two snapshots in one second (two imports, or an import beside a mount)
// share a name; .versions and diff tell them apart as NAME (the first) and
// NAME-1 (the second). restore --at and find --at must take the same names
// to the same snapshots, or a restore by a name read in .versions brings
// back other bytes than .versions shows.
func TestCLIAtSnapshotNameInASharedSecond(t *testing.T) {
	const pw = "secret words"
	t.Setenv("KEEPFS_PASSWORD", pw)
	w := t.TempDir()
	src := filepath.Join(w, "src")
	url := "file://" + filepath.Join(w, "remote")
	g := []string{"--repo", url, "--state", filepath.Join(w, "state")}
	mustKF(t, append(g, "init")...)

	ctx := context.Background()
	be, err := location.Open(ctx, url, location.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Open(ctx, be, []byte(pw), repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 28, 13, 5, 0, 0, time.UTC)
	for i, content := range []string{"first\n", "second\n"} {
		writeFile(t, filepath.Join(src, "f.txt"), content)
		now := at.Add(time.Duration(i) * 300 * time.Millisecond)
		_, sum, err := archiver.Import(ctx, r, src, archiver.Options{Now: func() time.Time { return now }})
		if err != nil {
			t.Fatal(err)
		}
		// The import reports the name the listings will give it.
		if want := at.Format(repo.TimeFormat) + []string{"", "-1"}[i]; sum.Time != want {
			t.Errorf("import %d reports snapshot %s, want %s", i, sum.Time, want)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	name := at.Format(repo.TimeFormat)

	// snapshots lists them by those names too, in text and JSON.
	var listed []struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal([]byte(mustKF(t, append(g, "snapshots", "--json")...)), &listed); err != nil ||
		len(listed) != 2 || listed[0].Name != name || listed[1].Name != name+"-1" {
		t.Fatalf("snapshots --json: %+v %v, want %s and %s-1", listed, err, name, name)
	}
	if out := mustKF(t, append(g, "snapshots")...); !strings.Contains(out, " "+name+"-1 ") {
		t.Fatalf("snapshots does not list %s-1:\n%s", name, out)
	}

	// diff, as .versions, names the first NAME and the second NAME-1.
	if out := mustKF(t, append(g, "diff", name, name+"-1")...); out != "M /f.txt\n" {
		t.Fatalf("diff %s %s-1: %q", name, name, out)
	}
	for _, c := range []struct{ at, want string }{{name, "first\n"}, {name + "-1", "second\n"}} {
		to := filepath.Join(w, "restored-"+c.at)
		code, out, errs := kf(t, append(g, "restore", "/", "--at", c.at, "--to", to)...)
		if code != 0 {
			t.Fatalf("restore --at %s: exit %d %s%s", c.at, code, out, errs)
		}
		if b, err := os.ReadFile(filepath.Join(to, "f.txt")); err != nil || string(b) != c.want {
			t.Errorf("restore --at %s: %q %v, want %q", c.at, b, err, c.want)
		}
		code, out, errs = kf(t, append(g, "find", "--at", c.at, "--content", strings.TrimSpace(c.want))...)
		if code != 0 || !strings.HasPrefix(out, "/f.txt  ") {
			t.Errorf("find --at %s --content %s: exit %d %q %s", c.at, strings.TrimSpace(c.want), code, out, errs)
		}
	}
	for _, args := range [][]string{{"restore", "/", "--at", name + "-x", "--to", filepath.Join(w, "x")}, {"find", "--at", name + "-x", "--name", "*"}} {
		if code, _, errs := kf(t, append(g, args...)...); code != exitUsage {
			t.Errorf("keepfs %v: exit %d %q, want a usage error", args, code, errs)
		}
	}
	if code, _, errs := kf(t, append(g, "restore", "/", "--at", name+"-2", "--to", filepath.Join(w, "y"))...); code != 1 || !strings.Contains(errs, "no snapshot") {
		t.Errorf("restore --at %s-2: exit %d %q, want no snapshot", name, code, errs)
	}

	// Every other report names them so too: a name copied from log, find
	// or diff leads to the snapshot it came from.
	var versions []struct {
		Snapshot string `json:"snapshot"`
	}
	if err := json.Unmarshal([]byte(mustKF(t, append(g, "log", "/f.txt", "--json")...)), &versions); err != nil ||
		len(versions) != 2 || versions[0].Snapshot != name || versions[1].Snapshot != name+"-1" {
		t.Errorf("log --json: %+v %v, want %s then %s-1", versions, err, name, name)
	}
	var matches []struct {
		Snapshots []string `json:"snapshots"`
	}
	if err := json.Unmarshal([]byte(mustKF(t, append(g, "find", "--all-versions", "--content", "second", "--json")...)), &matches); err != nil ||
		len(matches) != 1 || !slices.Equal(matches[0].Snapshots, []string{name + "-1"}) {
		t.Errorf("find --all-versions --json: %+v %v, want one match in %s-1", matches, err, name)
	}
	var d struct {
		From string `json:"from"`
		To   string `json:"to"`
	}
	if err := json.Unmarshal([]byte(mustKF(t, append(g, "diff", name, name+"-1", "--json")...)), &d); err != nil ||
		d.From != name || d.To != name+"-1" {
		t.Errorf("diff --json: %+v %v, want from %s to %s-1", d, err, name, name)
	}
}
