package integration

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// Excluded bytes never leave the machine (DESIGN invariant 7), measured by
// the remote's size with incompressible data: a chunk is uploaded only
// once a snapshot walk has included a file naming it.

// remoteSize is the total size of the files of a file:// remote.
func remoteSize(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func randomData(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t *testing.T, p string, data []byte) {
	t.Helper()
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// grewAtMost fails the test if the remote grew by more than limit since
// before, and returns the growth.
func grewAtMost(t *testing.T, w *world, before, limit int64, what string) int64 {
	t.Helper()
	grew := remoteSize(t, w.remote) - before
	if grew > limit {
		t.Fatalf("%s: the remote grew %d bytes (at most %d expected)", what, grew, limit)
	}
	return grew
}

// A file written, then a .gdprignore naming it: after sync, nothing of it
// is in the remote.
func TestExcludedAfterWriteNeverUploaded(t *testing.T) {
	w := newWorld(t)
	w.mount("--snapshot-interval", "2s")
	w.kf("sync", w.mnt)
	dir := filepath.Join(w.mnt, "scans")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	before := remoteSize(t, w.remote)
	data := randomData(t, 16<<20)
	writeFile(t, filepath.Join(dir, "passport-photo.raw"), data)
	writeFile(t, filepath.Join(dir, ".gdprignore"), []byte("passport-photo.raw\n"))
	w.kf("sync", w.mnt)
	grewAtMost(t, w, before, 4<<20, "16 MiB excluded right after its write")
	got, err := os.ReadFile(filepath.Join(dir, "passport-photo.raw"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the excluded file no longer reads back in the mount: %v", err)
	}
}

// cp -a of a directory holding a file and a .gdprignore excluding it, in
// both orders: the creation order and the names vary, so the .gdprignore
// is copied before the file in some cases and after it in others, whatever
// order cp reads the directory in.
func TestExcludedByCopyNeverUploaded(t *testing.T) {
	requireTool(t, "cp")
	w := newWorld(t)
	w.mount("--snapshot-interval", "2s")
	w.kf("sync", w.mnt)
	for _, ignoreFirst := range []bool{false, true} {
		for _, name := range []string{"+medical.raw", "medical.raw"} {
			t.Run(fmt.Sprintf("ignore-created-first=%v/%s", ignoreFirst, name), func(t *testing.T) {
				src := filepath.Join(t.TempDir(), "private")
				if err := os.Mkdir(src, 0o755); err != nil {
					t.Fatal(err)
				}
				ignore := func() { writeFile(t, filepath.Join(src, ".gdprignore"), []byte("*\n")) }
				if ignoreFirst {
					ignore()
				}
				writeFile(t, filepath.Join(src, name), randomData(t, 16<<20))
				if !ignoreFirst {
					ignore()
				}
				f, err := os.Open(src)
				if err != nil {
					t.Fatal(err)
				}
				order, _ := f.Readdirnames(-1)
				f.Close()
				t.Logf("source directory order: %q", order)
				before := remoteSize(t, w.remote)
				dst := filepath.Join(w.mnt, strings.TrimPrefix(fmt.Sprintf("%v-%s", ignoreFirst, name), "+"))
				run(t, "", "cp", "-a", src, dst)
				w.kf("sync", w.mnt)
				grewAtMost(t, w, before, 4<<20, "cp -a of 16 MiB under a .gdprignore of *")
				run(t, "", "cmp", filepath.Join(src, name), filepath.Join(dst, name))
			})
		}
	}
}

// A file already in a snapshot, then excluded and rewritten: the new
// versions stay local, the old one stays in .versions.
func TestIgnoreAddedAfterSnapshot(t *testing.T) {
	w := newWorld(t)
	w.mount("--snapshot-interval", "2s")
	w.kf("sync", w.mnt)
	p := filepath.Join(w.mnt, "scan.raw")
	before := remoteSize(t, w.remote)
	v1 := randomData(t, 16<<20)
	writeFile(t, p, v1)
	w.kf("sync", w.mnt)
	if grew := remoteSize(t, w.remote) - before; grew < 15<<20 {
		t.Fatalf("the remote grew only %d bytes for 16 MiB backed up", grew)
	}
	var snaps []string
	for _, e := range mustReadDir(t, filepath.Join(w.mnt, ".versions")) {
		if e != "latest" {
			snaps = append(snaps, e)
		}
	}
	sort.Strings(snaps)
	if len(snaps) == 0 {
		t.Fatal("no snapshot in .versions")
	}
	old := filepath.Join(w.mnt, ".versions", snaps[len(snaps)-1], "scan.raw")
	writeFile(t, filepath.Join(w.mnt, ".gdprignore"), []byte("*.raw\n"))
	before = remoteSize(t, w.remote)
	writeFile(t, p, randomData(t, 16<<20))
	w.kf("sync", w.mnt)
	grewAtMost(t, w, before, 4<<20, "16 MiB rewritten after its exclusion")
	if got, err := os.ReadFile(old); err != nil || !bytes.Equal(got, v1) {
		t.Fatalf("the version backed up before the exclusion: %v", err)
	}
	if _, err := os.Stat(filepath.Join(w.mnt, ".versions", "latest", "scan.raw")); !os.IsNotExist(err) {
		t.Fatalf("the excluded file in the latest snapshot: %v", err)
	}
}
