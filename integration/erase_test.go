package integration

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keepfs/keepfs/remote"
)

// `keepfs erase` killed with SIGKILL at ever later moments: after each
// kill the repository passes check (no snapshot names a deleted blob), and
// erase run again ends in the same state as an erase never interrupted:
// the file is in no snapshot, and the other files are intact.
func TestEraseKill9Loop(t *testing.T) {
	w := &world{t: t, dir: t.TempDir()}
	w.remote = filepath.Join(w.dir, "remote")
	w.state = filepath.Join(w.dir, "state")
	w.kf("init")
	src := filepath.Join(w.dir, "src")
	if err := os.MkdirAll(filepath.Join(src, "hr"), 0o755); err != nil {
		t.Fatal(err)
	}
	victim := make([]byte, 3<<20)
	_, _ = rand.Read(victim)
	other := make([]byte, 3<<20)
	_, _ = rand.Read(other)
	if err := os.WriteFile(filepath.Join(src, "hr", "victim.bin"), victim, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "hr", "other.bin"), other, 0o644); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4; i++ {
		if err := os.WriteFile(filepath.Join(src, "counter"), []byte{byte(i)}, 0o644); err != nil {
			t.Fatal(err)
		}
		w.kf("import", src)
		time.Sleep(1100 * time.Millisecond) // snapshot names are by the second
	}
	for _, delay := range []time.Duration{30, 80, 150, 250, 400, 600} {
		c := w.cmd("erase", "/hr/victim.bin")
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(delay * time.Millisecond)
		_ = c.Process.Signal(syscall.SIGKILL)
		_ = c.Wait()
		if code, out := exitCode(t, w.cmd("check")); code != 0 {
			t.Fatalf("check after erase was killed at %v ms: exit %d\n%s", delay, code, out)
		}
	}
	code, out := exitCode(t, w.cmd("erase", "/hr/victim.bin"))
	if code != 0 && !strings.Contains(out, "no snapshot holds that path") {
		t.Fatalf("erase after the kills: exit %d\n%s", code, out)
	}
	if code, out := exitCode(t, w.cmd("check", "--read-data")); code != 0 {
		t.Fatalf("final check: exit %d\n%s", code, out)
	}
	found := w.kf("find", "--all-versions", "--name", "victim.bin")
	if strings.Contains(found, "victim.bin") {
		t.Fatalf("victim still in a snapshot:\n%s", found)
	}
	snaps := w.kf("snapshots")
	if n := strings.Count(strings.TrimSpace(snaps), "\n"); n < 4 {
		t.Fatalf("snapshots after the erase:\n%s", snaps)
	}
	dst := filepath.Join(w.dir, "out")
	w.kf("restore", "/hr/other.bin", "--to", dst)
	if b, err := os.ReadFile(filepath.Join(dst, "other.bin")); err != nil || !bytes.Equal(b, other) {
		t.Fatalf("other file after the erase: %v", err)
	}
	// No pack holds the victim's bytes any more: the remote shrank. A
	// write the kill interrupted can leave a temporary file (a repacked
	// pack of the other file's data, never named): not counted.
	if got := dirSize(t, w.remote); got > int64(len(other))+int64(len(victim))/2 {
		t.Fatalf("remote holds %d bytes, more than the other file and a half", got)
	}
}

func dirSize(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	_ = filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() && !strings.HasPrefix(fi.Name(), remote.TempPrefix) {
			n += fi.Size()
		}
		return nil
	})
	return n
}
