// Package repo implements the keepfs repository format on top of a
// remote.Storage: configuration and key slots, blobs in packs, the index,
// trees and snapshots, and the integrity check. It knows nothing of FUSE or
// of the local state directory.
//
// Ordering is what keeps the remote consistent (DESIGN invariant 1): a pack
// is stored before any index segment naming it, index segments before any
// snapshot, and trees before the snapshot naming their root.
package repo

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/user"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keepfs/keepfs/policy/audit"
	"github.com/keepfs/keepfs/policy/notify"
	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo/chunker"
	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/index"
	"github.com/keepfs/keepfs/repo/pack"
)

// ErrNotRepository means the remote holds no keepfs config.
var ErrNotRepository = errors.New("no keepfs repository at this location (run `keepfs init` first)")

// ErrNameMismatch means an object's name is not the hash of its content:
// a copy of another object (a replay) or damage.
var ErrNameMismatch = errors.New("object name does not match its content (replayed or damaged)")

// ErrWrongPassword is returned when no key slot opens.
var ErrWrongPassword = crypto.ErrWrongPassword

// Config is the repository's sealed configuration.
type Config struct {
	Version  int            `json:"version"`
	ID       string         `json:"id"`
	Chunker  chunker.Params `json:"chunker"`
	PackSize int            `json:"pack_size"`
	Created  time.Time      `json:"created"`
}

const configAD = "keepfs config v1"

// FormatVersion is the repository format this code writes and reads.
const FormatVersion = 1

// Options tune a repository handle; zero values pick defaults.
type Options struct {
	// UploadConcurrency bounds parallel pack uploads.
	UploadConcurrency int
	// KDF is used for new key slots (tests use crypto.TestKDF).
	KDF *crypto.KDFParams
	// NoIndex skips loading the index at Open (check loads it itself, so
	// that a damaged segment is a finding, not a failure to start).
	NoIndex bool
	// FastCompression compresses data blobs at zstd's fastest level (the
	// mount: its uploads compete with the user's work for the CPU).
	FastCompression bool
	// Events receives integrity events (SetEvents changes it later).
	Events notify.Sink
}

// Repository is an unlocked repository.
type Repository struct {
	be   remote.Storage
	key  *crypto.Key
	cfg  Config
	opts Options
	// idx is replaced whole when the index is reloaded (a lapsed lock
	// taken again, a prune), while readers go on with the one they got.
	idx atomic.Pointer[index.Index]
	// persist, if set, replaces idx: the mount's index on disk
	// (SetIndexStore), synced incrementally by LoadIndex (persist.go).
	persist index.Persistent

	// indexSegments are the ids of the index objects loaded, for rewrites.
	segMu         sync.Mutex
	indexSegments []crypto.ID

	// loadMu orders LoadIndex against PickUpSegments, which adds what
	// others stored since without a full load; pickedAt rate-limits it.
	loadMu   sync.Mutex
	pickedAt time.Time
	// skipBad (under loadMu, set by ReloadIndex) leaves out segments that
	// fail their checks instead of failing the load; skipped names them.
	skipBad bool
	skipped map[crypto.ID]bool

	// compactMu orders merges of this handle's own index segments (own,
	// see compact.go) against each other and against Prune's rewrite.
	compactMu  sync.Mutex
	own        []ownSegment
	afterMerge func() error // test hook: after a merged segment is stored

	w *writer // blob writer state, see blobs.go

	treeCache *lru

	// events is where integrity events go (events.go).
	events atomic.Pointer[eventsBox]
	// snaps caches loaded snapshot objects (immutable) by id; head.go.
	snapMu sync.Mutex
	snaps  map[crypto.ID]*Snapshot
	// scrub keeps what Scrub verified, across passes (scrub.go).
	scrubOnce sync.Once
	scrub     *scrubState

	// locks held through this handle; writes stop while one has lapsed.
	lockMu sync.Mutex
	locks  []*Lock
	// relocks counts the lapsed locks taken again (SaveSnapshot: a save
	// that spanned one is not kept).
	relocks atomic.Uint64

	// the audit log (audit.go), made at first use.
	auditMu     sync.Mutex
	auditLog    *audit.Log
	auditMirror *audit.Mirror

	// viewDir is the state directory whose view (head.go) the snapshots
	// this handle stores advance; nil: none.
	viewDir atomic.Pointer[string]

	// genValid remembers which generation objects authenticate (trash.go).
	genValid sync.Map
}

