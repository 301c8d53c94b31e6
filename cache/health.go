package cache

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/keepfs/keepfs/remote"
)

// Health records how contact with the remote went, for `keepfs status`:
// when it last succeeded, when it last failed and why. The remote counts
// as reachable only if the last contact succeeded. The mount's daemon
// hands one to the retry decorator too (RecordRetry), so a remote that
// goes away shows within seconds, not after a call gives up retrying.
type Health struct {
	mu       sync.Mutex
	now      func() time.Time
	lastOK   time.Time
	lastFail time.Time
	lastErr  string // of the last failure, kept after a success
}

// NewHealth returns a Health with no contact recorded yet.
func NewHealth() *Health { return &Health{now: time.Now} }

// Record notes the outcome of a remote operation. Errors that are not a
// failure to reach the remote (a cancelled call, a missing blob, a local
// read error) change nothing.
func (h *Health) Record(err error) {
	if err != nil && !contactFailed(err) {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if err == nil {
		h.lastOK = h.now()
		return
	}
	h.lastFail = h.now()
	h.lastErr = err.Error()
}

// recordOpened notes the contact that opened the repository, unless a
// contact was recorded already.
func (h *Health) recordOpened() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.lastOK.IsZero() && h.lastFail.IsZero() {
		h.lastOK = h.now()
	}
}

// RecordRetry has the signature of remote.RetryOptions.OnRetry.
func (h *Health) RecordRetry(_ string, _ remote.Handle, _ int, err error, _ time.Duration) {
	h.Record(err)
}

// contactFailed reports whether err means the remote did not answer:
// every backend wraps transport failures in remote.ErrUnreachable. A call
// the caller cancelled says nothing about the remote.
func contactFailed(err error) bool {
	return errors.Is(err, remote.ErrUnreachable) && !errors.Is(err, context.Canceled)
}

// HealthState is a copy of what Health recorded.
type HealthState struct {
	Reachable bool
	LastOK    time.Time // zero: never
	LastFail  time.Time // zero: never
	LastError string
}

func (h *Health) state() HealthState {
	h.mu.Lock()
	defer h.mu.Unlock()
	return HealthState{
		Reachable: !h.lastOK.IsZero() && !h.lastOK.Before(h.lastFail),
		LastOK:    h.lastOK, LastFail: h.lastFail, LastError: h.lastErr,
	}
}

// State returns a copy of what h recorded.
func (h *Health) State() HealthState { return h.state() }
