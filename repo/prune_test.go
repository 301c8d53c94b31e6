package repo_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/pack"
	"github.com/keepfs/keepfs/repo/repotest"
)

func TestRetentionApply(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	var snaps []*repo.Snapshot
	// One snapshot every 6 hours for 90 days, newest at now.
	for i := 0; i < 90*4; i++ {
		s := &repo.Snapshot{Time: now.Add(-time.Duration(i) * 6 * time.Hour)}
		s.ID[0], s.ID[1] = byte(i), byte(i>>8)
		snaps = append(snaps, s)
	}
	kept := func(p repo.Retention, snaps []*repo.Snapshot) []string {
		var out []string
		for _, d := range p.Apply(snaps, now) {
			if d.Keep {
				out = append(out, d.Snapshot.Time.Format("01-02T15"))
			}
		}
		return out
	}
	for _, tc := range []struct {
		name string
		p    repo.Retention
		want int
		has  []string
	}{
		{"zero keeps all", repo.Retention{}, 360, nil},
		{"keep-within 24h", repo.Retention{KeepWithin: 24 * time.Hour}, 5, []string{"11-28T12", "11-27T12"}},
		{"hourly 3", repo.Retention{Hourly: 3}, 3, []string{"11-28T12", "11-28T06", "11-28T00"}},
		{"daily 2", repo.Retention{Daily: 2}, 2, []string{"11-28T12", "11-27T18"}},
		{"weekly 2", repo.Retention{Weekly: 2}, 2, []string{"11-28T12", "11-22T18"}},
		{"monthly 3", repo.Retention{Monthly: 3}, 3, []string{"11-28T12", "10-31T18", "09-30T18"}},
		{"max-age overrides", repo.Retention{Monthly: 12, MaxAge: 45 * 24 * time.Hour}, 2, []string{"11-28T12", "10-31T18"}},
		{"max-age alone", repo.Retention{MaxAge: 24 * time.Hour}, 5, nil},
	} {
		got := kept(tc.p, snaps)
		if len(got) != tc.want {
			t.Errorf("%s: kept %d (%v), want %d", tc.name, len(got), got, tc.want)
		}
		for _, h := range tc.has {
			found := false
			for _, g := range got {
				found = found || g == h
			}
			if !found {
				t.Errorf("%s: %s not kept (%v)", tc.name, h, got)
			}
		}
	}
}

