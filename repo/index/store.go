package index

import (
	"errors"

	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/pack"
)

// Store is what a repository handle needs of its index: lookups, and
// adding the segments it stores. The in-memory Index is one (the CLI's);
// a mount uses a Persistent store on disk, so that its memory does not
// grow with the repository.
type Store interface {
	// AddSegment records the packs of segment id, which is stored in the
	// remote. A blob already known keeps a location it has.
	AddSegment(id crypto.ID, s *Segment) error
	Lookup(t pack.BlobType, id crypto.ID) (Location, bool)
	Has(t pack.BlobType, id crypto.ID) bool
	HasPack(id crypto.ID) bool
	// Packs returns every indexed pack and its size (without blobs).
	Packs() []PackEntry
	// PackBlobs returns every blob stored in pack id, duplicates included.
	PackBlobs(id crypto.ID) []pack.Blob
	Count() int
	Each(fn func(Location))
}

// Held is one segment a Persistent store is told of. A segment that is
// not Live is superseded: the store remembers it was seen (so it is not
// loaded again) but indexes nothing of it.
type Held struct {
	ID      crypto.ID
	Segment *Segment // nil if !Live
	Live    bool
}

// PersistentState is what a Persistent store holds, for deciding what to
// load.
type PersistentState struct {
	// Filled is false for a store never filled (or of an older format).
	Filled bool
	// Dirty is set if a change was interrupted: the store must be refilled.
	Dirty bool
	// Generation is the repository generation the store was filled at.
	Generation uint64
	// Segments are the segments held, live or superseded (false).
	Segments map[crypto.ID]bool
}

// ErrRefill is returned by Persistent.Apply when the change cannot be
// made incrementally (a pack would leave the index): the caller refills.
var ErrRefill = errors.New("index: the store must be refilled")

// Persistent is a Store that outlives the process and remembers which
// segments it holds, so that a restart loads only segments it has not
// seen.
type Persistent interface {
	Store
	State() (PersistentState, error)
	// Apply records add, then forgets drop. An interruption leaves the
	// store dirty. It returns ErrRefill, changing nothing, if a pack
	// named only by dropped segments would leave the index.
	Apply(add []Held, drop []crypto.ID) error
	// SetGeneration notes that the store matches generation gen.
	SetGeneration(gen uint64) error
	// Refill replaces the whole content with what fill adds (add may be
	// called from several goroutines); until it returns, lookups see the
	// old content.
	Refill(gen uint64, fill func(add func(Held) error) error) error
}

// AddSegment adds every pack of s.
func (ix *Index) AddSegment(_ crypto.ID, s *Segment) error {
	for _, p := range s.Packs {
		ix.AddPack(p)
	}
	return nil
}

var _ Store = (*Index)(nil)
