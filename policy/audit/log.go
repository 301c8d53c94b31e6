package audit

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"time"
)

// Store holds sealed records by seq. Append never overwrites: it returns
// an error wrapping ErrExists if seq is taken.
type Store interface {
	Append(ctx context.Context, seq uint64, sealed []byte) error
	List(ctx context.Context) ([]uint64, error)
	Load(ctx context.Context, seq uint64) ([]byte, error)
}

// ErrExists is what Store.Append returns (wrapped) for a taken seq.
var ErrExists = errors.New("audit entry already exists")

// ErrQueued means an entry could not reach the store and waits in the
// local mirror's queue; the next Append or Flush pushes it.
var ErrQueued = errors.New("audit entry queued locally: the remote did not take it")

// Options tune a Log.
type Options struct {
	// Mirror, if set, receives every entry the store took, and queues
	// entries the store could not take.
	Mirror *Mirror
	// User and Host fill entries that name none.
	User, Host string
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// Log appends to and reads an audit log. It is safe for concurrent use;
// appenders in other processes are serialised by the store's refusal to
// overwrite.
type Log struct {
	store Store
	keys  Keys
	opts  Options

	mu   sync.Mutex // serialises appends of this process
	head Head       // last head this process saw; guarded by mu
	read bool       // head was read from the store or appended; guarded by mu
}

// New returns a log over store.
func New(store Store, keys Keys, opts Options) *Log {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Log{store: store, keys: keys, opts: opts}
}

// Head returns the newest head this process appended or read, if any.
func (l *Log) Head() Head {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.head
}

// ReadHead returns the head this process knows, reading it from the store
// if it knows none yet.
func (l *Log) ReadHead(ctx context.Context) (Head, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.read {
		return l.head, nil
	}
	h, err := l.readHead(ctx)
	if err == nil {
		l.head, l.read = h, true
	}
	return h, err
}

// maxAppendTries bounds retries against concurrent appenders.
const maxAppendTries = 64

// Append chains e after the current head, seals it and stores it. It
// returns the entry's hash. If the store fails (not a race) and a mirror
// is configured, the entry is queued in the mirror and the error wraps
// ErrQueued. Entries queued earlier are pushed first.
func (l *Log) Append(ctx context.Context, e Entry) (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.fill(&e)
	if err := l.flushLocked(ctx); err != nil {
		// The store is failing: keep order, queue behind the others.
		return "", l.queueLocked(e, err)
	}
	h, err := l.appendLocked(ctx, e)
	if err != nil {
		return "", l.queueLocked(e, err)
	}
	return h, nil
}

// Flush pushes entries queued in the mirror.
func (l *Log) Flush(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.flushLocked(ctx)
}

func (l *Log) fill(e *Entry) {
	if e.Time.IsZero() {
		e.Time = l.opts.Now()
	}
	e.Time = e.Time.UTC().Round(0)
	if e.User == "" {
		e.User = l.opts.User
	}
	if e.Host == "" {
		e.Host = l.opts.Host
	}
	if e.Outcome == "" {
		e.Outcome = OutcomeOK
	}
}

func (l *Log) queueLocked(e Entry, cause error) error {
	if l.opts.Mirror == nil || errors.Is(cause, errInvalid) {
		return cause
	}
	e.Seq, e.Prev = 0, ""
	if err := l.opts.Mirror.queue(l.keys, e); err != nil {
		return errors.Join(cause, fmt.Errorf("queue audit entry locally: %w", err))
	}
	return fmt.Errorf("%w: %v", ErrQueued, cause)
}

func (l *Log) flushLocked(ctx context.Context) error {
	if l.opts.Mirror == nil {
		return nil
	}
	return l.opts.Mirror.drain(l.keys, func(e Entry) error {
		_, err := l.appendLocked(ctx, e)
		return err
	})
}

var errInvalid = errors.New("invalid audit entry")

// appendLocked stores e as the entry after the head, re-reading the head
// and retrying when another appender took the seq first.
func (l *Log) appendLocked(ctx context.Context, e Entry) (string, error) {
	if e.Action == "" {
		return "", fmt.Errorf("%w: no action", errInvalid)
	}
	if !l.read {
		h, err := l.readHead(ctx)
		if err != nil {
			return "", err
		}
		l.head, l.read = h, true
	}
	for try := 0; ; try++ {
		e.Seq, e.Prev = l.head.Seq+1, l.head.Hash
		sealed, err := Seal(l.keys, &e)
		if err != nil {
			return "", fmt.Errorf("%w: %v", errInvalid, err)
		}
		err = l.store.Append(ctx, e.Seq, sealed)
		if err == nil {
			l.head = Head{Seq: e.Seq, Hash: Hash(sealed)}
			if l.opts.Mirror != nil {
				if merr := l.opts.Mirror.record(e.Seq, sealed); merr != nil {
					return l.head.Hash, fmt.Errorf("audit entry %d stored, but not mirrored locally: %w", e.Seq, merr)
				}
			}
			return l.head.Hash, nil
		}
		if !errors.Is(err, ErrExists) {
			return "", err
		}
		if try >= maxAppendTries {
			return "", fmt.Errorf("audit: gave up after %d concurrent appends: %w", try, err)
		}
		// Someone else appended: find the new head and go after it.
		time.Sleep(time.Duration(rand.IntN(5*(try+1))) * time.Millisecond)
		h, err := l.readHead(ctx)
		if err != nil {
			return "", err
		}
		if h.Seq <= l.head.Seq {
			// Listing lags behind the failed save: step past it.
			h = Head{Seq: e.Seq, Hash: ""}
			b, lerr := l.store.Load(ctx, e.Seq)
			if lerr != nil {
				return "", lerr
			}
			h.Hash = Hash(b)
		}
		l.head = h
	}
}

// readHead finds the newest stored entry.
func (l *Log) readHead(ctx context.Context) (Head, error) {
	seqs, err := l.store.List(ctx)
	if err != nil {
		return Head{}, fmt.Errorf("list audit entries: %w", err)
	}
	var max uint64
	for _, s := range seqs {
		if s > max {
			max = s
		}
	}
	if max == 0 {
		return Head{}, nil
	}
	b, err := l.store.Load(ctx, max)
	if err != nil {
		return Head{}, fmt.Errorf("load audit entry %d: %w", max, err)
	}
	return Head{Seq: max, Hash: Hash(b)}, nil
}

// Item is one stored entry as read back: the entry if it opened, its hash,
// and what was wrong with it.
type Item struct {
	Seq   uint64
	Hash  string
	Entry *Entry
	Err   error
}

// Read loads every stored entry in seq order, without judging the chain.
func (l *Log) Read(ctx context.Context) ([]Item, error) {
	seqs, err := l.store.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("list audit entries: %w", err)
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	out := make([]Item, 0, len(seqs))
	for _, s := range seqs {
		b, err := l.store.Load(ctx, s)
		if err != nil {
			return nil, fmt.Errorf("load audit entry %d: %w", s, err)
		}
		it := Item{Seq: s, Hash: Hash(b)}
		it.Entry, it.Err = Open(l.keys, b)
		out = append(out, it)
	}
	return out, nil
}
