package fs_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/keepfs/keepfs/fs/fstest"
)

// TestSeekDataSeesPagesNotWrittenBack: under the writeback cache the
// kernel holds written pages of a file that is still open and does not
// write them back before an LSEEK. SEEK_DATA and SEEK_HOLE must still count
// them as data: cp asks for them (the mount reports no blocks for bytes it
// has not seen), and copied zeros from a log another process was writing.
func TestSeekDataSeesPagesNotWrittenBack(t *testing.T) {
	m := fstest.New(t, fstest.Config{})
	dense := filepath.Join(m.Dir, "log")
	sparse := filepath.Join(m.Dir, "sparse")
	line := bytes.Repeat([]byte("log line\n"), 5000)
	w1, err := os.Create(dense)
	if err != nil {
		t.Fatal(err)
	}
	defer w1.Close()
	if _, err := w1.Write(line); err != nil {
		t.Fatal(err)
	}
	w2, err := os.Create(sparse)
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	const at = 10 << 20
	if _, err := w2.WriteAt(line, at); err != nil {
		t.Fatal(err)
	}
	// A reader with its own descriptor, while the writers keep theirs open.
	check := func(p string, off int64, whence int, want int64) {
		t.Helper()
		r, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		got, err := unix.Seek(int(r.Fd()), off, whence)
		if err != nil || got != want {
			t.Errorf("%s: lseek(%d, whence %d) = %d, %v; want %d", filepath.Base(p), off, whence, got, err, want)
		}
	}
	n := int64(len(line))
	check(dense, 0, unix.SEEK_DATA, 0)
	check(dense, 0, unix.SEEK_HOLE, n)
	check(sparse, 0, unix.SEEK_DATA, at)
	check(sparse, at, unix.SEEK_HOLE, at+n)
	// and the reader's bytes
	got, err := os.ReadFile(dense)
	if err != nil || !bytes.Equal(got, line) {
		t.Errorf("read of the open file: %v, equal %v", err, bytes.Equal(got, line))
	}
}
