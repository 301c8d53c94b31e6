package repo

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/keepfs/keepfs/policy/notify"
	"github.com/keepfs/keepfs/remote"
)

// Repository locks (DESIGN invariant 6). Every writer (import, mount,
// restore, check) holds a shared lock; prune and erase hold an exclusive
// one. A lock is a sealed object locks/<random> that its holder replaces
// every Refresh; a lock is stale once its owner is gone: on the same host
// when its process no longer exists, on another host when its newest
// object is older than Stale. A holder that could not refresh for
// Stale-Refresh considers its lock lapsed and stops writing (Writable
// fails) until it has taken the lock again and reloaded the index, so that
// by the time another client may treat the lock as stale, its holder has
// stopped writing, with Refresh to spare for clock skew and requests in
// flight.

// LockKind is shared or exclusive.
type LockKind int

const (
	// SharedLock is held by writers; any number may hold it together.
	SharedLock LockKind = iota
	// ExclusiveLock is held by prune and erase; it excludes every other lock.
	ExclusiveLock
)

func (k LockKind) String() string {
	if k == ExclusiveLock {
		return "exclusive"
	}
	return "shared"
}

// Lock timing defaults.
const (
	DefaultLockRefresh = time.Minute
	DefaultLockStale   = 5 * time.Minute
)

const lockAD = "keepfs lock v2"

var (
	// ErrLocked means another client holds a conflicting lock.
	ErrLocked = errors.New("the repository is locked")
	// ErrLockLapsed means this client's lock could not be refreshed in
	// time; it must not write until it has taken the lock again.
	ErrLockLapsed = errors.New("the repository lock lapsed")
)

// LockOptions describe a lock to take.
type LockOptions struct {
	Kind LockKind
	// Purpose says what the lock is for ("import", "mount", "prune"...),
	// shown to whoever it blocks.
	Purpose string
	// Owner identifies the client across its locks: locks of the same
	// owner never conflict (a mount that prunes upgrades its shared lock).
	// Empty means a fresh random owner.
	Owner string
	// Wait is how long to retry while another client holds a conflicting
	// lock; 0 fails at once.
	Wait time.Duration
	// Refresh and Stale default to DefaultLockRefresh and DefaultLockStale;
	// KEEPFS_LOCK_REFRESH and KEEPFS_LOCK_STALE override them (tests).
	Refresh, Stale time.Duration
	// ForceUnlock removes every other client's lock first (the admin's
	// way out when a lock's owner is known to be gone).
	ForceUnlock bool
	// NoRefresh leaves refreshing to the caller (Refresh method).
	NoRefresh bool
	// OnRelock runs after a lapsed lock was taken again and the index
	// reloaded, before writes are allowed again.
	OnRelock func(ctx context.Context) error
	Now      func() time.Time
	Log      *slog.Logger
}

// LockInfo is what a lock object holds.
type LockInfo struct {
	Kind    LockKind `json:"kind"`
	Purpose string   `json:"purpose"`
	Owner   string   `json:"owner"`
	Host    string   `json:"host"`
	PID     int      `json:"pid"`
	// Boot is the kernel's boot id (/proc/sys/kernel/random/boot_id) and
	// Start the process's start time in clock ticks since boot: with them
	// a lock of this host is told from one of another machine of the same
	// name, or of this one before a reboot, and from a process that
	// reuses its PID. Empty in locks written before they were recorded.
	Boot    string    `json:"boot,omitempty"`
	Start   uint64    `json:"start,omitempty"`
	Created time.Time `json:"created"`
	Time    time.Time `json:"time"`
	// Name is the object's name (not stored).
	Name string `json:"-"`
}

func (li LockInfo) String() string {
	return fmt.Sprintf("%s lock for %s by pid %d on %s since %s", li.Kind, li.Purpose, li.PID, li.Host,
		li.Created.UTC().Format(time.RFC3339))
}

