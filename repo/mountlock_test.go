package repo_test

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo"
)

// A mount's lock is refused while another live mount holds one, and only
// then: a crashed mount's own leftover goes, other writers' shared locks
// and stale mount locks do not stop it.
func TestLockMount(t *testing.T) {
	ctx := context.Background()
	host, _ := os.Hostname()
	write := func(t *testing.T, r *repo.Repository, purpose, owner, host string, at time.Time) {
		t.Helper()
		_, err := repo.WriteLockObject(ctx, r, repo.LockInfo{Kind: repo.SharedLock, Purpose: purpose, Owner: owner,
			Host: host, PID: os.Getppid(), Created: at, Time: at})
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name               string
		purpose, owner, on string
		age                time.Duration
		ok                 bool
		locksAfter         int
	}{
		{"another live mount", repo.MountPurpose, "other", host, 0, false, 1},
		{"another live mount elsewhere", repo.MountPurpose, "other", "elsewhere", time.Minute, false, 1},
		{"our own leftover", repo.MountPurpose, "us", host, 0, true, 1},
		{"an import beside it", "import", "other", host, 0, true, 2},
		{"a stale mount elsewhere (removed)", repo.MountPurpose, "other", "elsewhere", repo.DefaultLockStale + time.Second, true, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, r := newRepo(t)
			write(t, r, tc.purpose, tc.owner, tc.on, time.Now().Add(-tc.age))
			l, err := r.LockMount(ctx, repo.LockOptions{Owner: "us", NoRefresh: true})
			if tc.ok != (err == nil) {
				t.Fatalf("mount lock: %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, repo.ErrMounted) {
				t.Fatalf("refused without ErrMounted: %v", err)
			}
			infos, lerr := r.Locks(ctx)
			if lerr != nil {
				t.Fatal(lerr)
			}
			if len(infos) != tc.locksAfter {
				t.Fatalf("%d lock objects after, want %d", len(infos), tc.locksAfter)
			}
			if l != nil {
				if li := l.Info(); li.Purpose != repo.MountPurpose || li.Kind != repo.SharedLock || li.Owner != "us" {
					t.Fatalf("took %+v", li)
				}
				l.Release(ctx)
			}
		})
	}
	if _, err := (func() (*repo.Lock, error) {
		_, r := newRepo(t)
		return r.LockMount(ctx, repo.LockOptions{NoRefresh: true})
	})(); err == nil {
		t.Fatal("a mount lock without an owner was taken")
	}
}

// Found by the multi-client soak: a mount whose lock lapsed (its daemon
// stopped past the stale time) while another client mounted took its lock
// back beside that live mount, and both took writes and snapshots of their
// own trees. Taking a lapsed mount lock again is refused like a new mount,
// and works once the other mount is gone.
func TestLapsedMountLockRefusedBesideNewMount(t *testing.T) {
	ctx := context.Background()
	be, r := newRepo(t)
	relocked := 0
	l, err := r.LockMount(ctx, repo.LockOptions{Owner: "us", NoRefresh: true,
		OnRelock: func(context.Context) error { relocked++; return nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release(ctx)
	// Another machine took our lock for stale and mounted.
	_ = be.Remove(ctx, remote.Handle{Type: remote.Lock, Name: l.Info().Name})
	other, err := repo.WriteLockObject(ctx, r, repo.LockInfo{Kind: repo.SharedLock, Purpose: repo.MountPurpose, Owner: "other",
		Host: "elsewhere", PID: 1, Created: time.Now(), Time: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Refresh(ctx); !errors.Is(err, repo.ErrMounted) {
		t.Fatalf("re-taking a lapsed mount lock beside a live mount: %v, want ErrMounted", err)
	}
	if err := r.Writable(); !errors.Is(err, repo.ErrLockLapsed) {
		t.Fatalf("writable beside another live mount: %v", err)
	}
	if relocked != 0 {
		t.Fatal("OnRelock ran although the lock was not taken")
	}
	// The other mount goes: ours comes back.
	_ = be.Remove(ctx, remote.Handle{Type: remote.Lock, Name: other})
	if err := l.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.Writable(); err != nil || relocked != 1 {
		t.Fatalf("after the other mount left: writable %v, relocked %d", err, relocked)
	}
}
