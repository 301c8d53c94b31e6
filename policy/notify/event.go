package notify

import (
	"crypto/rand"
	"encoding/hex"
	"time"
)

// Event types.
const (
	// TypeTampered: an object failed authentication (blob, pack header,
	// index segment, snapshot, tree), or a pack's content does not hash to
	// its name.
	TypeTampered = "object-tampered"
	// TypeNameMismatch: an object's name is not the hash of its content:
	// an old object replayed under a new name.
	TypeNameMismatch = "object-replayed"
	// TypeMissing: an object the index or this client knows is gone.
	TypeMissing = "object-missing"
	// TypeUnexpected: an object nobody with the key wrote.
	TypeUnexpected = "object-unexpected"
	// TypeResized: an object's size differs from what the index says.
	TypeResized = "object-resized"
	// TypeRollback: the remote serves an older snapshot head than this
	// client has seen (the newest snapshots dropped or rolled back).
	TypeRollback = "rollback"
	// TypeKeyAdded and TypeKeyRemoved: key slots changed by someone else.
	TypeKeyAdded   = "key-slot-added"
	TypeKeyRemoved = "key-slot-removed"
	// TypeConfigChanged: the repository config changed.
	TypeConfigChanged = "config-changed"
	// TypeUnknownLock: a repository lock held by a host never seen before.
	TypeUnknownLock = "lock-unknown-host"
	// TypeUnreachable: the remote did not answer for longer than
	// --alert-after.
	TypeUnreachable = "remote-unreachable"
	// TypeFailedUnlocks: repeated wrong passphrases by this client.
	TypeFailedUnlocks = "failed-unlocks"
	// TypeTest: `keepfs notify test`.
	TypeTest = "test"
)

// Severities.
const (
	Critical = "critical"
	Warning  = "warning"
	Info     = "info"
)

// Event is one detection, as delivered (JSON) and logged.
type Event struct {
	ID         string    `json:"id"`
	Type       string    `json:"type"`
	Severity   string    `json:"severity"`
	Object     string    `json:"object"`
	DetectedAt time.Time `json:"detected_at"`
	RepoID     string    `json:"repository_id"`
	Host       string    `json:"host"`
	Message    string    `json:"message"`
}

// Key is what duplicate suppression compares: (type, object).
func (e Event) Key() string { return e.Type + "\x00" + e.Object }

// Sink receives events. Raise must not block on delivery.
type Sink interface {
	Raise(Event)
}

// Discard is a Sink that drops everything.
type Discard struct{}

// Raise does nothing.
func (Discard) Raise(Event) {}

func newID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
