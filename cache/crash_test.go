package cache

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo/tree"
)

// The crash child: KEEPFS_CRASH_CHILD=<remote dir>:<state dir> makes the
// test binary write files through a cache forever, printing the index of
// each file once its close returned, until the parent kills it.
func TestMain(m *testing.M) {
	if spec := os.Getenv("KEEPFS_CRASH_CHILD"); spec != "" {
		crashChild(spec)
		return
	}
	if spec := os.Getenv("KEEPFS_INTENT_CHILD"); spec != "" {
		intentChild(spec)
		return
	}
	os.Exit(m.Run())
}

func crashContent(i int) []byte {
	return randBytes(uint64(i)+100, 1000+i*37_111%(3<<20))
}

// openChildCache opens the cache a child process works through; spec is
// "<remote dir>:<state dir>".
func openChildCache(spec string) *Cache {
	dirs := strings.SplitN(spec, ":", 2)
	be, err := remote.NewFile(dirs[0])
	if err != nil {
		panic(err)
	}
	c, err := Open(context.Background(), reopenRepo(&testing.T{}, be), Options{StateDir: dirs[1], SnapshotInterval: time.Hour, Logger: quietLogger()})
	if err != nil {
		panic(err)
	}
	return c
}

func crashChild(spec string) {
	t := &testing.T{}
	c := openChildCache(spec)
	for i := 0; ; i++ {
		writeFile(t, c, c.Root(), fmt.Sprintf("f%d", i), crashContent(i))
		fmt.Printf("closed %d\n", i)
	}
}

// startChild runs this test binary as a child in the mode env selects (see
// TestMain) and returns it with a scanner of its output.
func startChild(t *testing.T, env ...string) (*exec.Cmd, *bufio.Scanner) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, bufio.NewScanner(out)
}

// TestKill9 kills a process that writes through the cache at an arbitrary
// moment, restarts on the same state directory and checks that every file
// whose close returned is intact, then that the queue drains into a
// snapshot holding them all (DESIGN invariant 2).
func TestKill9(t *testing.T) {
	rdir, sdir := t.TempDir(), t.TempDir()
	be, err := remote.NewFile(rdir)
	if err != nil {
		t.Fatal(err)
	}
	newRepo(t, be)
	for round := 0; round < 3; round++ {
		cmd, sc := startChild(t, "KEEPFS_CRASH_CHILD="+rdir+":"+sdir)
		last := -1
		for sc.Scan() && last < 8+round*5 {
			if n, err := strconv.Atoi(strings.TrimPrefix(sc.Text(), "closed ")); err == nil {
				last = n
			}
		}
		cmd.Process.Kill()
		cmd.Wait()
		if last < 0 {
			t.Fatal("child closed no file")
		}
		c := openCache(t, reopenRepo(t, be), sdir)
		for i := 0; i <= last; i++ {
			a, err := c.Lookup(context.Background(), c.Root(), fmt.Sprintf("f%d", i))
			if err != nil {
				t.Fatalf("round %d: f%d (closed before the kill): %v", round, i, err)
			}
			if a.Type != tree.File || !bytes.Equal(readFile(t, c, a.Ino), crashContent(i)) {
				t.Fatalf("round %d: f%d differs after kill -9", round, i)
			}
		}
		if round == 2 {
			sn, err := c.Sync(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if st := c.Status(); st.QueueBlobs != 0 {
				t.Fatalf("queue not drained: %+v", st)
			}
			for i := 0; i <= last; i++ {
				if _, err := c.Repository().Lookup(context.Background(), sn.Tree, fmt.Sprintf("/f%d", i)); err != nil {
					t.Fatalf("f%d not in the snapshot: %v", i, err)
				}
			}
		}
		if err := c.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}