// Lock is a held repository lock.
type Lock struct {
	r    *Repository
	opts LockOptions
	host string

	mu      sync.Mutex
	name    string    // current object
	stray   []string  // our objects a failed remove left behind; removed later
	written time.Time // time in the newest object we stored
	created time.Time // when this hold began (the objects' Created)
	lapsed  bool
	lastErr error

	cancel context.CancelFunc
	done   chan struct{}
}

func (o *LockOptions) defaults() {
	if o.Refresh <= 0 {
		o.Refresh = envDuration("KEEPFS_LOCK_REFRESH", DefaultLockRefresh)
	}
	if o.Stale <= 0 {
		o.Stale = envDuration("KEEPFS_LOCK_STALE", DefaultLockStale)
	}
	if o.Stale <= o.Refresh {
		o.Stale = 2 * o.Refresh
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Owner == "" {
		o.Owner = randomName()
	}
}

func envDuration(name string, def time.Duration) time.Duration {
	if v := os.Getenv(name); v != "" {
		if d, err := time.ParseDuration(v); err == nil && d > 0 {
			return d
		}
	}
	return def
}

func randomName() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b[:])
}

// Lock takes a lock on the repository and, unless NoRefresh, keeps it
// fresh in the background until Release. While it is held, the
// repository refuses writes once the lock has lapsed.
func (r *Repository) Lock(ctx context.Context, opts LockOptions) (*Lock, error) {
	opts.defaults()
	host, _ := os.Hostname()
	l := &Lock{r: r, opts: opts, host: host}
	if opts.ForceUnlock {
		if err := l.forceUnlock(ctx); err != nil {
			return nil, err
		}
	}
	if err := l.acquire(ctx); err != nil {
		return nil, err
	}
	r.lockMu.Lock()
	r.locks = append(r.locks, l)
	r.lockMu.Unlock()
	if !opts.NoRefresh {
		bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
		l.cancel = cancel
		l.done = make(chan struct{})
		go l.loop(bg)
	}
	if d := envDuration("KEEPFS_TEST_HOLD_LOCK", 0); d > 0 {
		time.Sleep(d) // integration tests: a client caught holding its lock
	}
	return l, nil
}

