package remote

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// TempSweeper is implemented by stores whose Save writes a partial object
// under a temporary name (TempPrefix) and renames it into place (file,
// sftp). A writer killed mid-upload, or cut off from the store, leaves
// the partial object behind, and List never shows it: neither prune nor
// an erase would ever see it, though it holds (encrypted) repository
// data. Decorators pass it through.
type TempSweeper interface {
	// RemoveTemp deletes every partial upload in the store. Only the
	// holder of the repository's exclusive lock may call it: no other
	// writer is uploading then.
	RemoveTemp(ctx context.Context) (TempRemoved, error)
}

// TempRemoved counts the partial uploads RemoveTemp deleted.
type TempRemoved struct {
	Objects int
	Bytes   int64
}

// RemoveTemp deletes the partial uploads of s if it keeps any (see
// TempSweeper); a store without them has none to delete.
func RemoveTemp(ctx context.Context, s Storage) (TempRemoved, error) {
	if ts, ok := s.(TempSweeper); ok {
		return ts.RemoveTemp(ctx)
	}
	return TempRemoved{}, nil
}

// RemoveTemp implements TempSweeper: every file below the root whose
// name starts with TempPrefix.
func (f *File) RemoveTemp(ctx context.Context) (TempRemoved, error) {
	var out TempRemoved
	err := filepath.WalkDir(f.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && p != f.root {
				return nil // removed while walking
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.IsDir() || !strings.HasPrefix(d.Name(), TempPrefix) {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil // gone already
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		out.Objects++
		out.Bytes += fi.Size()
		return nil
	})
	if err != nil {
		return out, fmt.Errorf("remove partial uploads in %s: %w", f.root, err)
	}
	return out, nil
}

var _ TempSweeper = (*File)(nil)
