package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// importedRepo is a file repository in remoteDir with one import; g are
// the global flags that reach it with a state directory beside it.
func importedRepo(t *testing.T) (remoteDir string, g []string) {
	t.Helper()
	t.Setenv("KEEPFS_PASSWORD", "secret words")
	w := t.TempDir()
	remoteDir = filepath.Join(w, "remote")
	writeFile(t, filepath.Join(w, "src", "a.txt"), "alpha\n")
	g = []string{"--repo", "file://" + remoteDir, "--state", filepath.Join(w, "state")}
	mustKF(t, append(g, "init")...)
	mustKF(t, append(g, "import", filepath.Join(w, "src"))...)
	return remoteDir, g
}

// TestCLIIndexFailureAtOpenOpensIncident: a command that fails while
// loading the index (a segment replayed under another name) raised its
// event before the notifier was bound to the state directory, so it was
// delivered but opened no incident (nothing in `incidents`, `status`,
// `check` or the audit log, and a new delivery at every command), and the
// command exited 1, not 3.
func TestCLIIndexFailureAtOpenOpensIncident(t *testing.T) {
	remoteDir, g := importedRepo(t)
	segs, err := os.ReadDir(filepath.Join(remoteDir, "index"))
	if err != nil || len(segs) == 0 {
		t.Fatalf("index segments: %v %v", segs, err)
	}
	b, err := os.ReadFile(filepath.Join(remoteDir, "index", segs[0].Name()))
	if err != nil {
		t.Fatal(err)
	}
	fake := "cd" + strings.Repeat("1", 62)
	if err := os.WriteFile(filepath.Join(remoteDir, "index", fake), b, 0o600); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if code, out, errs := kf(t, append(g, "scrub")...); code != 3 {
			t.Fatalf("scrub with a replayed segment: exit %d\n%s%s", code, out, errs)
		}
	}
	out := mustKF(t, append(g, "incidents", "--json")...)
	var inc []struct {
		Type, Object string
		Count        int
	}
	if err := json.Unmarshal([]byte(out), &inc); err != nil {
		t.Fatalf("incidents --json: %v\n%s", err, out)
	}
	if len(inc) != 1 || inc[0].Type != "object-replayed" || inc[0].Object != "index/"+fake || inc[0].Count != 2 {
		t.Fatalf("incidents: %+v", inc)
	}
}

// TestCLIRollbackOfOwnImport: the snapshot an import stored is the head
// this state directory saw, though no Guard ran after it: the remote
// dropping it is a rollback at the next command.
func TestCLIRollbackOfOwnImport(t *testing.T) {
	remoteDir, g := importedRepo(t)
	ents, _ := os.ReadDir(filepath.Join(remoteDir, "snapshots"))
	if len(ents) != 1 {
		t.Fatalf("%d snapshots", len(ents))
	}
	if err := os.Remove(filepath.Join(remoteDir, "snapshots", ents[0].Name())); err != nil {
		t.Fatal(err)
	}
	mustKF(t, append(g, "snapshots")...)
	out := mustKF(t, append(g, "incidents", "--json")...)
	if !strings.Contains(out, `"rollback"`) {
		t.Fatalf("this client's own snapshot dropped: incidents %s", out)
	}
}