// Create initialises a new repository on be, protected by passphrase.
func Create(ctx context.Context, be remote.Storage, passphrase []byte, opts Options) (*Repository, error) {
	if _, err := be.Stat(ctx, remote.Handle{Type: remote.Config}); err == nil {
		return nil, fmt.Errorf("a repository already exists at %s", be.Location())
	} else if !errors.Is(err, remote.ErrNotFound) {
		return nil, fmt.Errorf("check for existing repository: %w", err)
	}
	key, err := crypto.NewMasterKey()
	if err != nil {
		return nil, err
	}
	var idb [16]byte
	if _, err := rand.Read(idb[:]); err != nil {
		return nil, err
	}
	r := newRepository(be, key, Config{
		Version: FormatVersion, ID: hex.EncodeToString(idb[:]), Chunker: chunker.Default,
		PackSize: 16 << 20, Created: time.Now().UTC(),
	}, opts)
	// The key slot goes first: a config without a slot would be a repository
	// nobody can open, while a slot without a config is just an unfinished init.
	if _, err := r.AddKey(ctx, passphrase); err != nil {
		return nil, err
	}
	cb, err := json.Marshal(r.cfg)
	if err != nil {
		return nil, err
	}
	if err := be.Save(ctx, remote.Handle{Type: remote.Config}, key.Seal(nil, cb, []byte(configAD))); err != nil {
		return nil, fmt.Errorf("save config: %w", err)
	}
	return r, nil
}

func newRepository(be remote.Storage, key *crypto.Key, cfg Config, opts Options) *Repository {
	if opts.UploadConcurrency <= 0 {
		opts.UploadConcurrency = 2
	}
	r := &Repository{be: be, key: key, cfg: cfg, opts: opts, treeCache: newLRU(2048), snaps: map[crypto.ID]*Snapshot{}}
	r.SetEvents(opts.Events)
	r.idx.Store(index.New())
	r.w = newWriter(r)
	return r
}

