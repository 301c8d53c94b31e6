package integration

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// bigTree writes n files of size random bytes each under dir.
func bigTree(t *testing.T, dir string, n, size int) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, size)
	for i := 0; i < n; i++ {
		if _, err := rand.Read(buf); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%02d.bin", i)), buf, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// Found in issue 14: `prune` started a second after `import` deleted the
// import's fresh packs, and the import then stored a snapshot naming them.
// Now the import holds a shared lock and prune an exclusive one: prune
// refuses (or, with --retry-lock, waits), and the repository stays sound.
func TestPruneBesideRunningImport(t *testing.T) {
	w := &world{t: t, dir: t.TempDir()}
	w.remote = filepath.Join(w.dir, "remote")
	w.state = filepath.Join(w.dir, "state")
	w.kf("init")
	// A prune that ran under the import would find all of its fresh packs
	// unreferenced: no snapshot names them yet.
	var src string
	for _, wait := range []bool{false, true} {
		t.Run(fmt.Sprintf("retry-lock=%v", wait), func(t *testing.T) {
			// New content each time, so that the import has work to do.
			src = filepath.Join(w.dir, fmt.Sprint("src-", wait))
			bigTree(t, src, 40, 8<<20) // as in the issue: 40 files of 8 MB, so prune starts while the import runs
			imp := w.cmd("import", src)
			var impOut strings.Builder
			imp.Stdout, imp.Stderr = &impOut, &impOut
			if err := imp.Start(); err != nil {
				t.Fatal(err)
			}
			waitForLock(t, w.remote)
			args := []string{"prune"}
			if wait {
				args = append(args, "--retry-lock", "2m")
			}
			code, out := exitCode(t, w.cmd(args...))
			if err := imp.Wait(); err != nil {
				t.Fatalf("import: %v\n%s", err, impOut.String())
			}
			switch {
			case wait && code != 0:
				t.Fatalf("prune --retry-lock: exit %d: %s", code, out)
			case !wait && (code != 1 || !strings.Contains(out, "locked") || strings.Count(strings.TrimSpace(out), "\n") > 0):
				t.Fatalf("prune beside an import: exit %d, want 1 and one line naming the lock: %s", code, out)
			}
			if code, out := exitCode(t, w.cmd("check", "--read-data")); code != 0 {
				t.Fatalf("check after prune beside import: exit %d\n%s", code, out)
			}
			dst := filepath.Join(w.dir, "restored-"+fmt.Sprint(wait))
			w.kf("restore", "/", "--to", dst)
			run(t, w.dir, "diff", "-r", src, dst)
		})
	}

	// And the other way round: an import started while a prune holds the
	// exclusive lock waits for it with --retry-lock, or refuses.
	t.Run("import beside prune", func(t *testing.T) {
		prune := holdExclusive(t, w)
		code, out := exitCode(t, w.cmd("import", src))
		if code != 1 || !strings.Contains(out, "exclusive lock for prune") {
			t.Fatalf("import beside a prune: exit %d: %s", code, out)
		}
		// The prune dies holding its lock: on the same host, a lock whose
		// process is gone is stale at once, so the waiting import goes on.
		go func() {
			time.Sleep(time.Second)
			_ = prune.Process.Kill()
			_ = prune.Wait() // reaped: a zombie still answers kill(pid, 0)
		}()
		w := *w
		w.t = t
		w.kf("import", "--retry-lock", "1m", src)
		if code, out := exitCode(t, w.cmd("check")); code != 0 {
			t.Fatalf("check: exit %d\n%s", code, out)
		}
	})
}

// waitForLock returns once the remote holds a lock object.
func waitForLock(t *testing.T, remote string) {
	t.Helper()
	waitForLocks(t, remote, 1)
}

// waitForLocks waits until the remote holds at least n locks.
func waitForLocks(t *testing.T, remote string, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if ents, _ := os.ReadDir(filepath.Join(remote, "locks")); len(ents) >= n {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("fewer than %d locks in the remote", n)
}

// holdExclusive starts a prune that holds its exclusive lock for 30 s
// (KEEPFS_TEST_HOLD_LOCK) and returns once the lock is in the remote.
func holdExclusive(t *testing.T, w *world) *exec.Cmd {
	t.Helper()
	before, _ := os.ReadDir(filepath.Join(w.remote, "locks"))
	c := w.cmd("prune")
	c.Env = append(c.Env, "KEEPFS_TEST_HOLD_LOCK=30s")
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Process.Kill(); _, _ = c.Process.Wait() })
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if ents, _ := os.ReadDir(filepath.Join(w.remote, "locks")); len(ents) > len(before) {
			return c
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("prune took no lock")
	return nil
}

// Found by the multi-client soak: erase ignored --retry-lock (and
// --force-unlock) and refused at once beside a running import, where prune
// waits. Now it waits too, and refuses without the flag.
func TestEraseRetryLockBesideImport(t *testing.T) {
	w := &world{t: t, dir: t.TempDir()}
	w.remote = filepath.Join(w.dir, "remote")
	w.state = filepath.Join(w.dir, "state")
	w.kf("init")
	src := filepath.Join(w.dir, "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	writeRandom(t, filepath.Join(src, "victim.bin"), 1<<20, 7)
	w.kf("import", src)
	before, _ := os.ReadDir(filepath.Join(w.remote, "locks"))
	if len(before) != 0 {
		t.Fatalf("%d locks left", len(before))
	}
	imp := w.cmd("import", src)
	// It holds its lock for 5 s before importing.
	imp.Env = append(imp.Env, "KEEPFS_TEST_HOLD_LOCK=5s")
	var impOut strings.Builder
	imp.Stdout, imp.Stderr = &impOut, &impOut
	if err := imp.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = imp.Process.Kill(); _ = imp.Wait() })
	waitForLock(t, w.remote)
	if code, out := exitCode(t, w.cmd("erase", "/victim.bin")); code != 1 || !strings.Contains(out, "shared lock for import") {
		t.Fatalf("erase beside an import: exit %d, want 1 naming the lock: %s", code, out)
	}
	w.kf("--retry-lock", "1m", "erase", "/victim.bin")
	if err := imp.Wait(); err != nil {
		t.Fatalf("import: %v\n%s", err, impOut.String())
	}
}

