package integration

import (
	"crypto/rand"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// findBare runs `keepfs find` as a user in a mount would: no --repo, the
// daemon says where the repository is.
func findBare(t *testing.T, dir string, args ...string) string {
	t.Helper()
	c := exec.Command(keepfsBin, append([]string{"find"}, args...)...)
	c.Dir = dir
	c.Env = append(os.Environ(), "KEEPFS_PASSWORD=integration words", "KEEPFS_REPO=")
	out, err := c.Output()
	if err != nil {
		stderr := ""
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("keepfs find %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr)
	}
	return string(out)
}

// TestFindOnAMount mirrors the find steps of ../shared/accept/erase.sh: a
// 4 MiB random file renamed between snapshots, then copied; a record
// edited; find by content and by name across versions, JSON, the live tree
// (not yet snapshotted), relative paths, and the same search unmounted by
// repository path.
func TestFindOnAMount(t *testing.T) {
	w := newWorld(t)
	w.mount("--snapshot-interval", "1h")
	m := w.mnt
	for _, d := range []string{"hr/alice", "hr/bob", "shared"} {
		if err := os.MkdirAll(filepath.Join(m, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	victim := make([]byte, 4<<20)
	_, _ = rand.Read(victim)
	other := make([]byte, 4<<20)
	_, _ = rand.Read(other)
	write := func(p string, b []byte) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(m, p), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("hr/alice/passport-scan.bin", victim)
	write("hr/bob/passport-scan.bin", other)
	write("hr/alice/record.txt", []byte("Alice Example, born 1990-01-01, ERASE-MARK-51c9\n"))
	write("hr/bob/record.txt", []byte("Bob Example, born 1985-05-05\n"))
	w.kf("sync", m)
	time.Sleep(1100 * time.Millisecond)
	write("hr/alice/record.txt", []byte("Alice Example, born 1990-01-01, updated, ERASE-MARK-51c9\n"))
	if err := os.Rename(filepath.Join(m, "hr/alice/passport-scan.bin"), filepath.Join(m, "hr/alice/id-scan.bin")); err != nil {
		t.Fatal(err)
	}
	w.kf("sync", m)
	time.Sleep(1100 * time.Millisecond)
	write("shared/copy-of-alice-id.bin", victim)
	w.kf("sync", m)

	// Both versions of the record, by content, under the mount point.
	out := findBare(t, "/", "--all-versions", "--content", "ERASE-MARK-51c9", m)
	if n := strings.Count(out, filepath.Join(m, "hr/alice/record.txt")+"  "); n != 2 || strings.Contains(out, "bob") {
		t.Fatalf("find --content: want two versions of alice's record:\n%s", out)
	}
	// The earlier name, only in the first snapshot, with its copies.
	out = findBare(t, "/", "--all-versions", "--name", "passport-scan.bin", m)
	var alice string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, filepath.Join(m, "hr/alice/passport-scan.bin")+"  ") {
			alice = l
		}
	}
	if alice == "" || !strings.Contains(alice, "copy of") || !strings.Contains(alice, "copy-of-alice-id.bin") ||
		!strings.Contains(alice, "hr/alice/id-scan.bin") || !strings.Contains(out, "hr/bob/passport-scan.bin") {
		t.Fatalf("find --name passport-scan.bin:\n%s", out)
	}
	// JSON, and every content id of the victim is the same.
	var ms []struct {
		Path      string   `json:"path"`
		Size      int      `json:"size"`
		ContentID string   `json:"content_id"`
		Snapshots []string `json:"snapshots"`
		Live      bool     `json:"live"`
		Copies    []string `json:"copies"`
	}
	out = findBare(t, "/", "--all-versions", "--json", "--name", "*scan*", m)
	if err := json.Unmarshal([]byte(out), &ms); err != nil {
		t.Fatalf("--json: %v\n%s", err, out)
	}
	ids := map[string]string{}
	for _, x := range ms {
		ids[filepath.Base(x.Path)+filepath.Base(filepath.Dir(x.Path))] = x.ContentID
		if x.Size != 4<<20 {
			t.Fatalf("size %d: %+v", x.Size, x)
		}
	}
	if len(ms) != 3 || ids["passport-scan.binalice"] != ids["id-scan.binalice"] || ids["passport-scan.binbob"] == ids["id-scan.binalice"] {
		t.Fatalf("--json *scan*: %+v", ms)
	}
	for _, x := range ms {
		// id-scan.bin is in the live tree too (same content as snapshotted).
		if strings.HasSuffix(x.Path, "id-scan.bin") && (!x.Live || len(x.Snapshots) != 2) {
			t.Fatalf("id-scan.bin: %+v", x)
		}
	}

	// The live tree: a write not yet snapshotted is found, as "live", from
	// a relative path inside the mount.
	write("hr/bob/new-note.txt", []byte("note\nBob again, born 1985-05-05\n"))
	out = findBare(t, filepath.Join(m, "hr"), "--content", "born 19")
	if !strings.Contains(out, "bob/new-note.txt  ") || !strings.Contains(out, "live  lines 2") || strings.Contains(out, m) {
		t.Fatalf("find in the live tree, relative:\n%s", out)
	}
	// --at: the first snapshot only, no live tree.
	var snaps []struct{ Name string }
	if err := json.Unmarshal([]byte(w.kf("snapshots", "--json")), &snaps); err != nil || len(snaps) < 3 {
		t.Fatalf("snapshots: %v %v", err, snaps)
	}
	out = findBare(t, "/", "--at", snaps[0].Name, "--name", "*.txt", filepath.Join(m, "hr"))
	if strings.Contains(out, "new-note") || strings.Contains(out, "live") || strings.Count(out, "\n") != 2 {
		t.Fatalf("find --at:\n%s", out)
	}

	w.unmount()
	// Unmounted, by repository path.
	out = w.kf("find", "--all-versions", "--content", "born 19")
	if !strings.Contains(out, "/hr/bob/record.txt  ") || !strings.Contains(out, "/hr/alice/record.txt  ") {
		t.Fatalf("unmounted find:\n%s", out)
	}
	out = w.kf("find", "--all-versions", "--name", "passport-scan.bin", "/hr/alice")
	if !strings.HasPrefix(out, "/hr/alice/passport-scan.bin  ") {
		t.Fatalf("unmounted find --name:\n%s", out)
	}
}