// acquire stores a lock object once no conflicting lock is held, retrying
// for opts.Wait.
func (l *Lock) acquire(ctx context.Context) error {
	deadline := l.opts.Now().Add(l.opts.Wait)
	backoff := 200 * time.Millisecond
	for {
		err := l.tryAcquire(ctx)
		if err == nil || !errors.Is(err, ErrLocked) || !l.opts.Now().Before(deadline) {
			return err
		}
		sleep := backoff/2 + time.Duration(mrand.Int64N(int64(backoff)))
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (gave up waiting: %v)", err, ctx.Err())
		case <-time.After(sleep):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (l *Lock) tryAcquire(ctx context.Context) error {
	if err := l.conflicts(ctx, ""); err != nil {
		return err
	}
	if err := l.write(ctx); err != nil {
		return err
	}
	// Two clients may have checked at the same moment: look again now that
	// ours is visible, and back off if anyone conflicts.
	l.mu.Lock()
	mine := l.name
	l.mu.Unlock()
	if err := l.conflicts(ctx, mine); err != nil {
		l.remove(ctx)
		return err
	}
	return nil
}

// conflicts lists the locks and reports one that conflicts with ours, after
// removing stale ones. mine is our own current object, if any.
func (l *Lock) conflicts(ctx context.Context, mine string) error {
	infos, err := l.r.Locks(ctx)
	if err != nil {
		return err
	}
	for _, li := range infos {
		if li.Name == mine || l.ours(li) {
			// This process's own locks: it orders its own writers (a
			// mount pauses uploads while it prunes).
			continue
		}
		if l.stale(li) {
			l.opts.Log.Warn("removing a stale repository lock", "lock", li.String())
			_ = l.r.be.Remove(ctx, remote.Handle{Type: remote.Lock, Name: li.Name})
			continue
		}
		if li.Owner == l.opts.Owner {
			continue
		}
		if l.opts.Purpose == MountPurpose && li.Purpose == MountPurpose {
			// Two mounts would each snapshot their own tree. LockMount
			// checks this first; here it also holds for a mount taking
			// its lapsed lock again (another may have mounted meanwhile)
			// and for two mounts starting at the same moment.
			return fmt.Errorf("%w (%s)", ErrMounted, li)
		}
		if l.opts.Kind == ExclusiveLock || li.Kind == ExclusiveLock {
			return fmt.Errorf("%w: %s", ErrLocked, li)
		}
	}
	return nil
}

// ours reports whether li was written by this process: the same host,
// PID and, where recorded, kernel and start time (two containers of one
// host name both run their daemon as PID 1).
func (l *Lock) ours(li LockInfo) bool {
	if li.Host != l.host || li.PID != os.Getpid() {
		return false
	}
	return li.Boot == "" || li.Boot == bootID() && li.Start == ownStart()
}

// stale reports whether li's owner is gone: on this host, its process no
// longer exists; elsewhere, it has not refreshed for Stale.
func (l *Lock) stale(li LockInfo) bool {
	return lockStale(li, l.opts.Now(), l.host, l.opts.Stale)
}

func lockStale(li LockInfo, now time.Time, host string, stale time.Duration) bool {
	if li.Host == host && li.Host != "" {
		boot := bootID()
		switch {
		case li.Boot == "" || boot == "":
			// Written before locks named their kernel, or no /proc
			// here: the host name has to do.
			return !processExists(li.PID)
		case li.Boot == boot:
			return !processRuns(li.PID, li.Start)
		}
		// The same name on another kernel: another machine of the same
		// name (cloned VMs often keep it), or this one before a reboot.
		// Neither's process can be asked, and taking the first for the
		// second would prune under a live writer: the lock's age decides.
	}
	return now.Sub(li.Time) > stale
}

// bootID is this kernel's boot id, "" if unknown.
var bootID = sync.OnceValue(func() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
})

// ownStart is this process's start time (see procStart).
var ownStart = sync.OnceValue(func() uint64 { return procStart(os.Getpid()) })

// procStart returns process pid's start time in clock ticks since boot
// (field 22 of /proc/PID/stat), 0 if unknown.
func procStart(pid int) uint64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The command name (field 2) is in parentheses and may hold spaces
	// and parentheses itself: count from the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	fields := strings.Fields(string(b[i+1:]))
	if len(fields) < 20 { // fields 3..22
		return 0
	}
	v, err := strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return 0
	}
	return v
}

// processRuns reports whether pid is the process that started at start
// (0: unknown, the PID alone decides).
func processRuns(pid int, start uint64) bool {
	if !processExists(pid) {
		return false
	}
	if start == 0 {
		return true
	}
	got := procStart(pid)
	return got == 0 || got == start
}

// LockStale is stale for a caller on host with the default stale time.
func LockStale(li LockInfo, now time.Time, host string) bool {
	return lockStale(li, now, host, envDuration("KEEPFS_LOCK_STALE", DefaultLockStale))
}

