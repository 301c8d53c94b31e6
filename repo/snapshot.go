package repo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/keepfs/keepfs/policy/audit"
	"github.com/keepfs/keepfs/policy/notify"
	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/pack"
	"github.com/keepfs/keepfs/repo/tree"
)

// Snapshot is one point-in-time state of the tree.
type Snapshot struct {
	Time time.Time `json:"time"`
	Tree crypto.ID `json:"tree"`
	// Parent is the head the writer knew when it saved this snapshot, and
	// Seq that head's Seq + 1: under the seal, so a remote that serves an
	// older head, or drops the newest snapshot, is noticed by a client
	// that saw a higher Seq (head.go). Older snapshots have neither.
	Parent   *crypto.ID    `json:"parent,omitempty"`
	Seq      uint64        `json:"seq,omitempty"`
	Hostname string        `json:"hostname,omitempty"`
	Username string        `json:"username,omitempty"`
	Source   string        `json:"source,omitempty"`
	Stats    SnapshotStats `json:"stats"`
	// Rewrites names the snapshot this one replaced when an erase removed
	// files from it: a rerun after a crash finds what it already did.
	Rewrites *crypto.ID `json:"rewrites,omitempty"`
	// AuditHead is the newest audit entry the writer knew of: the audit
	// log must reach it (audit --verify detects a truncated log). Older
	// snapshots have none.
	AuditHead *audit.Head `json:"audit_head,omitempty"`

	// ID is the name of the stored object; not part of the encoding.
	ID crypto.ID `json:"-"`

	// label is the name Snapshots gave it among the others (UniqueNames),
	// so that every listing and report names a snapshot as .versions does.
	label string
}

// SnapshotStats summarise the tree and what this snapshot added.
type SnapshotStats struct {
	Files      int64 `json:"files"`
	Dirs       int64 `json:"dirs"`
	Bytes      int64 `json:"bytes"`
	BlobsNew   int   `json:"blobs_new"`
	BytesAdded int64 `json:"bytes_added"`
}

const snapshotAD = "keepfs snapshot v1"

// TimeFormat names snapshots in .versions and in --at arguments.
const TimeFormat = "2006-01-02T150405Z"

// Name is the snapshot's name as .versions shows it: its time in
// TimeFormat, with "-N" for the N-th later snapshot of the same second when
// it came from Snapshots.
func (s *Snapshot) Name() string {
	if s.label != "" {
		return s.label
	}
	return s.TimeName()
}

// TimeName is the snapshot's time in TimeFormat, without a suffix.
func (s *Snapshot) TimeName() string { return s.Time.UTC().Format(TimeFormat) }

// UniqueNames names snaps (in repository order, see SortSnapshots) as
// .versions lists them: by time, with "-1", "-2" … for later snapshots of
// the same second.
func UniqueNames(snaps []*Snapshot) []string {
	out := make([]string, 0, len(snaps))
	count := map[string]int{}
	for _, s := range snaps {
		n := s.TimeName()
		if k := count[n]; k > 0 {
			n = fmt.Sprintf("%s-%d", n, k)
		}
		count[s.TimeName()]++
		out = append(out, n)
	}
	return out
}

// SaveTree encodes and stores one directory.
func (r *Repository) SaveTree(ctx context.Context, t *tree.Tree) (crypto.ID, error) {
	b, err := t.Encode()
	if err != nil {
		return crypto.ID{}, err
	}
	id, _, err := r.SaveBlob(ctx, pack.Tree, b)
	return id, err
}

// LoadTree loads and decodes one directory, through a small cache: trees
// never change, so a cached one is always right.
func (r *Repository) LoadTree(ctx context.Context, id crypto.ID) (*tree.Tree, error) {
	if v, ok := r.treeCache.get(id); ok {
		return v.(*tree.Tree), nil
	}
	b, err := r.LoadBlob(ctx, pack.Tree, id)
	if err != nil {
		return nil, err
	}
	t, err := tree.Decode(b)
	if err != nil {
		return nil, fmt.Errorf("tree %s: %w", id.Short(), err)
	}
	r.treeCache.add(id, t)
	return t, nil
}

