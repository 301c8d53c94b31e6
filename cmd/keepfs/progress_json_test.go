package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// parseEvents checks every stderr line is a progress event.
func parseEvents(t *testing.T, stderr string) []progressEvent {
	t.Helper()
	var evs []progressEvent
	for _, l := range strings.Split(strings.TrimSpace(stderr), "\n") {
		var e progressEvent
		if err := json.Unmarshal([]byte(l), &e); err != nil || e.What == "" || e.Unit == "" {
			t.Fatalf("not a progress event: %q (%v)\nstderr:\n%s", l, err, stderr)
		}
		evs = append(evs, e)
	}
	return evs
}

// --progress-json reports import, restore and check as JSON lines on
// stderr; without it, a pipe gets no progress at all.
func TestProgressJSON(t *testing.T) {
	t.Setenv("KEEPFS_PASSWORD", "secret words")
	w := t.TempDir()
	src := filepath.Join(w, "src")
	writeFile(t, filepath.Join(src, "a.txt"), strings.Repeat("alpha\n", 50000))
	writeFile(t, filepath.Join(src, "b.txt"), "beta\n")
	g := []string{"--repo", "file://" + filepath.Join(w, "remote"), "--state", filepath.Join(w, "state")}
	mustKF(t, append(g, "init")...)

	// Piped (a buffer is no terminal): no bar, no extra output.
	code, _, errs := kf(t, append(g, "import", src)...)
	if code != 0 || errs != "" {
		t.Fatalf("import without a terminal: exit %d, stderr %q", code, errs)
	}
	code, _, errs = kf(t, append(g, "restore", "/", "--to", filepath.Join(w, "out0"))...)
	if code != 0 || errs != "" {
		t.Fatalf("restore without a terminal: exit %d, stderr %q", code, errs)
	}

	writeFile(t, filepath.Join(src, "c.txt"), strings.Repeat("gamma\n", 1000))
	code, _, errs = kf(t, append(g, "--progress-json", "import", src)...)
	if code != 0 {
		t.Fatalf("import --progress-json: %d %s", code, errs)
	}
	evs := parseEvents(t, errs)
	last := evs[len(evs)-1]
	if last.What != "import" || !last.Final || last.Files != 3 || last.Done != 50000*6+5+6000 || last.Unit != "bytes" {
		t.Fatalf("import's last event: %+v", last)
	}

	code, _, errs = kf(t, append(g, "--progress-json", "restore", "/", "--to", filepath.Join(w, "out1"))...)
	if code != 0 {
		t.Fatalf("restore --progress-json: %d %s", code, errs)
	}
	evs = parseEvents(t, errs)
	last = evs[len(evs)-1]
	if !last.Final || last.Total <= 0 || last.Done != last.Total {
		t.Fatalf("restore's last event: %+v (all: %+v)", last, evs)
	}
	if evs[0].Done != 0 || evs[0].Total != last.Total {
		t.Fatalf("restore's first event: %+v", evs[0])
	}

	code, _, errs = kf(t, append(g, "--progress-json", "check", "--read-data")...)
	if code != 0 {
		t.Fatalf("check --progress-json: %d %s", code, errs)
	}
	evs = parseEvents(t, errs)
	if last := evs[len(evs)-1]; last.What != "read-data" || !last.Final || last.Done != last.Total {
		t.Fatalf("check's last event: %+v", last)
	}
}
