package versions_test

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"
)

// The same snapshot reached under two names (its own and latest, or a
// prefix) can be walked side by side.
func TestVersionsSameSnapshotTwoNames(t *testing.T) {
	e := setup(t)
	for d := range 5 {
		for f := range 20 {
			e.write(fmt.Sprintf("d%d/sub/f%d", d, f), []byte(fmt.Sprint(d, f)), 0o644)
		}
	}
	sn := e.snapshot(0)
	for range 3 {
		for _, pair := range [][2]string{{"latest", sn.Name()}, {sn.Name(), "2026-11-28"}, {"2026-11-28T13", "latest"}} {
			if b, err := exec.Command("diff", "-r", filepath.Join(e.mnt, pair[0]), filepath.Join(e.mnt, pair[1])).CombinedOutput(); err != nil {
				t.Fatalf("diff -r %s %s: %v\n%s", pair[0], pair[1], err, b)
			}
		}
	}
}