// SaveSnapshot flushes every pending blob and index, then stores sn: the
// snapshot object is always the last thing written.
func (r *Repository) SaveSnapshot(ctx context.Context, sn *Snapshot) error {
	if err := r.Flush(ctx); err != nil {
		return err
	}
	if !r.ix().Has(pack.Tree, sn.Tree) {
		return fmt.Errorf("snapshot names tree %s which the repository does not hold", sn.Tree.Short())
	}
	if sn.Seq == 0 {
		head, err := r.Head(ctx)
		if err != nil {
			return fmt.Errorf("save snapshot: find the head: %w", err)
		}
		sn.Seq = 1
		if head != nil {
			sn.Seq = head.Seq + 1
			if sn.Parent == nil {
				p := head.ID
				sn.Parent = &p
			}
		}
	}
	if sn.AuditHead == nil {
		if h := r.auditHead(ctx); !h.IsZero() {
			sn.AuditHead = &h
		}
	}
	b, err := json.Marshal(sn)
	if err != nil {
		return err
	}
	sealed := r.key.Seal(nil, b, []byte(snapshotAD))
	sn.ID = crypto.Hash(sealed)
	sn.label = "" // a copy of a listed snapshot (an erase's rewrite) is named anew
	relocks := r.relocks.Load()
	if err := r.Writable(); err != nil {
		return fmt.Errorf("save snapshot: %w", err)
	}
	h := remote.Handle{Type: remote.Snapshot, Name: sn.ID.String()}
	if err := r.be.Save(ctx, h, sealed); err != nil {
		return fmt.Errorf("save snapshot: %w", err)
	}
	// The lock may have lapsed while the object was on its way (the
	// process was paused, the store took minutes to take it): another
	// client may have taken it for stale meanwhile and pruned or erased
	// what the snapshot names, so it is not kept, even if the lock was
	// taken again since.
	werr := r.Writable()
	if werr == nil && r.relocks.Load() != relocks {
		werr = fmt.Errorf("%w (and was taken again while the snapshot was being stored)", ErrLockLapsed)
	}
	if werr != nil {
		if err := r.be.Remove(context.WithoutCancel(ctx), h); err != nil && !errors.Is(err, remote.ErrNotFound) {
			return fmt.Errorf("save snapshot: %w; removing the snapshot stored meanwhile failed: %v", werr, err)
		}
		return fmt.Errorf("save snapshot: %w", werr)
	}
	cp := *sn
	r.snapMu.Lock()
	r.snaps[sn.ID] = &cp
	r.snapMu.Unlock()
	r.noteOwnHead(sn)
	return nil
}

// LoadSnapshot loads one snapshot object.
func (r *Repository) LoadSnapshot(ctx context.Context, id crypto.ID) (*Snapshot, error) {
	b, err := remote.LoadAll(ctx, r.be, remote.Handle{Type: remote.Snapshot, Name: id.String()})
	if err != nil {
		return nil, fmt.Errorf("load snapshot %s: %w", id.Short(), err)
	}
	obj, what := "snapshots/"+id.String(), "snapshot "+id.Short()
	// The name is the hash of the sealed bytes: an old snapshot replayed
	// under a new name opens fine, but does not hash to it.
	if crypto.Hash(b) != id {
		err := fmt.Errorf("snapshot %s: %w", id.Short(), ErrNameMismatch)
		r.raiseLoad(obj, what, "open", err)
		return nil, err
	}
	plain, err := r.key.Open(nil, b, []byte(snapshotAD))
	if err != nil {
		r.raiseLoad(obj, what, "open", err)
		return nil, fmt.Errorf("snapshot %s: %w", id.Short(), err)
	}
	var sn Snapshot
	if err := json.Unmarshal(plain, &sn); err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", id.Short(), err)
	}
	sn.ID = id
	return &sn, nil
}

