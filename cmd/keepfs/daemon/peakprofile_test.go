package daemon

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// KEEPFS_MEMPROFILE_PEAK is how a peak's heap is seen (issue 18): the
// first tick past 8 MiB of RSS must leave a profile named by its MiB.
func TestPeakHeapProfileWritten(t *testing.T) {
	if residentKiB() <= 0 {
		t.Fatal("VmRSS not read from /proc/self/status")
	}
	base := filepath.Join(t.TempDir(), "peak.pprof")
	t.Setenv("KEEPFS_MEMPROFILE_PEAK", base)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { watchPeakHeap(slog.New(slog.NewTextHandler(io.Discard, nil)), stop); close(done) }()
	defer func() { close(stop); <-done }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		m, _ := filepath.Glob(base + ".*")
		if len(m) > 0 {
			if fi, err := os.Stat(m[0]); err != nil || fi.Size() == 0 {
				t.Fatalf("empty or unreadable profile %s: %v", m[0], err)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no peak heap profile after 10 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
