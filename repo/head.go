package repo

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"golang.org/x/sys/unix"

	"github.com/keepfs/keepfs/policy/notify"
	"github.com/keepfs/keepfs/remote"
)

// Rollback and change detection. Every snapshot carries a Seq one above
// the head its writer knew (under the seal), and every client remembers
// in its state directory (ViewFile) what it last saw: the head, the
// generation, the key slots, a hash of the config and the hosts it knows.
// Guard compares that with the remote and raises events for a head that
// went backwards or vanished, key slots or a config changed by someone
// else, and a lock held by an unknown host.

// Head returns the snapshot with the highest Seq (the newest by time
// among equals, and among older snapshots without Seq); nil if none.
func (r *Repository) Head(ctx context.Context) (*Snapshot, error) {
	snaps, err := r.Snapshots(ctx)
	if err != nil {
		return nil, err
	}
	return headOf(snaps), nil
}

func headOf(snaps []*Snapshot) *Snapshot {
	var h *Snapshot
	for _, s := range snaps { // oldest first
		if h == nil || s.Seq >= h.Seq {
			h = s
		}
	}
	return h
}

// View is what a client last saw of the repository.
type View struct {
	RepoID     string    `json:"repo_id"`
	HeadSeq    uint64    `json:"head_seq"`
	HeadID     string    `json:"head_id,omitempty"`
	HeadTime   time.Time `json:"head_time,omitzero"`
	Generation uint64    `json:"generation"`
	Keys       []string  `json:"keys"`
	ConfigHash string    `json:"config_hash"`
	Hosts      []string  `json:"hosts"`
}

// ViewFile is the view's file in the state directory.
const ViewFile = "head"

// Observe reads the current view from the remote. Hosts are those of the
// snapshots and this machine's.
func (r *Repository) Observe(ctx context.Context) (View, []*Snapshot, error) {
	v := View{RepoID: r.cfg.ID}
	snaps, err := r.Snapshots(ctx)
	if err != nil {
		return v, nil, err
	}
	if h := headOf(snaps); h != nil {
		v.HeadSeq, v.HeadID, v.HeadTime = h.Seq, h.ID.String(), h.Time
	}
	if v.Generation, err = r.Generation(ctx); err != nil {
		return v, nil, err
	}
	if err := r.be.List(ctx, remote.Key, func(fi remote.Info) error {
		v.Keys = append(v.Keys, fi.Handle.Name)
		return nil
	}); err != nil {
		return v, nil, fmt.Errorf("list key slots: %w", err)
	}
	sort.Strings(v.Keys)
	cfg, err := remote.LoadAll(ctx, r.be, remote.Handle{Type: remote.Config})
	if err != nil {
		return v, nil, fmt.Errorf("load config: %w", err)
	}
	sum := sha256.Sum256(cfg)
	v.ConfigHash = hex.EncodeToString(sum[:])
	hosts := map[string]bool{}
	if h, err := os.Hostname(); err == nil {
		hosts[h] = true
	}
	for _, s := range snaps {
		if s.Hostname != "" {
			hosts[s.Hostname] = true
		}
	}
	for h := range hosts {
		v.Hosts = append(v.Hosts, h)
	}
	sort.Strings(v.Hosts)
	return v, snaps, nil
}

