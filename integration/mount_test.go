package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// keepfsBin is the binary built once by TestMain; the tests drive it as a
// user would, on real FUSE mounts.
var keepfsBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "keepfs-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	keepfsBin = filepath.Join(dir, "keepfs")
	build := exec.Command("go", "build", "-o", keepfsBin, "../cmd/keepfs")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build keepfs:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func requireFUSE(t *testing.T) {
	t.Helper()
	_, errDev := os.Stat("/dev/fuse")
	_, errBin := exec.LookPath("fusermount3")
	if errDev != nil || errBin != nil {
		if os.Getenv("KEEPFS_REQUIRE_FUSE") == "1" {
			t.Fatalf("FUSE required (KEEPFS_REQUIRE_FUSE=1) but unavailable: %v %v", errDev, errBin)
		}
		t.Skipf("FUSE unavailable: %v %v", errDev, errBin)
	}
}

func requireTool(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Fatalf("%s is needed (make deps installs it): %v", name, err)
	}
}

type world struct {
	t      *testing.T
	dir    string
	remote string
	state  string
	mnt    string
	// url, when set, names the repository instead of file://remote, and
	// flags are passed before every command's own (sftp's host key, say).
	url   string
	flags []string
	// env is added to every command's environment (s3 credentials, say).
	env []string
}

