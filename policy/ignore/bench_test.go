package ignore

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"
)

// benchPatterns is ~50 lines in the style of real ignore files.
var benchPatterns = map[string]string{
	"": `# build output
*.o
*.a
*.so
*.tmp
*.log
!important.log
/build/
/dist/
node_modules/
vendor/**/testdata/
**/.cache/
**/__pycache__/
*.py[cod]
.env
.env.*
!.env.example
secrets/
*.key
*.pem
id_rsa*
**/tmp/**
coverage*
*.swp
*~
.DS_Store
Thumbs.db
[Dd]ebug/
[Rr]elease/
x64/
*.[0-9][0-9][0-9]
`,
	"src": `*.gen.go
!keep.gen.go
/generated/
**/mocks/
*_test.out
lib/**/*.bak
[[:upper:]]*.tmp
`,
	"src/lib": `*.cache
!*.cache.keep
/third_party/
data/*.csv
*.db
*.sqlite
?.out
**/old/
`,
}

var benchNames = []string{
	"src", "lib", "data", "build", "dist", "cache", ".cache", "tmp", "old", "mocks",
	"main.go", "util.go", "a.o", "b.log", "important.log", "x.py", "x.pyc", ".env",
	"Debug", "id_rsa", "notes.txt", "file.001", "README.md", "Foo.tmp", "z.out",
}

func benchSetup() (*Matcher, [][]string) {
	m := New("")
	for dir, content := range benchPatterns {
		var comps []string
		if dir != "" {
			comps = strings.Split(dir, "/")
		}
		m.AddPatterns(comps, dir+"/"+FileName, []byte(content))
	}
	r := rand.New(rand.NewPCG(7, 7))
	paths := make([][]string, 20000)
	for i := range paths {
		p := []string{"src"}
		if r.IntN(3) == 0 {
			p = p[:0]
		}
		for n := 1 + r.IntN(5); n > 0; n-- {
			p = append(p, benchNames[r.IntN(len(benchNames))])
		}
		paths[i] = p
	}
	return m, paths
}

// BenchmarkMatch decides 20,000 paths against ~50 patterns in three ignore
// files per iteration; ns/path is the cost a tree walk pays per entry.
func BenchmarkMatch(b *testing.B) {
	m, paths := benchSetup()
	for _, mode := range []string{"Match", "Explain"} {
		b.Run(mode, func(b *testing.B) {
			ignored := 0
			for b.Loop() {
				ignored = 0
				for _, p := range paths {
					var d Decision
					if mode == "Match" {
						d = m.Match(p, false)
					} else {
						d = m.Explain(p, false)
					}
					if d.Ignored {
						ignored++
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(paths)), "ns/path")
			b.ReportMetric(float64(ignored), "ignored")
		})
	}
}

// TestMatchIsFast keeps the benchmark's workload honest in plain test runs
// and bounds pathological globs, whose cost git's pruning keeps polynomial.
func TestMatchIsFast(t *testing.T) {
	m, paths := benchSetup()
	start := time.Now()
	for _, p := range paths {
		m.Explain(p, false)
	}
	m.AddPatterns(nil, "evil", []byte(strings.Repeat("*a", 30)+"b\n"+strings.Repeat("**/a", 30)+"/b\n"))
	name := strings.Repeat("a", 255)
	deep := strings.Split(strings.Repeat("a/", 200)+"c", "/")
	m.Explain([]string{name}, false)
	m.Match(deep, false)
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("20,000 paths and two pathological globs took %v", el)
	}
}

// TestConcurrentUse: a walker may add ignore files while other goroutines
// decide paths (run with -race).
func TestConcurrentUse(t *testing.T) {
	m := New("")
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			m.AddPatterns([]string{fmt.Sprint("d", i)}, fmt.Sprint("d", i, "/", FileName), []byte("*.log\n"))
		}()
		go func() {
			defer wg.Done()
			for range 100 {
				m.Explain([]string{fmt.Sprint("d", i), "x.log"}, false)
			}
		}()
	}
	wg.Wait()
	for i := range 4 {
		if d := m.Explain([]string{fmt.Sprint("d", i), "x.log"}, false); !d.Ignored {
			t.Errorf("d%d/x.log not ignored after concurrent adds: %+v", i, d)
		}
	}
}