// A repository left alone for longer than keep-within keeps its newest
// snapshot; only max-age may take that one.
func TestRetentionKeepsNewest(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	var snaps []*repo.Snapshot
	for i := 0; i < 10; i++ { // daily, the newest a week old
		s := &repo.Snapshot{Time: now.Add(-time.Duration(7+i) * 24 * time.Hour)}
		s.ID[0] = byte(i)
		snaps = append(snaps, s)
	}
	keep := func(p repo.Retention) (kept []time.Time) {
		for _, d := range p.Apply(snaps, now) {
			if d.Keep {
				kept = append(kept, d.Snapshot.Time)
			}
		}
		return kept
	}
	if got := keep(repo.Retention{KeepWithin: 24 * time.Hour}); len(got) != 1 || !got[0].Equal(snaps[0].Time) {
		t.Errorf("keep-within 24h over week-old snapshots kept %v, want only the newest %v", got, snaps[0].Time)
	}
	if got := keep(repo.Retention{KeepWithin: 24 * time.Hour, MaxAge: 3 * 24 * time.Hour}); len(got) != 0 {
		t.Errorf("max-age 3d kept %v, want none", got)
	}
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"24h": 24 * time.Hour, "30d": 30 * 24 * time.Hour, "2y": 2 * 365 * 24 * time.Hour,
		"1y6mo": (365 + 180) * 24 * time.Hour, "1d30m": 24*time.Hour + 30*time.Minute, "12w": 84 * 24 * time.Hour, "0": 0,
	} {
		got, err := repo.ParseDuration(in)
		if err != nil || got != want {
			t.Errorf("%s: %v %v", in, got, err)
		}
		if want > 0 {
			back, _ := repo.ParseDuration(repo.FormatDuration(want))
			if back != want {
				t.Errorf("format round trip of %s: %s", in, repo.FormatDuration(want))
			}
		}
	}
	for _, bad := range []string{"x", "12", "3q", "-1h", "d"} {
		if _, err := repo.ParseDuration(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestRetentionStored(t *testing.T) {
	ctx := context.Background()
	be, r := newRepo(t)
	p := repo.Retention{KeepWithin: time.Hour, Daily: 7, MaxAge: 730 * 24 * time.Hour, Set: time.Now().UTC()}
	if err := r.SetRetention(ctx, p); err != nil {
		t.Fatal(err)
	}
	p.Daily = 8
	p.Set = p.Set.Add(time.Second)
	if err := r.SetRetention(ctx, p); err != nil {
		t.Fatal(err)
	}
	got, err := reopen(t, be).Retention(ctx)
	if err != nil || !reflect.DeepEqual(got.String(), p.String()) {
		t.Fatalf("stored policy %v, %v; want %v", got, err, p)
	}
	n := 0
	_ = be.List(ctx, remote.Retention, func(remote.Info) error { n++; return nil })
	if n != 1 {
		t.Fatalf("%d retention objects", n)
	}
}

// Prune after forgetting old snapshots leaves exactly the live data, and a
// crash at any remote operation leaves a repository that checks clean and
// that a second prune finishes.
func TestPruneRemovesDeadDataAndIsCrashSafe(t *testing.T) {
	ctx := context.Background()
	for failAt := -1; failAt < 12; failAt++ {
		t.Run(fmt.Sprintf("fail-after-%d-removes", failAt), func(t *testing.T) {
			mem := remote.NewMem()
			r, err := repo.Create(ctx, mem, pw, repo.Options{KDF: &crypto.TestKDF})
			if err != nil {
				t.Fatal(err)
			}
			day := func(d int) time.Time { return time.Date(2026, 1, 1+d, 12, 0, 0, 0, time.UTC) }
			shared := randBytes(200 << 10)
			old := randBytes(300 << 10)
			saveSnapshot(t, r, day(0), map[string][]byte{"old": old, "shared": shared})
			s2 := saveSnapshot(t, r, day(10), map[string][]byte{"new": randBytes(300 << 10), "shared": shared})
			if err := r.SetRetention(ctx, repo.Retention{MaxAge: 5 * 24 * time.Hour}); err != nil {
				t.Fatal(err)
			}
			oldID := r.Key().BlobID(old)

			crash := &crashAfter{Storage: mem, removes: failAt}
			r2, err := repo.Open(ctx, crash, pw, repo.Options{})
			if err != nil {
				t.Fatal(err)
			}
			res, err := r2.Prune(ctx, repo.PruneOptions{Now: day(11)})
			if failAt < 0 && err != nil {
				t.Fatal(err)
			}
			// Whatever happened, the repository is sound.
			chk, err := reopen(t, mem).Check(ctx, repo.CheckOptions{ReadData: true})
			if err != nil || chk.Errors() != 0 {
				t.Fatalf("check after prune (fail at %d): %v %v", failAt, chk.Problems, err)
			}
			if failAt >= 0 {
				if _, err = reopen(t, mem).Prune(ctx, repo.PruneOptions{Now: day(11)}); err != nil {
					t.Fatal(err)
				}
			} else if len(res.SnapshotsRemoved) != 1 || res.PacksRewritten+res.PacksDeleted == 0 || res.BlobsRemoved == 0 {
				t.Fatalf("prune result %+v", res)
			}
			r3 := reopen(t, mem)
			if r3.Index().Has(pack.Data, oldID) {
				t.Fatal("data only the forgotten snapshot used survived the prune")
			}
			snaps, _ := r3.Snapshots(ctx)
			if len(snaps) != 1 || snaps[0].ID != s2.ID {
				t.Fatalf("snapshots after prune: %v", snaps)
			}
			// No dead bytes remain: a second prune finds nothing to do.
			again, err := r3.Prune(ctx, repo.PruneOptions{Now: day(11)})
			if err != nil || again.BlobsRemoved != 0 || again.PacksRewritten != 0 {
				t.Fatalf("second prune: %+v %v", again, err)
			}
			chk, err = reopen(t, mem).Check(ctx, repo.CheckOptions{ReadData: true})
			if err != nil || len(chk.Problems) != 0 {
				t.Fatalf("final check: %v %v", chk.Problems, err)
			}
			for _, f := range []string{"new", "shared"} {
				n, err := r3.Lookup(ctx, snaps[0].Tree, "/"+f)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := r3.LoadBlob(ctx, pack.Data, n.Content[0]); err != nil {
					t.Fatalf("%s lost: %v", f, err)
				}
			}
		})
	}
}

func TestPruneDryRunChangesNothing(t *testing.T) {
	ctx := context.Background()
	be, r := newRepo(t)
	saveSnapshot(t, r, time.Now().Add(-48*time.Hour), map[string][]byte{"a": randBytes(1000)})
	saveSnapshot(t, r, time.Now(), map[string][]byte{"b": randBytes(1000)})
	_ = r.SetRetention(ctx, repo.Retention{KeepWithin: time.Hour})
	before := objects(t, be)
	res, err := r.Prune(ctx, repo.PruneOptions{DryRun: true})
	if err != nil || len(res.SnapshotsRemoved) != 1 || res.BlobsRemoved == 0 {
		t.Fatalf("dry run: %+v %v", res, err)
	}
	if after := objects(t, be); !reflect.DeepEqual(before, after) {
		t.Fatalf("dry run changed the remote:\n%v\n%v", before, after)
	}
}

// Scripts iterate --json's snapshots_removed: a prune that removes no
// snapshot reports an empty list, not null.
func TestPruneResultListsNoSnapshotsAsEmpty(t *testing.T) {
	_, r := newRepo(t)
	saveSnapshot(t, r, time.Now(), map[string][]byte{"a": randBytes(1000)})
	for _, dry := range []bool{true, false} {
		res, err := r.Prune(context.Background(), repo.PruneOptions{DryRun: dry})
		if err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(res)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), `"snapshots_removed":[]`) {
			t.Fatalf("dry run %v: %s", dry, b)
		}
	}
}