func newWorld(t *testing.T) *world {
	requireFUSE(t)
	w := &world{t: t, dir: t.TempDir()}
	w.remote = filepath.Join(w.dir, "remote")
	w.state = filepath.Join(w.dir, "state")
	w.mnt = filepath.Join(w.dir, "mnt")
	if err := os.Mkdir(w.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	w.kf("init")
	return w
}

func (w *world) cmd(args ...string) *exec.Cmd {
	url := "file://" + w.remote
	if w.url != "" {
		url = w.url
	}
	global := append([]string{"--repo", url, "--state", w.state}, w.flags...)
	c := exec.Command(keepfsBin, append(global, args...)...)
	c.Env = append(append(os.Environ(), "KEEPFS_PASSWORD=integration words"), w.env...)
	return c
}

func (w *world) kf(args ...string) string {
	w.t.Helper()
	out, err := w.cmd(args...).CombinedOutput()
	if err != nil {
		w.t.Fatalf("keepfs %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func mounted(p string) bool {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 && f[4] == p {
			return true
		}
	}
	return false
}

// mount mounts w.mnt (daemonized) and unmounts it when the test ends.
func (w *world) mount(args ...string) {
	w.t.Helper()
	w.kf(append(append([]string{"mount"}, args...), w.mnt)...)
	if !mounted(w.mnt) {
		w.t.Fatal("mount returned but nothing is mounted")
	}
	mnt := w.mnt
	w.t.Cleanup(func() {
		if mounted(mnt) {
			_ = exec.Command(keepfsBin, "unmount", mnt).Run()
		}
		if mounted(mnt) {
			_ = exec.Command("fusermount3", "-u", "-z", mnt).Run()
			w.t.Errorf("%s was left mounted", mnt)
		}
	})
}

func (w *world) unmount() {
	w.t.Helper()
	out, err := exec.Command(keepfsBin, "unmount", w.mnt).CombinedOutput()
	if err != nil {
		w.t.Fatalf("unmount: %v\n%s", err, out)
	}
	if mounted(w.mnt) {
		w.t.Fatal("still mounted after unmount")
	}
}

func run(t *testing.T, dir string, name string, args ...string) string {
	t.Helper()
	c := exec.Command(name, args...)
	c.Dir = dir
	c.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com",
		"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com", "HOME="+t.TempDir())
	out, err := c.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// genTree writes a small tree of ordinary files, symlinks and modes.
func genTree(t *testing.T, dir string, seed int64) {
	t.Helper()
	rng := rand.New(rand.NewSource(seed))
	for i := 0; i < 60; i++ {
		p := filepath.Join(dir, fmt.Sprintf("d%d", i%5), fmt.Sprintf("sub%d", i%3), fmt.Sprintf("f%02d.dat", i))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, rng.Intn(300<<10))
		rng.Read(b)
		if err := os.WriteFile(p, b, os.FileMode(0o600+rng.Intn(2)*0o44)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("d0/sub0/f00.dat", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
}

func TestToolsOnTheMount(t *testing.T) {
	for _, tool := range []string{"cp", "rsync", "tar", "diff", "git", "sqlite3", "find"} {
		requireTool(t, tool)
	}
	w := newWorld(t)
	w.mount("--snapshot-interval", "1h")
	src := t.TempDir()
	genTree(t, src, 1)

	t.Run("cp -a", func(t *testing.T) {
		run(t, "", "cp", "-a", src, filepath.Join(w.mnt, "cp"))
		run(t, "", "diff", "-r", "--no-dereference", src, filepath.Join(w.mnt, "cp"))
		// diff does not look at modes and times; cp -a must keep them.
		list := func(dir string) string {
			lines := strings.Split(run(t, dir, "find", ".", "-printf", "%y %m %T@ %p\n"), "\n")
			sort.Strings(lines)
			return strings.Join(lines, "\n")
		}
		if a, b := list(src), list(filepath.Join(w.mnt, "cp")); a != b {
			t.Fatalf("cp -a lost metadata:\n%s\nvs\n%s", a, b)
		}
	})
	t.Run("rsync -a", func(t *testing.T) {
		run(t, "", "rsync", "-a", src+"/", filepath.Join(w.mnt, "rsync")+"/")
		run(t, "", "diff", "-r", "--no-dereference", src, filepath.Join(w.mnt, "rsync"))
		// A second rsync finds nothing to do: times and sizes match.
		out := run(t, "", "rsync", "-a", "--itemize-changes", src+"/", filepath.Join(w.mnt, "rsync")+"/")
		if strings.TrimSpace(out) != "" {
			t.Fatalf("second rsync changed: %s", out)
		}
	})
	t.Run("tar x", func(t *testing.T) {
		tarball := filepath.Join(t.TempDir(), "t.tar")
		run(t, src, "tar", "cf", tarball, ".")
		dst := filepath.Join(w.mnt, "tar")
		if err := os.Mkdir(dst, 0o755); err != nil {
			t.Fatal(err)
		}
		run(t, dst, "tar", "xf", tarball)
		run(t, "", "diff", "-r", "--no-dereference", src, dst)
	})
	t.Run("git", func(t *testing.T) {
		repoDir := filepath.Join(w.mnt, "git")
		if err := os.Mkdir(repoDir, 0o755); err != nil {
			t.Fatal(err)
		}
		run(t, repoDir, "git", "init", "-q")
		for i := 0; i < 5; i++ {
			if err := os.WriteFile(filepath.Join(repoDir, "file.txt"), []byte(strings.Repeat(fmt.Sprintf("line %d\n", i), 100)), 0o644); err != nil {
				t.Fatal(err)
			}
			run(t, repoDir, "git", "add", "file.txt")
			run(t, repoDir, "git", "commit", "-q", "-m", fmt.Sprintf("commit %d", i))
		}
		if n := strings.Count(run(t, repoDir, "git", "log", "--oneline"), "\n"); n != 5 {
			t.Fatalf("git log shows %d commits", n)
		}
		run(t, repoDir, "git", "gc", "-q")
		run(t, repoDir, "git", "fsck", "--full")
	})
	t.Run("sqlite3 with concurrent writers", func(t *testing.T) {
		db := filepath.Join(w.mnt, "db.sqlite")
		run(t, "", "sqlite3", db, "PRAGMA journal_mode=WAL; CREATE TABLE t(k INTEGER, v TEXT);")
		var wg sync.WaitGroup
		errs := make(chan error, 2)
		for p := 0; p < 2; p++ {
			wg.Add(1)
			go func(p int) {
				defer wg.Done()
				var sql strings.Builder
				sql.WriteString(".timeout 10000\n")
				for i := 0; i < 200; i++ {
					fmt.Fprintf(&sql, "INSERT INTO t VALUES(%d, 'writer %d row %d');\n", p*1000+i, p, i)
				}
				c := exec.Command("sqlite3", db)
				c.Stdin = strings.NewReader(sql.String())
				if out, err := c.CombinedOutput(); err != nil {
					errs <- fmt.Errorf("writer %d: %v %s", p, err, out)
				}
			}(p)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(run(t, "", "sqlite3", db, "SELECT count(*) FROM t; PRAGMA integrity_check;")); got != "400\nok" {
			t.Fatalf("sqlite: %q", got)
		}
	})
	t.Run("find", func(t *testing.T) {
		got := strings.Count(run(t, "", "find", filepath.Join(w.mnt, "cp"), "-type", "f", "-name", "*.dat"), "\n")
		if got != 60 {
			t.Fatalf("find saw %d files", got)
		}
	})
	t.Run("concurrent writers", func(t *testing.T) {
		dir := filepath.Join(w.mnt, "conc")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				b := bytes.Repeat([]byte{byte(i)}, 1<<20+i)
				if err := os.WriteFile(filepath.Join(dir, strconv.Itoa(i)), b, 0o644); err != nil {
					t.Error(err)
				}
			}(i)
		}
		wg.Wait()
		for i := 0; i < 8; i++ {
			b, err := os.ReadFile(filepath.Join(dir, strconv.Itoa(i)))
			if err != nil || len(b) != 1<<20+i || b[len(b)-1] != byte(i) {
				t.Fatalf("file %d: %d bytes %v", i, len(b), err)
			}
		}
	})

	// Everything above survives the round trip through the remote alone.
	w.kf("sync", w.mnt)
	w.unmount()
	fresh := &world{t: t, dir: w.dir, remote: w.remote, state: filepath.Join(w.dir, "state-fresh"), mnt: w.mnt}
	fresh.mount()
	run(t, "", "diff", "-r", "--no-dereference", src, filepath.Join(fresh.mnt, "rsync"))
	if got := strings.TrimSpace(run(t, "", "sqlite3", filepath.Join(fresh.mnt, "db.sqlite"), "SELECT count(*) FROM t;")); got != "400" {
		t.Fatalf("recovered sqlite: %q", got)
	}
	run(t, filepath.Join(fresh.mnt, "git"), "git", "fsck", "--full")
	fresh.unmount()
	fresh.kf("check", "--read-data")
}

// kill -9 of the daemon loses nothing that was closed or fsynced.
func TestKill9Daemon(t *testing.T) {
	w := newWorld(t)
	w.mount("--snapshot-interval", "1h")
	want := map[string][]byte{}
	rng := rand.New(rand.NewSource(3))
	for i := 0; i < 20; i++ {
		n := rng.Intn(3 << 20)
		if i%5 == 4 {
			n += 8 << 20 // an fsync of this many bytes commits in the background
		}
		b := make([]byte, n)
		rng.Read(b)
		p := filepath.Join(w.mnt, fmt.Sprintf("f%d", i))
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(b); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		want[filepath.Base(p)] = b
	}
	pid := daemonPID(t, w)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100 && processAlive(pid); i++ {
		time.Sleep(50 * time.Millisecond)
	}
	_ = exec.Command("fusermount3", "-u", "-z", w.mnt).Run()
	w.mount()
	for name, b := range want {
		got, err := os.ReadFile(filepath.Join(w.mnt, name))
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("%s after kill -9: %d bytes, %v (want %d)", name, len(got), err, len(b))
		}
	}
	w.kf("sync", w.mnt)
	w.unmount()
	w.kf("check", "--read-data")
}

func daemonPID(t *testing.T, w *world) int {
	t.Helper()
	out := w.kf("status", w.mnt, "--json")
	i := strings.Index(out, `"pid": `)
	if i < 0 {
		t.Fatalf("status has no pid: %s", out)
	}
	var pid int
	fmt.Sscanf(out[i+len(`"pid": `):], "%d", &pid)
	if pid <= 0 {
		t.Fatalf("bad pid in %s", out)
	}
	return pid
}

func processAlive(pid int) bool { return syscall.Kill(pid, 0) == nil }

func TestSecondMountRefusedAndNoPlaintext(t *testing.T) {
	w := newWorld(t)
	w.mount()
	secret := "MARKER-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	if err := os.WriteFile(filepath.Join(w.mnt, "patient-"+secret+".txt"), []byte(strings.Repeat(secret+"\n", 100)), 0o600); err != nil {
		t.Fatal(err)
	}
	w.kf("sync", w.mnt)
	other := filepath.Join(w.dir, "mnt2")
	if err := os.Mkdir(other, 0o755); err != nil {
		t.Fatal(err)
	}
	c := w.cmd("--state", filepath.Join(w.dir, "state2"), "mount", other)
	out, err := c.CombinedOutput()
	if err == nil || mounted(other) {
		_ = exec.Command("fusermount3", "-u", "-z", other).Run()
		t.Fatalf("second mount of the same repository succeeded: %s", out)
	}
	if strings.Count(strings.TrimSpace(string(out)), "\n") > 1 {
		t.Errorf("refusal is not one line: %s", out)
	}
	for _, dir := range []string{w.remote, w.state} {
		_ = filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
			if err != nil || fi.IsDir() || fi.Mode()&os.ModeSocket != 0 {
				return nil
			}
			b, _ := os.ReadFile(p)
			if bytes.Contains(b, []byte(secret)) || strings.Contains(p, secret) {
				t.Errorf("%s holds the plaintext marker", p)
			}
			return nil
		})
	}
	st := w.kf("status", w.mnt, "--json")
	if !strings.Contains(st, `"remote_reachable": true`) {
		t.Errorf("status: %s", st)
	}
}

