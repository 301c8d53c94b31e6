package remote_test

import (
	"log/slog"
	"testing"
	"time"

	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/remote/remotetest"
)

func newFile(t *testing.T) *remote.File {
	t.Helper()
	f, err := remote.CreateFile(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestMemConformance(t *testing.T) {
	t.Parallel()
	remotetest.Run(t, func(t *testing.T) remote.Storage { return remote.NewMem() })
}

func TestFileConformance(t *testing.T) {
	t.Parallel()
	remotetest.Run(t, func(t *testing.T) remote.Storage { return newFile(t) })
}

func TestFaultyConformance(t *testing.T) {
	t.Parallel()
	remotetest.Run(t, func(t *testing.T) remote.Storage { return remote.NewFaulty(newFile(t)) })
}

func TestRetryConformance(t *testing.T) {
	t.Parallel()
	remotetest.Run(t, func(t *testing.T) remote.Storage {
		return remote.WithRetry(remote.NewMem(), remote.RetryOptions{InitialInterval: time.Millisecond, MaxElapsed: time.Second, Logger: quiet})
	})
}

// A retrying store over a flaky one must still look like a correct store.
func TestRetryOverFaultsConformance(t *testing.T) {
	t.Parallel()
	remotetest.Run(t, func(t *testing.T) remote.Storage {
		f := remote.NewFaulty(remote.NewMem())
		// Not Remove: a retried Remove that finds the object gone reports
		// success, which the suite's not-found check would (rightly) flag.
		for _, op := range []remote.Op{remote.OpSave, remote.OpLoad, remote.OpStat, remote.OpList} {
			f.FailNext(op, 2)
		}
		f.LoseNextSaveAcks(3)
		return remote.WithRetry(f, remote.RetryOptions{InitialInterval: time.Millisecond, MaxInterval: 2 * time.Millisecond, MaxElapsed: 5 * time.Second, Logger: quiet})
	})
}

var quiet = slog.New(slog.DiscardHandler)
