package integration

import (
	"bytes"
	"encoding/json"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keepfs/keepfs/remote/remotetest"
)

// statusJSON is the part of `keepfs status --json` these tests read.
type statusJSON struct {
	Status struct {
		QueueBlobs        int        `json:"queue_blobs"`
		QueueBytes        int64      `json:"queue_bytes"`
		RemoteReachable   bool       `json:"remote_reachable"`
		LastContactOK     *time.Time `json:"last_contact_ok"`
		LastContactFailed *time.Time `json:"last_contact_failed"`
		LastError         string     `json:"last_error"`
		QueueSince        *time.Time `json:"queue_since"`
		QueueAgeSeconds   float64    `json:"queue_age_seconds"`
	} `json:"status"`
}

func (w *world) status() statusJSON {
	w.t.Helper()
	var st statusJSON
	out := w.kf("status", "--json", w.mnt)
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		w.t.Fatalf("status --json: %v\n%s", err, out)
	}
	return st
}

// waitStatus polls status until ok says yes, or fails after limit.
func (w *world) waitStatus(what string, limit time.Duration, ok func(statusJSON) bool) statusJSON {
	w.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		st := w.status()
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("%s: not within %s: %+v", what, limit, st.Status)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// newSFTPWorld starts a private OpenSSH sshd on 127.0.0.1 and initializes a
// repository served by it, with a mount point ready.
func newSFTPWorld(t *testing.T) (*world, *remotetest.SSHD) {
	t.Helper()
	requireFUSE(t)
	s := remotetest.StartSSHD(t)
	w := &world{t: t, dir: t.TempDir()}
	w.remote = filepath.Join(w.dir, "remote")
	w.state = filepath.Join(w.dir, "state")
	w.mnt = filepath.Join(w.dir, "mnt")
	w.url = s.URL(w.remote)
	w.flags = []string{"--known-hosts", s.KnownHosts, "--identity", s.Identity}
	if err := os.Mkdir(w.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	w.kf("init")
	return w, s
}

// TestSFTPRemoteGoesAwayAndReturns: a mount on a real sshd whose server is
// killed reports the remote as unreachable with its last failed contact
// and a queue; sync with a short --timeout gives up in bounded time with
// one clear line and exit 1; once sshd is back on the same port and key,
// the queue drains without restarting the daemon, sync succeeds and the
// repository checks clean.
func TestSFTPRemoteGoesAwayAndReturns(t *testing.T) {
	w, s := newSFTPWorld(t)
	// Chunks are queued by snapshot walks (never at commit): a short
	// interval lets a periodic snapshot queue what is written offline.
	w.mount("--snapshot-interval", "2s")
	before := []byte("uploaded while the remote was there\n")
	if err := os.WriteFile(filepath.Join(w.mnt, "before.txt"), before, 0o644); err != nil {
		t.Fatal(err)
	}
	w.kf("sync", w.mnt)

	s.Stop()
	data := make([]byte, 12<<20)
	rand.New(rand.NewSource(7)).Read(data)
	if err := os.WriteFile(filepath.Join(w.mnt, "offline.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	st := w.waitStatus("status says the remote is unreachable, with a queue", 45*time.Second, func(st statusJSON) bool {
		return !st.Status.RemoteReachable && st.Status.QueueBlobs > 0
	})
	if st.Status.LastContactFailed == nil || st.Status.LastError == "" || st.Status.LastContactOK == nil ||
		!st.Status.LastContactFailed.After(*st.Status.LastContactOK) || st.Status.QueueSince == nil {
		t.Fatalf("unreachable status lacks its details: %+v", st.Status)
	}
	text := w.kf("status", w.mnt)
	if !strings.Contains(text, "UNREACHABLE") || !strings.Contains(text, "waiting") {
		t.Errorf("status text with the remote gone:\n%s", text)
	}

	start := time.Now()
	code, out := exitCode(t, w.cmd("sync", "--timeout", "5s", w.mnt))
	took := time.Since(start)
	out = strings.TrimSpace(out)
	if code != 1 || took > 12*time.Second {
		t.Fatalf("sync against a dead remote: exit %d after %s: %s", code, took, out)
	}
	if strings.Count(out, "\n") != 0 || !strings.Contains(out, "did not answer within 5s") ||
		!strings.Contains(out, "last error") || !strings.Contains(out, "stay queued") {
		t.Fatalf("sync's error is not one clear line: %q", out)
	}
	if !mounted(w.mnt) {
		t.Fatal("a failed sync took the mount away")
	}
	// Unmount refuses rather than leave the remote without the data.
	code, out = exitCode(t, exec.Command(keepfsBin, "unmount", "--timeout", "3s", w.mnt))
	if out = strings.TrimSpace(out); code != 1 || strings.Count(out, "\n") != 0 || !strings.Contains(out, "still mounted") {
		t.Fatalf("unmount against a dead remote: exit %d: %q", code, out)
	}
	if !mounted(w.mnt) {
		t.Fatal("unmount without --force unmounted although the remote did not answer")
	}

	s.Start()
	w.waitStatus("the queue drains once sshd is back, without a restart", 90*time.Second, func(st statusJSON) bool {
		return st.Status.RemoteReachable && st.Status.QueueBlobs == 0
	})
	w.kf("sync", w.mnt)
	w.unmount()
	w.kf("check", "--read-data")
	w.mount()
	for name, want := range map[string][]byte{"before.txt": before, "offline.bin": data} {
		if got, err := os.ReadFile(filepath.Join(w.mnt, name)); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s after the remote returned: %d bytes, %v", name, len(got), err)
		}
	}
}