// The same random operations on the mount and on a plain directory leave
// both in the same state after every step.
func TestLockstep(t *testing.T) {
	w := newWorld(t)
	w.mount("--snapshot-interval", "2s")
	seed := time.Now().UnixNano()
	if s := os.Getenv("KEEPFS_LOCKSTEP_SEED"); s != "" {
		seed, _ = strconv.ParseInt(s, 10, 64)
	}
	steps := 2000
	t.Logf("seed %d (KEEPFS_LOCKSTEP_SEED=%d reproduces)", seed, seed)
	rng := rand.New(rand.NewSource(seed))
	ref := t.TempDir()
	roots := []string{ref, w.mnt}
	names := []string{"a", "b", "c", "d/x", "d/y", "e", "d"}
	pick := func() string { return names[rng.Intn(len(names))] }
	for step := 0; step < steps; step++ {
		op := rng.Intn(11)
		p1, p2 := pick(), pick()
		off := int64(rng.Intn(300 << 10))
		data := make([]byte, rng.Intn(70<<10))
		rng.Read(data)
		mode := os.FileMode([]int{0o644, 0o600, 0o755, 0o400}[rng.Intn(4)])
		size := int64(rng.Intn(400 << 10))
		var desc string
		var errs [2]error
		for i, root := range roots {
			a, b := filepath.Join(root, p1), filepath.Join(root, p2)
			switch op {
			case 0:
				desc = "write " + p1
				errs[i] = os.WriteFile(a, data, 0o644)
			case 1:
				desc = fmt.Sprintf("pwrite %s @%d", p1, off)
				f, err := os.OpenFile(a, os.O_WRONLY|os.O_CREATE, 0o644)
				if err == nil {
					_, err = f.WriteAt(data, off)
					f.Close()
				}
				errs[i] = err
			case 2:
				desc = fmt.Sprintf("truncate %s %d", p1, size)
				errs[i] = os.Truncate(a, size)
			case 3:
				desc = "rename " + p1 + " " + p2
				errs[i] = os.Rename(a, b)
			case 4:
				desc = "unlink " + p1
				errs[i] = os.Remove(a)
			case 5:
				desc = "mkdir " + p1
				errs[i] = os.Mkdir(a, 0o755)
			case 6:
				desc = "symlink " + p1
				errs[i] = os.Symlink("target-"+p2, a)
			case 7:
				desc = "link " + p1 + " " + p2
				errs[i] = os.Link(a, b)
			case 8:
				desc = fmt.Sprintf("chmod %s %o", p1, mode)
				errs[i] = os.Chmod(a, mode)
			case 9:
				desc = "append " + p1
				f, err := os.OpenFile(a, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
				if err == nil {
					_, err = f.Write(data[:min(len(data), 1000)])
					f.Close()
				}
				errs[i] = err
			case 10:
				desc = "rmdir " + p1
				errs[i] = syscall.Rmdir(a)
			}
		}
		if errno(errs[0]) != errno(errs[1]) {
			t.Fatalf("step %d (%s): plain dir says %v, mount says %v (seed %d)", step, desc, errs[0], errs[1], seed)
		}
		if a, b := snapshotDir(t, ref), snapshotDir(t, w.mnt); a != b {
			t.Fatalf("step %d (%s): trees differ (seed %d)\nplain:\n%s\nmount:\n%s", step, desc, seed, a, b)
		}
	}
}

func errno(err error) string {
	if err == nil {
		return "ok"
	}
	var e syscall.Errno
	if pe, ok := err.(*os.PathError); ok {
		if en, ok := pe.Err.(syscall.Errno); ok {
			e = en
		}
	}
	if le, ok := err.(*os.LinkError); ok {
		if en, ok := le.Err.(syscall.Errno); ok {
			e = en
		}
	}
	if e == 0 {
		return err.Error()
	}
	return e.Error()
}

// snapshotDir describes a tree: names, types, modes, sizes, link counts,
// content hashes and symlink targets.
func snapshotDir(t *testing.T, root string) string {
	var b strings.Builder
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." || rel == ".versions" {
			if rel == ".versions" {
				return filepath.SkipDir
			}
			return nil
		}
		st := fi.Sys().(*syscall.Stat_t)
		fmt.Fprintf(&b, "%s %v", rel, fi.Mode())
		switch {
		case fi.Mode().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, " size=%d links=%d sum=%x", fi.Size(), st.Nlink, simpleHash(data))
		case fi.Mode()&os.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			fmt.Fprintf(&b, " -> %s", l)
		}
		b.WriteByte('\n')
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	return b.String()
}

