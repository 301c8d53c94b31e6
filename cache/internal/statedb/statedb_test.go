package statedb

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// The block caches are small on purpose: Badger's advice to grow them
// must not reach the daemon's log as a warning every minute.
func TestBadgerCacheAdviceIsNotAWarning(t *testing.T) {
	var buf bytes.Buffer
	b := Logger{slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	b.Warningf("%s might be too small. Metrics: %s\n", "Block cache", "hit: 1")
	b.Warningf("Cache life expectancy (in seconds): %+v\n", 1)
	if buf.Len() != 0 {
		t.Errorf("cache advice logged as a warning: %s", buf.String())
	}
	b.Warningf("Block table corrupted")
	if !strings.Contains(buf.String(), "corrupted") {
		t.Error("other Badger warnings must still be logged")
	}
}