func objects(t *testing.T, be remote.Storage) []string {
	var out []string
	for _, ty := range remote.Types {
		_ = be.List(context.Background(), ty, func(fi remote.Info) error {
			out = append(out, fi.Handle.String())
			return nil
		})
	}
	sort.Strings(out)
	return out
}

// crashAfter lets the first n removes through and fails every later one,
// as if the process died there (n < 0: never).
type crashAfter struct {
	remote.Storage
	removes int
}

func (c *crashAfter) Remove(ctx context.Context, h remote.Handle) error {
	if c.removes == 0 {
		return fmt.Errorf("simulated crash before removing %s", h)
	}
	c.removes--
	return c.Storage.Remove(ctx, h)
}

// Prune deletes in two phases: a dead pack is marked and dropped from the
// index, still readable during the grace period, and deleted by a prune
// after it, unless an index segment names it again by then (a writer whose
// lock lapsed recovered and indexed it).
func TestPruneDeletesInTwoPhases(t *testing.T) {
	ctx := context.Background()
	day := func(d int) time.Time { return time.Date(2026, 1, 1+d, 12, 0, 0, 0, time.UTC) }
	for _, resurrect := range []bool{false, true} {
		t.Run(fmt.Sprintf("reindexed=%v", resurrect), func(t *testing.T) {
			mem, r := newRepo(t)
			old := randBytes(300 << 10)
			saveSnapshot(t, r, day(0), map[string][]byte{"old": old})
			saveSnapshot(t, r, day(10), map[string][]byte{"new": randBytes(300 << 10)})
			if err := r.SetRetention(ctx, repo.Retention{MaxAge: 5 * 24 * time.Hour}); err != nil {
				t.Fatal(err)
			}
			oldID := r.Key().BlobID(old)
			loc, ok := r.Index().Lookup(pack.Data, oldID)
			if !ok {
				t.Fatal("old blob not indexed")
			}
			packsBefore := countObjects(t, mem, remote.Pack)
			res, err := reopen(t, mem).Prune(ctx, repo.PruneOptions{Now: day(11)})
			if err != nil {
				t.Fatal(err)
			}
			if res.PacksMarked == 0 || res.PacksFreed != 0 || res.Generation == 0 {
				t.Fatalf("first prune: %+v", res)
			}
			r2 := reopen(t, mem)
			if r2.Index().Has(pack.Data, oldID) {
				t.Fatal("a marked blob is still indexed")
			}
			if n := countObjects(t, mem, remote.Pack); n != packsBefore {
				t.Fatalf("packs went from %d to %d in the marking run", packsBefore, n)
			}
			// Still readable where the old index put it, and not an
			// unindexed-pack warning for check.
			if _, err := mem.Load(ctx, remote.Handle{Type: remote.Pack, Name: loc.Pack.String()}, int64(loc.Offset), int64(loc.Length)); err != nil {
				t.Fatalf("marked pack unreadable during the grace period: %v", err)
			}
			chk, err := r2.Check(ctx, repo.CheckOptions{})
			if err != nil || len(chk.Problems) != 0 || chk.PacksPendingDeletion == 0 {
				t.Fatalf("check during the grace period: %+v %v", chk, err)
			}
			if resurrect {
				if err := repo.IndexPackAgain(ctx, r2, loc.Pack); err != nil {
					t.Fatal(err)
				}
				// ...and names the old content in a snapshot of its own.
				w := reopen(t, mem)
				saveSnapshot(t, w, day(11), map[string][]byte{"old-again": old})
				if st := w.Stats(); st.BlobsNew != 1 { // the tree only
					t.Fatalf("the writer uploaded the old content again: %+v", st)
				}
			}
			// Too early: nothing is deleted.
			early, err := reopen(t, mem).Prune(ctx, repo.PruneOptions{Now: day(11).Add(repo.DefaultGrace / 2)})
			if err != nil || early.PacksFreed != 0 {
				t.Fatalf("prune within the grace period: %+v %v", early, err)
			}
			late, err := reopen(t, mem).Prune(ctx, repo.PruneOptions{Now: day(11).Add(2 * repo.DefaultGrace)})
			if err != nil {
				t.Fatal(err)
			}
			_, statErr := mem.Stat(ctx, remote.Handle{Type: remote.Pack, Name: loc.Pack.String()})
			if resurrect {
				// Kept, or copied into a new pack if it held dead blobs too.
				if _, err := reopen(t, mem).LoadBlob(ctx, pack.Data, oldID); err != nil {
					t.Fatalf("content a writer indexed again was lost: %v", err)
				}
			} else if late.PacksFreed == 0 || !errors.Is(statErr, remote.ErrNotFound) {
				t.Fatalf("prune after the grace period: %+v, pack: %v", late, statErr)
			}
			if n := countObjects(t, mem, remote.Trash); n != 0 {
				t.Fatalf("%d deletion marks left", n)
			}
			chk, err = reopen(t, mem).Check(ctx, repo.CheckOptions{ReadData: true})
			if err != nil || chk.Errors() != 0 {
				t.Fatalf("final check: %v %v", chk.Problems, err)
			}
		})
	}
}

