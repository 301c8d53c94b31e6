package repo

import (
	"context"
	"errors"
	"time"

	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/index"
)

// pickUpEvery bounds how often PickUpSegments lists the index after it
// found nothing: a snapshot whose tree no segment names (damage, raised
// elsewhere) must not make every listing of .versions list it again.
var pickUpEvery = 5 * time.Second

// PickUpSegments adds to the index the packs of segments other clients
// stored since it was loaded, so that a mount can read their snapshots
// (an import beside it) without loading the index again. It only adds:
// segments gone since stay until the next LoadIndex. It skips a segment
// that another listed one supersedes, and does nothing while the
// repository's generation differs from the one the index was loaded at,
// or moved while it ran (a prune or erase, which may delete the packs a
// segment listed before it names; LoadIndex, under the lock, is for
// that), or when it found nothing less than pickUpEvery ago or a load is
// under way.
// It returns how many segments it added. Only a handle with a persistent
// index store (a mount's, SetIndexStore) picks up: the store knows the
// generation its content matches.
func (r *Repository) PickUpSegments(ctx context.Context) (int, error) {
	if r.persist == nil {
		return 0, nil
	}
	if !r.loadMu.TryLock() {
		return 0, nil
	}
	defer r.loadMu.Unlock()
	if time.Since(r.pickedAt) < pickUpEvery {
		return 0, nil
	}
	n, err := r.pickUp(ctx)
	if n == 0 {
		// Only a futile pick-up waits: one that found segments may be
		// followed at once by the next snapshot's.
		r.pickedAt = time.Now()
	}
	return n, err
}

func (r *Repository) pickUp(ctx context.Context) (int, error) {
	gen, err := r.Generation(ctx)
	if err != nil {
		return 0, err
	}
	// Listed before the known set is read: a segment this handle drops
	// (its own merge or prune) is deleted from the remote first, so it is
	// either still known or no longer loadable.
	names, err := r.listIndex(ctx)
	if err != nil {
		return 0, err
	}
	st, err := r.persist.State()
	if err != nil {
		return 0, err
	}
	if !st.Filled || st.Dirty || st.Generation != gen {
		return 0, nil
	}
	known := map[crypto.ID]bool{}
	for id := range st.Segments {
		known[id] = true
	}
	var fresh []crypto.ID
	for _, id := range names {
		if !known[id] {
			fresh = append(fresh, id)
		}
	}
	if len(fresh) == 0 {
		return 0, nil
	}
	segs := make([]*index.Segment, len(fresh))
	for i, id := range fresh {
		s, err := r.loadSegment(ctx, id.String())
		if errors.Is(err, remote.ErrNotFound) {
			continue // merged or dropped meanwhile
		}
		if err != nil {
			return 0, err
		}
		segs[i] = s
	}
	superseded := map[crypto.ID]bool{}
	for _, s := range segs {
		if s != nil {
			for _, id := range s.Supersedes {
				superseded[id] = true
			}
		}
	}
	if now, err := r.Generation(ctx); err != nil || now != gen {
		return 0, err
	}
	n := 0
	for i, id := range fresh {
		if segs[i] == nil || superseded[id] {
			continue
		}
		if err := r.ix().AddSegment(id, segs[i]); err != nil {
			return n, err
		}
		r.segMu.Lock()
		r.indexSegments = append(r.indexSegments, id)
		r.segMu.Unlock()
		n++
	}
	return n, nil
}
