package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// commandsIn lists the (sub)commands a help page names under COMMANDS.
func commandsIn(help string) []string {
	var out []string
	in := false
	for _, l := range strings.Split(help, "\n") {
		switch {
		case strings.HasPrefix(l, "COMMANDS:"):
			in = true
		case in && strings.TrimSpace(l) == "":
			in = false
		case in:
			name := strings.TrimSuffix(strings.Fields(l)[0], ",")
			if name != "help" {
				out = append(out, name)
			}
		}
	}
	return out
}

// Every command and subcommand of the built binary answers --help with
// exit 0, its own name and examples, without touching any repository.
func TestHelpOnEveryCommand(t *testing.T) {
	top, err := exec.Command(keepfsBin, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("keepfs --help: %v\n%s", err, top)
	}
	cmds := commandsIn(string(top))
	for _, want := range []string{"init", "mount", "unmount", "status", "sync", "restore", "ignore", "check"} {
		if !strings.Contains(" "+strings.Join(cmds, " ")+" ", " "+want+" ") {
			t.Errorf("keepfs --help does not list %s: %v", want, cmds)
		}
	}
	for _, c := range cmds {
		out, err := exec.Command(keepfsBin, c, "--help").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "keepfs "+c) {
			t.Errorf("keepfs %s --help: %v\n%s", c, err, out)
			continue
		}
		subs := commandsIn(string(out))
		if len(subs) == 0 && !strings.Contains(string(out), "Example") {
			t.Errorf("keepfs %s --help has no examples", c)
		}
		for _, s := range subs {
			sout, err := exec.Command(keepfsBin, c, s, "--help").CombinedOutput()
			if err != nil || !strings.Contains(string(sout), "keepfs "+c+" "+s) {
				t.Errorf("keepfs %s %s --help: %v\n%s", c, s, err, sout)
			}
		}
	}
}

// Flags may follow positional arguments, as users of GNU tools type them.
func TestFlagsAfterArguments(t *testing.T) {
	w := &world{t: t, dir: t.TempDir()}
	w.remote = filepath.Join(w.dir, "remote")
	w.state = filepath.Join(w.dir, "state")
	w.kf("init")
	src := filepath.Join(w.dir, "src")
	if err := os.MkdirAll(filepath.Join(src, "docs", "a"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "docs", "a", "x.txt"), []byte("flags after args\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	w.kf("import", src)
	out := filepath.Join(w.dir, "out")
	w.kf("restore", "/docs", "--to", out)
	if b, err := os.ReadFile(filepath.Join(out, "docs", "a", "x.txt")); err != nil || string(b) != "flags after args\n" {
		t.Fatalf("restore /docs --to: %q %v", b, err)
	}
	out2 := filepath.Join(w.dir, "out2")
	w.kf("restore", "/docs/a/x.txt", "--to", out2, "--at", "latest")
	if b, err := os.ReadFile(filepath.Join(out2, "x.txt")); err != nil || string(b) != "flags after args\n" {
		t.Fatalf("restore FILE --to --at: %q %v", b, err)
	}
	// An unknown flag after an argument is a usage error (exit 2), not a path.
	c := w.cmd("restore", "/docs", "--no-such-flag")
	b, err := c.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("unknown flag: %v %s", err, b)
	}
}

// exitCode runs c and returns its exit code and combined output.
func exitCode(t *testing.T, c *exec.Cmd) (int, string) {
	t.Helper()
	out, err := c.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &ee):
		return ee.ExitCode(), string(out)
	}
	t.Fatalf("%v: %v", c.Args, err)
	return 0, ""
}