// plantPartialUploads writes files where a Save killed mid-upload leaves
// them in a file repository at dir, and returns their total size.
func plantPartialUploads(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	for _, rel := range []string{"packs/" + remote.TempPrefix + "x1", "index/" + remote.TempPrefix + "x2"} {
		b := randBytes(40_000)
		if err := os.WriteFile(filepath.Join(dir, rel), b, 0o600); err != nil {
			t.Fatal(err)
		}
		n += int64(len(b))
	}
	return n
}

// Prune deletes the partial uploads interrupted writers left: listings
// never show them, so nothing else would, and they hold repository data.
func TestPruneRemovesPartialUploads(t *testing.T) {
	ctx := context.Background()
	dir, r := repotest.CreateFile(t)
	saveSnapshot(t, r, time.Now(), map[string][]byte{"a": randBytes(1000)})
	planted := plantPartialUploads(t, dir)
	before := dirSize(t, dir)

	dry, err := r.Prune(ctx, repo.PruneOptions{DryRun: true})
	if err != nil || dry.PartialUploads != 0 || dirSize(t, dir) != before {
		t.Fatalf("dry run: %+v, %v; repository %d bytes, was %d", dry, err, dirSize(t, dir), before)
	}
	res, err := r.Prune(ctx, repo.PruneOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.PartialUploads != 2 || res.PartialUploadsBytes != planted {
		t.Fatalf("prune removed %d partial uploads of %d bytes, want 2 of %d", res.PartialUploads, res.PartialUploadsBytes, planted)
	}
	if after := dirSize(t, dir); after > before-planted {
		t.Fatalf("repository %d bytes after prune, want at most %d", after, before-planted)
	}
	if chk, err := r.Check(ctx, repo.CheckOptions{ReadData: true}); err != nil || chk.Errors() != 0 {
		t.Fatalf("check: %v %v", chk, err)
	}
}

func dirSize(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	if err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		n += fi.Size()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// Found by the multi-client soak: with a mount and an import writing to
// one repository, keep-within forgot the mount's only snapshot (its
// current data) because the import's was newer, and prune marked its data
// for deletion. The newest snapshot of each source (host and source) is
// current data, kept as the newest of the repository is; max-age still
// removes it.
func TestRetentionKeepsNewestOfEachSource(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	mk := func(i int, age time.Duration, host, source string) *repo.Snapshot {
		s := &repo.Snapshot{Time: now.Add(-age), Hostname: host, Source: source}
		s.ID[0] = byte(i)
		return s
	}
	snaps := []*repo.Snapshot{
		mk(1, 3*time.Hour, "laptop", "keepfs mount"), // the mount's current data
		mk(2, 4*time.Hour, "laptop", "keepfs mount"),
		mk(3, 2*time.Hour, "server", "/srv/data"),
		mk(4, time.Minute, "server", "/srv/data"), // the newest of all
		mk(5, 5*time.Hour, "server", "/etc"),      // another source of the same host
	}
	kept := map[byte]bool{}
	for _, d := range (repo.Retention{KeepWithin: time.Hour}).Apply(snaps, now) {
		if d.Keep {
			kept[d.Snapshot.ID[0]] = true
		}
	}
	for id, want := range map[byte]bool{1: true, 2: false, 3: false, 4: true, 5: true} {
		if kept[id] != want {
			t.Errorf("snapshot %d kept=%v, want %v (kept %v)", id, kept[id], want, kept)
		}
	}
	for _, d := range (repo.Retention{KeepWithin: time.Hour, MaxAge: 150 * time.Minute}).Apply(snaps, now) {
		if d.Keep != (d.Snapshot.ID[0] == 4) {
			t.Errorf("with max-age 150m: snapshot %d kept=%v, want only 4", d.Snapshot.ID[0], d.Keep)
		}
	}
}