// Guard compares the remote with the view remembered in the state
// directory dir, raises an event for each change this client did not
// make, and remembers the new view. The first run remembers only. A
// rollback is reported once: the view then follows the remote, and the
// incident stays open until acknowledged.
func (r *Repository) Guard(ctx context.Context, dir string) ([]notify.Event, error) {
	var evs []notify.Event
	err := UpdateView(dir, func(old View) (View, error) {
		cur, snaps, err := r.Observe(ctx)
		if err != nil {
			return old, err
		}
		if old.RepoID == r.cfg.ID {
			evs = compareView(old, cur, snaps)
		}
		// Hosts once known stay known.
		for _, h := range old.Hosts {
			if !slices.Contains(cur.Hosts, h) {
				cur.Hosts = append(cur.Hosts, h)
			}
		}
		sort.Strings(cur.Hosts)
		locks, err := r.Locks(ctx)
		if err == nil {
			for _, l := range locks {
				if l.Host != "" && !slices.Contains(cur.Hosts, l.Host) {
					evs = append(evs, notify.Event{Type: notify.TypeUnknownLock, Severity: notify.Warning,
						Object: "locks/" + l.Name, Message: fmt.Sprintf("a %s lock for %s is held by host %q, which this client has never seen write to the repository", l.Kind, l.Purpose, l.Host)})
					// Reported once, as every change is: a host that only
					// prunes takes a lock of a new name every run and
					// would otherwise open an incident each time.
					cur.Hosts = append(cur.Hosts, l.Host)
					sort.Strings(cur.Hosts)
				}
			}
		}
		return cur, nil
	})
	for _, ev := range evs {
		r.Raise(ev)
	}
	return evs, err
}

// SetViewDir makes every snapshot this handle stores from now on advance
// the head of the view remembered in dir: a remote rolled back to before
// a snapshot this client stored itself is then a rollback at the next
// Guard, even if no Guard ran since the snapshot (a mount scrubs once an
// hour; an unmount or an import ends without one).
func (r *Repository) SetViewDir(dir string) { r.viewDir.Store(&dir) }

var errViewUnchanged = errors.New("view unchanged")

// noteOwnHead advances the remembered head to sn, stored by this handle,
// if it is higher. A view of another repository, or none yet (the first
// Guard remembers everything), is left alone.
func (r *Repository) noteOwnHead(sn *Snapshot) {
	p := r.viewDir.Load()
	if p == nil {
		return
	}
	err := UpdateView(*p, func(old View) (View, error) {
		if old.RepoID != r.cfg.ID || sn.Seq <= old.HeadSeq {
			return old, errViewUnchanged
		}
		old.HeadSeq, old.HeadID, old.HeadTime = sn.Seq, sn.ID.String(), sn.Time
		if sn.Hostname != "" && !slices.Contains(old.Hosts, sn.Hostname) {
			old.Hosts = append(old.Hosts, sn.Hostname)
			sort.Strings(old.Hosts)
		}
		return old, nil
	})
	if err != nil && !errors.Is(err, errViewUnchanged) {
		slog.Warn("cannot remember the snapshot just stored as the head seen", "err", err)
	}
}

// ownKeyChange runs fn, this handle's change of key slot id (added or
// removed), and with a view dir (SetViewDir) records it in the view while
// holding the view's lock: a Guard on the same state directory (a mount's
// scrub, another command) then never sees the slot change before the view
// does, which it would report as someone else's. Only this slot is
// recorded: any other change still is one for the next Guard.
func (r *Repository) ownKeyChange(id string, added bool, fn func() error) error {
	p := r.viewDir.Load()
	if p == nil {
		return fn()
	}
	ran := false
	var ferr error
	err := UpdateView(*p, func(old View) (View, error) {
		ran = true
		if ferr = fn(); ferr != nil || old.RepoID != r.cfg.ID {
			return old, errViewUnchanged
		}
		keys := slices.DeleteFunc(slices.Clone(old.Keys), func(k string) bool { return k == id })
		if added {
			keys = append(keys, id)
			sort.Strings(keys)
		}
		old.Keys = keys
		return old, nil
	})
	if !ran {
		ferr = fn()
	}
	if err != nil && !errors.Is(err, errViewUnchanged) {
		slog.Warn("cannot remember this client's key slot change in the view", "err", err)
	}
	return ferr
}

