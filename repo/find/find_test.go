package find_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/find"
	"github.com/keepfs/keepfs/repo/pack"
	"github.com/keepfs/keepfs/repo/tree"
)

// counting wraps a repository and counts data blob loads.
type counting struct {
	*repo.Repository
	loads atomic.Int64
}

func (c *counting) LoadBlob(ctx context.Context, t pack.BlobType, id crypto.ID) ([]byte, error) {
	if t == pack.Data {
		c.loads.Add(1)
	}
	return c.Repository.LoadBlob(ctx, t, id)
}

// fixture builds snapshots from an in-memory description: a map of paths
// to files, each file a list of chunks (so tests choose chunk boundaries).
type fixture struct {
	t     *testing.T
	r     *repo.Repository
	when  time.Time
	snaps []*repo.Snapshot
}

type file [][]byte // chunks

func newFixture(t *testing.T) *fixture {
	r, err := repo.Create(context.Background(), remote.NewMem(), []byte("pw"), repo.Options{KDF: &crypto.TestKDF})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return &fixture{t: t, r: r, when: time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)}
}

func text(s string) file { return file{[]byte(s)} }

// hole is a chunk that the fixture stores as a hole of n bytes.
func hole(n uint64) []byte { return []byte("\x00hole:" + strconv.FormatUint(n, 10)) }

// snapshot stores files (path -> chunks) as a new snapshot.
func (f *fixture) snapshot(files map[string]file) *repo.Snapshot {
	f.t.Helper()
	ctx := context.Background()
	type dir struct {
		files map[string]file
		dirs  map[string]*dir
	}
	newDir := func() *dir { return &dir{files: map[string]file{}, dirs: map[string]*dir{}} }
	root := newDir()
	for p, c := range files {
		parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
		d := root
		for _, part := range parts[:len(parts)-1] {
			if d.dirs[part] == nil {
				d.dirs[part] = newDir()
			}
			d = d.dirs[part]
		}
		d.files[parts[len(parts)-1]] = c
	}
	var save func(d *dir) crypto.ID
	save = func(d *dir) crypto.ID {
		t := &tree.Tree{}
		for name, chunks := range d.files {
			n := &tree.Node{Name: name, Type: tree.File, Mode: 0o644}
			var pieces []tree.Piece
			for _, c := range chunks {
				if hn, ok := strings.CutPrefix(string(c), "\x00hole:"); ok {
					l, _ := strconv.ParseUint(hn, 10, 64)
					pieces = append(pieces, tree.Piece{Hole: l})
					n.Size += l
					continue
				}
				id, _, err := f.r.SaveBlob(ctx, pack.Data, c)
				if err != nil {
					f.t.Fatal(err)
				}
				pieces = append(pieces, tree.Piece{ID: id})
				n.Size += uint64(len(c))
			}
			n.SetPieces(pieces)
			t.Nodes = append(t.Nodes, n)
		}
		for name, sub := range d.dirs {
			t.Nodes = append(t.Nodes, &tree.Node{Name: name, Type: tree.Dir, Mode: 0o755, Subtree: save(sub)})
		}
		t.Sort()
		id, err := f.r.SaveTree(ctx, t)
		if err != nil {
			f.t.Fatal(err)
		}
		return id
	}
	f.when = f.when.Add(time.Hour)
	sn := &repo.Snapshot{Time: f.when, Tree: save(root)}
	if err := f.r.SaveSnapshot(ctx, sn); err != nil {
		f.t.Fatal(err)
	}
	f.snaps = append(f.snaps, sn)
	return sn
}

func (f *fixture) find(src find.Source, opts find.Options) []find.Match {
	f.t.Helper()
	if opts.Snapshots == nil {
		opts.Snapshots = f.snaps
	}
	ms, _, err := find.Find(context.Background(), src, opts)
	if err != nil {
		f.t.Fatal(err)
	}
	return ms
}

type row struct {
	path  string
	snaps string
	lines string
}

