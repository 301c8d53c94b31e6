package restorer_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/archiver"
	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/repotest"
	"github.com/keepfs/keepfs/repo/restorer"
	"github.com/keepfs/keepfs/repo/tree"
)

func newRepo(t *testing.T) *repo.Repository { return repotest.Create(t, remote.NewMem()) }

// importBig imports a directory holding one file, "big", of size random
// bytes (from seed).
func importBig(t *testing.T, r *repo.Repository, size int, seed int64) *repo.Snapshot {
	t.Helper()
	src := t.TempDir()
	data := make([]byte, size)
	rand.New(rand.NewSource(seed)).Read(data)
	if err := os.WriteFile(filepath.Join(src, "big"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	sn, _, err := archiver.Import(context.Background(), r, src, archiver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return sn
}

// genTree writes a random tree: files of many sizes (some sharing content),
// odd names, symlinks, hard links, xattrs, modes and old mtimes.
func genTree(t *testing.T, rng *rand.Rand, dir string, depth int) {
	t.Helper()
	shared := make([]byte, 700<<10)
	rng.Read(shared)
	var files []string
	n := 3 + rng.Intn(6)
	for i := 0; i < n; i++ {
		name := randName(rng, i)
		p := filepath.Join(dir, name)
		switch k := rng.Intn(10); {
		case k < 2 && depth < 3:
			if err := os.Mkdir(p, 0o755); err != nil {
				t.Fatal(err)
			}
			genTree(t, rng, p, depth+1)
			if rng.Intn(3) == 0 {
				_ = os.Chmod(p, 0o750)
			}
		case k < 8:
			var data []byte
			switch rng.Intn(5) {
			case 0:
			case 1:
				data = []byte(strings.Repeat(fmt.Sprintf("line %d\n", i), rng.Intn(2000)))
			case 2:
				data = make([]byte, rng.Intn(3<<20))
				rng.Read(data)
			default:
				data = append(append([]byte(nil), shared...), byte(i))
			}
			if err := os.WriteFile(p, data, 0o644); err != nil {
				t.Fatal(err)
			}
			modes := []os.FileMode{0o644, 0o600, 0o755, 0o400, 0o4755, 0}
			if err := os.Chmod(p, modes[rng.Intn(len(modes))]); err != nil {
				t.Fatal(err)
			}
			if rng.Intn(3) == 0 {
				_ = unix.Lsetxattr(p, "user.keepfs-test", []byte(fmt.Sprintf("x%d", i)), 0)
			}
			mt := time.Unix(1e9+rng.Int63n(1e9), rng.Int63n(1e9))
			if err := os.Chtimes(p, mt, mt); err != nil {
				t.Fatal(err)
			}
			files = append(files, p)
		case k < 9:
			if err := os.Symlink("target-"+name, p); err != nil {
				t.Fatal(err)
			}
		default:
			if len(files) > 0 {
				if err := os.Link(files[rng.Intn(len(files))], p); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
}

func randName(rng *rand.Rand, i int) string {
	switch rng.Intn(6) {
	case 0:
		return fmt.Sprintf("sp ace %d", i)
	case 1:
		return fmt.Sprintf("bytes-\xff\xfe\n%d", i)
	case 2:
		return strings.Repeat("n", 250) + fmt.Sprintf("%05d", i)
	}
	return fmt.Sprintf("f%d-%d", i, rng.Intn(1000))
}

type entry struct {
	mode    os.FileMode
	size    int64
	mtime   int64
	content string
	link    string
	xattr   string
}

func scan(t *testing.T, root string) (map[string]entry, map[string][]string) {
	t.Helper()
	out := map[string]entry{}
	groups := map[uint64][]string{}
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		e := entry{mode: fi.Mode()}
		st := fi.Sys().(*syscall.Stat_t)
		switch {
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			e.content, e.size, e.mtime = string(b), fi.Size(), fi.ModTime().UnixNano()
			buf := make([]byte, 64)
			if n, err := unix.Lgetxattr(p, "user.keepfs-test", buf); err == nil {
				e.xattr = string(buf[:n])
			}
			if st.Nlink > 1 {
				groups[st.Ino] = append(groups[st.Ino], rel)
			}
		case fi.Mode()&os.ModeSymlink != 0:
			e.link, _ = os.Readlink(p)
		case fi.IsDir():
			e.mtime = fi.ModTime().UnixNano()
		}
		out[rel] = e
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	links := map[string][]string{}
	for _, g := range groups {
		links[g[0]] = g
	}
	return out, links
}

func compareTrees(t *testing.T, src, dst string) {
	t.Helper()
	a, la := scan(t, src)
	b, lb := scan(t, dst)
	for p, ea := range a {
		eb, ok := b[p]
		if !ok {
			t.Errorf("%q missing after restore", p)
			continue
		}
		if ea != eb {
			t.Errorf("%q differs:\n src %+v\n dst %+v", p, short(ea), short(eb))
		}
	}
	for p := range b {
		if _, ok := a[p]; !ok {
			t.Errorf("%q restored but not in source", p)
		}
	}
	if fmt.Sprint(la) != fmt.Sprint(lb) {
		t.Errorf("hard link groups differ: %v vs %v", la, lb)
	}
}

func short(e entry) entry {
	if len(e.content) > 20 {
		e.content = fmt.Sprintf("%d bytes %x", len(e.content), crypto.Hash([]byte(e.content)).Short())
	}
	return e
}

// Property: import then restore reproduces random trees exactly.
func TestImportRestoreRoundTrip(t *testing.T) {
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewSource(seed))
	for round := 0; round < 3; round++ {
		src := t.TempDir()
		genTree(t, rng, src, 0)
		r := newRepo(t)
		ctx := context.Background()
		sn, sum, err := archiver.Import(ctx, r, src, archiver.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if len(sum.Warnings) > 0 {
			t.Fatalf("warnings: %v", sum.Warnings)
		}
		dst := filepath.Join(t.TempDir(), "out")
		if _, err := restorer.Restore(ctx, r, sn, []string{"/"}, dst, restorer.Options{}); err != nil {
			t.Fatal(err)
		}
		compareTrees(t, src, dst)
		if t.Failed() {
			t.Fatalf("round %d failed (seed %d)", round, seed)
		}
	}
}

type globExcluder struct{ suffix string }

func (globExcluder) AddPatterns([]string, string, []byte) {}
func (g globExcluder) Excluded(path []string, isDir bool) bool {
	return strings.HasSuffix(path[len(path)-1], g.suffix)
}

func TestIncrementalAndExclusion(t *testing.T) {
	ctx := context.Background()
	src := t.TempDir()
	big := make([]byte, 6<<20)
	rand.New(rand.NewSource(1)).Read(big)
	must(t, os.MkdirAll(filepath.Join(src, "d"), 0o755))
	must(t, os.WriteFile(filepath.Join(src, "d", "big"), big, 0o644))
	must(t, os.WriteFile(filepath.Join(src, "skip.log"), []byte("secret"), 0o644))
	r := newRepo(t)
	opts := archiver.Options{Excluder: globExcluder{".log"}}
	sn1, s1, err := archiver.Import(ctx, r, src, opts)
	must(t, err)
	if s1.Excluded != 1 || s1.Files != 1 {
		t.Fatalf("first import: %+v", s1)
	}
	opts.Parent = sn1
	_, s2, err := archiver.Import(ctx, r, src, opts)
	must(t, err)
	if s2.BlobsNew != 0 || s2.FilesUnchanged != 1 {
		t.Fatalf("unchanged re-import stored %d blobs: %+v", s2.BlobsNew, s2)
	}
	// Change one byte in the middle: only the chunks around it are new.
	big[3<<20] ^= 1
	must(t, os.WriteFile(filepath.Join(src, "d", "big"), big, 0o644))
	sn3, s3, err := archiver.Import(ctx, r, src, opts)
	must(t, err)
	if s3.FilesChanged != 1 || s3.BlobsNew == 0 || s3.BytesAdded > 4<<20 {
		t.Fatalf("1-byte change added %d bytes in %d blobs: %+v", s3.BytesAdded, s3.BlobsNew, s3)
	}
	dst := t.TempDir()
	_, err = restorer.Restore(ctx, r, sn3, []string{"/d/big"}, dst, restorer.Options{})
	must(t, err)
	got, err := os.ReadFile(filepath.Join(dst, "big"))
	must(t, err)
	if !bytes.Equal(got, big) {
		t.Fatal("restored file differs")
	}
	if _, err := os.Stat(filepath.Join(dst, "skip.log")); err == nil {
		t.Fatal("excluded file restored")
	}
}

// A symlink planted in the target must not redirect the restore.
func TestRestoreDoesNotFollowSymlinksInTarget(t *testing.T) {
	ctx := context.Background()
	src := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(src, "docs"), 0o755))
	must(t, os.WriteFile(filepath.Join(src, "docs", "a.txt"), []byte("restored"), 0o644))
	must(t, os.WriteFile(filepath.Join(src, "b.txt"), []byte("restored"), 0o644))
	r := newRepo(t)
	sn, _, err := archiver.Import(ctx, r, src, archiver.Options{})
	must(t, err)
	outside := t.TempDir()
	must(t, os.WriteFile(filepath.Join(outside, "b.txt"), []byte("precious"), 0o644))
	dst := t.TempDir()
	must(t, os.Symlink(outside, filepath.Join(dst, "docs")))
	must(t, os.Symlink(filepath.Join(outside, "b.txt"), filepath.Join(dst, "b.txt")))
	_, err = restorer.Restore(ctx, r, sn, []string{"/"}, dst, restorer.Options{})
	must(t, err)
	if b, _ := os.ReadFile(filepath.Join(outside, "b.txt")); string(b) != "precious" {
		t.Fatal("restore wrote through a symlink outside the target")
	}
	if _, err := os.Stat(filepath.Join(outside, "a.txt")); err == nil {
		t.Fatal("restore created a file outside the target")
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "docs", "a.txt")); string(b) != "restored" {
		t.Fatal("docs/a.txt not restored")
	}
	if _, err := restorer.Restore(ctx, r, sn, []string{"/nope"}, dst, restorer.Options{}); err == nil {
		t.Fatal("restore of a missing path succeeded")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// A directory of the target swapped for a symlink to the outside after it
// was made and before its files are written (what a local attacker racing
// a root restore would do): nothing outside the target is created,
// chmod'ed, chown'ed or touched, and the restore says why it stopped.
func TestRestoreSwappedDirectoryStaysInside(t *testing.T) {
	ctx := context.Background()
	src := t.TempDir()
	docs := filepath.Join(src, "docs")
	must(t, os.MkdirAll(filepath.Join(docs, "sub"), 0o755))
	must(t, os.WriteFile(filepath.Join(docs, "a.txt"), []byte("restored"), 0o640))
	must(t, os.WriteFile(filepath.Join(docs, "sub", "c.txt"), []byte("restored"), 0o755))
	must(t, os.WriteFile(filepath.Join(docs, "h1"), []byte("linked"), 0o644))
	must(t, os.Link(filepath.Join(docs, "h1"), filepath.Join(docs, "h2")))
	must(t, os.Chmod(docs, 0o751))
	if os.Geteuid() == 0 {
		// Root restores ownership: make it differ, so chown is tried.
		for _, p := range []string{docs, filepath.Join(docs, "a.txt"), filepath.Join(docs, "sub")} {
			must(t, os.Lchown(p, 65534, 65534))
		}
	}
	r := newRepo(t)
	sn, _, err := archiver.Import(ctx, r, src, archiver.Options{})
	must(t, err)

	outside := t.TempDir()
	must(t, os.Chmod(outside, 0o700))
	old := time.Unix(1_000_000_000, 0)
	must(t, os.Chtimes(outside, old, old))
	var before unix.Stat_t
	must(t, unix.Lstat(outside, &before))

	dst := t.TempDir()
	swapped := false
	defer restorer.SetAfterPlan(func() {
		must(t, os.Rename(filepath.Join(dst, "docs"), filepath.Join(dst, "was-docs")))
		must(t, os.Symlink(outside, filepath.Join(dst, "docs")))
		swapped = true
	})()
	_, err = restorer.Restore(ctx, r, sn, []string{"/"}, dst, restorer.Options{})
	if !swapped {
		t.Fatal("the hook did not run")
	}
	if err == nil || !strings.Contains(err.Error(), "symlink") {
		t.Errorf("restore through a swapped directory: %v", err)
	}
	ents, _ := os.ReadDir(outside)
	for _, e := range ents {
		t.Errorf("restore created %s outside the target", e.Name())
	}
	var after unix.Stat_t
	must(t, unix.Lstat(outside, &after))
	if after.Mode != before.Mode || after.Uid != before.Uid || after.Gid != before.Gid || after.Mtim != before.Mtim {
		t.Errorf("restore changed the outside directory: mode %o→%o uid %d→%d gid %d→%d mtime %v→%v",
			before.Mode, after.Mode, before.Uid, after.Uid, before.Gid, after.Gid, before.Mtim, after.Mtim)
	}
}

// Metadata still lands on everything restored: modes beyond the umask
// (setuid), times of files, directories and symlinks, hard links.
func TestRestoreMetadataThroughFDs(t *testing.T) {
	ctx := context.Background()
	src := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(src, "d"), 0o755))
	must(t, os.WriteFile(filepath.Join(src, "d", "x"), []byte("x"), 0o644))
	must(t, unix.Chmod(filepath.Join(src, "d", "x"), 0o4711))
	must(t, os.Link(filepath.Join(src, "d", "x"), filepath.Join(src, "d", "y")))
	must(t, os.Symlink("x", filepath.Join(src, "d", "l")))
	must(t, unix.Mkfifo(filepath.Join(src, "d", "p"), 0o600))
	must(t, os.Chmod(filepath.Join(src, "d", "p"), 0o666))
	must(t, os.Chmod(filepath.Join(src, "d"), 0o701))
	when := time.Unix(1_234_567_890, 123456789)
	for _, p := range []string{"d/x", "d/p", "d"} {
		must(t, os.Chtimes(filepath.Join(src, p), when, when))
	}
	ts := []unix.Timespec{unix.NsecToTimespec(when.UnixNano()), unix.NsecToTimespec(when.UnixNano())}
	must(t, unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(src, "d", "l"), ts, unix.AT_SYMLINK_NOFOLLOW))
	r := newRepo(t)
	sn, _, err := archiver.Import(ctx, r, src, archiver.Options{})
	must(t, err)
	dst := t.TempDir()
	_, err = restorer.Restore(ctx, r, sn, []string{"/d"}, dst, restorer.Options{})
	must(t, err)
	for p, mode := range map[string]os.FileMode{"d": os.ModeDir | 0o701, "d/x": 0o711 | os.ModeSetuid, "d/p": os.ModeNamedPipe | 0o666} {
		fi, err := os.Lstat(filepath.Join(dst, p))
		must(t, err)
		if fi.Mode() != mode || !fi.ModTime().Equal(when) {
			t.Errorf("%s: %v %v, want %v %v", p, fi.Mode(), fi.ModTime(), mode, when)
		}
	}
	fi, err := os.Lstat(filepath.Join(dst, "d", "l"))
	must(t, err)
	if fi.Mode()&os.ModeSymlink == 0 || !fi.ModTime().Equal(when) {
		t.Errorf("symlink: %v %v", fi.Mode(), fi.ModTime())
	}
	var x, y unix.Stat_t
	must(t, unix.Lstat(filepath.Join(dst, "d", "x"), &x))
	must(t, unix.Lstat(filepath.Join(dst, "d", "y"), &y))
	if x.Ino != y.Ino {
		t.Error("hard link not restored")
	}
}

// A snapshot that counted links of symlinks without recording their inode
// (mount snapshots before hard links of every kind were kept) restores
// each symlink as itself: links are made only for a recorded inode.
func TestRestoreLinksNeedARecordedInode(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t)
	tr := &tree.Tree{Nodes: []*tree.Node{
		{Name: "a", Type: tree.Symlink, Mode: 0o777, Links: 2, LinkTarget: "target-a"},
		{Name: "b", Type: tree.Symlink, Mode: 0o777, Links: 2, LinkTarget: "target-b"},
	}}
	tr.Sort()
	root, err := r.SaveTree(ctx, tr)
	must(t, err)
	sn := &repo.Snapshot{Time: time.Now(), Tree: root}
	must(t, r.SaveSnapshot(ctx, sn))
	dst := t.TempDir()
	_, err = restorer.Restore(ctx, r, sn, []string{"/"}, dst, restorer.Options{})
	must(t, err)
	for _, n := range []string{"a", "b"} {
		if got, err := os.Readlink(filepath.Join(dst, n)); err != nil || got != "target-"+n {
			t.Errorf("%s restored as a link to %q (%v), want target-%s", n, got, err, n)
		}
	}
}
