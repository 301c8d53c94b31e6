package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/keepfs/keepfs/cache"
)

// The parent of a mount daemon shows the daemon's start-up progress and
// returns its verdict; off a terminal it says once what is going on.
func TestWaitReadyShowsProgress(t *testing.T) {
	var out bytes.Buffer
	sp := newStartupProgress(&out)
	var got []int64
	pipe := "progress 0 3145728 bytes checking local data after an unclean shutdown\n" +
		"progress 1048576 3145728 bytes checking local data after an unclean shutdown\n" +
		"progress x 1 bytes garbage\nprogress 5\n" +
		"progress 3145728 3145728 bytes checking local data after an unclean shutdown\n" +
		"progress 0 1025 directories rebuilding the local state from snapshot 2026-11-29T101500Z\n" +
		"progress 1025 1025 directories rebuilding the local state from snapshot 2026-11-29T101500Z\n" +
		"ok\nnever read\n"
	line := waitReady(strings.NewReader(pipe), func(p cache.Progress) {
		got = append(got, p.Done)
		sp.report(p)
	})
	sp.finish()
	if line != "ok" {
		t.Fatalf("verdict %q, want ok", line)
	}
	if len(got) != 5 || got[0] != 0 || got[2] != 3<<20 || got[4] != 1025 {
		t.Fatalf("progress reports %v", got)
	}
	if want := "checking local data after an unclean shutdown (3.0 MiB)...\n" +
		"rebuilding the local state from snapshot 2026-11-29T101500Z (1025 directories)...\n"; out.String() != want {
		t.Fatalf("shown %q, want %q", out.String(), want)
	}
	if line := waitReady(strings.NewReader("progress 1 2 bytes x\n"), func(cache.Progress) {}); line != "" {
		t.Fatalf("daemon died before its verdict: %q, want empty", line)
	}
	if line := waitReady(strings.NewReader("error: refusing a second mount\n"), nil); line != "error: refusing a second mount" {
		t.Fatalf("error verdict %q", line)
	}
}
