package integration

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/keepfs/keepfs"

// layer ranks the top-level packages: a package may import its own layer
// and the layers below it, never above (cmd → fs → cache → repo → remote;
// policy is a leaf that imports nothing of ours).
var layer = map[string]int{
	"policy": 0,
	"remote": 1,
	"repo":   2,
	"cache":  3,
	"fs":     4,
	"cmd":    5,
	// integration tests drive everything.
	"integration": 6,
}

func top(pkg string) string {
	rel := strings.TrimPrefix(strings.TrimPrefix(pkg, module), "/")
	return strings.SplitN(rel, "/", 2)[0]
}

// TestImportsFlowOneWay fails on any upward import, per `go list`.
func TestImportsFlowOneWay(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, module+"/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		from := top(f[0])
		lf, ok := layer[from]
		if !ok {
			t.Errorf("package %s is in an unknown top-level folder %q", f[0], from)
			continue
		}
		n++
		for _, imp := range f[1:] {
			if !strings.HasPrefix(imp, module+"/") {
				continue
			}
			to := top(imp)
			lt, ok := layer[to]
			if !ok {
				t.Errorf("%s imports %s in an unknown top-level folder", f[0], imp)
				continue
			}
			if from == "policy" && to != "policy" {
				t.Errorf("%s imports %s: policy is a leaf", f[0], imp)
			}
			if lt > lf {
				t.Errorf("upward import: %s (%s) imports %s (%s)", f[0], from, imp, to)
			}
			// cache's own subpackages (cache/meta, cache/upload, ...) sit
			// below it: cache imports them, never the reverse.
			if strings.HasPrefix(f[0], module+"/cache/") && imp == module+"/cache" {
				t.Errorf("upward import: %s imports its parent %s", f[0], imp)
			}
		}
	}
	if n < 5 {
		t.Fatalf("only %d packages listed", n)
	}
}