// Through a mount's daemon too, prune and erase refuse at once beside an
// import's lock, and --retry-lock waits it out.
func TestMountedPruneAndEraseRetryLock(t *testing.T) {
	w := newWorld(t)
	w.mount("--snapshot-interval", "1h")
	if err := os.WriteFile(filepath.Join(w.mnt, "victim.txt"), []byte("erase me"), 0o644); err != nil {
		t.Fatal(err)
	}
	w.kf("sync", w.mnt)
	src := filepath.Join(w.dir, "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	writeRandom(t, filepath.Join(src, "other.bin"), 1<<16, 3)
	for _, op := range [][]string{{"prune"}, {"erase", "--request-id", "R", "/victim.txt"}} {
		imp := exec.Command(keepfsBin, "--repo", "file://"+w.remote, "--state", filepath.Join(w.dir, "state-import-"+op[0]), "import", src)
		// It holds its lock for 5 s before importing.
		imp.Env = append(os.Environ(), "KEEPFS_PASSWORD=integration words", "KEEPFS_TEST_HOLD_LOCK=5s")
		var impOut strings.Builder
		imp.Stdout, imp.Stderr = &impOut, &impOut
		if err := imp.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = imp.Process.Kill(); _ = imp.Wait() })
		waitForLocks(t, w.remote, 2) // the mount's and the import's
		if code, out := exitCode(t, w.cmd(op...)); code != 1 || !strings.Contains(out, "lock for import") {
			t.Fatalf("%s beside an import: exit %d, want 1 naming the lock: %s", op[0], code, out)
		}
		w.kf(append([]string{"--retry-lock", "1m"}, op...)...)
		if err := imp.Wait(); err != nil {
			t.Fatalf("import: %v\n%s", err, impOut.String())
		}
	}
	if _, err := os.Stat(filepath.Join(w.mnt, "victim.txt")); !os.IsNotExist(err) {
		t.Fatalf("the erased file is still in the mount: %v", err)
	}
}

// TestVersionsShowAnImportBesideTheMount: a snapshot another client
// stores while the mount runs (an import from another state directory)
// reads through the mount's .versions without a remount: its trees and
// data are in index segments stored after the mount loaded its index.
func TestVersionsShowAnImportBesideTheMount(t *testing.T) {
	w := newWorld(t)
	w.mount("--snapshot-interval", "1h")
	writeRandom(t, filepath.Join(w.mnt, "mine.bin"), 1<<16, 4)
	w.kf("sync", w.mnt)
	src := filepath.Join(w.dir, "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	writeRandom(t, filepath.Join(src, "other.bin"), 3<<20, 5)
	want, err := os.ReadFile(filepath.Join(src, "other.bin"))
	if err != nil {
		t.Fatal(err)
	}
	imp := exec.Command(keepfsBin, "--repo", "file://"+w.remote, "--state", filepath.Join(w.dir, "state-import"), "import", src)
	imp.Env = append(os.Environ(), "KEEPFS_PASSWORD=integration words")
	if out, err := imp.CombinedOutput(); err != nil {
		t.Fatalf("import: %v\n%s", err, out)
	}
	var snaps []struct {
		Name     string `json:"name"`
		Hostname string `json:"hostname"`
		Source   string `json:"source"`
	}
	if err := json.Unmarshal([]byte(w.kf("snapshots", "--json")), &snaps); err != nil || len(snaps) < 2 {
		t.Fatalf("snapshots: %v %+v", err, snaps)
	}
	imported := snaps[len(snaps)-1].Name
	// The mount lists snapshots again within its listing's lifetime (10 s).
	dir := filepath.Join(w.mnt, ".versions", imported)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(dir); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	var found string
	err = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Name() == "other.bin" {
			found = p
		}
		return nil
	})
	if err != nil || found == "" {
		t.Fatalf("walk %s: %v (other.bin found: %q)", dir, err, found)
	}
	got, err := os.ReadFile(found)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read %s through the mount: %d bytes, %v; want the imported %d bytes", found, len(got), err, len(want))
	}
}
