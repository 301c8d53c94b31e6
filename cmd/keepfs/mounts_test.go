package main

import (
	"os"
	"testing"
)

func TestMountHelpers(t *testing.T) {
	if got := unescapeMount(`/mnt/with\040space\011tab`); got != "/mnt/with space\ttab" {
		t.Errorf("unescape: %q", got)
	}
	if got := unescapeMount(`/plain`); got != "/plain" {
		t.Errorf("unescape plain: %q", got)
	}
	for _, tc := range []struct {
		p, root string
		want    bool
	}{{"/a/b", "/a", true}, {"/a", "/a", true}, {"/ab", "/a", false}, {"/x", "/", true}} {
		if within(tc.p, tc.root) != tc.want {
			t.Errorf("within(%q, %q) != %v", tc.p, tc.root, tc.want)
		}
	}
	m := keepfsMount{Point: "/mnt/k"}
	if m.repoPath("/mnt/k") != "/" || m.repoPath("/mnt/k/docs/a") != "/docs/a" {
		t.Error("repoPath")
	}
	// A temp dir is not inside any keepfs mount.
	if _, ok, err := findMount(os.TempDir()); err != nil || ok {
		t.Errorf("findMount(%s) = %v, %v", os.TempDir(), ok, err)
	}
	if mountFSType != "fuse.keepfs" {
		t.Error("fstype")
	}
}
