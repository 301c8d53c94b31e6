package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math/rand"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// adminWorld is a repository named by a profile of a config file, as an
// admin sets one up for fstab and systemd.
type adminWorld struct {
	dir, cfg, state, mnt, remote string
}

func newAdminWorld(t *testing.T) *adminWorld {
	requireFUSE(t)
	d := t.TempDir()
	a := &adminWorld{dir: d, cfg: filepath.Join(d, "config.toml"), state: filepath.Join(d, "state"),
		mnt: filepath.Join(d, "mnt"), remote: filepath.Join(d, "remote")}
	if err := os.Mkdir(a.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	pass := filepath.Join(d, "pass")
	if err := os.WriteFile(pass, []byte("admin words\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := "[profiles.t]\nrepo = \"file://" + a.remote + "\"\nstate = \"" + a.state + "\"\npassword-file = \"" + pass +
		"\"\nmountpoint = \"" + a.mnt + "\"\nsnapshot-interval = \"1h\"\n"
	if err := os.WriteFile(a.cfg, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	a.kf(t, "init")
	t.Cleanup(func() {
		if mounted(a.mnt) {
			_ = exec.Command("umount", a.mnt).Run()
			a.waitDaemonGone(t)
			t.Errorf("%s was left mounted", a.mnt)
		}
	})
	return a
}

func (a *adminWorld) kfCmd(args ...string) *exec.Cmd {
	c := exec.Command(keepfsBin, append([]string{"--config", a.cfg, "--profile", "t"}, args...)...)
	env := []string{}
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "KEEPFS_") {
			env = append(env, e)
		}
	}
	c.Env = env
	return c
}

func (a *adminWorld) kf(t *testing.T, args ...string) string {
	t.Helper()
	out, err := a.kfCmd(args...).CombinedOutput()
	if err != nil {
		t.Fatalf("keepfs %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// waitDaemonGone waits until the daemon released the state directory.
func (a *adminWorld) waitDaemonGone(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		f, err := os.OpenFile(filepath.Join(a.state, "lock"), os.O_RDWR, 0)
		if err != nil {
			return
		}
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		f.Close()
		if err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("the daemon did not exit within 60 s of the unmount")
}

// writeAndCheckSnapshot writes a file, unmounts with plain umount, and
// checks the final snapshot holds the file: umount commits and snapshots
// the way keepfs unmount does.
func (a *adminWorld) writeUmountAndCheck(t *testing.T, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(a.mnt, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("umount", a.mnt).CombinedOutput(); err != nil {
		t.Fatalf("umount: %v\n%s", err, out)
	}
	a.waitDaemonGone(t)
	out := filepath.Join(a.dir, "restored-"+name)
	a.kf(t, "restore", "/"+name, "--to", out)
	if b, err := os.ReadFile(filepath.Join(out, name)); err != nil || string(b) != content {
		t.Fatalf("after umount the snapshot holds %q, %v; want %q", b, err, content)
	}
}

// An fstab line mounts a profile with the real mount(8) (mount -T FILE)
// through fuse3's mount.fuse3, which runs `keepfs SOURCE MNT -o OPTS`.
func TestFstabMount(t *testing.T) {
	requireTool(t, "mount")
	a := newAdminWorld(t)
	fstab := filepath.Join(a.dir, "fstab")
	// Type fuse with "PROGRAM#SOURCE" runs PROGRAM by its path; with
	// mount.fuse.keepfs installed the line reads `t MNT fuse.keepfs ...`.
	line := keepfsBin + "#t " + a.mnt + " fuse config=" + a.cfg + ",allow_other,cache_size=64MiB,_netdev,x-systemd.automount,noauto 0 0\n"
	if err := os.WriteFile(fstab, []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-T", fstab, a.mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount -T %s: %v\n%s", fstab, err, out)
	}
	if !mounted(a.mnt) {
		t.Fatal("mount -T returned but nothing is mounted")
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	if !strings.Contains(string(mi), "fuse.keepfs") || !strings.Contains(string(mi), "allow_other") {
		t.Errorf("mountinfo lacks fuse.keepfs with allow_other:\n%s", mi)
	}
	a.writeUmountAndCheck(t, "fstab.txt", "mounted from fstab\n")
}

// `mount -t fuse.keepfs PROFILE MNT` runs /sbin/mount.fuse.keepfs (what
// make install links); keepfs invoked under that name takes mount(8)'s
// calling convention. `keepfs --profile t unmount` finds the profile's
// mountpoint.
func TestMountTypeFuseKeepfs(t *testing.T) {
	requireTool(t, "mount")
	a := newAdminWorld(t)
	helper := "/sbin/mount.fuse.keepfs"
	if target, err := os.Readlink(helper); err == nil && strings.Contains(target, "keepfs-integration-") {
		os.Remove(helper) // left by an earlier, killed run
	}
	if _, err := os.Lstat(helper); err == nil {
		t.Logf("%s is installed; testing it", helper)
	} else {
		if err := os.Symlink(keepfsBin, helper); err != nil {
			t.Skipf("cannot install %s: %v", helper, err)
		}
		t.Cleanup(func() { os.Remove(helper) })
	}
	c := exec.Command("mount", "-t", "fuse.keepfs", "-o", "config="+a.cfg+",snapshot_interval=1h,noatime", "t", a.mnt)
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("mount -t fuse.keepfs: %v\n%s", err, out)
	}
	if !mounted(a.mnt) {
		t.Fatal("nothing mounted")
	}
	if err := os.WriteFile(filepath.Join(a.mnt, "x.txt"), []byte("x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	a.kf(t, "unmount")
	if mounted(a.mnt) {
		t.Fatal("keepfs --profile t unmount left it mounted")
	}
	// A bad option is one line and exit 2 (mount(8) reports the helper's failure).
	out, err := exec.Command(keepfsBin, "t", a.mnt, "-o", "config="+a.cfg+",frobnicate").CombinedOutput()
	if code := exitStatus(err); code != 2 || !strings.Contains(string(out), `unknown mount option "frobnicate"`) {
		t.Fatalf("bad option: exit %d %s", code, out)
	}
}

func exitStatus(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}

// Under systemd (Type=notify) the daemon says READY=1 once the mount
// serves, pings WATCHDOG=1 at half of WATCHDOG_USEC and says STOPPING=1
// when asked to stop; the datagrams arrive on a socket the test listens on.
func TestSystemdNotify(t *testing.T) {
	a := newAdminWorld(t)
	sock := filepath.Join(a.dir, "notify.sock")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	msgs := make(chan string, 100)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := ln.ReadFromUnix(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	c := a.kfCmd("mount", "--foreground")
	c.Env = append(c.Env, "NOTIFY_SOCKET="+sock, "WATCHDOG_USEC=400000")
	logf, _ := os.Create(filepath.Join(a.dir, "fg.log"))
	defer logf.Close()
	c.Stdout, c.Stderr = logf, logf
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- c.Wait() }()
	want := func(prefix string) string {
		t.Helper()
		deadline := time.After(60 * time.Second)
		for {
			select {
			case m := <-msgs:
				if strings.HasPrefix(m, prefix) {
					return m
				}
			case err := <-exited:
				log, _ := os.ReadFile(logf.Name())
				t.Fatalf("the daemon exited (%v) before %s:\n%s", err, prefix, log)
			case <-deadline:
				t.Fatalf("no %s within 60 s", prefix)
			}
		}
	}
	ready := want("READY=1")
	if !mounted(a.mnt) {
		t.Fatal("READY=1 before the mount serves")
	}
	if !strings.Contains(ready, "MAINPID=") {
		t.Errorf("READY without MAINPID: %q", ready)
	}
	want("WATCHDOG=1")
	want("WATCHDOG=1")
	if err := c.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	want("STOPPING=1")
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("the daemon exited with %v after SIGTERM", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the daemon did not exit within 60 s of SIGTERM")
	}
	if mounted(a.mnt) {
		t.Fatal("still mounted after SIGTERM")
	}
}

// --metrics-listen serves Prometheus text exposition that the Prometheus
// parser and `promtool check metrics` accept, with the mount's numbers.
func TestMetrics(t *testing.T) {
	requireTool(t, "promtool")
	a := newAdminWorld(t)
	sock := filepath.Join(a.dir, "metrics.sock")
	a.kf(t, "mount", "--metrics-listen", "unix:"+sock)
	defer func() {
		if mounted(a.mnt) {
			a.kf(t, "unmount")
		}
	}()
	if err := os.WriteFile(filepath.Join(a.mnt, "m.txt"), []byte(strings.Repeat("metrics\n", 1000)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := os.ReadFile(filepath.Join(a.mnt, "m.txt")); err != nil {
		t.Fatal(err)
	}
	a.kf(t, "sync")
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	resp, err := client.Get("http://keepfs/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %d %v", resp.StatusCode, err)
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("metrics socket mode: %v %v", fi.Mode(), err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("the Prometheus parser refuses /metrics: %v\n%s", err, body)
	}
	value := func(name string, labels ...string) float64 {
		t.Helper()
		f, ok := fams[name]
		if !ok {
			t.Fatalf("no %s in\n%s", name, body)
		}
	next:
		for _, m := range f.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, l := range m.GetLabel() {
					if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			switch {
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			case m.Histogram != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
		t.Fatalf("no %s%v", name, labels)
		return 0
	}
	if v := value("keepfs_fuse_requests_total", "op", "write"); v < 1 {
		t.Errorf("fuse writes: %v", v)
	}
	if v := value("keepfs_fuse_request_duration_seconds", "op", "write"); v < 1 {
		t.Errorf("fuse write latency samples: %v", v)
	}
	if v := value("keepfs_remote_uploaded_bytes_total"); v < 1 {
		t.Errorf("uploaded bytes: %v", v)
	}
	if v := value("keepfs_remote_request_duration_seconds", "op", "save"); v < 1 {
		t.Errorf("remote save latency samples: %v", v)
	}
	if v := value("keepfs_snapshots"); v < 1 {
		t.Errorf("snapshots: %v", v)
	}
	if v := value("keepfs_last_snapshot_age_seconds"); v < 0 || v > 600 {
		t.Errorf("last snapshot age: %v", v)
	}
	for _, n := range []string{"keepfs_dirty_bytes", "keepfs_upload_queue_bytes", "keepfs_upload_queue_age_seconds",
		"keepfs_remote_downloaded_bytes_total", "keepfs_cache_bytes", "keepfs_cache_hit_ratio", "keepfs_remote_errors_total", "keepfs_remote_up",
		"keepfs_dead_chunks_dropped_total", "keepfs_dead_chunk_bytes_dropped_total"} {
		if _, ok := fams[n]; !ok {
			t.Errorf("no %s", n)
		}
	}
	if v := value("keepfs_incidents_open"); v != 0 {
		t.Errorf("incidents: %v", v)
	}
	check := exec.Command("promtool", "check", "metrics")
	check.Stdin = bytes.NewReader(body)
	if out, err := check.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

// sync with a queue to drain reports it with --progress-json, and prints
// nothing extra to a pipe without it.
func TestSyncProgressJSON(t *testing.T) {
	a := newAdminWorld(t)
	a.kf(t, "mount")
	defer func() {
		if mounted(a.mnt) {
			a.kf(t, "unmount")
		}
	}()
	// Only sync's walk queues the file, and the drain can begin and end
	// between two of the watcher's looks at the queue: the final event
	// still counts what the snapshot added. Every event is an upload
	// event, done never goes back, and the last one is final and complete.
	data := make([]byte, 24<<20)
	rand.New(rand.NewSource(19)).Read(data)
	if err := os.WriteFile(filepath.Join(a.mnt, "big"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	{
		c := a.kfCmd("--progress-json", "sync")
		var stdout, stderr bytes.Buffer
		c.Stdout, c.Stderr = &stdout, &stderr
		if err := c.Run(); err != nil {
			t.Fatalf("sync --progress-json: %v\n%s", err, stderr.String())
		}
		var last struct {
			What        string
			Done, Total int64
			Unit        string
			Final       bool
		}
		lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
		prev := int64(-1)
		for _, l := range lines {
			if err := json.Unmarshal([]byte(l), &last); err != nil || last.What != "upload" || last.Unit != "bytes" {
				t.Fatalf("not an upload event: %q %v", l, err)
			}
			if last.Done < prev || last.Done > last.Total {
				t.Fatalf("upload progress went from %d to %d of %d", prev, last.Done, last.Total)
			}
			prev = last.Done
		}
		if !last.Final || last.Done != last.Total || last.Total < 20<<20 {
			t.Fatalf("sync's last event: %+v (of %d); want final, complete, at least 20 MiB", last, len(lines))
		}
	}
	var stderr bytes.Buffer
	if err := os.WriteFile(filepath.Join(a.mnt, "small"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := a.kfCmd("sync")
	c.Stderr = &stderr
	if err := c.Run(); err != nil || stderr.Len() != 0 {
		t.Fatalf("piped sync: %v, stderr %q", err, stderr.String())
	}
}
