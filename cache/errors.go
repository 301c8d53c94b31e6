package cache

import (
	"errors"

	"github.com/keepfs/keepfs/cache/namespace"
	"github.com/keepfs/keepfs/repo"
)

// MaxFileSize is the largest size a file may have, 2^50 bytes (1 PiB): a
// truncate or write beyond it fails with ErrFileTooBig (EFBIG). Holes make
// such sizes cheap; the bound keeps offsets far from overflowing int64.
const MaxFileSize = 1 << 50

// Sentinel errors of namespace and file operations. Package fs maps each to
// one errno; everything else becomes EIO.
var (
	ErrNotFound    = namespace.ErrNotFound
	ErrExists      = namespace.ErrExists
	ErrNotEmpty    = namespace.ErrNotEmpty
	ErrNotDir      = namespace.ErrNotDir
	ErrIsDir       = namespace.ErrIsDir
	ErrInvalid     = namespace.ErrInvalid
	ErrNameTooLong = namespace.ErrNameTooLong
	ErrNoAttr      = namespace.ErrNoAttr
	ErrRange       = namespace.ErrRange
	ErrTooManyLink = namespace.ErrTooManyLink
	ErrReadOnly    = errors.New("read-only entry")
	ErrNoSpace     = errors.New("no space left on device")
	ErrFileTooBig  = errors.New("file too large")
	ErrNoMoreData  = errors.New("no data past the offset") // lseek: ENXIO

	// ErrLocked means another process uses the same state directory.
	ErrLocked = errors.New("repository already mounted from this state directory")
	// ErrRepoLocked means another live mount holds the repository's lock
	// (repo.LockMount refused).
	ErrRepoLocked = repo.ErrMounted
)
