package repo_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/tree"
)

// pausingStore runs hold before a snapshot's Save reaches the store: a
// client paused there (SIGSTOP, a suspended machine, a Save the retry
// layer kept trying for minutes) after its Writable check passed.
type pausingStore struct {
	remote.Storage
	mu   sync.Mutex
	hold func()
}

func (p *pausingStore) Save(ctx context.Context, h remote.Handle, data []byte) error {
	if h.Type == remote.Snapshot {
		p.mu.Lock()
		hold := p.hold
		p.hold = nil
		p.mu.Unlock()
		if hold != nil {
			hold()
		}
	}
	return p.Storage.Save(ctx, h, data)
}

// A snapshot whose Save outlasted the lock (another client took the lock
// for stale meanwhile and may have pruned or erased what the snapshot
// names) is not left in the repository, whether or not the lock was taken
// again before the Save returned. A mount paused (SIGSTOP) inside its
// snapshot's Save past the stale time, while another host erased a file
// the snapshot names, would store on resume a snapshot naming the erased
// file and its deleted blobs. On a file store the erase's removal of
// partial uploads happened to take the half-written object away first (the
// soak); a store whose Save is one request (an S3 PUT) has no such object.
func TestSnapshotSavedAcrossALapseIsNotKept(t *testing.T) {
	for _, relock := range []bool{false, true} {
		name := "lapsed"
		if relock {
			name = "relocked"
		}
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			mem, _ := newRepo(t)
			ps := &pausingStore{Storage: mem}
			r, err := repo.Open(ctx, ps, pw, repo.Options{})
			if err != nil {
				t.Fatal(err)
			}
			clock, advance := settableClock()
			l, err := r.Lock(ctx, repo.LockOptions{Kind: repo.SharedLock, Purpose: "mount", NoRefresh: true, Now: clock})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Release(ctx)
			tid, err := r.SaveTree(ctx, &tree.Tree{})
			if err != nil {
				t.Fatal(err)
			}
			ps.hold = func() {
				// Paused past the stale time: another client removed the
				// lock as stale (and pruned or erased meanwhile).
				advance(repo.DefaultLockStale + time.Second)
				if err := mem.Remove(ctx, remote.Handle{Type: remote.Lock, Name: l.Info().Name}); err != nil {
					t.Error(err)
				}
				if relock {
					// The refresh loop ran first on resume and took the
					// lock again before the Save went on.
					if err := l.Refresh(ctx); err != nil {
						t.Error(err)
					}
					if err := r.Writable(); err != nil {
						t.Errorf("not writable after the relock: %v", err)
					}
				}
			}
			err = r.SaveSnapshot(ctx, &repo.Snapshot{Time: time.Now(), Tree: tid})
			if !errors.Is(err, repo.ErrLockLapsed) {
				t.Errorf("snapshot saved across a lapse: err %v, want ErrLockLapsed", err)
			}
			if n := countObjects(t, mem, remote.Snapshot); n != 0 {
				t.Errorf("%d snapshots in the repository, saved while the lock had lapsed", n)
			}
			// Once the lock is held again, the next snapshot is stored.
			if !relock {
				if err := l.Refresh(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if err := r.SaveSnapshot(ctx, &repo.Snapshot{Time: time.Now(), Tree: tid}); err != nil {
				t.Fatal(err)
			}
			if n := countObjects(t, mem, remote.Snapshot); n != 1 {
				t.Errorf("%d snapshots after a save under a held lock, want 1", n)
			}
		})
	}
}
