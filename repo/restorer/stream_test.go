package restorer_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/archiver"
	"github.com/keepfs/keepfs/repo/repotest"
	"github.com/keepfs/keepfs/repo/restorer"
)

// streamStore records the streamed reads (Open) and the Loads of packs,
// as an S3 store would see them: each is one GET. It can break the
// first streams of packs off after some bytes with a transport error.
type streamStore struct {
	remote.Storage
	mu         sync.Mutex
	opens      []streamCall // of packs
	loads      int          // of packs
	breaks     int          // how many more pack streams to break
	breakAfter int64
}

type streamCall struct {
	name    string
	off, n  int64
	partial bool // broken off
}

func (s *streamStore) Load(ctx context.Context, h remote.Handle, off, n int64) ([]byte, error) {
	if h.Type == remote.Pack {
		s.mu.Lock()
		s.loads++
		s.mu.Unlock()
	}
	return s.Storage.Load(ctx, h, off, n)
}

func (s *streamStore) Open(ctx context.Context, h remote.Handle, off, n int64) (io.ReadCloser, error) {
	b, err := s.Storage.Load(ctx, h, off, n)
	if err != nil {
		return nil, err
	}
	if h.Type != remote.Pack {
		return io.NopCloser(bytes.NewReader(b)), nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c := streamCall{name: h.Name, off: off, n: n}
	if s.breaks > 0 && int64(len(b)) > s.breakAfter {
		s.breaks--
		c.partial = true
		s.opens = append(s.opens, c)
		return io.NopCloser(io.MultiReader(bytes.NewReader(b[:s.breakAfter]), brokenReader{})), nil
	}
	s.opens = append(s.opens, c)
	return io.NopCloser(bytes.NewReader(b)), nil
}

func (s *streamStore) reset() {
	s.mu.Lock()
	s.opens, s.loads = nil, 0
	s.mu.Unlock()
}

func (s *streamStore) calls() ([]streamCall, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]streamCall(nil), s.opens...), s.loads
}

type brokenReader struct{}

func (brokenReader) Read([]byte) (int, error) {
	return 0, fmt.Errorf("read: connection reset by peer: %w", remote.ErrUnreachable)
}

