package remotetest

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keepfs/keepfs/remote"
)

// CheckRemoveTemp tests the remote.TempSweeper of a directory-shaped store
// s whose repository directory is dir on this machine: partial uploads
// planted where a killed Save leaves them (beside objects, in a pack
// fan-out folder, beside config) are deleted, counted with their bytes,
// and every object stays.
func CheckRemoveTemp(t *testing.T, s remote.Storage, dir string) {
	t.Helper()
	ctx := context.Background()
	h := remote.Handle{Type: remote.Pack, Name: RandomName()}
	obj := RandomBytes(50_000)
	if err := s.Save(ctx, h, obj); err != nil {
		t.Fatal(err)
	}
	planted := map[string]int{
		"packs/" + h.Name[:2] + "/" + remote.TempPrefix + "a1": 70_000,
		"index/" + remote.TempPrefix + "b2":                    3_000,
		remote.TempPrefix + "c3":                               10,
	}
	var want int64
	for rel, n := range planted {
		if err := os.WriteFile(filepath.Join(dir, filepath.FromSlash(rel)), RandomBytes(n), 0o600); err != nil {
			t.Fatal(err)
		}
		want += int64(n)
	}
	if _, ok := s.(remote.TempSweeper); !ok {
		t.Fatalf("%T does not sweep partial uploads", s)
	}
	got, err := remote.RemoveTemp(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if got.Objects != len(planted) || got.Bytes != want {
		t.Fatalf("RemoveTemp = %+v, want %d objects of %d bytes", got, len(planted), want)
	}
	var left []string
	var size int64
	if err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), remote.TempPrefix) {
			left = append(left, p)
		}
		if !d.IsDir() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			size += fi.Size()
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Fatalf("partial uploads left: %v", left)
	}
	if size < int64(len(obj)) || size >= int64(len(obj))+want {
		t.Fatalf("the repository holds %d bytes after the sweep: want the object's %d plus small files, none of the %d planted", size, len(obj), want)
	}
	if b, err := remote.LoadAll(ctx, s, h); err != nil || len(b) != len(obj) {
		t.Fatalf("object after the sweep: %d bytes, %v", len(b), err)
	}
	if again, err := remote.RemoveTemp(ctx, s); err != nil || again != (remote.TempRemoved{}) {
		t.Fatalf("second sweep = %+v, %v: want nothing", again, err)
	}
}