// A mount point that is not an empty directory, or is mounted already, is
// refused with one line and exit 1, before anything is started.
func TestMountPointRefused(t *testing.T) {
	w := newWorld(t)
	full := filepath.Join(w.dir, "full")
	if err := os.MkdirAll(filepath.Join(full, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(w.dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ mnt, want string }{
		{full, "not empty"},
		{file, "not a directory"},
		{filepath.Join(w.dir, "missing"), "no such file"},
	} {
		code, out := exitCode(t, w.cmd("mount", tc.mnt))
		if code != 1 || !strings.Contains(out, tc.want) || strings.Count(strings.TrimSpace(out), "\n") > 0 {
			t.Errorf("mount %s: exit %d %q (want one line with %q)", tc.mnt, code, out, tc.want)
		}
		if mounted(tc.mnt) {
			t.Errorf("%s got mounted", tc.mnt)
		}
	}
	w.mount()
	code, out := exitCode(t, w.cmd("mount", w.mnt))
	if code != 1 || !strings.Contains(out, "already a mount point") {
		t.Errorf("mounting over a mount: exit %d %q", code, out)
	}
	// The first mount is unharmed.
	if err := os.WriteFile(filepath.Join(w.mnt, "still"), []byte("ok"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// unmount accepts any path inside the mount and returns only when the
// daemon is gone, so an immediate remount with the same state works; status
// finds the daemon through --state.
func TestUnmountFromInsideThenRemount(t *testing.T) {
	w := newWorld(t)
	w.mount("--snapshot-interval", "1h")
	sub := filepath.Join(w.mnt, "deep", "er")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sub, "f"), []byte("remount me"), 0o644); err != nil {
		t.Fatal(err)
	}
	// status without MNT, by --state (other mounts may exist on this machine).
	st := w.kf("status", "--json")
	if !strings.Contains(st, `"mount": "`+w.mnt+`"`) {
		t.Fatalf("status --state: %s", st)
	}
	pid := daemonPID(t, w)
	out, err := exec.Command(keepfsBin, "unmount", sub).CombinedOutput()
	if err != nil {
		t.Fatalf("unmount %s: %v\n%s", sub, err, out)
	}
	if !strings.Contains(string(out), "final snapshot") {
		t.Errorf("unmount said %q", out)
	}
	if mounted(w.mnt) {
		t.Fatal("still mounted")
	}
	if alive(pid) {
		t.Fatalf("daemon %d still running after unmount returned", pid)
	}
	// Immediately: the state directory is free again.
	w.mount()
	if b, err := os.ReadFile(filepath.Join(w.mnt, "deep", "er", "f")); err != nil || string(b) != "remount me" {
		t.Fatalf("after remount: %q %v", b, err)
	}
	code, out2 := exitCode(t, exec.Command(keepfsBin, "unmount", w.dir))
	if code != 1 || !strings.Contains(out2, "not a keepfs mount") {
		t.Errorf("unmount of a non-mount: exit %d %q", code, out2)
	}
}

// A process sitting in the mount does not keep unmount from finishing:
// after a short retry the daemon detaches the mount lazily.
func TestUnmountWhileBusy(t *testing.T) {
	w := newWorld(t)
	w.mount("--snapshot-interval", "1h")
	dir := filepath.Join(w.mnt, "busy")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("busy"), 0o644); err != nil {
		t.Fatal(err)
	}
	sleeper := exec.Command("sleep", "60")
	sleeper.Dir = dir
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sleeper.Process.Kill(); _ = sleeper.Wait() }()
	pid := daemonPID(t, w)
	start := time.Now()
	out, err := exec.Command(keepfsBin, "unmount", w.mnt).CombinedOutput()
	if err != nil {
		t.Fatalf("unmount while busy: %v\n%s", err, out)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("busy unmount took %v", d)
	}
	if mounted(w.mnt) || alive(pid) {
		t.Fatalf("after busy unmount: mounted=%v daemon alive=%v", mounted(w.mnt), alive(pid))
	}
	f := recovered(t, w, "busy")
	if b, err := os.ReadFile(filepath.Join(f.mnt, "busy", "f")); err != nil || string(b) != "busy" {
		t.Fatalf("from the remote: %q %v", b, err)
	}
}

// alive reports whether pid runs and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X'
}

