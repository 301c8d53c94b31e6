package daemon

import (
	"runtime/debug"
	"testing"
)

// The daemon's peak RSS depends on how much garbage the collector lets
// pile up over the live heap (issue 18): unless the user says otherwise,
// it collects at 10 % growth under a 208 MiB limit.
func TestLimitMemory(t *testing.T) {
	oldGC := debug.SetGCPercent(100)
	oldLimit := debug.SetMemoryLimit(-1)
	t.Cleanup(func() {
		debug.SetGCPercent(oldGC)
		debug.SetMemoryLimit(oldLimit)
	})

	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "")
	limitMemory()
	if got := debug.SetGCPercent(100); got != gcPercent || gcPercent > 10 {
		t.Errorf("GOGC unset: the daemon collects at %d %% growth, want %d (at most 10)", got, gcPercent)
	}
	if got := debug.SetMemoryLimit(-1); got != memoryLimit {
		t.Errorf("GOMEMLIMIT unset: memory limit %d, want %d", got, memoryLimit)
	}

	// What the user set wins: the runtime read it at start, limitMemory
	// must not overwrite it.
	debug.SetGCPercent(50)
	debug.SetMemoryLimit(1 << 30)
	t.Setenv("GOGC", "50")
	t.Setenv("GOMEMLIMIT", "1GiB")
	limitMemory()
	if got := debug.SetGCPercent(100); got != 50 {
		t.Errorf("GOGC=50: the daemon changed it to %d", got)
	}
	if got := debug.SetMemoryLimit(-1); got != 1<<30 {
		t.Errorf("GOMEMLIMIT=1GiB: the daemon changed it to %d", got)
	}
}