// importStreamTree creates a repository on st and imports a streamTree
// into it; it returns the repository, the source directory and the
// snapshot.
func importStreamTree(t *testing.T, st remote.Storage) (*repo.Repository, string, *repo.Snapshot) {
	t.Helper()
	r := repotest.Create(t, st)
	src := t.TempDir()
	streamTree(t, src)
	sn, _, err := archiver.Import(context.Background(), r, src, archiver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return r, src, sn
}

// streamTree writes small files (every 25th one the same content), three
// files of several blobs and a copy of one of them: two data packs.
func streamTree(t *testing.T, dir string) {
	t.Helper()
	rng := rand.New(rand.NewSource(11))
	for i := 0; i < 300; i++ {
		data := make([]byte, 1+rng.Intn(30<<10))
		rng.Read(data)
		if i%25 == 0 {
			data = []byte("shared by several files\n")
		}
		d := filepath.Join(dir, fmt.Sprintf("d%d", i%5))
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%03d", i)), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 3; i++ {
		data := make([]byte, 7<<20+i*777)
		rng.Read(data)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("big%d", i)), data, 0o640); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			if err := os.WriteFile(filepath.Join(dir, "big0-copy"), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// sameTree checks every file under src is in dst with the same content.
func sameTree(t *testing.T, src, dst string) int {
	t.Helper()
	n := 0
	err := filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		want, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		got, err := os.ReadFile(filepath.Join(dst, rel))
		if err != nil {
			return err
		}
		if !bytes.Equal(got, want) {
			return fmt.Errorf("%s differs after restore (%d bytes, want %d)", rel, len(got), len(want))
		}
		gi, err := os.Stat(filepath.Join(dst, rel))
		if err != nil {
			return err
		}
		if gi.Mode() != fi.Mode() || !gi.ModTime().Equal(fi.ModTime()) {
			return fmt.Errorf("%s: mode %v mtime %v after restore, want %v %v", rel, gi.Mode(), gi.ModTime(), fi.Mode(), fi.ModTime())
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestRestoreStreamsEachPackOnce restores small files, files of several
// blobs and files sharing content, and checks that the files were read
// with one streamed read per pack (one GET on S3), no pack twice and no
// other pack read, and that every file, copies included, came out right.
func TestRestoreStreamsEachPackOnce(t *testing.T) {
	ctx := context.Background()
	ss := &streamStore{Storage: remote.NewMem()}
	r, src, sn := importStreamTree(t, ss)
	defer restorer.SetAfterPlan(ss.reset)()
	dst := filepath.Join(t.TempDir(), "out")
	if _, err := restorer.Restore(ctx, r, sn, []string{"/"}, dst, restorer.Options{Workers: 4}); err != nil {
		t.Fatal(err)
	}
	opens, loads := ss.calls()
	t.Logf("%d streamed reads, %d loads of packs; %d packs", len(opens), loads, len(r.Index().Packs()))
	if len(opens) == 0 || loads != 0 {
		t.Fatalf("files read with %d streamed reads and %d loads of packs: want streams only", len(opens), loads)
	}
	seen := map[string]bool{}
	for _, c := range opens {
		if seen[c.name] {
			t.Fatalf("pack %s read twice (%v): want one read per pack", c.name[:12], opens)
		}
		seen[c.name] = true
	}
	if n := sameTree(t, src, dst); n != 304 {
		t.Fatalf("%d files compared, want 304", n)
	}
}

// TestRestoreResumesABrokenStream breaks the first two pack streams off
// part way with a transport error and checks that the retry decorator
// opened the rest of each from where it broke (not from the start), and
// that the restored files are right.
func TestRestoreResumesABrokenStream(t *testing.T) {
	ctx := context.Background()
	ss := &streamStore{Storage: remote.NewMem()}
	quiet := slogDiscard()
	st := remote.WithRetry(ss, remote.RetryOptions{InitialInterval: time.Millisecond, MaxInterval: 2 * time.Millisecond, MaxAttempts: 5, Logger: quiet})
	r, src, sn := importStreamTree(t, st)
	defer restorer.SetAfterPlan(func() {
		ss.reset()
		ss.mu.Lock()
		ss.breaks, ss.breakAfter = 2, 1<<20+123
		ss.mu.Unlock()
	})()
	dst := filepath.Join(t.TempDir(), "out")
	if _, err := restorer.Restore(ctx, r, sn, []string{"/"}, dst, restorer.Options{Workers: 4}); err != nil {
		t.Fatal(err)
	}
	opens, _ := ss.calls()
	resumed := 0
	for _, c := range opens {
		if !c.partial {
			continue
		}
		for _, d := range opens {
			if d.name == c.name && d.off == c.off+1<<20+123 && d.off+d.n == c.off+c.n {
				resumed++
			}
		}
	}
	if resumed != 2 {
		t.Fatalf("streams %v: %d of 2 broken streams resumed where they broke", opens, resumed)
	}
	sameTree(t, src, dst)
}

// TestRestoreReopensParkedFiles restores files whose blobs lie in several
// packs with no partly written file allowed to stay open, so each is
// closed after every write and opened again for the next, and checks the
// files, their modes and times.
func TestRestoreReopensParkedFiles(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t)
	src := t.TempDir()
	rng := rand.New(rand.NewSource(12))
	data := make([]byte, 40<<20)
	rng.Read(data)
	for i, name := range []string{"a", "b"} {
		data[i] ^= 1
		if err := os.WriteFile(filepath.Join(src, name), data, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	sn, _, err := archiver.Import(ctx, r, src, archiver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer restorer.SetMaxOpen(0)()
	dst := filepath.Join(t.TempDir(), "out")
	if _, err := restorer.Restore(ctx, r, sn, []string{"/"}, dst, restorer.Options{Workers: 3}); err != nil {
		t.Fatal(err)
	}
	sameTree(t, src, dst)
}

// TestRestoreRefusesAFileSwappedWhileParked swaps another file in for a
// file that was closed between writes, and checks that the restore stops
// rather than writing into the file that took its place.
func TestRestoreRefusesAFileSwappedWhileParked(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t)
	sn := importBig(t, r, 40<<20, 13)
	dst := filepath.Join(t.TempDir(), "out")
	planted := []byte("not the restore's")
	var once sync.Once
	defer restorer.SetMaxOpen(0)()
	defer restorer.SetAfterPark(func(rel string) {
		once.Do(func() {
			p := filepath.Join(dst, rel)
			if err := os.Rename(p, p+".moved"); err != nil {
				t.Error(err)
			}
			if err := os.WriteFile(p, planted, 0o644); err != nil {
				t.Error(err)
			}
		})
	})()
	_, err := restorer.Restore(ctx, r, sn, []string{"/"}, dst, restorer.Options{Workers: 1})
	if err == nil || !strings.Contains(err.Error(), "took its place") {
		t.Fatalf("restore into a file swapped while closed: %v, want an error saying another file took its place", err)
	}
	got, err := os.ReadFile(filepath.Join(dst, "big"))
	if err != nil || !bytes.Equal(got, planted) {
		t.Fatalf("the planted file holds %d bytes (%v), want it untouched", len(got), err)
	}
}

func slogDiscard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
