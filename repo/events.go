package repo

import (
	"context"
	"errors"
	"io"
	"io/fs"

	"github.com/keepfs/keepfs/policy/notify"
	"github.com/keepfs/keepfs/remote"
)

// Integrity events: every load that authenticates what the remote
// served (blobs, pack headers, index segments, snapshots) reports a
// failure to the handle's event sink, so a read through the mount, a
// command or the scrub that meets tampered, missing, resized or replayed
// data raises an event as well as failing. The sink suppresses
// duplicates, so a hot broken blob costs one incident.

type eventsBox struct{ s notify.Sink }

// SetEvents sets where integrity events go (Options.Events at Open).
func (r *Repository) SetEvents(s notify.Sink) {
	if s == nil {
		s = notify.Discard{}
	}
	r.events.Store(&eventsBox{s})
}

// Raise sends an event for this repository to the sink.
func (r *Repository) Raise(ev notify.Event) {
	if ev.RepoID == "" {
		ev.RepoID = r.cfg.ID
	}
	if b := r.events.Load(); b != nil {
		b.s.Raise(ev)
	}
}

// raiseLoad classifies the failure of loading object (a remote name such
// as "packs/<id>") and raises an event if it says something about the
// remote's integrity: not for a remote that did not answer or a cancelled
// call. stage is "load" for the transfer, "open" for authentication and
// decoding of bytes that arrived.
func (r *Repository) raiseLoad(object, what, stage string, err error) {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, remote.ErrUnreachable) {
		return
	}
	var typ, msg string
	switch {
	case errors.Is(err, ErrNameMismatch):
		typ, msg = notify.TypeNameMismatch, what+" does not hash to its name: an old object replayed under a new name, or damage"
	case stage == "load" && errors.Is(err, remote.ErrNotFound):
		typ, msg = notify.TypeMissing, what+" is missing from the remote"
	case stage == "load" && errors.Is(err, io.ErrUnexpectedEOF):
		typ, msg = notify.TypeResized, what+" is shorter than the index says"
	case stage == "load" && errors.Is(err, fs.ErrInvalid):
		return
	case stage == "load":
		return // a transfer error says nothing of the object
	default:
		typ, msg = notify.TypeTampered, what+" failed authentication (modified or damaged)"
	}
	r.Raise(notify.Event{Type: typ, Severity: notify.Critical, Object: object, Message: msg})
}

func shortName(n string) string {
	if len(n) > 12 {
		return n[:12]
	}
	return n
}
