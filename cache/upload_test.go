package cache

import (
	"context"
	"testing"
	"time"

	"github.com/keepfs/keepfs/remote"
)

// TestUploaderHealsWithoutRestart: pack uploads fail three times in a row
// part way through the uploader's batch (the remote went away), and once
// they succeed again the background uploader drains the queue by itself,
// with no further sync and no restart. Status tells the truth meanwhile.
func TestUploaderHealsWithoutRestart(t *testing.T) {
	ctx := context.Background()
	mem := remote.NewMem()
	newRepo(t, mem)
	f := remote.NewFaulty(mem)
	r := reopenRepo(t, f)
	// Periodic snapshots on, as in a mount: should anything count as a
	// change after the walk, the uploader leaves the queue to the next
	// snapshot walk rather than ship what that walk has not decided.
	c := openCacheWith(t, r, Options{StateDir: t.TempDir(), SnapshotInterval: 2 * time.Second})
	defer func() {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		c.Close(cctx)
	}()
	// More than two 16 MiB packs, so packs are uploaded in the background
	// while the batch is still being saved.
	data := randBytes(21, 40<<20)
	ino := writeFile(t, c, c.Root(), "big", data)
	// Chunks are queued by a snapshot walk (never at commit); this one
	// gives up while the remote is away and leaves the rest to the
	// background uploader. (With only failing saves, a fast machine could
	// fail them all in one pass and finish the sync within its time.)
	// Until a failed contact is on record: on a loaded machine a short
	// sync can time out in the walk before it reaches the remote at all.
	f.Break()
	for end := time.Now().Add(60 * time.Second); c.Status().LastContactFailed == nil; {
		if time.Now().After(end) {
			t.Fatal("no failed contact recorded in 60 s of syncs against an unreachable remote")
		}
		sctx0, cancel0 := context.WithTimeout(ctx, 500*time.Millisecond)
		if _, err := c.Sync(sctx0); err == nil {
			t.Fatal("a sync finished while the remote was unreachable")
		}
		cancel0()
	}
	// The remote comes back, but its first pack saves still fail.
	f.FailNextSaves(remote.Pack, 3)
	f.Heal()

	sawFailure := false
	deadline := time.Now().Add(90 * time.Second)
	for {
		st := c.Status()
		if !st.RemoteReachable {
			sawFailure = true
			if st.LastContactFailed == nil || st.LastError == "" {
				t.Fatalf("unreachable without a failed contact: %+v", st)
			}
			if st.QueueBlobs > 0 && st.QueueSince == nil {
				t.Fatalf("a queue without its age: %+v", st)
			}
		}
		if st.QueueBlobs == 0 && f.Calls(remote.OpSave) > 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue not drained 90 s after the remote healed: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	st := c.Status()
	// The unreachable spell can be shorter than one poll on a loaded
	// machine (the retry 100 ms later succeeds); the record of the failed
	// contact is what must not be missing.
	if !sawFailure && st.LastContactFailed == nil {
		t.Fatal("status never recorded a failed contact while pack saves failed")
	}
	if !st.RemoteReachable || st.LastContactOK == nil || st.QueueSince != nil || st.QueueAgeSeconds != 0 {
		t.Fatalf("status after the queue drained: %+v", st)
	}
	if st.LastContactOK.Before(*st.LastContactFailed) {
		t.Fatalf("last success %v before last failure %v", st.LastContactOK, st.LastContactFailed)
	}
	// Everything it uploaded is indexed in the remote, not just in memory.
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := c.Sync(sctx); err != nil {
		t.Fatal(err)
	}
	fresh := reopenRepo(t, mem)
	if got, want := fresh.Index().Count(), r.Index().Count(); got != want {
		t.Fatalf("a fresh open indexes %d blobs, the mount %d", got, want)
	}
	wantContent(t, c, ino, data, "after healing")
}
