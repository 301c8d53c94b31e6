package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keepfs/keepfs/policy/notify"
)

// rollBack puts the remote back to the copy at old (everything but the
// locks, which the mount keeps refreshing), as a provider restoring its
// storage from an earlier snapshot of it would.
func rollBack(t *testing.T, old, remote string) {
	t.Helper()
	out, err := exec.Command("rsync", "-a", "--delete", "--exclude", "/locks/", old+"/", remote+"/").CombinedOutput()
	if err != nil {
		t.Fatalf("rsync: %v\n%s", err, out)
	}
}

func copyRemote(t *testing.T, remote, dst string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", remote, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp -a: %v\n%s", err, out)
	}
}

// checkRestoredFrom restores the newest snapshot from a fresh state
// directory (the remote alone) and checks every file and the repository.
func checkRestoredFrom(t *testing.T, w *world, want map[string][]byte) {
	t.Helper()
	fresh := w.with("fresh")
	out := filepath.Join(w.dir, "restored")
	fresh.kf("restore", "/", "--to", out)
	for name, b := range want {
		sameFile(t, filepath.Join(out, name), b)
	}
	fresh.kf("check", "--read-data")
}

// rolledBack mounts a new repository (scrubbing every scrub, "0" for
// never), stores a.bin, then sub/b.bin, each synced, and puts the remote
// back to its copy from before sub/b.bin. It returns what a restore of the
// live tree must give.
func rolledBack(t *testing.T, scrub string, seed int64, mountArgs ...string) (*world, map[string][]byte) {
	t.Helper()
	w := newWorld(t)
	w.mount(append([]string{"--scrub-interval", scrub}, mountArgs...)...)
	want := map[string][]byte{}
	want["a.bin"] = randomFile(t, filepath.Join(w.mnt, "a.bin"), seed, 2<<20)
	w.kf("sync", w.mnt)
	old := filepath.Join(w.dir, "old")
	copyRemote(t, w.remote, old)
	want["sub/b.bin"] = randomFile(t, filepath.Join(w.mnt, "sub", "b.bin"), seed+1, 3<<20)
	w.kf("sync", w.mnt)
	rollBack(t, old, w.remote)
	return w, want
}

// TestRollbackWhileMountedIsRepaired: the remote goes back to an older
// copy of itself under a running mount. The mount's scrub sees the
// rollback and brings the mount in line (index loaded again, tree cache
// and last snapshot dropped), so that the next sync, with nothing changed
// in the mount, uploads again what the remote lost: a fresh client
// restores every file, and check --read-data passes.
func TestRollbackWhileMountedIsRepaired(t *testing.T) {
	w, want := rolledBack(t, "1s", 1)
	waitIncident(t, w, notify.TypeRollback, 15*time.Second)
	waitLog(t, w, "in line with the remote again", 15*time.Second)
	w.kf("sync", w.mnt)
	w.unmount()
	checkRestoredFrom(t, w, want)
}

// TestRollbackSeenByTheNextSnapshot: with no scrub to see it, the first
// snapshot after the rollback finds its parent gone; it must not name the
// blobs the remote lost.
func TestRollbackSeenByTheNextSnapshot(t *testing.T) {
	w, want := rolledBack(t, "0", 11)
	want["c.bin"] = randomFile(t, filepath.Join(w.mnt, "c.bin"), 13, 1<<20)
	w.kf("sync", w.mnt)
	w.unmount()
	checkRestoredFrom(t, w, want)
}

// TestRollbackUnseenBeforeUnmount: the remote goes back while the mount
// stores nothing more. The index this mount merges at unmount must not
// name the packs the remote lost, and the next mount (its last snapshot
// gone, its cached trees naming lost trees) must upload them again.
func TestRollbackUnseenBeforeUnmount(t *testing.T) {
	w, want := rolledBack(t, "0", 21)
	w.unmount()
	w.with("fresh").kf("check", "--read-data")

	w.mount("--scrub-interval", "0")
	// sub is unchanged: only its cached tree would name b.bin.
	want["c.bin"] = randomFile(t, filepath.Join(w.mnt, "c.bin"), 23, 1<<20)
	w.kf("sync", w.mnt)
	w.unmount()
	if err := os.RemoveAll(filepath.Join(w.dir, "fresh")); err != nil {
		t.Fatal(err)
	}
	checkRestoredFrom(t, w, want)
}

// TestRollbackSyncOfAnUnchangedTree: a sync with nothing changed since
// the last snapshot returns it as stored; once the remote lost it, the
// sync must store the tree again rather than vouch for a snapshot the
// remote no longer holds.
func TestRollbackSyncOfAnUnchangedTree(t *testing.T) {
	w, want := rolledBack(t, "0", 41)
	w.kf("sync", w.mnt)
	w.unmount()
	checkRestoredFrom(t, w, want)
}

// TestRollbackLostChunksReported: chunks the mount evicted before it saw
// the rollback (the stale index said the remote held them) are lost; the
// next sync names the files that held them and exits 1, and what it
// stores names no blob the remote lacks.
func TestRollbackLostChunksReported(t *testing.T) {
	w := newWorld(t)
	w.mount("--scrub-interval", "0", "--cache-size", "16MiB")
	want := map[string][]byte{"a.bin": randomFile(t, filepath.Join(w.mnt, "a.bin"), 31, 1<<20)}
	w.kf("sync", w.mnt)
	old := filepath.Join(w.dir, "old")
	copyRemote(t, w.remote, old)
	// More than the cache holds, uploaded and snapshotted: evicted.
	for i := range 3 {
		randomFile(t, filepath.Join(w.mnt, "big", fmt.Sprint(i)), int64(40+i), 16<<20)
	}
	w.kf("sync", w.mnt)
	rollBack(t, old, w.remote)
	want["c.bin"] = randomFile(t, filepath.Join(w.mnt, "c.bin"), 33, 1<<20)
	code, out := exitCode(t, w.cmd("sync", w.mnt))
	if code != 1 || !strings.Contains(out, "lost") || !strings.Contains(out, "/big/") {
		t.Fatalf("sync after a rollback that lost evicted chunks: exit %d: %s", code, out)
	}
	w.unmount()
	checkRestoredFrom(t, w, want)
}

// waitLog waits until the daemon log holds s.
func waitLog(t *testing.T, w *world, s string, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		b, _ := os.ReadFile(filepath.Join(w.state, "daemon.log"))
		if strings.Contains(string(b), s) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the daemon log within %s:\n%s", s, limit, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitIncident waits until an open incident of type typ is listed.
func waitIncident(t *testing.T, w *world, typ string, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		var inc []notify.Incident
		if err := json.Unmarshal([]byte(w.kf("incidents", "--json")), &inc); err != nil {
			t.Fatal(err)
		}
		for _, i := range inc {
			if i.Type == typ {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s incident within %s: %+v", typ, limit, inc)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
