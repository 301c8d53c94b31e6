package history_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/archiver"
	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/history"
)

type fixture struct {
	t     *testing.T
	r     *repo.Repository
	src   string
	when  time.Time
	snaps []*repo.Snapshot
}

func newFixture(t *testing.T) *fixture {
	r, err := repo.Create(context.Background(), remote.NewMem(), []byte("pw"), repo.Options{KDF: &crypto.TestKDF})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, r: r, src: t.TempDir(), when: time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)}
}

func (f *fixture) write(p, content string) {
	f.t.Helper()
	full := filepath.Join(f.src, p)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) snapshot() *repo.Snapshot {
	f.t.Helper()
	f.when = f.when.Add(time.Hour)
	opts := archiver.Options{Now: func() time.Time { return f.when }}
	if len(f.snaps) > 0 {
		opts.Parent = f.snaps[len(f.snaps)-1]
	}
	sn, _, err := archiver.Import(context.Background(), f.r, f.src, opts)
	if err != nil {
		f.t.Fatal(err)
	}
	f.snaps = append(f.snaps, sn)
	return sn
}

func TestLogFollowsRenamesAndCollapses(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.write("docs/a.txt", "v1")
	f.snapshot() // 11:00 v1 at a.txt
	f.snapshot() // 12:00 unchanged
	f.write("docs/a.txt", "v2")
	f.snapshot() // 13:00 v2
	if err := os.Rename(filepath.Join(f.src, "docs/a.txt"), filepath.Join(f.src, "docs/b.txt")); err != nil {
		t.Fatal(err)
	}
	f.snapshot() // 14:00 renamed to b.txt
	f.write("docs/b.txt", "v3")
	f.snapshot() // 15:00 v3 at b.txt

	vs, err := history.Log(ctx, f.r, "/docs/b.txt")
	if err != nil {
		t.Fatal(err)
	}
	type row struct{ snap, path string }
	var got []row
	for _, v := range vs {
		got = append(got, row{v.Snapshot, v.Path})
	}
	want := []row{
		{"2026-11-28T110000Z", "/docs/a.txt"},
		{"2026-11-28T130000Z", "/docs/a.txt"},
		{"2026-11-28T140000Z", "/docs/b.txt"},
		{"2026-11-28T150000Z", "/docs/b.txt"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("log:\n got  %v\n want %v", got, want)
	}
	if vs[1].Content != vs[2].Content || vs[0].Content == vs[1].Content {
		t.Fatalf("content ids: %v", vs)
	}
	if _, err := history.Log(ctx, f.r, "/nope"); err == nil {
		t.Fatal("log of a missing file succeeded")
	}
}

func TestDiff(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.write("keep/same.txt", "same")
	f.write("edit.txt", "before")
	f.write("gone/x.txt", "x")
	f.write("old-name.txt", "moving content")
	a := f.snapshot()
	f.write("edit.txt", "after!")
	if err := os.RemoveAll(filepath.Join(f.src, "gone")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(f.src, "old-name.txt"), filepath.Join(f.src, "new-name.txt")); err != nil {
		t.Fatal(err)
	}
	f.write("new/y.txt", "y")
	b := f.snapshot()
	changes, err := history.Diff(ctx, f.r, a, b)
	if err != nil {
		t.Fatal(err)
	}
	want := []history.Change{
		{Kind: history.Modified, Path: "/edit.txt", Type: "file"},
		{Kind: history.Removed, Path: "/gone", Type: "dir"},
		{Kind: history.Removed, Path: "/gone/x.txt", Type: "file"},
		{Kind: history.Added, Path: "/new", Type: "dir"},
		{Kind: history.Renamed, Path: "/new-name.txt", From: "/old-name.txt", Type: "file"},
		{Kind: history.Added, Path: "/new/y.txt", Type: "file"},
	}
	if !reflect.DeepEqual(changes, want) {
		t.Fatalf("diff:\n got  %+v\n want %+v", changes, want)
	}
	if same, err := history.Diff(ctx, f.r, b, b); err != nil || len(same) != 0 {
		t.Fatalf("diff of a snapshot with itself: %v %v", same, err)
	}
}

func TestLogTable(t *testing.T) {
	type step func(f *fixture)
	write := func(p, c string) step { return func(f *fixture) { f.write(p, c) } }
	rename := func(a, b string) step {
		return func(f *fixture) {
			if err := os.Rename(filepath.Join(f.src, a), filepath.Join(f.src, b)); err != nil {
				f.t.Fatal(err)
			}
		}
	}
	remove := func(p string) step {
		return func(f *fixture) {
			if err := os.Remove(filepath.Join(f.src, p)); err != nil {
				f.t.Fatal(err)
			}
		}
	}
	// Each case is a list of snapshots, each taken after its steps ran.
	for _, tc := range []struct {
		name  string
		snaps [][]step
		path  string
		want  []string // "HH path size" per version
	}{
		{"unchanged file is one version",
			[][]step{{write("a", "x")}, nil, nil}, "/a",
			[]string{"11 /a 1"}},
		{"revert is a new version",
			[][]step{{write("a", "1")}, {write("a", "22")}, {write("a", "1")}}, "/a",
			[]string{"11 /a 1", "12 /a 2", "13 /a 1"}},
		{"rename and edit together follow the inode",
			[][]step{{write("d/a", "1"), write("other", "o")}, {rename("d/a", "d/e"), write("d/e", "22")}}, "/d/e",
			[]string{"11 /d/a 1", "12 /d/e 2"}},
		{"rename and edit from a subdirectory up follow the inode",
			[][]step{{write("a", "1")}, {write("d/x", "x"), rename("a", "d/e"), write("d/e", "22")}}, "/d/e",
			[]string{"11 /a 1", "12 /d/e 2"}},
		{"rename into another directory follows content",
			[][]step{{write("d/a", "same")}, {rename("d/a", "b")}}, "/b",
			[]string{"11 /d/a 4", "12 /b 4"}},
		{"deleted then recreated keeps both eras",
			[][]step{{write("a", "1")}, {remove("a")}, {write("a", "333")}}, "/a",
			[]string{"11 /a 1", "13 /a 3"}},
		{"file deleted since shows its past",
			[][]step{{write("a", "1"), write("z", "z")}, {remove("a")}}, "/a",
			[]string{"11 /a 1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			for _, steps := range tc.snaps {
				for _, s := range steps {
					s(f)
				}
				f.snapshot()
			}
			vs, err := history.Log(context.Background(), f.r, tc.path)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, v := range vs {
				got = append(got, fmt.Sprintf("%s %s %d", v.Snapshot[11:13], v.Path, v.Size))
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("log %s:\n got  %q\n want %q", tc.path, got, tc.want)
			}
		})
	}
}