func waitGone(t *testing.T, pid int, mnt string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for alive(pid) || mounted(mnt) {
		if time.Now().After(deadline) {
			t.Fatalf("daemon %d alive=%v, %s mounted=%v after 60 s", pid, alive(pid), mnt, mounted(mnt))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// recovered mounts w's remote with an empty state directory and returns
// the mount point: whatever it shows reached the remote.
func recovered(t *testing.T, w *world, name string) *world {
	t.Helper()
	f := &world{t: t, dir: w.dir, remote: w.remote, state: filepath.Join(w.dir, "state-"+name), mnt: filepath.Join(w.dir, "mnt-"+name)}
	if err := os.Mkdir(f.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	f.mount()
	return f
}

// SIGTERM to the daemon unmounts cleanly: a final snapshot in the remote
// holds everything that was closed.
func TestSIGTERMUnmountsCleanly(t *testing.T) {
	w := newWorld(t)
	w.mount("--snapshot-interval", "1h")
	if err := os.WriteFile(filepath.Join(w.mnt, "before-term.txt"), []byte("closed before SIGTERM"), 0o600); err != nil {
		t.Fatal(err)
	}
	pid := daemonPID(t, w)
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pid, w.mnt)
	log, _ := os.ReadFile(filepath.Join(w.state, "daemon.log"))
	if bytes.Contains(log, []byte("level=ERROR")) {
		t.Errorf("daemon log has errors:\n%s", log)
	}
	f := recovered(t, w, "term")
	if b, err := os.ReadFile(filepath.Join(f.mnt, "before-term.txt")); err != nil || string(b) != "closed before SIGTERM" {
		t.Fatalf("from the remote after SIGTERM: %q %v", b, err)
	}
}

// fusermount3 -u from outside ends the daemon too, after it committed and
// snapshotted what was closed.
func TestExternalUnmount(t *testing.T) {
	w := newWorld(t)
	w.mount("--snapshot-interval", "1h")
	if err := os.WriteFile(filepath.Join(w.mnt, "outside.txt"), []byte("unmounted from outside"), 0o644); err != nil {
		t.Fatal(err)
	}
	pid := daemonPID(t, w)
	run(t, "", "fusermount3", "-u", w.mnt)
	waitGone(t, pid, w.mnt)
	f := recovered(t, w, "ext")
	if b, err := os.ReadFile(filepath.Join(f.mnt, "outside.txt")); err != nil || string(b) != "unmounted from outside" {
		t.Fatalf("from the remote after fusermount3 -u: %q %v", b, err)
	}
}

// mount --foreground stays attached; Ctrl-C (SIGINT) takes a final
// snapshot, unmounts and exits 0 — what `make run` relies on.
func TestForegroundCtrlC(t *testing.T) {
	w := newWorld(t)
	c := w.cmd("mount", "--foreground", w.mnt, "--snapshot-interval", "1h")
	var stderr bytes.Buffer
	c.Stderr = &stderr
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if mounted(w.mnt) {
			_ = exec.Command("fusermount3", "-u", "-z", w.mnt).Run()
		}
		_ = c.Process.Kill()
	})
	for i := 0; !mounted(w.mnt); i++ {
		if i == 600 {
			t.Fatalf("foreground mount not ready after 30 s: %s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := os.WriteFile(filepath.Join(w.mnt, "fg.txt"), []byte("foreground"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := c.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("foreground mount exited with %v: %s", err, stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("foreground mount did not exit after SIGINT: %s", stderr.String())
	}
	if mounted(w.mnt) {
		t.Fatal("still mounted after Ctrl-C")
	}
	f := recovered(t, w, "fg")
	if b, err := os.ReadFile(filepath.Join(f.mnt, "fg.txt")); err != nil || string(b) != "foreground" {
		t.Fatalf("from the remote after Ctrl-C: %q %v", b, err)
	}
}

// While the final upload waits on an unreachable remote, a second Ctrl-C
// stops at once; what was closed stays in the state directory and reaches
// the remote at the next mount.
func TestSecondSignalWhileRemoteUnreachable(t *testing.T) {
	w := newWorld(t)
	c := w.cmd("mount", "--foreground", w.mnt)
	var stderr bytes.Buffer
	c.Stderr = &stderr
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	t.Cleanup(func() {
		_ = c.Process.Kill()
		if mounted(w.mnt) {
			_ = exec.Command("fusermount3", "-u", "-z", w.mnt).Run()
			t.Errorf("%s left mounted", w.mnt)
		}
	})
	for i := 0; !mounted(w.mnt); i++ {
		if i == 600 {
			t.Fatalf("foreground mount not ready after 30 s: %s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	data := bytes.Repeat([]byte("queued while offline "), 100000)
	if err := os.WriteFile(filepath.Join(w.mnt, "offline.txt"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	away := w.remote + "-away"
	if err := os.Rename(w.remote, away); err != nil {
		t.Fatal(err)
	}
	if err := c.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		t.Fatalf("exited (%v) although the remote is unreachable: %s", err, stderr.String())
	case <-time.After(1500 * time.Millisecond):
	}
	if err := c.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Error("a forced stop exited 0")
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("second Ctrl-C did not stop the daemon: %s", stderr.String())
	}
	if mounted(w.mnt) {
		t.Fatal("still mounted after the forced stop")
	}
	if err := os.Rename(away, w.remote); err != nil {
		t.Fatal(err)
	}
	w.mount()
	if b, err := os.ReadFile(filepath.Join(w.mnt, "offline.txt")); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("after the forced stop: %d bytes %v", len(b), err)
	}
	w.unmount()
	w.kf("check", "--read-data")
	f := recovered(t, w, "offline")
	if b, err := os.ReadFile(filepath.Join(f.mnt, "offline.txt")); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("from the remote: %d bytes %v", len(b), err)
	}
}

// The control socket is 0600 and answers only its owner or root, even
// when its mode is opened up (SO_PEERCRED).
func TestControlSocketPeerCheck(t *testing.T) {
	requireTool(t, "setpriv")
	w := newWorld(t)
	w.mount()
	sock := filepath.Join(w.state, "control.sock")
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket mode %v", fi.Mode())
	}
	if os.Geteuid() != 0 {
		return // acting as another user needs root; CI runs as root
	}
	for _, d := range []string{filepath.Dir(w.dir), w.dir, w.state} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(sock, 0o666); err != nil {
		t.Fatal(err)
	}
	// The client refuses a world-writable socket, so make it private
	// again before the cleanup unmounts through it.
	t.Cleanup(func() { _ = os.Chmod(sock, 0o600) })
	// The daemon refuses another user's request even through a socket
	// anyone may write to (the keepfs client would not use such a socket,
	// so speak the protocol by hand).
	asNobody := func(args ...string) *exec.Cmd {
		return exec.Command("setpriv", append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", "--"}, args...)...)
	}
	// A system python (one under /root, like pyenv's, is out of nobody's
	// reach).
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		t.Log("no /usr/bin/python3: the daemon's own peer check is not exercised")
	} else {
		out, err := asNobody("/usr/bin/python3", "-c", `import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b'{"op":"status"}\n')
sys.stdout.write(s.makefile().readline())`, sock).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "answers only its owner") {
			t.Fatalf("another user asked the daemon: %v %s", err, out)
		}
	}
	// The client, for its part, refuses a socket others may write to.
	out, err := asNobody(keepfsBin, "--state", w.state, "status").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "writable by others") {
		t.Fatalf("the client used a world-writable socket: %v %s", err, out)
	}
	// The owner still gets answers once the socket is private again.
	if err := os.Chmod(sock, 0o600); err != nil {
		t.Fatal(err)
	}
	w.kf("status", w.mnt)
}

// A path inside a mount names a file of the mounted repository: with
// --repo naming another one, log refuses instead of looking the path up
// in the wrong repository.
func TestPathInMountOfAnotherRepositoryRefused(t *testing.T) {
	w := newWorld(t)
	w.mount()
	if err := os.WriteFile(filepath.Join(w.mnt, "f.txt"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	w.kf("sync", w.mnt)
	w.kf("log", filepath.Join(w.mnt, "f.txt"))

	other := filepath.Join(w.dir, "other")
	env := append(os.Environ(), "KEEPFS_PASSWORD=integration words")
	c := exec.Command(keepfsBin, "--repo", "file://"+other, "init")
	c.Env = env
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("init: %v %s", err, out)
	}
	c = exec.Command(keepfsBin, "--repo", "file://"+other, "log", filepath.Join(w.mnt, "f.txt"))
	c.Env = env
	code, out := exitCode(t, c)
	if code != 1 || !strings.Contains(out, "serves repository") || strings.Count(strings.TrimSpace(out), "\n") != 0 {
		t.Fatalf("log through a mount of another repository: exit %d %q", code, out)
	}
}

// ignore check inside a mount reads .gdprignore files from the mount root
// down and names the deciding file, line and pattern.
func TestIgnoreCheckInMount(t *testing.T) {
	w := newWorld(t)
	w.mount()
	if err := os.WriteFile(filepath.Join(w.mnt, ".gdprignore"), []byte("secret/\n*.tmp\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(w.mnt, "secret"), 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(w.mnt, "secret", "passport.txt")
	if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := w.kf("ignore", "check", "-v", p)
	want := filepath.Join(w.mnt, ".gdprignore") + ":1:secret/\t" + p
	if strings.TrimSpace(out) != want {
		t.Fatalf("ignore check -v: %q, want %q", out, want)
	}
	code, out2 := exitCode(t, w.cmd("ignore", "check", filepath.Join(w.mnt, "kept.txt")))
	if code != 1 || strings.TrimSpace(out2) == filepath.Join(w.mnt, "kept.txt") {
		t.Fatalf("not-ignored path: exit %d %q", code, out2)
	}
}

// The daemon gets the passphrase through a pipe: neither its argv nor its
// environment holds it (both are readable in /proc).
func TestDaemonPassphraseNotInArgvOrEnv(t *testing.T) {
	w := newWorld(t)
	w.mount()
	pid := daemonPID(t, w)
	for _, f := range []string{"cmdline", "environ"} {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/" + f)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte("integration words")) {
			t.Errorf("the passphrase is in the daemon's %s", f)
		}
		if f == "cmdline" && !bytes.Contains(b, []byte("--passphrase-fd")) {
			t.Errorf("daemon cmdline %q: not started by the daemonizing mount?", b)
		}
	}
}

// A file whose local data vanished before its upload (a disk error, a
// power loss) does not stop backups, but sync exits 1 naming it and status
// lists it until it is rewritten.
func TestLostFileReported(t *testing.T) {
	w := newWorld(t)
	w.mount()
	dir := filepath.Join(w.mnt, "dir")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	away := w.remote + "-away"
	if err := os.Rename(w.remote, away); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 3<<20)
	for i := range data {
		data[i] = byte(i * 7 / 5)
	}
	if err := os.WriteFile(filepath.Join(dir, "gone"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	chunks, _ := filepath.Glob(filepath.Join(w.state, "chunks", "*", "*"))
	if len(chunks) == 0 {
		t.Fatal("no chunk file to lose")
	}
	for _, c := range chunks {
		if err := os.Remove(c); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Rename(away, w.remote); err != nil {
		t.Fatal(err)
	}
	code, out := exitCode(t, exec.Command(keepfsBin, "sync", w.mnt))
	if code != 1 || !strings.Contains(out, "snapshot ") || !strings.Contains(out, "1 file whose data is lost") || !strings.Contains(out, "/dir/gone") {
		t.Fatalf("sync with a lost file: exit %d\n%s", code, out)
	}
	lost := func() []string {
		t.Helper()
		var st struct {
			Status struct {
				LostFiles []string `json:"lost_files"`
			} `json:"status"`
		}
		out, err := exec.Command(keepfsBin, "status", "--json", w.mnt).Output()
		if err != nil {
			t.Fatalf("status: %v", err)
		}
		if err := json.Unmarshal(out, &st); err != nil {
			t.Fatalf("status --json: %v\n%s", err, out)
		}
		return st.Status.LostFiles
	}
	if got := lost(); len(got) != 1 || got[0] != "/dir/gone" {
		t.Fatalf("status --json lists lost files %q", got)
	}
	if out, _ := exec.Command(keepfsBin, "status", w.mnt).Output(); !strings.Contains(string(out), "NOT BACKED UP: 1 file") {
		t.Fatalf("status does not name the lost file:\n%s", out)
	}
	// Unmount warns; the next mount lists the file before its first
	// snapshot.
	if code, out := exitCode(t, exec.Command(keepfsBin, "unmount", w.mnt)); code != 0 || !strings.Contains(out, "warning: not backed up: 1 file") {
		t.Fatalf("unmount with a lost file: exit %d\n%s", code, out)
	}
	w.mount()
	if got := lost(); len(got) != 1 || got[0] != "/dir/gone" {
		t.Fatalf("after a remount status --json lists lost files %q", got)
	}
	// Rewriting heals it (reads of lost data are EIO: cache.TestPowerLoss).
	if err := os.WriteFile(filepath.Join(dir, "gone"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out := exitCode(t, exec.Command(keepfsBin, "sync", w.mnt)); code != 0 {
		t.Fatalf("sync after the rewrite: exit %d\n%s", code, out)
	}
	if got := lost(); got == nil || len(got) != 0 {
		t.Fatalf("after the rewrite status lists lost files %q, want []", got)
	}
	w.unmount()
	w.kf("check", "--read-data")
}
