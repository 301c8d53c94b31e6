// Package repotest creates and opens test repositories, with the test key
// derivation so that a test does not spend a second in argon2id.
package repotest

import (
	"context"
	"sync"
	"testing"

	"github.com/keepfs/keepfs/policy/notify"
	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/crypto"
)

// Password is the test repositories' passphrase.
var Password = []byte("test password")

// Create makes a repository on be.
func Create(t testing.TB, be remote.Storage) *repo.Repository {
	t.Helper()
	r, err := repo.Create(context.Background(), be, Password, repo.Options{KDF: &crypto.TestKDF})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// CreateFile makes a repository on a file store in a new directory, and
// returns the directory too: for tests that look at the files.
func CreateFile(t testing.TB) (string, *repo.Repository) {
	t.Helper()
	dir := t.TempDir()
	f, err := remote.CreateFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	return dir, Create(t, f)
}

// Open opens the repository on be, with its index.
func Open(t testing.TB, be remote.Storage) *repo.Repository {
	t.Helper()
	return OpenWith(t, be, repo.Options{})
}

// OpenWith opens the repository on be with o (its KDF set to the test's).
func OpenWith(t testing.TB, be remote.Storage, o repo.Options) *repo.Repository {
	t.Helper()
	o.KDF = &crypto.TestKDF
	r, err := repo.Open(context.Background(), be, Password, o)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Sink collects the integrity events raised to it (repo.Options.Events,
// SetEvents), for a test to take.
type Sink struct {
	mu  sync.Mutex
	evs []notify.Event
}

// Raise records e.
func (s *Sink) Raise(e notify.Event) { s.mu.Lock(); s.evs = append(s.evs, e); s.mu.Unlock() }

// Take returns the events raised since the last Take.
func (s *Sink) Take() []notify.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.evs
	s.evs = nil
	return e
}
