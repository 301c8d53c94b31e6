package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keepfs/keepfs/policy/notify"
)

// The detections breachScenario does not cover: wrong passphrases given
// again and again, a key slot added by another client, a lock taken from a
// host never seen, a remote unreachable for longer than --alert-after, and
// a tampered blob read through a fresh mount (EIO, never other bytes).

func TestBreachFailedUnlocks(t *testing.T) {
	w := &world{t: t, dir: t.TempDir()}
	w.remote = filepath.Join(w.dir, "remote")
	w.state = filepath.Join(w.dir, "state")
	w.kf("init")
	h, flags := newHookSink(t, w.dir)
	w.flags = append(w.flags, flags...)
	var start time.Time
	for i := 0; i < 3; i++ {
		start = time.Now()
		c := w.cmd("snapshots")
		c.Env = append(c.Env, "KEEPFS_PASSWORD=wrong words")
		if code, out := exitCode(t, c); code != 1 {
			t.Fatalf("wrong passphrase: exit %d: %s", code, out)
		}
	}
	ev := h.expect(start, notify.TypeFailedUnlocks, "")
	if strings.Contains(ev.Message, "wrong words") {
		t.Fatalf("the event carries the passphrase: %+v", ev)
	}
}

func TestBreachKeyAddedAndUnknownHostLock(t *testing.T) {
	w := newWorld(t)
	h, flags := newHookSink(t, w.dir)
	w.flags = append(w.flags, flags...)
	w.mount("--scrub-interval", "1s")
	writeRandom(t, filepath.Join(w.mnt, "a.bin"), 1<<20, 1)
	w.kf("sync", w.mnt)
	time.Sleep(2 * time.Second)

	// Another client adds a key slot.
	other := &world{t: t, dir: w.dir, remote: w.remote, state: filepath.Join(w.dir, "state-other")}
	start := time.Now()
	c := other.cmd("key", "add")
	c.Env = append(c.Env, "KEEPFS_NEW_PASSWORD=a key nobody here added")
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("key add: %v\n%s", err, out)
	}
	h.expect(start, notify.TypeKeyAdded, "keys/")

	// A client on a host never seen holds a lock: an import run in a UTS
	// namespace of its own, with another host name.
	src := filepath.Join(w.dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	writeRandom(t, filepath.Join(src, "f"), 1<<20, 10)
	args := []string{"--uts", "sh", "-c", `hostname intruder-host && exec "$0" "$@"`, keepfsBin,
		"--repo", "file://" + w.remote, "--state", filepath.Join(w.dir, "state-intruder"), "import", src}
	imp := exec.Command("unshare", args...)
	// It holds its lock for 20 s before importing, whatever the load.
	imp.Env = append(os.Environ(), "KEEPFS_PASSWORD=integration words", "KEEPFS_TEST_HOLD_LOCK=20s")
	start = time.Now()
	if err := imp.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = imp.Wait() }()
	h.expect(start, notify.TypeUnknownLock, "locks/")
}

func TestBreachUnreachableAlert(t *testing.T) {
	w, s := newSFTPWorld(t)
	h, flags := newHookSink(t, w.dir)
	w.flags = append(w.flags, flags...)
	w.mount("--scrub-interval", "1s", "--alert-after", "2s")
	writeRandom(t, filepath.Join(w.mnt, "a.bin"), 1<<20, 1)
	w.kf("sync", w.mnt)
	s.Stop()
	stopped := time.Now()
	// Delivered within 5 s of becoming due (2 s after the remote went).
	h.expect(stopped.Add(2*time.Second), notify.TypeUnreachable, "")
	s.Start()
	w.kf("sync", w.mnt)
}

func TestBreachTamperedReadThroughMount(t *testing.T) {
	w := newWorld(t)
	w.mount()
	writeRandom(t, filepath.Join(w.mnt, "a.bin"), 3<<20, 4)
	w.kf("sync", w.mnt)
	w.unmount()
	for _, p := range remoteFiles(t, w.remote, "packs") {
		// Inside the first blob, the file's first chunk: the trees are
		// stored after the data, and the mount must be able to start.
		b, _ := os.ReadFile(p)
		if len(b) < 1<<20 {
			continue // a pack of trees only
		}
		b[1000] ^= 0x10
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// A fresh state directory: the data must come from the remote.
	w.state = filepath.Join(w.dir, "state-fresh")
	h, flags := newHookSink(t, w.dir)
	w.flags = append(w.flags, flags...)
	w.mount("--scrub-interval", "1h")
	start := time.Now()
	_, err := os.ReadFile(filepath.Join(w.mnt, "a.bin"))
	if err == nil || !strings.Contains(err.Error(), "input/output error") {
		t.Fatalf("read of tampered data: %v, want EIO", err)
	}
	h.expect(start, notify.TypeTampered, "packs/")
}