func rows(ms []find.Match) []row {
	var out []row
	for _, m := range ms {
		snaps := strings.Join(m.Snapshots, ",")
		if m.Live {
			snaps += "+live"
		}
		var ls []string
		for _, l := range m.Lines {
			ls = append(ls, strconv.Itoa(l))
		}
		out = append(out, row{m.Path, snaps, strings.Join(ls, ",")})
	}
	return out
}

const (
	s1 = "2026-11-28T110000Z"
	s2 = "2026-11-28T120000Z"
	s3 = "2026-11-28T130000Z"
)

func TestNamesAcrossVersionsFollowEveryName(t *testing.T) {
	f := newFixture(t)
	f.snapshot(map[string]file{"/hr/alice/passport-scan.bin": text("scan"), "/hr/bob/record.txt": text("bob")})
	f.snapshot(map[string]file{"/hr/alice/id-scan.bin": text("scan"), "/hr/bob/record.txt": text("bob")})
	f.snapshot(map[string]file{"/hr/alice/id-scan.bin": text("scan"), "/hr/bob/record.txt": text("bob"), "/shared/copy.bin": text("scan")})

	got := rows(f.find(f.r, find.Options{Names: []string{"*scan*"}}))
	want := []row{
		{"/hr/alice/id-scan.bin", s2 + "," + s3, ""},
		{"/hr/alice/passport-scan.bin", s1, ""},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
	// Several --name are OR'ed; copies name the other paths of the content
	// whatever their names.
	ms := f.find(f.r, find.Options{Names: []string{"passport-scan.bin", "record.txt"}})
	if len(ms) != 2 || ms[0].Path != "/hr/alice/passport-scan.bin" || ms[1].Path != "/hr/bob/record.txt" {
		t.Fatalf("got %+v", ms)
	}
	if want := []string{"/hr/alice/id-scan.bin", "/shared/copy.bin"}; !reflect.DeepEqual(ms[0].Copies, want) {
		t.Fatalf("copies %v, want %v", ms[0].Copies, want)
	}
	if want := []string{s1, s2, s3}; !reflect.DeepEqual(ms[1].Snapshots, want) {
		t.Fatalf("snapshots %v, want %v", ms[1].Snapshots, want)
	}
	// --at: one snapshot only.
	got = rows(f.find(f.r, find.Options{Names: []string{"*scan*"}, Snapshots: f.snaps[:1]}))
	if want := []row{{"/hr/alice/passport-scan.bin", s1, ""}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("--at: got %v", got)
	}
	// Root limits the subtree; a file as the root works too.
	got = rows(f.find(f.r, find.Options{Root: "/shared"}))
	if want := []row{{"/shared/copy.bin", s3, ""}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("root /shared: got %v", got)
	}
	got = rows(f.find(f.r, find.Options{Root: "/hr/bob/record.txt"}))
	if want := []row{{"/hr/bob/record.txt", s1 + "," + s2 + "," + s3, ""}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("root a file: got %v", got)
	}
	if ms := f.find(f.r, find.Options{Root: "/nowhere"}); len(ms) != 0 {
		t.Fatalf("root missing: got %v", ms)
	}
}

func TestContentLinesAndVersions(t *testing.T) {
	f := newFixture(t)
	f.snapshot(map[string]file{"/a.txt": text("one\nAlice, born 1990\nthree\n"), "/b.txt": text("Bob, born 1985")})
	f.snapshot(map[string]file{"/a.txt": text("Alice, born 1990, updated\r\nx\nborn 19\n"), "/b.txt": text("Bob, born 1985")})
	ms := f.find(f.r, find.Options{Content: regexp.MustCompile(`born 19\d\d$`)})
	got := rows(ms)
	want := []row{
		{"/a.txt", s1, "2"},
		{"/b.txt", s1 + "," + s2, "1"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
	// Names and content together: both must hold.
	ms = f.find(f.r, find.Options{Names: []string{"a.*"}, Content: regexp.MustCompile(`born`)})
	if got := rows(ms); !reflect.DeepEqual(got, []row{{"/a.txt", s1, "2"}, {"/a.txt", s2, "1,3"}}) {
		t.Fatalf("name+content: got %v", got)
	}
}

func TestContentAcrossChunkBoundary(t *testing.T) {
	f := newFixture(t)
	// The marker is cut in two by a chunk boundary, on line 3.
	f.snapshot(map[string]file{"/big.txt": {[]byte("a\nb\nxxERASE-MA"), []byte("RK-51c9yy\nc\n"), []byte("ERASE-MARK-51c9\n")}})
	ms := f.find(f.r, find.Options{Content: regexp.MustCompile(`ERASE-MARK-51c9`)})
	if got := rows(ms); !reflect.DeepEqual(got, []row{{"/big.txt", s1, "3,5"}}) {
		t.Fatalf("got %v", got)
	}
}

func TestEachContentReadOnce(t *testing.T) {
	f := newFixture(t)
	shared := file{bytes.Repeat([]byte("filler line\n"), 1000), []byte("needle\n")}
	for i := 0; i < 5; i++ {
		files := map[string]file{"/docs/a.txt": shared, "/docs/copy.txt": shared, "/other/b.txt": shared}
		files["/changing.txt"] = text(strings.Repeat("x", i+1)) // a new root tree every time
		f.snapshot(files)
	}
	c := &counting{Repository: f.r}
	ms, st, err := find.Find(context.Background(), c, find.Options{Content: regexp.MustCompile(`needle`), Snapshots: f.snaps})
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 3 {
		t.Fatalf("want 3 matches (one per path), got %+v", ms)
	}
	for _, m := range ms {
		if len(m.Snapshots) != 5 || !reflect.DeepEqual(m.Lines, []int{1001}) || len(m.Copies) != 2 {
			t.Fatalf("match %+v", m)
		}
	}
	// One content of two chunks, read once; the changing file (5 contents
	// of one chunk each) is searched too: 2 + 5 loads.
	if n := c.loads.Load(); n != 7 {
		t.Fatalf("%d data blob loads, want 7", n)
	}
	if st.ContentsRead != 6 {
		t.Fatalf("contents read %d, want 6", st.ContentsRead)
	}
	// The /docs and /other trees are the same in every snapshot: examined
	// once (plus five root trees).
	if st.Trees != 7 {
		t.Fatalf("trees examined %d, want 7", st.Trees)
	}
	// A name search reads no content at all.
	c.loads.Store(0)
	if _, _, err := find.Find(context.Background(), c, find.Options{Names: []string{"*.txt"}, Snapshots: f.snaps}); err != nil {
		t.Fatal(err)
	}
	if n := c.loads.Load(); n != 0 {
		t.Fatalf("name search loaded %d data blobs", n)
	}
}

func TestLongLinesInPieces(t *testing.T) {
	f := newFixture(t)
	long := bytes.Repeat([]byte("y"), 10000)
	long = append(append(long, []byte("MARK")...), bytes.Repeat([]byte("z"), 10000)...)
	f.snapshot(map[string]file{"/long.bin": {long, []byte("\nshort MARK\n")}})
	var warned []string
	ms, _, err := find.Find(context.Background(), f.r, find.Options{Content: regexp.MustCompile(`MARK`), Snapshots: f.snaps,
		MaxLine: 1024, Warn: func(s string) { warned = append(warned, s) }})
	if err != nil {
		t.Fatal(err)
	}
	if got := rows(ms); !reflect.DeepEqual(got, []row{{"/long.bin", s1, "1,2"}}) {
		t.Fatalf("got %v", got)
	}
	if len(warned) != 1 || !strings.Contains(warned[0], "longer than 1024") {
		t.Fatalf("warnings %q", warned)
	}
}

func TestLiveTreeJoinsStoredVersions(t *testing.T) {
	f := newFixture(t)
	rec := []byte("Alice, born 1990\n")
	f.snapshot(map[string]file{"/hr/record.txt": {rec}, "/hr/old.txt": text("gone now, born 1970\n")})
	live := fstest.MapFS{
		"hr/record.txt":           {Data: rec},
		"hr/new.txt":              {Data: []byte("Carol, born 1999\n")},
		".versions/x/hr/snap.txt": {Data: []byte("born 1900\n")},
	}
	c := &counting{Repository: f.r}
	ms, _, err := find.Find(context.Background(), c, find.Options{Content: regexp.MustCompile(`born`), Snapshots: f.snaps, Live: live})
	if err != nil {
		t.Fatal(err)
	}
	got := rows(ms)
	want := []row{
		{"/hr/new.txt", "+live", "1"},
		{"/hr/old.txt", s1, "1"},
		{"/hr/record.txt", s1 + "+live", "1"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
	// The record was searched while reading the live tree: only old.txt
	// comes from the repository.
	if n := c.loads.Load(); n != 1 {
		t.Fatalf("%d data blob loads, want 1", n)
	}
}

func TestLiveContentIDMatchesStored(t *testing.T) {
	// A multi-chunk file imported by the real chunker and read live gets
	// the same content id.
	f := newFixture(t)
	data := make([]byte, 3<<20)
	_, _ = rand.Read(data)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	ch := f.r.NewChunker()
	ch.Reset(bytes.NewReader(data))
	var chunks file
	for {
		c, err := ch.Next()
		if err != nil {
			break
		}
		chunks = append(chunks, append([]byte(nil), c...))
	}
	if len(chunks) < 2 {
		t.Fatalf("want several chunks, got %d", len(chunks))
	}
	f.snapshot(map[string]file{"/f.bin": chunks})
	ms := f.find(f.r, find.Options{Names: []string{"f.bin"}, Live: os.DirFS(dir)})
	if got := rows(ms); !reflect.DeepEqual(got, []row{{"/f.bin", s1 + "+live", ""}}) {
		t.Fatalf("got %v", got)
	}
}

// A hole reads as zeros with no newline: line numbers after it stay those
// of the file, a line runs across it, and a terabyte of it costs nothing.
func TestContentAcrossHoles(t *testing.T) {
	f := newFixture(t)
	f.snapshot(map[string]file{"/sparse": {[]byte("a\nb\nsecret-"), hole(1 << 40), []byte("-value\nc\nsecret\n")}})
	start := time.Now()
	ms := f.find(f.r, find.Options{Content: regexp.MustCompile(`secret`)})
	if got := rows(ms); !reflect.DeepEqual(got, []row{{"/sparse", s1, "3,5"}}) {
		t.Fatalf("got %v", got)
	}
	if ms[0].Size != 1<<40+27 {
		t.Fatalf("size %d", ms[0].Size)
	}
	ms = f.find(f.r, find.Options{Content: regexp.MustCompile(`secret-\x00+-value`)})
	if got := rows(ms); !reflect.DeepEqual(got, []row{{"/sparse", s1, "3"}}) {
		t.Fatalf("a line across the hole: got %v", got)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("searching a file with a 1 TiB hole took %v", d)
	}
}

// A sparse live file is read around its holes, cut into chunks where the
// writers cut them, so it costs its data only and gets the stored content
// id (here, of the same file imported with its holes).
func TestLiveSparseFile(t *testing.T) {
	f := newFixture(t)
	first := append([]byte("a\nb\nsecret-"), make([]byte, 4096-11)...)
	second := append([]byte("-value\nc\nsecret\n"), make([]byte, 4096-16)...)
	f.snapshot(map[string]file{"/sparse": {first, hole(1 << 40), second}})
	dir := t.TempDir()
	lf, err := os.Create(filepath.Join(dir, "sparse"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lf.WriteAt(first, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := lf.WriteAt(second, 4096+1<<40); err != nil {
		t.Skipf("cannot make a 1 TiB sparse file here: %v", err)
	}
	lf.Close()
	start := time.Now()
	ms := f.find(f.r, find.Options{Content: regexp.MustCompile(`secret`), Live: os.DirFS(dir)})
	if got := rows(ms); !reflect.DeepEqual(got, []row{{"/sparse", s1 + "+live", "3,5"}}) {
		t.Fatalf("got %v", got)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("searching a live file with a 1 TiB hole took %v", d)
	}
}