// AcceptView remembers the remote as it is now, without comparing: for
// changes this client just made (a key added or removed).
func (r *Repository) AcceptView(ctx context.Context, dir string) error {
	return UpdateView(dir, func(old View) (View, error) {
		cur, _, err := r.Observe(ctx)
		if err != nil {
			return old, err
		}
		if cur.HeadSeq < old.HeadSeq && cur.Generation == old.Generation {
			cur.HeadSeq, cur.HeadID, cur.HeadTime = old.HeadSeq, old.HeadID, old.HeadTime
		}
		cur.Hosts = mergeHosts(old.Hosts, cur.Hosts)
		return cur, nil
	})
}

func mergeHosts(a, b []string) []string {
	out := append([]string(nil), b...)
	for _, h := range a {
		if !slices.Contains(out, h) {
			out = append(out, h)
		}
	}
	sort.Strings(out)
	return out
}

func compareView(old, cur View, snaps []*Snapshot) []notify.Event {
	var evs []notify.Event
	for _, k := range cur.Keys {
		if !slices.Contains(old.Keys, k) {
			evs = append(evs, notify.Event{Type: notify.TypeKeyAdded, Severity: notify.Critical, Object: "keys/" + k,
				Message: "a key slot was added by someone other than this client: whoever holds its passphrase can read everything"})
		}
	}
	for _, k := range old.Keys {
		if !slices.Contains(cur.Keys, k) {
			evs = append(evs, notify.Event{Type: notify.TypeKeyRemoved, Severity: notify.Warning, Object: "keys/" + k,
				Message: "a key slot was removed by someone other than this client"})
		}
	}
	if old.ConfigHash != "" && cur.ConfigHash != old.ConfigHash {
		evs = append(evs, notify.Event{Type: notify.TypeConfigChanged, Severity: notify.Critical, Object: "config",
			Message: "the repository config changed since this client last saw it"})
	}
	// A prune or erase (which advance the generation, and which the remote
	// cannot forge) may remove snapshots; otherwise the head never goes
	// back and the one we saw never goes away without a rewrite of it.
	if cur.Generation != old.Generation {
		return evs
	}
	gone := old.HeadID != "" && !slices.ContainsFunc(snaps, func(s *Snapshot) bool {
		return s.ID.String() == old.HeadID || (s.Rewrites != nil && s.Rewrites.String() == old.HeadID) || (old.HeadSeq > 0 && s.Seq >= old.HeadSeq)
	})
	if cur.HeadSeq < old.HeadSeq || gone {
		evs = append(evs, notify.Event{Type: notify.TypeRollback, Severity: notify.Critical, Object: "snapshots/",
			Message: fmt.Sprintf("the remote's newest snapshot is #%d (%s); this client has seen #%d (%s): snapshots were dropped or the repository rolled back",
				cur.HeadSeq, shortName(cur.HeadID), old.HeadSeq, shortName(old.HeadID))})
	}
	return evs
}

// LoadView reads the view remembered in dir (zero if none).
func LoadView(dir string) (View, error) {
	var v View
	b, err := os.ReadFile(filepath.Join(dir, ViewFile))
	if errors.Is(err, os.ErrNotExist) {
		return v, nil
	}
	if err != nil {
		return v, err
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return View{}, fmt.Errorf("%s is damaged: %w", filepath.Join(dir, ViewFile), err)
	}
	return v, nil
}

// UpdateView runs fn on the view of dir under an exclusive flock (a mount
// and commands may share the state directory) and stores what it returns.
func UpdateView(dir string, fn func(View) (View, error)) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	lf, err := os.OpenFile(filepath.Join(dir, ViewFile+".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	defer lf.Close()
	if err := unix.Flock(int(lf.Fd()), unix.LOCK_EX); err != nil {
		return err
	}
	old, err := LoadView(dir)
	if err != nil {
		old = View{}
	}
	nv, ferr := fn(old)
	if ferr != nil {
		return ferr
	}
	b, err := json.MarshalIndent(nv, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, "."+ViewFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, ViewFile))
}
