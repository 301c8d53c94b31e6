package repo

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/keepfs/keepfs/remote"
)

// ErrMounted means another live mount holds the repository's mount lock.
var ErrMounted = errors.New("repository is mounted elsewhere (another live mount holds its lock); unmount it first, or wait for its lock to go stale")

// MountPurpose is the purpose of a mount's lock.
const MountPurpose = "mount"

// LockMount takes the lock a mount holds: the shared lock of a writer,
// with opts.Owner (required: the mount's state directory) as its owner.
// It refuses, with ErrMounted, while another live mount holds one: two
// mounts would each take snapshots of their own tree. A lock of the same
// owner is one a crashed mount of the same state directory left (the
// caller holds that directory's flock, so no live process holds it): it is
// removed. opts.Kind and opts.Purpose are set here; the rest (Wait,
// OnRelock, ...) is the caller's, as for Lock. An unreachable remote is no
// licence to go without a lock: the error is returned and the caller may
// retry.
func (r *Repository) LockMount(ctx context.Context, opts LockOptions) (*Lock, error) {
	if opts.Owner == "" {
		return nil, errors.New("a mount's lock needs its owner")
	}
	host, _ := os.Hostname()
	infos, err := r.Locks(ctx)
	if err != nil {
		return nil, err
	}
	for _, li := range infos {
		if li.Owner == opts.Owner {
			_ = r.Backend().Remove(ctx, remote.Handle{Type: remote.Lock, Name: li.Name})
			continue
		}
		if li.Purpose != MountPurpose || LockStale(li, time.Now(), host) {
			continue
		}
		return nil, fmt.Errorf("%w (%s)", ErrMounted, li)
	}
	opts.Kind, opts.Purpose = SharedLock, MountPurpose
	return r.Lock(ctx, opts)
}
