package main

import (
	"strings"
	"testing"
	"time"

	"github.com/keepfs/keepfs/cache"
	"github.com/keepfs/keepfs/cmd/keepfs/daemon"
)

// A forced unmount whose final snapshot failed at once must not blame a
// timeout it never waited for; one that waited it out says so.
func TestForcedUnmountMessage(t *testing.T) {
	st := &cache.Status{QueueBytes: 3 << 20}
	failed := forcedNotUploaded(2*time.Minute, &daemon.Response{OK: true, Error: "read-only: the repository lock lapsed", Status: st})
	if strings.Contains(failed, "within") || !strings.Contains(failed, "lock lapsed") || !strings.Contains(failed, "3.0 MiB") ||
		!strings.Contains(failed, "stay queued") || strings.Contains(failed, "\n") {
		t.Errorf("immediate failure: %q", failed)
	}
	waited := forcedNotUploaded(3*time.Second, &daemon.Response{OK: true, Error: "sync did not finish within 3s", TimedOut: true, Status: st})
	if !strings.Contains(waited, "within 3s") || !strings.Contains(waited, "stay queued") {
		t.Errorf("timed out: %q", waited)
	}
}
