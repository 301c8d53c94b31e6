package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// mountFSType is the file system type keepfs mounts show in /proc/mounts.
const mountFSType = "fuse.keepfs"

// keepfsMount is a live keepfs mount found in the mount table.
type keepfsMount struct {
	Point  string // mount point
	Source string // the daemon's control socket path (the mount's fsname)
}

// findMount returns the keepfs mount containing path, if any. It does not
// touch the path itself, so it works even when the daemon hangs.
func findMount(path string) (keepfsMount, bool, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return keepfsMount{}, false, err
	}
	all, err := listMounts()
	if err != nil {
		return keepfsMount{}, false, err
	}
	var best keepfsMount
	found := false
	for _, m := range all {
		if within(abs, m.Point) && (!found || len(m.Point) > len(best.Point)) {
			best, found = m, true
		}
	}
	return best, found, nil
}

// listMounts returns every keepfs mount in this mount namespace.
func listMounts() ([]keepfsMount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mount table: %w", err)
	}
	defer f.Close()
	var out []keepfsMount
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent maj:min root mountpoint opts [optional...] - fstype source superopts
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, fl := range fields {
			if fl == "-" {
				sep = i
				break
			}
		}
		if sep < 5 || len(fields) < sep+3 {
			continue
		}
		if fields[sep+1] != mountFSType {
			continue
		}
		out = append(out, keepfsMount{Point: unescapeMount(fields[4]), Source: unescapeMount(fields[sep+2])})
	}
	return out, sc.Err()
}

// within reports whether p is root or below it.
func within(p, root string) bool {
	if root == "/" {
		return true
	}
	return p == root || strings.HasPrefix(p, root+"/")
}

// repoPath converts a path below a mount point into a repository path.
func (m keepfsMount) repoPath(abs string) string {
	rel := strings.TrimPrefix(abs, m.Point)
	if rel == "" {
		return "/"
	}
	return rel
}

// unescapeMount undoes the octal escapes (\040 for space) of mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &v); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
