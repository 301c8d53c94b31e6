package main

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestMain lets the test binary act as keepfs in a subprocess, so the
// crash test can kill -9 a real process without building one.
func TestMain(m *testing.M) {
	if os.Getenv("KEEPFS_TEST_AS_MAIN") == "1" {
		main()
	}
	if os.Getenv("KEEPFS_TEST_DUMPABLE") == "1" {
		// Run one command in this process, then say whether it left the
		// process dumpable (TestMountProcessNotDumpable).
		run(os.Args, os.Stdin, io.Discard, io.Discard)
		d, err := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0)
		fmt.Printf("dumpable=%d err=%v\n", d, err)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func keepfsCmd(args ...string) *exec.Cmd {
	c := exec.Command(os.Args[0], args...)
	c.Env = append(os.Environ(), "KEEPFS_TEST_AS_MAIN=1")
	return c
}

// kill -9 of an import at many moments leaves a repository that passes
// check; the next import completes, reuses what was uploaded, and the data
// restores intact.
func TestImportKill9(t *testing.T) {
	t.Setenv("KEEPFS_PASSWORD", "crash words")
	w := t.TempDir()
	src := filepath.Join(w, "src")
	for i := 0; i < 6; i++ {
		b := make([]byte, 6<<20)
		_, _ = rand.Read(b)
		writeFile(t, filepath.Join(src, fmt.Sprintf("d%d", i%2), fmt.Sprintf("f%d.bin", i)), string(b))
	}
	for i := 0; i < 200; i++ {
		writeFile(t, filepath.Join(src, "small", fmt.Sprintf("n%03d.txt", i)), strings.Repeat(fmt.Sprintf("note %d\n", i), 50))
	}
	remoteDir := filepath.Join(w, "remote")
	g := []string{"--repo", "file://" + remoteDir, "--state", filepath.Join(w, "state")}
	mustKF(t, append(g, "init")...)

	for i, delay := range []time.Duration{50 * time.Millisecond, 150 * time.Millisecond, 300 * time.Millisecond, 600 * time.Millisecond} {
		c := keepfsCmd(append(g, "import", src)...)
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(delay)
		_ = c.Process.Signal(syscall.SIGKILL)
		_ = c.Wait()
		var out bytes.Buffer
		chk := keepfsCmd(append(g, "check", "--read-data")...)
		chk.Stdout, chk.Stderr = &out, &out
		if err := chk.Run(); err != nil {
			t.Fatalf("round %d (kill after %v): check failed: %v\n%s", i, delay, err, out.String())
		}
	}
	before := dirSize(t, remoteDir)
	out := mustKF(t, append(g, "import", src, "--json")...)
	if !strings.Contains(out, `"files": 206`) {
		t.Fatalf("import after kills: %s", out)
	}
	after := dirSize(t, remoteDir)
	// Packs the killed runs uploaded are reused, so the final import adds
	// at most what they had not uploaded yet (36 MiB of random data total).
	if before > 0 && after-before > 38<<20 {
		t.Fatalf("final import added %d bytes on top of %d", after-before, before)
	}
	mustKF(t, append(g, "check", "--read-data")...)
	dst := filepath.Join(w, "out")
	mustKF(t, append(g, "restore", "/", "--to", dst)...)
	diff := exec.Command("diff", "-r", src, dst)
	if b, err := diff.CombinedOutput(); err != nil {
		t.Fatalf("restore differs: %v\n%s", err, b)
	}
}

func dirSize(t *testing.T, dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// No file name, directory name or content reaches the remote in the clear.
func TestRemoteHoldsNoPlaintext(t *testing.T) {
	t.Setenv("KEEPFS_PASSWORD", "plain words")
	w := t.TempDir()
	src := filepath.Join(w, "src")
	writeFile(t, filepath.Join(src, "Maria-Rossi-medical", "diagnosis-MARKERNAME.txt"), strings.Repeat("MARKERCONTENT blood type 0+\n", 100))
	writeFile(t, filepath.Join(src, "tiny.txt"), "MARKERTINY")
	remoteDir := filepath.Join(w, "remote")
	g := []string{"--repo", "file://" + remoteDir, "--state", filepath.Join(w, "state")}
	mustKF(t, append(g, "init")...)
	mustKF(t, append(g, "import", src)...)
	n := 0
	err := filepath.WalkDir(remoteDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		n++
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, s := range []string{"MARKERNAME", "MARKERCONTENT", "MARKERTINY", "Maria-Rossi", "diagnosis", "tiny.txt", "crash words"} {
			if bytes.Contains(b, []byte(s)) || strings.Contains(p, s) {
				t.Errorf("%s holds %q in the clear", p, s)
			}
		}
		return nil
	})
	if err != nil || n < 4 {
		t.Fatalf("walked %d objects: %v", n, err)
	}
}

// The mount command makes its process non-dumpable before it reads the
// passphrase (the daemon runs the same command with --foreground); other
// commands leave it dumpable, which shows the probe itself works.
func TestMountProcessNotDumpable(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"mount", "--foreground", filepath.Join(dir, "mnt")}, "dumpable=0 err=<nil>"},
		{[]string{"mount", filepath.Join(dir, "mnt")}, "dumpable=0 err=<nil>"},
		{[]string{"snapshots"}, "dumpable=1 err=<nil>"},
	} {
		c := exec.Command(os.Args[0], tc.args...)
		c.Env = append(os.Environ(), "KEEPFS_TEST_DUMPABLE=1", "KEEPFS_REPO=", "KEEPFS_PASSWORD=x")
		out, err := c.Output()
		if got := strings.TrimSpace(string(out)); err != nil || got != tc.want {
			t.Errorf("%v: %q, %v; want %q", tc.args, got, err, tc.want)
		}
	}
}
