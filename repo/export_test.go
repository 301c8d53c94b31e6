package repo

import (
	"context"
	"encoding/json"

	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/index"
)

// WriteLockObject stores a lock object as another client (another host or
// process) would, for tests of conflicts and staleness.
func WriteLockObject(ctx context.Context, r *Repository, li LockInfo) (string, error) {
	b, err := json.Marshal(li)
	if err != nil {
		return "", err
	}
	name := randomName()
	return name, r.be.Save(ctx, remote.Handle{Type: remote.Lock, Name: name}, r.key.Seal(nil, b, []byte(lockAD)))
}

// IndexPackAgain stores an index segment naming pack id again, from its
// header, as a writer that recovered it would.
func IndexPackAgain(ctx context.Context, r *Repository, id crypto.ID) error {
	fi, err := r.be.Stat(ctx, remote.Handle{Type: remote.Pack, Name: id.String()})
	if err != nil {
		return err
	}
	blobs, err := r.loadPackHeader(ctx, id, fi.Size)
	if err != nil {
		return err
	}
	_, err = r.saveIndex(ctx, &index.Segment{Packs: []index.PackEntry{{ID: id, Size: fi.Size, Blobs: blobs}}})
	return err
}

// SetIndexCompaction sets when own index segments merge (more than
// mergeAt) and how many packs make a merged segment full, until the
// returned func restores the defaults.
func SetIndexCompaction(mergeAt, packs int) (restore func()) {
	a, p := ownMergeAt, mergedPacks
	ownMergeAt, mergedPacks = mergeAt, packs
	return func() { ownMergeAt, mergedPacks = a, p }
}

// SetAfterMerge sets a hook run after a merged index segment is stored,
// before the segments it supersedes are deleted; an error stops the merge
// there, as a kill would.
func SetAfterMerge(r *Repository, f func() error) {
	r.compactMu.Lock()
	r.afterMerge = f
	r.compactMu.Unlock()
}

// PackBuffersHeld is how many pack buffers the writer holds: the packer's
// (unless idle) and the recycled ones.
func PackBuffersHeld(r *Repository) int {
	w := r.w
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(w.bufs)
	if !w.idle {
		n++
	}
	return n
}
