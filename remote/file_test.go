package remote_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/remote/remotetest"
)

func TestFileLayoutAndPermissions(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "repo")
	f, err := remote.CreateFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	pack := remote.Handle{Type: remote.Pack, Name: "abcdef"}
	for _, h := range []remote.Handle{{Type: remote.Config}, {Type: remote.Key, Name: "k1"}, pack} {
		if err := f.Save(ctx, h, []byte(h.String())); err != nil {
			t.Fatal(err)
		}
	}
	for _, rel := range []string{"config", "keys/k1", "packs/ab/abcdef"} {
		fi, err := os.Stat(filepath.Join(dir, rel))
		if err != nil {
			t.Fatalf("expected object file %s: %v", rel, err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", rel, fi.Mode().Perm())
		}
	}
	for _, rel := range []string{".", "keys", "packs", "packs/ab", "index", "snapshots"} {
		fi, err := os.Stat(filepath.Join(dir, rel))
		if err != nil {
			t.Fatalf("expected folder %s: %v", rel, err)
		}
		if fi.Mode().Perm() != 0o700 {
			t.Errorf("%s has mode %v, want 0700", rel, fi.Mode().Perm())
		}
	}
	if got := f.Location(); got != "file://"+dir {
		t.Errorf("Location() = %q", got)
	}
	if remote.ObjectPath(pack) != "packs/ab/abcdef" {
		t.Errorf("ObjectPath(%s) = %q", pack, remote.ObjectPath(pack))
	}
}

func TestFileCreateOpen(t *testing.T) {
	dir := t.TempDir()
	if _, err := remote.NewFile(filepath.Join(dir, "missing")); !errors.Is(err, remote.ErrNotFound) {
		t.Errorf("open missing repository: %v, want ErrNotFound", err)
	}
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := remote.NewFile(plain); err == nil {
		t.Error("opened a plain file as a repository")
	}
	repo := filepath.Join(dir, "repo")
	f, err := remote.CreateFile(repo)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Save(context.Background(), remote.Handle{Type: remote.Config}, []byte("cfg")); err != nil {
		t.Fatal(err)
	}
	if _, err := remote.CreateFile(repo); !errors.Is(err, remote.ErrExists) {
		t.Errorf("create over an existing repository: %v, want ErrExists", err)
	}
	g, err := remote.NewFile(repo)
	if err != nil {
		t.Fatal(err)
	}
	got, err := remote.LoadAll(context.Background(), g, remote.Handle{Type: remote.Config})
	if err != nil || string(got) != "cfg" {
		t.Fatalf("reopened repository: config %q, %v", got, err)
	}
}

// Leftovers of a crash (temporary files) and strays must never be listed
// as objects, and Save must not leave temporary files behind.
func TestFileTempFilesInvisible(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	f, err := remote.CreateFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	h := remote.Handle{Type: remote.Pack, Name: remotetest.RandomName()}
	if err := f.Save(ctx, h, []byte("data")); err != nil {
		t.Fatal(err)
	}
	if err := f.Save(ctx, h, []byte("other")); !errors.Is(err, remote.ErrExists) {
		t.Fatalf("overwrite: %v", err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	_ = f.Save(cancelled, remote.Handle{Type: remote.Pack, Name: h.Name[:2] + "ff"}, []byte("x"))
	if tmp := tempFiles(t, dir); len(tmp) != 0 {
		t.Fatalf("temporary files left behind: %v", tmp)
	}
	for _, rel := range []string{"packs/" + h.Name[:2] + "/.tmp-123", "keys/.tmp-9", "keys/not valid", "index/.hidden"} {
		if err := os.WriteFile(filepath.Join(dir, rel), []byte("junk"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "keys", "subdir"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, typ := range remote.Types {
		var got []string
		if err := f.List(ctx, typ, func(fi remote.Info) error { got = append(got, fi.Handle.String()); return nil }); err != nil {
			t.Fatal(err)
		}
		want := 0
		if typ == remote.Pack {
			want = 1
		}
		if len(got) != want {
			t.Errorf("list %s = %v, want %d objects", typ, got, want)
		}
	}
}

func tempFiles(t *testing.T, dir string) []string {
	t.Helper()
	var found []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), remote.TempPrefix) {
			found = append(found, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// A repository whose directory vanished (unmounted disk, lost network
// share) is unreachable, not empty, and Save must not recreate it.
func TestFileRootGoneIsUnreachable(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "repo")
	f, err := remote.CreateFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	h := remote.Handle{Type: remote.Pack, Name: remotetest.RandomName()}
	if err := f.Save(ctx, h, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	fresh := remote.Handle{Type: remote.Pack, Name: remotetest.RandomName()}
	if err := f.Save(ctx, fresh, []byte("x")); !errors.Is(err, remote.ErrUnreachable) {
		t.Errorf("save: %v, want ErrUnreachable", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("save recreated the missing repository directory (stat: %v)", err)
	}
	if _, err := f.Load(ctx, h, 0, 0); !errors.Is(err, remote.ErrUnreachable) {
		t.Errorf("load: %v, want ErrUnreachable", err)
	}
	if _, err := f.Stat(ctx, h); !errors.Is(err, remote.ErrUnreachable) {
		t.Errorf("stat: %v, want ErrUnreachable", err)
	}
	if err := f.List(ctx, remote.Pack, func(remote.Info) error { return nil }); !errors.Is(err, remote.ErrUnreachable) {
		t.Errorf("list: %v, want ErrUnreachable", err)
	}
}

// A repository created by an older version or by hand may lack type
// folders; Save creates them on demand.
func TestFileCreatesFoldersOnDemand(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	f, err := remote.NewFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	h := remote.Handle{Type: remote.Retention, Name: "policy"}
	if err := f.Save(ctx, h, []byte("r")); err != nil {
		t.Fatal(err)
	}
	got, err := remote.LoadAll(ctx, f, h)
	if err != nil || !bytes.Equal(got, []byte("r")) {
		t.Fatalf("load = %q, %v", got, err)
	}
}

func BenchmarkFileSave(b *testing.B) {
	f, err := remote.CreateFile(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	data := remotetest.RandomBytes(16 << 20)
	ctx := context.Background()
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		h := remote.Handle{Type: remote.Pack, Name: remotetest.RandomName()}
		if err := f.Save(ctx, h, data); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		_ = f.Remove(ctx, h) // keep the disk footprint flat
		b.StartTimer()
	}
}

func BenchmarkFileLoad(b *testing.B) {
	f, err := remote.CreateFile(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	h := remote.Handle{Type: remote.Pack, Name: remotetest.RandomName()}
	if err := f.Save(ctx, h, remotetest.RandomBytes(16<<20)); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(16 << 20)
	for b.Loop() {
		if _, err := remote.LoadAll(ctx, f, h); err != nil {
			b.Fatal(err)
		}
	}
}

// Partial uploads a killed writer left are swept (prune and erase call
// it under the exclusive lock), through the retry decorator too.
func TestFileRemoveTemp(t *testing.T) {
	dir := t.TempDir()
	f, err := remote.CreateFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	remotetest.CheckRemoveTemp(t, remote.WithRetry(f, remote.RetryOptions{}), dir)
}
