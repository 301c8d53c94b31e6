package notify

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Incident is an event kept in the state directory until acknowledged.
// Further events of the same (type, object) while it is open count in
// Count and LastSeen instead of opening another.
type Incident struct {
	Event
	LastSeen time.Time  `json:"last_seen"`
	Count    int64      `json:"count"`
	AckedAt  *time.Time `json:"acknowledged_at,omitempty"`
	// Deliveries say, per target, whether the incident reached it.
	Deliveries []Delivery `json:"deliveries,omitempty"`
}

// Open reports an incident not yet acknowledged.
func (i *Incident) Open() bool { return i.AckedAt == nil }

// Delivery is the state of one incident's delivery to one target.
type Delivery struct {
	Target      string    `json:"target"`
	Delivered   bool      `json:"delivered"`
	Expired     bool      `json:"expired,omitempty"`
	Attempts    int       `json:"attempts"`
	LastAttempt time.Time `json:"last_attempt,omitzero"`
	// Answer is what the target last said (HTTP status, exit status and
	// the first line of its output); LastError why it failed.
	Answer    string `json:"answer,omitempty"`
	LastError string `json:"last_error,omitempty"`
}

// Store is the incidents file of a state directory, <dir>/incidents.json,
// shared by a mount and one-shot commands under a flock on
// <dir>/incidents.lock. It holds no file names or content: objects are
// remote object names, messages are ours.
type Store struct {
	dir string
}

// StoreFile is the incidents file's name in the state directory.
const StoreFile = "incidents.json"

// maxAcked bounds how many acknowledged incidents are kept.
const maxAcked = 200

// OpenStore returns the store of state directory dir, creating dir.
func OpenStore(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("incidents: %w", err)
	}
	return &Store{dir: dir}, nil
}

type storeFile struct {
	Version   int        `json:"version"`
	Incidents []Incident `json:"incidents"`
}

func (s *Store) lock() (func(), error) {
	f, err := os.OpenFile(filepath.Join(s.dir, "incidents.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("incidents: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("incidents: lock: %w", err)
	}
	return func() { _ = unix.Flock(int(f.Fd()), unix.LOCK_UN); f.Close() }, nil
}

func (s *Store) readLocked() ([]Incident, error) {
	b, err := os.ReadFile(filepath.Join(s.dir, StoreFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("incidents: %w", err)
	}
	var f storeFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("incidents: %s is damaged: %w", filepath.Join(s.dir, StoreFile), err)
	}
	return f.Incidents, nil
}

func (s *Store) writeLocked(in []Incident) error {
	// Keep every open incident and the newest acknowledged ones.
	var acked []int
	for i := range in {
		if !in[i].Open() {
			acked = append(acked, i)
		}
	}
	if len(acked) > maxAcked {
		drop := map[int]bool{}
		sort.Slice(acked, func(a, b int) bool { return in[acked[a]].AckedAt.Before(*in[acked[b]].AckedAt) })
		for _, i := range acked[:len(acked)-maxAcked] {
			drop[i] = true
		}
		kept := in[:0:0]
		for i := range in {
			if !drop[i] {
				kept = append(kept, in[i])
			}
		}
		in = kept
	}
	b, err := json.MarshalIndent(storeFile{Version: 1, Incidents: in}, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(s.dir, ".incidents-*")
	if err != nil {
		return fmt.Errorf("incidents: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("incidents: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("incidents: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("incidents: %w", err)
	}
	return os.Rename(tmp.Name(), filepath.Join(s.dir, StoreFile))
}

// errUnchanged from an Update function means: nothing to write.
var errUnchanged = errors.New("unchanged")

// Update runs fn on the incidents under the lock and stores what it left.
func (s *Store) Update(fn func([]Incident) ([]Incident, error)) error {
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	in, err := s.readLocked()
	if err != nil {
		return err
	}
	out, err := fn(in)
	if errors.Is(err, errUnchanged) {
		return nil
	}
	if err != nil {
		return err
	}
	return s.writeLocked(out)
}

// List returns every incident kept, oldest first.
func (s *Store) List() ([]Incident, error) {
	unlock, err := s.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	return s.readLocked()
}

// OpenIncidents returns the incidents not yet acknowledged, oldest first.
func (s *Store) OpenIncidents() ([]Incident, error) {
	all, err := s.List()
	if err != nil {
		return nil, err
	}
	var out []Incident
	for _, i := range all {
		if i.Open() {
			out = append(out, i)
		}
	}
	return out, nil
}

// ErrNoIncident means no incident has the id given.
var ErrNoIncident = errors.New("no such incident")

// Ack acknowledges the incident whose id starts with prefix ("all": every
// open one) and returns the ids acknowledged.
func (s *Store) Ack(prefix string, now time.Time) ([]string, error) {
	var done []string
	err := s.Update(func(in []Incident) ([]Incident, error) {
		var match []int
		for i := range in {
			if in[i].Open() && (prefix == "all" || strings.HasPrefix(in[i].ID, prefix)) {
				match = append(match, i)
			}
		}
		switch {
		case len(match) == 0:
			return nil, fmt.Errorf("%w %q open (see `keepfs incidents`)", ErrNoIncident, prefix)
		case len(match) > 1 && prefix != "all":
			return nil, fmt.Errorf("incident id %q is ambiguous", prefix)
		}
		t := now.UTC()
		for _, i := range match {
			in[i].AckedAt = &t
			done = append(done, in[i].ID)
		}
		return in, nil
	})
	return done, err
}
