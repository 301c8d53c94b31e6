// Package remote defines the storage interface every keepfs backend implements
// and the decorators (retry, fault injection) that wrap it.
//
// Objects are addressed by a typed Handle, never by free-form paths, so a
// backend decides the physical layout (packs fan out into 256 directories).
// Save is atomic and never overwrites: an object either exists whole or not at
// all, which is what the repository's ordering invariants rely on.
package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
)

// Type is the kind of object; it maps to a top-level folder of the remote.
type Type string

const (
	Config    Type = "config"
	Key       Type = "keys"
	Pack      Type = "packs"
	Index     Type = "index"
	Snapshot  Type = "snapshots"
	Audit     Type = "audit"
	Lock      Type = "locks"
	Retention Type = "retention"
	// Trash holds prune's deletion marks: packs to delete after a grace period.
	Trash Type = "trash"
	// Generation holds one object per repository generation (see repo).
	Generation Type = "generation"
)

// Types lists every object type, in the order a listing diff walks them.
var Types = []Type{Config, Key, Pack, Index, Snapshot, Audit, Lock, Retention, Trash, Generation}

// Handle names one object. The Config object has an empty Name.
type Handle struct {
	Type Type
	Name string
}

func (h Handle) String() string {
	if h.Name == "" {
		return string(h.Type)
	}
	return string(h.Type) + "/" + h.Name
}

// Valid reports whether h can name an object: a known type and, except for
// the config, a name that cannot escape its folder.
func (h Handle) Valid() error {
	known := false
	for _, t := range Types {
		if h.Type == t {
			known = true
		}
	}
	if !known {
		return fmt.Errorf("%w %q: unknown type", ErrInvalidHandle, h)
	}
	if h.Type == Config {
		if h.Name != "" {
			return fmt.Errorf("%w %q: config has no name", ErrInvalidHandle, h)
		}
		return nil
	}
	if h.Name == "" || len(h.Name) > 128 {
		return fmt.Errorf("%w %q: bad name length", ErrInvalidHandle, h)
	}
	for _, c := range h.Name {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-' || c == '_' || c == '.') || h.Name[0] == '.' {
			return fmt.Errorf("%w %q: bad character in name", ErrInvalidHandle, h)
		}
	}
	return nil
}

// Info describes a stored object.
type Info struct {
	Handle Handle
	Size   int64
}

var (
	// ErrNotFound means the object does not exist.
	ErrNotFound = errors.New("object not found")
	// ErrExists means Save was asked to overwrite an existing object.
	ErrExists = errors.New("object already exists")
	// ErrUnreachable wraps transport failures: the remote could not be asked.
	// The retry decorator retries these; callers report them as health events.
	ErrUnreachable = errors.New("remote unreachable")
	// ErrInvalidHandle is wrapped by Handle.Valid; backends return it before
	// touching storage, and the retry decorator never retries it.
	ErrInvalidHandle = errors.New("invalid handle")
)

// Storage is the remote store. Implementations must be safe for concurrent use.
type Storage interface {
	// Location is a printable, credential-free description of the store.
	Location() string
	// Save stores data under h atomically. It returns ErrExists rather than
	// overwriting an existing object.
	Save(ctx context.Context, h Handle, data []byte) error
	// Load returns length bytes of h starting at offset; length 0 means to
	// the end. A range beyond the end is an error wrapping io.ErrUnexpectedEOF.
	Load(ctx context.Context, h Handle, offset, length int64) ([]byte, error)
	// Stat returns the object's size, or ErrNotFound.
	Stat(ctx context.Context, h Handle) (Info, error)
	// List calls fn for each object of type t, in no particular order.
	List(ctx context.Context, t Type, fn func(Info) error) error
	// Remove deletes h; removing a missing object returns ErrNotFound.
	Remove(ctx context.Context, h Handle) error
	// Close releases connections.
	Close() error
}

// LoadAll is Load of the whole object.
func LoadAll(ctx context.Context, s Storage, h Handle) ([]byte, error) {
	return s.Load(ctx, h, 0, 0)
}

// errShortRange is returned (wrapped) by backends for reads past the end.
var errShortRange = io.ErrUnexpectedEOF

// ShortRange returns the error a backend reports when a range read runs past
// the end of h.
func ShortRange(h Handle, offset, length, size int64) error {
	return fmt.Errorf("load %s [%d,+%d) of %d bytes: %w", h, offset, length, size, errShortRange)
}

// CheckRange validates a Load range against an object of size bytes and
// returns how many bytes the load must return. Backends share it so that
// every one of them answers the same ranges the same way.
func CheckRange(h Handle, offset, length, size int64) (int64, error) {
	if offset < 0 || length < 0 {
		return 0, fmt.Errorf("load %s: negative range [%d,+%d): %w", h, offset, length, fs.ErrInvalid)
	}
	if length == 0 {
		if offset > size {
			return 0, ShortRange(h, offset, length, size)
		}
		return size - offset, nil
	}
	if offset > size || length > size-offset {
		return 0, ShortRange(h, offset, length, size)
	}
	return length, nil
}

// ValidType reports whether t is one of Types; List implementations check it.
func ValidType(t Type) error {
	for _, known := range Types {
		if t == known {
			return nil
		}
	}
	return fmt.Errorf("%w: unknown type %q", ErrInvalidHandle, t)
}
