package fs

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"syscall"

	"github.com/keepfs/keepfs/cache"
	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo"
)

var errnoTable = []struct {
	err   error
	errno syscall.Errno
}{
	{cache.ErrNotFound, syscall.ENOENT},
	{cache.ErrExists, syscall.EEXIST},
	{cache.ErrNotEmpty, syscall.ENOTEMPTY},
	{cache.ErrNotDir, syscall.ENOTDIR},
	{cache.ErrIsDir, syscall.EISDIR},
	{cache.ErrInvalid, syscall.EINVAL},
	{cache.ErrNameTooLong, syscall.ENAMETOOLONG},
	{cache.ErrNoAttr, syscall.ENODATA},
	{cache.ErrRange, syscall.E2BIG},
	{cache.ErrReadOnly, syscall.EROFS},
	{cache.ErrNoSpace, syscall.ENOSPC},
	{cache.ErrTooManyLink, syscall.EMLINK},
	{cache.ErrFileTooBig, syscall.EFBIG},
	{cache.ErrNoMoreData, syscall.ENXIO},
	{context.Canceled, syscall.EINTR},
	{context.DeadlineExceeded, syscall.EINTR},
}

// unknownOnce logs each distinct unexpected error message once.
var unknownOnce sync.Map

// toErrno maps an error from package cache to the errno the kernel gets.
// It is the one place that does; anything unexpected is logged once and
// becomes EIO.
func toErrno(log *slog.Logger, err error) syscall.Errno {
	if err == nil {
		return 0
	}
	for _, e := range errnoTable {
		if errors.Is(err, e.err) {
			return e.errno
		}
	}
	var en syscall.Errno
	if errors.As(err, &en) {
		switch en {
		case syscall.ENOSPC, syscall.EDQUOT, syscall.EFBIG, syscall.EROFS, syscall.EINTR:
			return en
		}
	}
	msg := err.Error()
	if _, seen := unknownOnce.LoadOrStore(msg, true); !seen {
		attrs := []any{"err", err}
		if errors.Is(err, remote.ErrUnreachable) || errors.Is(err, repo.ErrBlobNotFound) {
			attrs = append(attrs, "hint", "data not cached locally and the remote cannot serve it")
		}
		log.Error("I/O error", attrs...)
	}
	return syscall.EIO
}
