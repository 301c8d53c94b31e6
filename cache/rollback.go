package cache

import (
	"context"
	"errors"
	"fmt"

	"github.com/keepfs/keepfs/policy/notify"
	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo"
)

// A remote can go back to an older copy of itself under a mount: a
// provider restores its storage from a backup of it, or an attacker
// replays one. What the mount stored since is gone, while its local index
// still names those packs and its tree cache those trees; left so, every
// later snapshot would deduplicate against blobs the remote lost, and the
// index it merges at unmount would name them again for every client.
//
// The mount notices at the latest when it next stores a snapshot (its
// parent, the last snapshot it stored, is gone: only this mount's own
// prune or erase removes it while it holds its lock, and both update the
// last snapshot), or at its next scrub (the guard's rollback event). It
// then loads the index again (the local index store drops the segments
// the remote lost), drops the tree cache and forgets the last snapshot.
// A mount that starts after such a rollback needs nothing more: its index
// load drops the lost segments, the tree cache keeps only trees the index
// holds (Trees.Load), and a last snapshot that cannot be loaded is no
// parent. A merge of this handle's own segments checks that the remote
// still holds them (Repository.ownStillStored). The next
// walk uploads again every chunk the remote lacks that is still kept
// locally (eviction keeps what the index lacks) and reports the files
// whose chunks were evicted meanwhile as lost, as for a power loss.

// Resync brings the mount in line with a remote that lost what it stored
// (a rollback the scrub's guard saw), holding snapshots and uploads
// meanwhile.
func (c *Cache) Resync(ctx context.Context) error {
	defer c.holdForRewrite()()
	return c.resync(ctx)
}

// parentGone reports whether the remote lost the snapshot parent, the
// last one this mount stored; if so it resyncs first. The snapshot
// scheduler calls it before it stores a snapshot, after the drain, with
// snapshots held.
func (c *Cache) parentGone(ctx context.Context, parent *repo.Snapshot) (bool, error) {
	// While the lock is lapsed another client may prune (reconcile deals
	// with that at the relock), and nothing can be stored anyway.
	if err := c.r.Writable(); err != nil {
		return false, err
	}
	_, err := c.r.Backend().Stat(ctx, remote.Handle{Type: remote.Snapshot, Name: parent.ID.String()})
	if err == nil || !errors.Is(err, remote.ErrNotFound) {
		return false, err
	}
	c.r.Raise(notify.Event{Type: notify.TypeMissing, Severity: notify.Critical, Object: "snapshots/" + parent.ID.String(),
		Message: "snapshot " + parent.ID.Short() + ", the last this mount stored, is gone from the remote: what the mount stored since is uploaded again"})
	releaseUp := c.up.Hold()
	defer releaseUp()
	defer c.chunks.PauseEviction()()
	// Not cut short by the caller's deadline (a sync's quick check): the
	// remote calls retry for a bounded time each.
	return true, c.resync(context.WithoutCancel(ctx))
}

// resync reloads the index, drops the tree cache and forgets the last
// snapshot if the remote lost it; uploads and snapshots are held.
func (c *Cache) resync(ctx context.Context) error {
	c.log.Warn("the remote lost data this mount stored (it went back to an older copy of itself); reloading the index, and the next snapshot uploads again what is still kept locally")
	if err := c.r.ReloadIndex(ctx); err != nil {
		return fmt.Errorf("reload the index: %w", err)
	}
	last := c.snap.DropTrees()
	if last != nil {
		_, err := c.r.Backend().Stat(ctx, remote.Handle{Type: remote.Snapshot, Name: last.ID.String()})
		if errors.Is(err, remote.ErrNotFound) {
			c.snap.ForgetLast(last)
		} else if err != nil {
			return err
		}
	}
	gen, err := c.r.Generation(ctx)
	if err != nil {
		return err
	}
	if err := c.recordGeneration(gen); err != nil {
		return err
	}
	c.log.Info("the mount is in line with the remote again; its next snapshot uploads what the remote lost")
	// The set of snapshots changed: .versions lists the remote's again.
	fns, newest := c.snap.Callbacks()
	go func() {
		for _, fn := range fns {
			fn(newest)
		}
	}()
	return nil
}