func simpleHash(b []byte) uint64 {
	var h uint64 = 1469598103934665603
	for _, c := range b {
		h = (h ^ uint64(c)) * 1099511628211
	}
	return h
}

// restore --in-place brings an old version back as a new one; the version
// it replaced stays in history.
func TestRestoreInPlace(t *testing.T) {
	w := newWorld(t)
	w.mount("--snapshot-interval", "1h")
	f := filepath.Join(w.mnt, "docs", "contract.txt")
	if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f, []byte("v1\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	w.kf("sync", w.mnt)
	ents, _ := os.ReadDir(filepath.Join(w.mnt, ".versions"))
	var first string
	for _, e := range ents {
		if e.Name() != "latest" {
			first = e.Name()
		}
	}
	time.Sleep(1100 * time.Millisecond)
	if err := os.WriteFile(f, []byte("v2\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	// Flags after the path, as users of GNU tools type them.
	out := w.kf("restore", "--in-place", f, "--at", first)
	if !strings.Contains(out, "restored") {
		t.Fatalf("restore said %q", out)
	}
	if b, _ := os.ReadFile(f); string(b) != "v1\n" {
		t.Fatalf("after restore: %q", b)
	}
	if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != 0o640 {
		t.Fatalf("mode after restore: %v %v", fi.Mode(), err)
	}
	log := w.kf("log", f)
	if n := strings.Count(strings.TrimSpace(log), "\n") + 1; n < 3 {
		t.Fatalf("log after restore shows %d versions:\n%s", n, log)
	}
	found := false
	for _, e := range mustReadDir(t, filepath.Join(w.mnt, ".versions")) {
		if b, err := os.ReadFile(filepath.Join(w.mnt, ".versions", e, "docs", "contract.txt")); err == nil && string(b) == "v2\n" {
			found = true
		}
	}
	if !found {
		t.Fatal("the replaced version v2 is in no snapshot")
	}
	if left, _ := filepath.Glob(filepath.Join(w.mnt, "docs", ".keepfs-restore-*")); len(left) > 0 {
		t.Fatalf("leftovers: %v", left)
	}
	if c := w.cmd("restore", "--in-place", filepath.Join(w.dir, "elsewhere"), "--at", first); c.Run() == nil {
		t.Fatal("--in-place outside a mount succeeded")
	}
	// The daemon audits what the client restored through the mount: one
	// restore entry, naming the snapshot, with the path only as a hash.
	var entries []struct {
		Action  string            `json:"action"`
		Outcome string            `json:"outcome"`
		Paths   []string          `json:"path_hashes"`
		Details map[string]string `json:"details"`
	}
	raw := w.kf("audit", "--json")
	if err := json.Unmarshal([]byte(raw), &entries); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if e.Action == "restore" {
			n++
			if e.Details["in_place"] != "true" || e.Details["snapshots"] != first || len(e.Paths) != 1 || e.Outcome == "failed" {
				t.Fatalf("restore entry %+v", e)
			}
		}
	}
	if n != 1 || strings.Contains(raw, "contract") {
		t.Fatalf("%d restore entries, or a name in the log:\n%s", n, raw)
	}
}

func mustReadDir(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// Retention and prune on a mounted repository go through the daemon: old
// snapshots and their data go, the live tree stays whole.
func TestPruneWhileMounted(t *testing.T) {
	w := newWorld(t)
	w.mount("--snapshot-interval", "1h")
	old := bytes.Repeat([]byte("OLD-PERSONAL-DATA "), 200000)
	keep := bytes.Repeat([]byte("kept "), 100000)
	if err := os.WriteFile(filepath.Join(w.mnt, "old.txt"), old, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(w.mnt, "keep.txt"), keep, 0o644); err != nil {
		t.Fatal(err)
	}
	w.kf("sync", w.mnt)
	if err := os.Remove(filepath.Join(w.mnt, "old.txt")); err != nil {
		t.Fatal(err)
	}
	w.kf("sync", w.mnt)
	time.Sleep(2100 * time.Millisecond)
	w.kf("retention", "set", "--keep-within", "2s")
	if out := w.kf("retention", "show"); !strings.Contains(out, "keep-within") {
		t.Fatalf("retention show: %s", out)
	}
	dry := w.kf("prune", "--dry-run", "--json")
	if !strings.Contains(dry, `"dry_run": true`) {
		t.Fatalf("dry run: %s", dry)
	}
	out := w.kf("prune", "--json")
	if !strings.Contains(out, `"snapshots_removed"`) || strings.Contains(out, `"blobs_removed": 0,`) {
		t.Fatalf("prune: %s", out)
	}
	snaps := mustReadDir(t, filepath.Join(w.mnt, ".versions"))
	for _, s := range snaps {
		if _, err := os.Stat(filepath.Join(w.mnt, ".versions", s, "old.txt")); err == nil {
			t.Fatalf("snapshot %s still has the pruned file", s)
		}
	}
	if b, err := os.ReadFile(filepath.Join(w.mnt, "keep.txt")); err != nil || !bytes.Equal(b, keep) {
		t.Fatalf("live file after prune: %v", err)
	}
	w.unmount()
	w.kf("check", "--read-data")
	// The data of the deleted file is gone from the remote: restoring the
	// old version is impossible and a fresh mount sees only keep.txt.
	fresh := &world{t: t, dir: w.dir, remote: w.remote, state: filepath.Join(w.dir, "state-fresh"), mnt: w.mnt}
	fresh.mount()
	if names := mustReadDir(t, fresh.mnt); strings.Join(names, ",") != ".versions,keep.txt" && strings.Join(names, ",") != "keep.txt" {
		t.Fatalf("after prune and recovery: %v", names)
	}
	if b, err := os.ReadFile(filepath.Join(fresh.mnt, "keep.txt")); err != nil || !bytes.Equal(b, keep) {
		t.Fatalf("recovered live file: %v", err)
	}
}

// With --allow-other, other users see the mount, and the kernel checks
// their permissions (default_permissions); without it they see nothing.
func TestAllowOtherPermissions(t *testing.T) {
	requireTool(t, "setpriv")
	if os.Geteuid() != 0 {
		t.Skip("needs root to act as another user") // CI runs as root
	}
	w := newWorld(t)
	// Other users must be able to reach the mount point at all.
	for _, d := range []string{filepath.Dir(w.dir), w.dir, w.mnt} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	w.mount("--allow-other")
	if err := os.WriteFile(filepath.Join(w.mnt, "private"), []byte("root only"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(w.mnt, "public"), []byte("everyone"), 0o644); err != nil {
		t.Fatal(err)
	}
	asNobody := func(args ...string) error {
		return exec.Command("setpriv", append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", "--"}, args...)...).Run()
	}
	if err := asNobody("cat", filepath.Join(w.mnt, "public")); err != nil {
		t.Fatalf("another user cannot read a 0644 file: %v", err)
	}
	if err := asNobody("cat", filepath.Join(w.mnt, "private")); err == nil {
		t.Fatal("another user read a 0600 file")
	}
	if err := asNobody("touch", filepath.Join(w.mnt, "new")); err == nil {
		t.Fatal("another user created a file in a 0755 root-owned directory")
	}
	// The mount drops setuid/setgid on writes itself (FUSE_HANDLE_KILLPRIV_V2):
	// a write by another user drops them, one by root keeps them, and a
	// chown drops them whoever does it.
	suid := filepath.Join(w.mnt, "suid")
	modeOf := func() os.FileMode {
		t.Helper()
		fi, err := os.Stat(suid)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Mode()
	}
	if err := os.WriteFile(suid, []byte("x"), 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(suid, 0o777|os.ModeSetuid|os.ModeSetgid); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(suid, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("root"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if m := modeOf(); m&(os.ModeSetuid|os.ModeSetgid) != os.ModeSetuid|os.ModeSetgid {
		t.Fatalf("a write by root dropped setuid/setgid: %v", m)
	}
	if err := asNobody("sh", "-c", "echo nobody >> "+suid); err != nil {
		t.Fatalf("another user cannot append to a 0777 file: %v", err)
	}
	if m := modeOf(); m&(os.ModeSetuid|os.ModeSetgid) != 0 || m.Perm() != 0o777 {
		t.Fatalf("after another user's write: %v, want -rwxrwxrwx", m)
	}
	if b, err := os.ReadFile(suid); err != nil || string(b) != "xrootnobody\n" {
		t.Fatalf("content after both writes: %q, %v", b, err)
	}
	if err := os.Chmod(suid, 0o755|os.ModeSetuid); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(suid, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if m := modeOf(); m != 0o755 {
		t.Fatalf("after chown: %v, want -rwxr-xr-x", m)
	}
	w.unmount()
	w.mount()
	if err := asNobody("ls", w.mnt); err == nil {
		t.Fatal("without --allow-other another user could list the mount")
	}
}

// restore of a mounted repository first has the mount sync, so what was
// closed before the command is included (DESIGN, Versions); and a PATH
// inside the mount names that file in the mount's repository (DESIGN,
// CLI).
func TestRestoreOfAMountedRepositorySyncsFirst(t *testing.T) {
	w := newWorld(t)
	w.mount("--snapshot-interval", "1h")
	f := filepath.Join(w.mnt, "docs", "new.txt")
	if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f, []byte("closed before restore\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	to := filepath.Join(w.dir, "restored")
	w.kf("restore", "/docs/new.txt", "--to", to)
	if b, err := os.ReadFile(filepath.Join(to, "new.txt")); err != nil || string(b) != "closed before restore\n" {
		t.Fatalf("restore by repository path: %q %v", b, err)
	}
	if err := os.WriteFile(f, []byte("closed again\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	to2 := filepath.Join(w.dir, "restored2")
	w.kf("restore", f, "--to", to2)
	if b, err := os.ReadFile(filepath.Join(to2, "new.txt")); err != nil || string(b) != "closed again\n" {
		t.Fatalf("restore by a path in the mount: %q %v", b, err)
	}
}

// restore --in-place --at an RFC 3339 time takes the newest snapshot at or
// before that instant, as restore does, not the snapshot its second names:
// one taken later in that second holds a version newer than asked for.
func TestRestoreInPlaceAtAnInstant(t *testing.T) {
	w := newWorld(t)
	w.mount("--snapshot-interval", "1h")
	f := filepath.Join(w.mnt, "f.txt")
	for attempt := 0; ; attempt++ {
		if err := os.WriteFile(f, []byte("old\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		w.kf("sync", w.mnt)
		// An instant early in a second, then a snapshot later in it.
		time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second)))
		at := time.Now().UTC()
		time.Sleep(200 * time.Millisecond)
		if err := os.WriteFile(f, []byte("new\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		var s struct{ Snapshot string }
		if err := json.Unmarshal([]byte(w.kf("sync", "--json", w.mnt)), &s); err != nil {
			t.Fatal(err)
		}
		if s.Snapshot != at.Format("2006-01-02T150405Z") {
			if attempt < 3 {
				continue // the sync ran into the next second: try again
			}
			t.Fatalf("the sync never finished within the second of %s in 4 tries", at)
		}
		if err := os.WriteFile(f, []byte("newer\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		w.kf("restore", "--in-place", f, "--at", at.Format(time.RFC3339Nano))
		if b, _ := os.ReadFile(f); string(b) != "old\n" {
			t.Fatalf("restore --in-place --at %s (before snapshot %s): %q, want the version before", at.Format(time.RFC3339Nano), s.Snapshot, b)
		}
		return
	}
}

// TestSyncReturnsWithVersionsLatestSwitched: once `keepfs sync` returns,
// .versions/latest is the snapshot it stored, even where the kernel held
// the name for the one before (its entry lives 10 s) and the daemon's
// invalidation of it is slow (held back 1 s here): sync waits for it.
func TestSyncReturnsWithVersionsLatestSwitched(t *testing.T) {
	w := newWorld(t)
	w.env = append(w.env, "KEEPFS_TEST_VERSIONS_DELAY=1s")
	w.mount("--snapshot-interval", "1h")
	latest := filepath.Join(w.mnt, ".versions", "latest")
	for i := range 3 {
		name := fmt.Sprintf("f%d", i)
		if err := os.WriteFile(filepath.Join(w.mnt, name), []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
		w.kf("sync", w.mnt)
		if b, err := os.ReadFile(filepath.Join(latest, name)); err != nil || string(b) != name {
			t.Fatalf("sync %d returned, but .versions/latest/%s: %q %v", i, name, b, err)
		}
	}
}

// TestUnmountServesFilesStillOpen: unmount detaches a busy mount lazily,
// and the kernel sends what a still-open file writes, and its close, only
// later. The daemon must serve them a while rather than close the cache
// under them: a writer that closes soon after loses nothing, and its
// close succeeds. (Found by the admin soak: the unfsynced tail was lost
// and close failed with ENOTCONN.)
func TestUnmountServesFilesStillOpen(t *testing.T) {
	w := newWorld(t)
	w.mount()
	p := filepath.Join(w.mnt, "open.bin")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 150_000)
	rand.New(rand.NewSource(5)).Read(want)
	if _, err := f.Write(want[:100_000]); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(want[100_000:]); err != nil {
		t.Fatal(err)
	}
	un := exec.Command(keepfsBin, "unmount", w.mnt)
	var out bytes.Buffer
	un.Stdout, un.Stderr = &out, &out
	if err := un.Start(); err != nil {
		t.Fatal(err)
	}
	for i := 0; mounted(w.mnt); i++ {
		if i == 300 {
			t.Fatal("not detached within 30 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Long enough for the daemon to have closed its cache had it not
	// waited; still writing.
	time.Sleep(3 * time.Second)
	more := make([]byte, 20_000)
	rand.New(rand.NewSource(6)).Read(more)
	if _, err := f.Write(more); err != nil {
		t.Fatalf("write after the lazy unmount: %v", err)
	}
	want = append(want, more...)
	if err := f.Close(); err != nil {
		t.Fatalf("close after the lazy unmount: %v", err)
	}
	if err := un.Wait(); err != nil {
		t.Fatalf("unmount: %v\n%s", err, out.String())
	}
	w.mount()
	if got, err := os.ReadFile(p); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("after the remount: %d bytes (want %d), %v", len(got), len(want), err)
	}
}
