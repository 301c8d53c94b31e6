package history_test

import (
	"context"
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
