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
)

// TestMountDropsDeadChunks: versions of a file rewritten between
// snapshots leave chunks no file names; the running daemon drops them
// (before, only its next start did, so a mount that ran for weeks grew its
// state directory without bound), and the file, never snapshotted, reads
// back, syncs and checks clean.
func TestMountDropsDeadChunks(t *testing.T) {
	a := newAdminWorld(t)
	mount := a.kfCmd("mount")
	mount.Env = append(mount.Env, "KEEPFS_TEST_GC_EVERY=200ms", "KEEPFS_TEST_SWEEP_AT=1048576")
	if out, err := mount.CombinedOutput(); err != nil {
		t.Fatalf("mount: %v\n%s", err, out)
	}
	defer func() {
		if mounted(a.mnt) {
			a.kf(t, "unmount")
		}
	}()
	f := filepath.Join(a.mnt, "rewritten.bin")
	var last []byte
	for range 12 {
		last = make([]byte, 1<<20)
		rand.Read(last)
		if err := os.WriteFile(f, last, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		used := chunkBytes(t, a.state)
		if used < 4<<20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the state directory still holds %d bytes of chunks 30 s after 11 of 12 MiB written died", used)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got, err := os.ReadFile(f); err != nil || !bytes.Equal(got, last) {
		t.Fatalf("the live version after the sweep: %v (equal %v)", err, bytes.Equal(got, last))
	}
	a.kf(t, "sync")
	a.kf(t, "unmount")
	a.waitDaemonGone(t)
	if out := a.kf(t, "check", "--read-data"); strings.Contains(out, "problem") {
		t.Fatalf("check: %s", out)
	}
}

// chunkBytes is the disk space the chunk files and segments of a state
// directory take (punched records take none).
func chunkBytes(t *testing.T, state string) int64 {
	t.Helper()
	var n int64
	for _, d := range []string{"chunks", "segments"} {
		_ = filepath.Walk(filepath.Join(state, d), func(_ string, fi os.FileInfo, err error) error {
			if err == nil && !fi.IsDir() {
				n += fi.Sys().(*syscall.Stat_t).Blocks * 512
			}
			return nil
		})
	}
	return n
}
