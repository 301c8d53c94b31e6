package integration

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// auditRun runs `keepfs audit --verify` against a remote and state
// directory and returns its output and exit code.
func auditRun(t *testing.T, remote, state string) (string, int) {
	t.Helper()
	c := exec.Command(keepfsBin, "--repo", "file://"+remote, "--state", state, "audit", "--verify")
	c.Env = append(os.Environ(), "KEEPFS_PASSWORD=integration words")
	out, err := c.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	}
	t.Fatal(err)
	return "", 0
}

func copyTree(t *testing.T, from, to string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", from, to).CombinedOutput(); err != nil {
		t.Fatalf("cp -a: %v\n%s", err, out)
	}
}

// TestAuditLog drives the audit log through the binary: init, import,
// prune, a mount and unmount leave verified entries naming no files, and a
// deleted, edited or cut-off entry in a copy of the remote fails
// `audit --verify` with exit 3 naming it.
func TestAuditLog(t *testing.T) {
	w := newWorld(t) // runs init
	src := filepath.Join(w.dir, "alice-private")
	if err := os.MkdirAll(filepath.Join(src, "alice"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "alice", "record.txt"), []byte("Alice Example\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	w.kf("import", src)
	w.kf("prune")
	w.mount()
	if err := os.WriteFile(filepath.Join(w.mnt, "alice.txt"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	w.unmount()

	out := w.kf("audit", "--verify")
	for _, action := range []string{"init", "import", "prune", "mount", "unmount"} {
		if !strings.Contains(out, " "+action+" ") {
			t.Errorf("audit lists no %s entry:\n%s", action, out)
		}
	}
	if !strings.Contains(out, "audit log verified: 5 entries") {
		t.Fatalf("audit --verify:\n%s", out)
	}
	if strings.Contains(strings.ToLower(out), "alice") {
		t.Fatalf("audit output names a file:\n%s", out)
	}
	var entries []map[string]any
	if err := json.Unmarshal([]byte(w.kf("audit", "--json")), &entries); err != nil || len(entries) != 5 {
		t.Fatalf("audit --json: %v, %d entries", err, len(entries))
	}
	if entries[0]["action"] != "init" || entries[0]["seq"] != float64(1) {
		t.Fatalf("first entry %v", entries[0])
	}
	if out := w.kf("audit", "--since", "1h", "--json"); !strings.Contains(out, `"unmount"`) {
		t.Fatalf("--since 1h lost entries:\n%s", out)
	}
	if out := w.kf("audit", "--since", "2999-01-01", "--json"); strings.TrimSpace(out) != "[]" {
		t.Fatalf("--since in the future lists entries:\n%s", out)
	}
	entryPath := func(remote string, seq int) string {
		return filepath.Join(remote, "audit", strings.Repeat("0", 15)+string(rune('0'+seq)))
	}

	// Delete the first entry, in a copy, with a fresh state directory (no
	// mirror): seq must start at 1.
	t.Run("first deleted", func(t *testing.T) {
		cp := filepath.Join(t.TempDir(), "remote")
		copyTree(t, w.remote, cp)
		if err := os.Remove(entryPath(cp, 1)); err != nil {
			t.Fatal(err)
		}
		out, rc := auditRun(t, cp, t.TempDir())
		if rc != 3 || !strings.Contains(out, "entry 1: missing (deleted)") {
			t.Fatalf("exit %d:\n%s", rc, out)
		}
	})
	t.Run("one byte edited", func(t *testing.T) {
		cp := filepath.Join(t.TempDir(), "remote")
		copyTree(t, w.remote, cp)
		b, err := os.ReadFile(entryPath(cp, 3))
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 0x01
		if err := os.WriteFile(entryPath(cp, 3), b, 0o600); err != nil {
			t.Fatal(err)
		}
		out, rc := auditRun(t, cp, t.TempDir())
		if rc != 3 || !strings.Contains(out, "entry 3: ") || !strings.Contains(out, "edited") {
			t.Fatalf("exit %d:\n%s", rc, out)
		}
	})
	t.Run("truncated", func(t *testing.T) {
		// The newest entry (unmount) removed: the chain alone is intact,
		// the local mirror shows the cut.
		cp := filepath.Join(t.TempDir(), "remote")
		copyTree(t, w.remote, cp)
		if err := os.Remove(entryPath(cp, 5)); err != nil {
			t.Fatal(err)
		}
		state := filepath.Join(t.TempDir(), "state")
		copyTree(t, w.state, state)
		out, rc := auditRun(t, cp, state)
		if rc != 3 || !strings.Contains(out, "entry 5: missing") || !strings.Contains(out, "truncated") {
			t.Fatalf("exit %d:\n%s", rc, out)
		}
	})
}