// Snapshots loads every snapshot, oldest first. Snapshot objects never
// change, so those loaded before come from memory; each caller gets its
// own copies.
func (r *Repository) Snapshots(ctx context.Context) ([]*Snapshot, error) {
	var ids []crypto.ID
	if err := r.be.List(ctx, remote.Snapshot, func(fi remote.Info) error {
		id, err := crypto.ParseID(fi.Handle.Name)
		if err != nil {
			// Not a snapshot of ours (no writer names one so): raised and
			// left out, not an error, or any file the store puts here
			// would stop every listing, restore and the guard itself.
			r.Raise(notify.Event{Type: notify.TypeUnexpected, Severity: notify.Critical, Object: "snapshots/" + fi.Handle.Name,
				Message: "unexpected object " + fi.Handle.Name + " among the snapshots: not written by keepfs; ignored"})
			return nil
		}
		ids = append(ids, id)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	out := make([]*Snapshot, len(ids))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	r.snapMu.Lock()
	listed := make(map[crypto.ID]bool, len(ids))
	for i, id := range ids {
		listed[id] = true
		if sn, ok := r.snaps[id]; ok {
			cp := *sn
			out[i] = &cp
		}
	}
	for id := range r.snaps {
		if !listed[id] {
			delete(r.snaps, id)
		}
	}
	r.snapMu.Unlock()
	for i, id := range ids {
		if out[i] != nil {
			continue
		}
		g.Go(func() error {
			sn, err := r.LoadSnapshot(gctx, id)
			if err != nil {
				return err
			}
			cp := *sn
			r.snapMu.Lock()
			r.snaps[id] = &cp
			r.snapMu.Unlock()
			out[i] = sn
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	SortSnapshots(out)
	for i, n := range UniqueNames(out) {
		out[i].label = n
	}
	return out, nil
}

// NameOf is sn's name as Snapshots and .versions give it, suffix included;
// its time name if the listing fails or no longer holds it.
func (r *Repository) NameOf(ctx context.Context, sn *Snapshot) string {
	snaps, err := r.Snapshots(ctx)
	if err != nil {
		return sn.TimeName()
	}
	for _, s := range snaps {
		if s.ID == sn.ID {
			return s.Name()
		}
	}
	return sn.TimeName()
}

// SortSnapshots orders by time; equal times put a parent before its child,
// then sort by id so the order is stable.
func SortSnapshots(s []*Snapshot) {
	sort.SliceStable(s, func(i, j int) bool {
		if !s[i].Time.Equal(s[j].Time) {
			return s[i].Time.Before(s[j].Time)
		}
		if s[j].Parent != nil && *s[j].Parent == s[i].ID {
			return true
		}
		if s[i].Parent != nil && *s[i].Parent == s[j].ID {
			return false
		}
		return string(s[i].ID[:]) < string(s[j].ID[:])
	})
}

// ErrNoSnapshot means no snapshot matches a time or id.
var ErrNoSnapshot = errors.New("no snapshot")

// ParseTime parses a point in time as users give it: TimeFormat or a prefix
// of it (meaning the end of that period), RFC 3339, "latest" or "".
// The zero time means latest.
func ParseTime(s string) (time.Time, error) {
	if s == "" || s == "latest" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	return ParseTimePrefix(s)
}

// ParseTimePrefix parses a prefix of TimeFormat ("2026-11-28T13") as the
// last instant of the period it names.
func ParseTimePrefix(s string) (time.Time, error) {
	const full = "2006-01-02T150405"
	steps := map[int]func(time.Time) time.Time{
		4:  func(t time.Time) time.Time { return t.AddDate(1, 0, 0) },
		7:  func(t time.Time) time.Time { return t.AddDate(0, 1, 0) },
		10: func(t time.Time) time.Time { return t.AddDate(0, 0, 1) },
		13: func(t time.Time) time.Time { return t.Add(time.Hour) },
		15: func(t time.Time) time.Time { return t.Add(time.Minute) },
		17: func(t time.Time) time.Time { return t.Add(time.Second) },
	}
	p := strings.TrimSuffix(strings.TrimSuffix(s, "Z"), "T")
	if add, ok := steps[len(p)]; ok {
		if t, err := time.ParseInLocation(full[:len(p)], p, time.UTC); err == nil {
			return add(t).Add(-time.Nanosecond), nil
		}
	}
	return time.Time{}, fmt.Errorf("invalid time %q: want YYYY-MM-DDTHHMMSSZ, a prefix of it, RFC 3339 or \"latest\"", s)
}

// FindSnapshot returns the newest snapshot at or before at (zero: latest).
func FindSnapshot(snaps []*Snapshot, at time.Time) (*Snapshot, error) {
	var best *Snapshot
	for _, s := range snaps {
		if at.IsZero() || !s.Time.After(at) {
			best = s
		}
	}
	if best == nil {
		if len(snaps) == 0 {
			return nil, fmt.Errorf("%w: the repository has no snapshots yet", ErrNoSnapshot)
		}
		return nil, fmt.Errorf("%w at or before %s (the first is %s)", ErrNoSnapshot, at.UTC().Format(TimeFormat), snaps[0].Name())
	}
	return best, nil
}

// ErrPathNotFound means a path does not exist in a snapshot.
var ErrPathNotFound = errors.New("no such file or directory in snapshot")

// Lookup resolves a slash path ("/docs/a.txt", "/" is the root) in the tree
// rooted at root. For the root it returns a synthetic directory node.
func (r *Repository) Lookup(ctx context.Context, root crypto.ID, p string) (*tree.Node, error) {
	p = path.Clean("/" + p)
	node := &tree.Node{Name: "/", Type: tree.Dir, Subtree: root, Mode: 0o755}
	if p == "/" {
		return node, nil
	}
	for _, part := range strings.Split(p[1:], "/") {
		if node.Type != tree.Dir {
			return nil, fmt.Errorf("%s: %w", p, ErrPathNotFound)
		}
		t, err := r.LoadTree(ctx, node.Subtree)
		if err != nil {
			return nil, err
		}
		node = t.Find(part)
		if node == nil {
			return nil, fmt.Errorf("%s: %w", p, ErrPathNotFound)
		}
	}
	return node, nil
}