func processExists(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// Locks lists the readable lock objects. Objects that do not open under
// this repository's key are skipped: check reports foreign objects.
func (r *Repository) Locks(ctx context.Context) ([]LockInfo, error) {
	var names []string
	if err := r.be.List(ctx, remote.Lock, func(fi remote.Info) error {
		names = append(names, fi.Handle.Name)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list locks: %w", err)
	}
	var out []LockInfo
	for _, n := range names {
		b, err := remote.LoadAll(ctx, r.be, remote.Handle{Type: remote.Lock, Name: n})
		if errors.Is(err, remote.ErrNotFound) {
			continue // released meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("load lock %s: %w", n, err)
		}
		plain, err := r.key.Open(nil, b, []byte(lockAD))
		var li LockInfo
		if err == nil {
			err = json.Unmarshal(plain, &li)
		}
		if err != nil {
			// Not a lock a key holder wrote: it locks nothing, but the
			// store made it up (or damaged one), which is worth telling.
			r.Raise(notify.Event{Type: notify.TypeUnexpected, Severity: notify.Critical, Object: "locks/" + n,
				Message: "lock object " + shortName(n) + " does not authenticate: not written by a holder of the key, or modified; ignored"})
			continue
		}
		li.Name = n
		out = append(out, li)
	}
	return out, nil
}

func (l *Lock) forceUnlock(ctx context.Context) error {
	infos, err := l.r.Locks(ctx)
	if err != nil {
		return err
	}
	for _, li := range infos {
		l.opts.Log.Warn("force-unlock: removing a repository lock", "lock", li.String())
		if err := l.r.be.Remove(ctx, remote.Handle{Type: remote.Lock, Name: li.Name}); err != nil && !errors.Is(err, remote.ErrNotFound) {
			return fmt.Errorf("remove lock %s: %w", li.Name, err)
		}
	}
	return nil
}

// write stores a fresh lock object, then removes the previous one. It
// reports ErrLockLapsed if the previous one was gone: someone took it for
// stale, so what we think we hold may have been pruned meanwhile.
func (l *Lock) write(ctx context.Context) error {
	now := l.opts.Now().UTC()
	l.mu.Lock()
	created := now
	old := l.name
	if old != "" {
		created = l.created // keep the holder's start
	}
	l.mu.Unlock()
	li := LockInfo{Kind: l.opts.Kind, Purpose: l.opts.Purpose, Owner: l.opts.Owner, Host: l.host, PID: os.Getpid(),
		Boot: bootID(), Start: ownStart(), Created: created, Time: now}
	b, err := json.Marshal(li)
	if err != nil {
		return err
	}
	name := randomName()
	if err := l.r.be.Save(ctx, remote.Handle{Type: remote.Lock, Name: name}, l.r.key.Seal(nil, b, []byte(lockAD))); err != nil {
		// It may have been stored all the same (a lost answer).
		l.mu.Lock()
		l.stray = append(l.stray, name)
		l.mu.Unlock()
		return fmt.Errorf("save lock: %w", err)
	}
	l.mu.Lock()
	l.name = name
	l.written = now
	l.created = created
	stray := l.stray
	l.stray = nil
	l.mu.Unlock()
	if old != "" {
		err := l.r.be.Remove(ctx, remote.Handle{Type: remote.Lock, Name: old})
		if errors.Is(err, remote.ErrNotFound) {
			return fmt.Errorf("%w: our lock object was removed by another client", ErrLockLapsed)
		}
		if err != nil {
			stray = append(stray, old)
		}
	}
	l.removeStray(ctx, stray)
	return nil
}

// removeStray removes objects of ours left behind by failed removes (and
// saves whose answer was lost), keeping those it cannot remove yet.
func (l *Lock) removeStray(ctx context.Context, names []string) {
	var left []string
	for _, name := range names {
		err := l.r.be.Remove(ctx, remote.Handle{Type: remote.Lock, Name: name})
		if err != nil && !errors.Is(err, remote.ErrNotFound) {
			left = append(left, name)
		}
	}
	if len(left) > 0 {
		l.mu.Lock()
		l.stray = append(l.stray, left...)
		l.mu.Unlock()
	}
}

// remove removes our lock object, and any stray ones. One it cannot
// remove (cut off: a lapsed lock is removed before it is taken again) is
// kept as stray and removed later: left behind, it would stand for a live
// lock of this process, on this host, until the process exits.
func (l *Lock) remove(ctx context.Context) {
	l.mu.Lock()
	names := l.stray
	if l.name != "" {
		names = append(names, l.name)
	}
	l.name, l.stray = "", nil
	l.mu.Unlock()
	l.removeStray(ctx, names)
}

// Err reports whether the lock still allows writing: nil, or an error
// wrapping ErrLockLapsed.
func (l *Lock) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.lapsed && l.opts.Now().Sub(l.written) > l.opts.Stale-l.opts.Refresh {
		l.lapsed = true
	}
	if l.lapsed {
		if l.lastErr != nil {
			return fmt.Errorf("%w (last refresh failed: %v)", ErrLockLapsed, l.lastErr)
		}
		return ErrLockLapsed
	}
	return nil
}

// Info describes the held lock.
func (l *Lock) Info() LockInfo {
	l.mu.Lock()
	defer l.mu.Unlock()
	return LockInfo{Kind: l.opts.Kind, Purpose: l.opts.Purpose, Owner: l.opts.Owner, Host: l.host, PID: os.Getpid(), Time: l.written, Name: l.name}
}

// Refresh renews the lock. A lapsed lock is taken again from scratch (it
// may conflict now), the index reloaded and OnRelock run before writes are
// allowed again.
func (l *Lock) Refresh(ctx context.Context) error {
	if l.Err() == nil {
		err := l.write(ctx)
		if err == nil {
			return nil
		}
		l.mu.Lock()
		l.lastErr = err
		if errors.Is(err, ErrLockLapsed) {
			l.lapsed = true
		}
		l.mu.Unlock()
		if l.Err() == nil {
			return err
		}
		l.opts.Log.Error("repository lock lapsed: writes stop until it is taken again", "err", err)
	}
	l.r.relocks.Add(1)
	l.remove(ctx)
	if err := l.tryAcquire(ctx); err != nil {
		l.mu.Lock()
		l.lastErr = err
		l.mu.Unlock()
		return err
	}
	if err := l.r.LoadIndex(ctx); err != nil {
		l.mu.Lock()
		l.lastErr = err
		l.mu.Unlock()
		return fmt.Errorf("reload the index after re-taking the lock: %w", err)
	}
	if l.opts.OnRelock != nil {
		if err := l.opts.OnRelock(ctx); err != nil {
			return err
		}
	}
	l.mu.Lock()
	l.lapsed = false
	l.lastErr = nil
	l.mu.Unlock()
	l.opts.Log.Info("repository lock taken again; index reloaded")
	return nil
}

func (l *Lock) loop(ctx context.Context) {
	defer close(l.done)
	every := l.opts.Refresh
	t := time.NewTimer(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, l.opts.Refresh)
		err := l.Refresh(rctx)
		cancel()
		next := every
		if err != nil && ctx.Err() == nil {
			l.opts.Log.Warn("cannot refresh the repository lock", "err", err)
			next = max(every/4, 100*time.Millisecond) // try harder while failing
		}
		t.Reset(next)
	}
}

// Release stops refreshing and removes the lock object.
func (l *Lock) Release(ctx context.Context) {
	if l.cancel != nil {
		l.cancel()
		<-l.done
	}
	l.remove(ctx)
	r := l.r
	r.lockMu.Lock()
	for i, x := range r.locks {
		if x == l {
			r.locks = append(r.locks[:i], r.locks[i+1:]...)
			break
		}
	}
	r.lockMu.Unlock()
}

// Writable reports whether every lock this handle holds still allows
// writing. Writes to the remote check it first.
func (r *Repository) Writable() error {
	r.lockMu.Lock()
	locks := append([]*Lock(nil), r.locks...)
	r.lockMu.Unlock()
	for _, l := range locks {
		if err := l.Err(); err != nil {
			return err
		}
	}
	return nil
}

// LockedBy describes the conflicting lock in err for a person, or "".
func LockedBy(err error) string {
	if !errors.Is(err, ErrLocked) {
		return ""
	}
	_, after, _ := strings.Cut(err.Error(), ErrLocked.Error()+": ")
	return after
}
