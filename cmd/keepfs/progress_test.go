package main

import (
	"bytes"
	"strings"
	"testing"
)

// The parent of a mount daemon shows the daemon's start-up progress and
// returns its verdict; off a terminal it says once what is going on.
func TestWaitReadyShowsProgress(t *testing.T) {
	var out bytes.Buffer
	sp := newStartupProgress(&out)
	var got []int64
	pipe := "progress 0 3145728 checking local data after an unclean shutdown\n" +
		"progress 1048576 3145728 checking local data after an unclean shutdown\n" +
		"progress x 1 garbage\nprogress 5\n" +
		"progress 3145728 3145728 checking local data after an unclean shutdown\n" +
		"ok\nnever read\n"
	line := waitReady(strings.NewReader(pipe), func(what string, done, total int64) {
		got = append(got, done)
		sp.report(what, done, total)
	})
	sp.finish()
	if line != "ok" {
		t.Fatalf("verdict %q, want ok", line)
	}
	if len(got) != 3 || got[0] != 0 || got[2] != 3<<20 {
		t.Fatalf("progress reports %v", got)
	}
	if want := "checking local data after an unclean shutdown (3.0 MiB)...\n"; out.String() != want {
		t.Fatalf("shown %q, want %q", out.String(), want)
	}
	if line := waitReady(strings.NewReader("progress 1 2 x\n"), func(string, int64, int64) {}); line != "" {
		t.Fatalf("daemon died before its verdict: %q, want empty", line)
	}
	if line := waitReady(strings.NewReader("error: refusing a second mount\n"), nil); line != "error: refusing a second mount" {
		t.Fatalf("error verdict %q", line)
	}
}