// Open unlocks the repository on be with passphrase and loads its index.
func Open(ctx context.Context, be remote.Storage, passphrase []byte, opts Options) (*Repository, error) {
	sealedCfg, err := remote.LoadAll(ctx, be, remote.Handle{Type: remote.Config})
	if errors.Is(err, remote.ErrNotFound) {
		return nil, fmt.Errorf("%s: %w", be.Location(), ErrNotRepository)
	}
	if err != nil {
		return nil, fmt.Errorf("load config: %w", err)
	}
	key, err := unlock(ctx, be, passphrase)
	if err != nil {
		return nil, err
	}
	cb, err := key.Open(nil, sealedCfg, []byte(configAD))
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	var cfg Config
	if err := json.Unmarshal(cb, &cfg); err != nil {
		return nil, fmt.Errorf("parse config: %w", err)
	}
	if cfg.Version != FormatVersion {
		return nil, fmt.Errorf("repository format %d is not supported by this keepfs (wants %d)", cfg.Version, FormatVersion)
	}
	if err := cfg.Chunker.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if cfg.PackSize < 1<<20 || cfg.PackSize > 256<<20 {
		return nil, fmt.Errorf("config: implausible pack size %d", cfg.PackSize)
	}
	r := newRepository(be, key, cfg, opts)
	if opts.NoIndex {
		return r, nil
	}
	if err := r.LoadIndex(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

func unlock(ctx context.Context, be remote.Storage, passphrase []byte) (*crypto.Key, error) {
	var names []string
	err := be.List(ctx, remote.Key, func(fi remote.Info) error {
		names = append(names, fi.Handle.Name)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list key slots: %w", err)
	}
	if len(names) == 0 {
		return nil, errors.New("repository has no key slots")
	}
	var damaged []string
	for _, n := range names {
		b, err := remote.LoadAll(ctx, be, remote.Handle{Type: remote.Key, Name: n})
		if errors.Is(err, remote.ErrNotFound) {
			continue // removed since the listing (key remove, key passwd elsewhere)
		}
		if err != nil {
			return nil, fmt.Errorf("load key slot %s: %w", n, err)
		}
		if crypto.Hash(b).String() != n {
			// Named by the hash of its bytes: changed since it was
			// written (if its sealed key changed, no passphrase opens it).
			damaged = append(damaged, shortName(n))
		}
		s, err := crypto.ParseSlot(b)
		if err != nil {
			continue
		}
		k, err := s.Unlock(passphrase)
		if err == nil {
			return k, nil
		}
	}
	if len(damaged) > 0 {
		// Still a wrong passphrase to the caller (it may be one), but the
		// holder of the right one must learn why it fails.
		return nil, fmt.Errorf("%w: no key slot opens with it, or it is the passphrase of a damaged key slot (%s changed since it was written: it does not hash to its name); use another key's passphrase, or put the slot back from a copy",
			ErrWrongPassword, strings.Join(damaged, ", "))
	}
	return nil, ErrWrongPassword
}

// Config returns the repository configuration.
func (r *Repository) Config() Config { return r.cfg }

// Key returns the unlocked key set.
func (r *Repository) Key() *crypto.Key { return r.key }

// Backend returns the storage.
func (r *Repository) Backend() remote.Storage { return r.be }

// Index returns the index: the persistent store if one is set, else the
// in-memory one.
func (r *Repository) Index() index.Store { return r.ix() }

func (r *Repository) ix() index.Store {
	if r.persist != nil {
		return r.persist
	}
	return r.idx.Load()
}

// SetIndexStore makes p the handle's index from now on: LoadIndex then
// brings p in line with the remote, loading only segments p has not seen.
// Call it before the handle is used concurrently, then LoadIndex.
func (r *Repository) SetIndexStore(p index.Persistent) {
	r.persist = p
	r.idx.Store(index.New())
}

// NewChunker returns a chunker over nothing yet; Reset it with a reader.
func (r *Repository) NewChunker() *chunker.Chunker {
	c, err := chunker.New(nil, r.cfg.Chunker, r.key.ChunkerKey())
	if err != nil {
		panic(err) // parameters were validated at Open
	}
	return c
}

// Close flushes nothing: callers Flush first. It wipes the key.
func (r *Repository) Close() error {
	r.key.Zero()
	return r.be.Close()
}

// KeyInfo describes a key slot for `key list`.
type KeyInfo struct {
	ID       string    `json:"id"`
	Created  time.Time `json:"created"`
	Hostname string    `json:"hostname,omitempty"`
	Username string    `json:"username,omitempty"`
	Current  bool      `json:"current"`
}

// AddKey stores a new key slot for passphrase and returns its id.
func (r *Repository) AddKey(ctx context.Context, passphrase []byte) (string, error) {
	p := crypto.DefaultKDF
	if r.opts.KDF != nil {
		p = *r.opts.KDF
	}
	s, err := crypto.NewSlot(r.key, passphrase, p)
	if err != nil {
		return "", err
	}
	s.Hostname, _ = os.Hostname()
	if u, err := user.Current(); err == nil {
		s.Username = u.Username
	}
	b, err := s.Marshal()
	if err != nil {
		return "", err
	}
	id := crypto.Hash(b).String()
	if err := r.ownKeyChange(id, true, func() error {
		return r.be.Save(ctx, remote.Handle{Type: remote.Key, Name: id}, b)
	}); err != nil {
		return "", fmt.Errorf("save key slot: %w", err)
	}
	return id, nil
}

// Keys lists the key slots; current marks the ones passphrase opens.
func (r *Repository) Keys(ctx context.Context, passphrase []byte) ([]KeyInfo, error) {
	var out []KeyInfo
	err := r.be.List(ctx, remote.Key, func(fi remote.Info) error {
		b, err := remote.LoadAll(ctx, r.be, fi.Handle)
		if errors.Is(err, remote.ErrNotFound) {
			return nil // removed since the listing
		}
		if err != nil {
			return err
		}
		s, err := crypto.ParseSlot(b)
		if err != nil {
			out = append(out, KeyInfo{ID: fi.Handle.Name})
			return nil
		}
		ki := KeyInfo{ID: fi.Handle.Name, Created: s.Created, Hostname: s.Hostname, Username: s.Username}
		if passphrase != nil {
			if k, err := s.Unlock(passphrase); err == nil {
				ki.Current = true
				k.Zero()
			}
		}
		out = append(out, ki)
		return nil
	})
	return out, err
}

// RemoveKey deletes a key slot; it refuses to remove the last one.
func (r *Repository) RemoveKey(ctx context.Context, id string) error {
	n := 0
	found := false
	if err := r.be.List(ctx, remote.Key, func(fi remote.Info) error {
		n++
		if fi.Handle.Name == id {
			found = true
		}
		return nil
	}); err != nil {
		return err
	}
	if !found {
		return fmt.Errorf("no key slot %q (see `keepfs key list`)", id)
	}
	if n <= 1 {
		return errLastKeySlot
	}
	// The count above is no lock: another client may remove the other
	// slots meanwhile. So keep this one's bytes, and put it back if no
	// slot is left after its removal (the last of two racing removals
	// always sees none).
	h := remote.Handle{Type: remote.Key, Name: id}
	b, err := remote.LoadAll(ctx, r.be, h)
	if err != nil {
		return fmt.Errorf("load key slot %s: %w", id, err)
	}
	return r.ownKeyChange(id, false, func() error {
		if err := r.be.Remove(ctx, h); err != nil {
			return err
		}
		left := 0
		lerr := r.be.List(ctx, remote.Key, func(remote.Info) error { left++; return nil })
		if lerr == nil && left > 0 {
			return nil
		}
		if err := r.be.Save(ctx, h, b); err != nil && !errors.Is(err, remote.ErrExists) {
			return fmt.Errorf("key slot %s was removed, and putting it back failed (list: %v): %w", id, lerr, err)
		}
		if lerr != nil {
			return fmt.Errorf("key slot %s kept: cannot list the slots left after removing it: %w", id, lerr)
		}
		return fmt.Errorf("key slot %s kept: %w (another client removed the others meanwhile)", id, errLastKeySlot)
	})
}

var errLastKeySlot = errors.New("refusing to remove the last key slot: the repository would be unreadable")

// FindKey resolves a unique prefix of a key slot id.
func (r *Repository) FindKey(ctx context.Context, prefix string) (string, error) {
	var match []string
	if err := r.be.List(ctx, remote.Key, func(fi remote.Info) error {
		if len(prefix) > 0 && len(fi.Handle.Name) >= len(prefix) && fi.Handle.Name[:len(prefix)] == prefix {
			match = append(match, fi.Handle.Name)
		}
		return nil
	}); err != nil {
		return "", err
	}
	switch len(match) {
	case 0:
		return "", fmt.Errorf("no key slot matches %q (see `keepfs key list`)", prefix)
	case 1:
		return match[0], nil
	}
	return "", fmt.Errorf("key slot prefix %q is ambiguous", prefix)
}

// loadPackHeader reads the header of a stored pack of the given size.
func (r *Repository) loadPackHeader(ctx context.Context, id crypto.ID, size int64) ([]pack.Blob, error) {
	h := remote.Handle{Type: remote.Pack, Name: id.String()}
	if size < pack.TrailerSize {
		return nil, fmt.Errorf("pack %s: too short (%d bytes)", id.Short(), size)
	}
	// One read of the tail usually gets the whole header.
	tail := int64(64 << 10)
	if tail > size {
		tail = size
	}
	obj, what := "packs/"+id.String(), "the header of pack "+id.Short()
	b, err := r.be.Load(ctx, h, size-tail, tail)
	if err != nil {
		r.raiseLoad(obj, what, "load", err)
		return nil, fmt.Errorf("pack %s: %w", id.Short(), err)
	}
	hl, err := pack.HeaderLength(b[len(b)-pack.TrailerSize:], size)
	if err != nil {
		r.raiseLoad(obj, what, "open", err)
		return nil, fmt.Errorf("pack %s: %w", id.Short(), err)
	}
	if hl+pack.TrailerSize > tail {
		b, err = r.be.Load(ctx, h, size-hl-pack.TrailerSize, hl+pack.TrailerSize)
		if err != nil {
			r.raiseLoad(obj, what, "load", err)
			return nil, fmt.Errorf("pack %s: %w", id.Short(), err)
		}
	}
	sealed := b[int64(len(b))-pack.TrailerSize-hl : int64(len(b))-pack.TrailerSize]
	blobs, err := pack.OpenHeader(r.key, sealed, size)
	if err != nil {
		r.raiseLoad(obj, what, "open", err)
		return nil, fmt.Errorf("pack %s: %w", id.Short(), err)
	}
	return blobs, nil
}
