// Package erase removes files from every snapshot of a repository (GDPR
// Art. 17): it rewrites the trees on the affected paths and the affected
// snapshots, deletes every blob no remaining file references at once
// (rewriting the packs that held them), advances the repository's
// generation naming the erased blobs, verifies, and reports what it did in
// a receipt.
//
// Crash safety: a rewritten snapshot is stored before the one it replaces
// is deleted, and names it (Snapshot.Rewrites), so a rerun after a crash
// deletes a replaced snapshot instead of rewriting it twice; blobs go only
// after every snapshot naming them is gone. At every step every snapshot
// names only blobs the repository holds.
package erase

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/keepfs/keepfs/policy/audit"
	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/history"
	"github.com/keepfs/keepfs/repo/pack"
	"github.com/keepfs/keepfs/repo/tree"
)

// Options say what to erase.
type Options struct {
	// Paths are repository paths ("/hr/alice/scan.bin"); a directory means
	// everything under it.
	Paths []string `json:"paths"`
	// WithCopies also erases every file, in any snapshot, whose content is
	// identical to an erased version's.
	WithCopies bool `json:"with_copies,omitempty"`
	// KeepCurrent leaves the newest snapshot (and a mount's live tree)
	// alone: history only.
	KeepCurrent bool          `json:"keep_current,omitempty"`
	DryRun      bool          `json:"dry_run,omitempty"`
	RequestID   string        `json:"request_id,omitempty"`
	Now         time.Time     `json:"-"`
	Progress    repo.Progress `json:"-"`
	// Lock is how to take the exclusive lock (Wait: --retry-lock,
	// ForceUnlock); Kind and Purpose are set here.
	Lock repo.LockOptions `json:"-"`
}

// Version is one file as one snapshot held it.
type Version struct {
	Snapshot string `json:"snapshot"`
	// SnapshotID tells snapshots of one second apart inside the process.
	SnapshotID crypto.ID `json:"-"`
	Path       string    `json:"path"`
	Size       uint64    `json:"size"`
	Copy       bool      `json:"copy,omitempty"`
}

// Rewrite maps a replaced snapshot to its replacement.
type Rewrite struct {
	Snapshot string `json:"snapshot"`
	Old      string `json:"old_id"`
	New      string `json:"new_id"`
}

// Kept is a chunk of erased content that stays because other files use it.
type Kept struct {
	Blob  string   `json:"blob"`
	Paths []string `json:"kept_by"`
}

// Verification is what the erase checked after it was done.
type Verification struct {
	NamesFound      int    `json:"erased_names_found"`
	BlobsReadable   int    `json:"erased_blobs_readable"`
	SnapshotsOK     int    `json:"snapshots_checked_ok"`
	SnapshotsFailed int    `json:"snapshots_checked_failed"`
	Result          string `json:"result"`
}

// Result is the repository part of a receipt.
type Result struct {
	RequestID      string    `json:"request_id,omitempty"`
	Repository     string    `json:"repository"`
	Paths          []string  `json:"paths_requested"`
	DryRun         bool      `json:"dry_run"`
	Versions       []Version `json:"versions_removed"`
	Copies         []Version `json:"copies_removed,omitempty"`
	Rewritten      []Rewrite `json:"snapshots_rewritten"`
	BlobsRemoved   int       `json:"blobs_removed"`
	BytesRemoved   int64     `json:"bytes_removed"`
	PacksRewritten int       `json:"packs_rewritten"`
	PacksDeleted   int       `json:"packs_deleted"`
	ErasedBlobs    []string  `json:"erased_blobs"`
	KeptShared     []Kept    `json:"chunks_kept_shared,omitempty"`
	Generation     uint64    `json:"generation,omitempty"`
	// PartialUploads are uploads writers left half done (killed or cut
	// off mid-Save), deleted because they may hold erased blobs: no
	// listing shows them, so nothing else would.
	PartialUploads int          `json:"partial_uploads_removed,omitempty"`
	Verification   Verification `json:"verification"`
	// AuditEntry is the hash of the audit log entry recording the erase
	// ("" if the remote did not take it: it is queued locally then).
	AuditEntry       string `json:"audit_entry"`
	erasedIDs        []crypto.ID
	erasedFiles      map[crypto.ID]bool // FileIDs of the versions removed
	removedPathsSnap map[crypto.ID][]string
}

// FileID identifies the file at path p with the content whose
// history.ContentID is content, keyed, so a generation record can name
// the files an erase removed without their names or content.
func FileID(k *crypto.Key, p string, content crypto.ID) crypto.ID {
	b := make([]byte, 0, 32+len(p)+len(content))
	b = append(b, "keepfs erased file\x00"...)
	b = append(b, p...)
	b = append(b, 0)
	b = append(b, content[:]...)
	return k.BlobID(b)
}

// ErasedIDs are the blobs the erase removed, for purging local copies.
func (res *Result) ErasedIDs() []crypto.ID { return res.erasedIDs }

// ErrNothing means no snapshot holds any of the paths.
var ErrNothing = errors.New("no snapshot holds that path")

// Erase does it, holding the repository's exclusive lock (taken here
// unless the handle holds it already: a mount erasing through its daemon).
func Erase(ctx context.Context, r *repo.Repository, opts Options) (*Result, error) {
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	if opts.Progress == nil {
		opts.Progress = repo.NoProgress{}
	}
	if !opts.DryRun {
		release, err := r.Exclusive(ctx, "erase", opts.Lock)
		if err != nil {
			return nil, err
		}
		defer release()
	}
	snaps, err := r.Snapshots(ctx)
	if err != nil {
		return nil, err
	}
	res := &Result{RequestID: opts.RequestID, Repository: r.Config().ID, Paths: opts.Paths, DryRun: opts.DryRun,
		Versions: []Version{}, Rewritten: []Rewrite{}, ErasedBlobs: []string{}, removedPathsSnap: map[crypto.ID][]string{}}
	if !opts.DryRun {
		// Under the exclusive lock no writer is mid-upload.
		tr, err := remote.RemoveTemp(ctx, r.Backend())
		if err != nil {
			return nil, err
		}
		res.PartialUploads = tr.Objects
	}

	// A crash after storing a rewrite but before deleting what it
	// replaced: finish that first.
	live := snaps[:0:0]
	replaced := map[crypto.ID]bool{}
	for _, sn := range snaps {
		if sn.Rewrites != nil {
			replaced[*sn.Rewrites] = true
		}
	}
	for _, sn := range snaps {
		if replaced[sn.ID] {
			if !opts.DryRun {
				if err := removeSnapshot(ctx, r, sn.ID); err != nil {
					return nil, err
				}
			}
			continue
		}
		live = append(live, sn)
	}
	snaps = live
	newest := len(snaps) - 1

	// What goes: per snapshot, the paths to remove.
	remove := map[crypto.ID]map[string]*tree.Node{}
	add := func(sn *repo.Snapshot, p string, n *tree.Node) bool {
		if opts.KeepCurrent && len(snaps) > 0 && sn.ID == snaps[newest].ID {
			return false
		}
		m := remove[sn.ID]
		if m == nil {
			m = map[string]*tree.Node{}
			remove[sn.ID] = m
		}
		if _, dup := m[p]; dup {
			return false
		}
		m[p] = n
		return true
	}
	erasedContent := map[crypto.ID]bool{}
	res.erasedFiles = map[crypto.ID]bool{}
	removedFile := func(p string, n *tree.Node) {
		// --keep-current keeps the live file; an older version with the
		// same path and content must not take it from other clients.
		if !opts.KeepCurrent {
			res.erasedFiles[FileID(r.Key(), p, history.ContentID(r.Key(), n))] = true
		}
	}
	chunks := map[crypto.ID]int64{}
	noteFile := func(n *tree.Node) {
		erasedContent[history.ContentID(r.Key(), n)] = true
		for _, c := range n.Content {
			chunks[c] = 0
		}
	}
	for _, p := range opts.Paths {
		p = path.Clean("/" + p)
		found := false
		// A directory in any snapshot: everything under it, by path.
		for _, sn := range snaps {
			n, err := r.Lookup(ctx, sn.Tree, p)
			if err != nil && !errors.Is(err, repo.ErrPathNotFound) {
				return nil, err
			}
			if n == nil || n.Type != tree.Dir || p == "/" {
				continue
			}
			found = true
			if add(sn, p, n) {
				if err := walkFiles(ctx, r, n.Subtree, p, func(fp string, fn *tree.Node) {
					noteFile(fn)
					removedFile(fp, fn)
					res.Versions = append(res.Versions, Version{Snapshot: sn.Name(), SnapshotID: sn.ID, Path: fp, Size: fn.Size})
				}); err != nil {
					return nil, err
				}
			}
		}
		// A file: every version, under every earlier name.
		occ, err := history.Trace(ctx, r, snaps, p)
		if err != nil {
			return nil, err
		}
		for _, o := range occ {
			found = true
			noteFile(o.Node)
			if add(o.Snapshot, o.Path, o.Node) {
				removedFile(o.Path, o.Node)
				res.Versions = append(res.Versions, Version{Snapshot: o.Snapshot.Name(), SnapshotID: o.Snapshot.ID, Path: o.Path, Size: o.Node.Size})
			}
		}
		if !found {
			if !opts.DryRun {
				// Perhaps an erase of it was killed half-way: finish
				// deleting what no snapshot names any more.
				if _, err := r.SweepUnused(ctx, false); err != nil {
					return nil, err
				}
			}
			return nil, fmt.Errorf("%s: %w", p, ErrNothing)
		}
	}
	if opts.WithCopies {
		for _, sn := range snaps {
			if err := walkFiles(ctx, r, sn.Tree, "/", func(fp string, fn *tree.Node) {
				if fn.Size > 0 && erasedContent[history.ContentID(r.Key(), fn)] && add(sn, fp, fn) {
					removedFile(fp, fn)
					res.Copies = append(res.Copies, Version{Snapshot: sn.Name(), SnapshotID: sn.ID, Path: fp, Size: fn.Size, Copy: true})
				}
			}); err != nil {
				return nil, err
			}
		}
	}
	sort.Slice(res.Versions, func(i, j int) bool {
		if res.Versions[i].Snapshot != res.Versions[j].Snapshot {
			return res.Versions[i].Snapshot < res.Versions[j].Snapshot
		}
		return res.Versions[i].Path < res.Versions[j].Path
	})

	// Which erased chunks stay because a file not erased uses them.
	keptBy := map[crypto.ID][]string{}
	for _, sn := range snaps {
		rm := remove[sn.ID]
		if err := walkFiles(ctx, r, sn.Tree, "/", func(fp string, fn *tree.Node) {
			if removedBy(rm, fp) {
				return
			}
			for _, c := range fn.Content {
				if _, ok := chunks[c]; ok {
					if ps := keptBy[c]; len(ps) < 8 && (len(ps) == 0 || ps[len(ps)-1] != fp) {
						keptBy[c] = append(ps, fp)
					}
				}
			}
		}); err != nil {
			return nil, err
		}
	}
	for c := range chunks {
		if ps, ok := keptBy[c]; ok {
			res.KeptShared = append(res.KeptShared, Kept{Blob: c.String(), Paths: ps})
			continue
		}
		res.erasedIDs = append(res.erasedIDs, c)
		res.ErasedBlobs = append(res.ErasedBlobs, c.String())
		if loc, ok := r.Index().Lookup(pack.Data, c); ok {
			res.BytesRemoved += int64(loc.Length)
		}
	}
	sort.Strings(res.ErasedBlobs)
	sort.Slice(res.KeptShared, func(i, j int) bool { return res.KeptShared[i].Blob < res.KeptShared[j].Blob })
	if opts.DryRun {
		for _, sn := range snaps {
			if remove[sn.ID] != nil {
				res.Rewritten = append(res.Rewritten, Rewrite{Snapshot: sn.Name(), Old: sn.ID.String()})
			}
		}
		packs := map[crypto.ID]bool{}
		for _, id := range res.erasedIDs {
			if loc, ok := r.Index().Lookup(pack.Data, id); ok {
				packs[loc.Pack] = true
			}
		}
		res.PacksRewritten = len(packs) // at most: some may be deleted whole
		res.BlobsRemoved = len(res.erasedIDs)
		return res, nil
	}

	// Rewrite, oldest first, so that a parent's new id is known.
	newID := map[crypto.ID]crypto.ID{}
	opts.Progress.Start("rewrite snapshots", int64(len(remove)))
	for _, sn := range snaps {
		rm := remove[sn.ID]
		parentMoved := sn.Parent != nil && newID[*sn.Parent] != crypto.ID{}
		if rm == nil && !parentMoved {
			continue
		}
		root := sn.Tree
		if rm != nil {
			var err error
			if root, err = rewrite(ctx, r, sn.Tree, "/", rm); err != nil {
				return nil, fmt.Errorf("rewrite snapshot %s: %w", sn.Name(), err)
			}
		}
		ns := *sn
		ns.Tree = root
		old := sn.ID
		ns.Rewrites = &old
		if parentMoved {
			p := newID[*sn.Parent]
			ns.Parent = &p
		}
		for p, n := range rm {
			if n.Type == tree.File {
				ns.Stats.Files--
				ns.Stats.Bytes -= int64(n.Size)
			}
			res.removedPathsSnap[old] = append(res.removedPathsSnap[old], p)
		}
		if err := r.SaveSnapshot(ctx, &ns); err != nil {
			return nil, fmt.Errorf("save rewritten snapshot %s: %w", sn.Name(), err)
		}
		if err := removeSnapshot(ctx, r, old); err != nil {
			return nil, err
		}
		newID[old] = ns.ID
		res.Rewritten = append(res.Rewritten, Rewrite{Snapshot: sn.Name(), Old: old.String(), New: ns.ID.String()})
		opts.Progress.Add(1)
	}
	opts.Progress.Done()

	sw, err := r.SweepUnused(ctx, false)
	if err != nil {
		return nil, fmt.Errorf("delete erased blobs: %w", err)
	}
	res.BlobsRemoved, res.PacksRewritten, res.PacksDeleted = sw.BlobsRemoved, sw.PacksRewritten, sw.PacksDeleted
	if res.Generation, err = r.BumpGeneration(ctx, "erase", res.erasedIDs, sortedIDs(res.erasedFiles), opts.Now); err != nil {
		return nil, err
	}
	res.Verification, err = verify(ctx, r, res)
	if err != nil {
		return nil, fmt.Errorf("verify the erase: %w", err)
	}
	e := audit.Entry{Action: audit.ActionErase, Outcome: "ok", RequestID: opts.RequestID, Details: map[string]string{
		"versions": fmt.Sprint(len(res.Versions)), "copies": fmt.Sprint(len(res.Copies)),
		"snapshots_rewritten": fmt.Sprint(len(res.Rewritten)), "blobs_removed": fmt.Sprint(len(res.ErasedBlobs)),
		"packs_rewritten": fmt.Sprint(res.PacksRewritten), "packs_deleted": fmt.Sprint(res.PacksDeleted),
		"generation": fmt.Sprint(res.Generation), "verification": res.Verification.Result}}
	if res.Verification.Result != "passed" {
		e.Outcome = "failed"
	}
	for _, p := range opts.Paths {
		e.Paths = append(e.Paths, r.AuditPathHash(path.Clean("/"+p)))
	}
	// A remote that does not take the entry now gets it from the local
	// queue later; the erase itself is done.
	res.AuditEntry, _ = r.AppendAudit(ctx, e)
	return res, nil
}

// removedBy reports whether p is one of rm's paths or under one.
func removedBy(rm map[string]*tree.Node, p string) bool {
	for q := p; ; q = path.Dir(q) {
		if _, ok := rm[q]; ok {
			return true
		}
		if q == "/" {
			return false
		}
	}
}

func removeSnapshot(ctx context.Context, r *repo.Repository, id crypto.ID) error {
	if err := r.Writable(); err != nil {
		return err
	}
	err := r.Backend().Remove(ctx, remote.Handle{Type: remote.Snapshot, Name: id.String()})
	if err != nil && !errors.Is(err, remote.ErrNotFound) {
		return fmt.Errorf("delete replaced snapshot %s: %w", id.Short(), err)
	}
	return nil
}

// walkFiles calls fn for every file under the tree id at dir.
func walkFiles(ctx context.Context, r *repo.Repository, id crypto.ID, dir string, fn func(string, *tree.Node)) error {
	t, err := r.LoadTree(ctx, id)
	if err != nil {
		return err
	}
	for _, n := range t.Nodes {
		p := path.Join(dir, n.Name)
		switch n.Type {
		case tree.File:
			fn(p, n)
		case tree.Dir:
			if err := walkFiles(ctx, r, n.Subtree, p, fn); err != nil {
				return err
			}
		}
	}
	return nil
}

// rewrite stores the tree id at dir without the entries rm names below it
// and returns the new id (the same id when nothing below changes).
func rewrite(ctx context.Context, r *repo.Repository, id crypto.ID, dir string, rm map[string]*tree.Node) (crypto.ID, error) {
	prefix := strings.TrimSuffix(dir, "/") + "/"
	touched := false
	for p := range rm {
		if strings.HasPrefix(p, prefix) {
			touched = true
			break
		}
	}
	if !touched {
		return id, nil
	}
	t, err := r.LoadTree(ctx, id)
	if err != nil {
		return id, err
	}
	out := &tree.Tree{}
	for _, n := range t.Nodes {
		p := path.Join(dir, n.Name)
		if _, gone := rm[p]; gone {
			continue
		}
		if n.Type == tree.Dir {
			sub, err := rewrite(ctx, r, n.Subtree, p, rm)
			if err != nil {
				return id, err
			}
			if sub != n.Subtree {
				c := *n
				c.Subtree = sub
				n = &c
			}
		}
		out.Nodes = append(out.Nodes, n)
	}
	return r.SaveTree(ctx, out)
}

// verify looks for what was erased after the erase: the removed paths in
// the snapshots that held them, the erased blobs in the index and the
// remote, and every blob the rewritten snapshots name.
func verify(ctx context.Context, r *repo.Repository, res *Result) (Verification, error) {
	var v Verification
	if err := r.LoadIndex(ctx); err != nil {
		return v, err
	}
	snaps, err := r.Snapshots(ctx)
	if err != nil {
		return v, err
	}
	byOld := map[string]string{}
	for _, rw := range res.Rewritten {
		byOld[rw.New] = rw.Old
	}
	for _, sn := range snaps {
		old, rewritten := byOld[sn.ID.String()]
		if !rewritten {
			continue
		}
		oldID, _ := crypto.ParseID(old)
		for _, p := range res.removedPathsSnap[oldID] {
			if _, err := r.Lookup(ctx, sn.Tree, p); err == nil {
				v.NamesFound++
			}
		}
		ok := true
		if err := walkFiles(ctx, r, sn.Tree, "/", func(_ string, n *tree.Node) {
			for _, c := range n.Content {
				if !r.Index().Has(pack.Data, c) {
					ok = false
				}
			}
		}); err != nil {
			ok = false
		}
		if ok {
			v.SnapshotsOK++
		} else {
			v.SnapshotsFailed++
		}
	}
	for _, id := range res.erasedIDs {
		if r.Index().Has(pack.Data, id) {
			v.BlobsReadable++
			continue
		}
		if _, err := r.LoadBlob(ctx, pack.Data, id); err == nil {
			v.BlobsReadable++
		}
	}
	v.Result = "passed"
	if v.NamesFound > 0 || v.BlobsReadable > 0 || v.SnapshotsFailed > 0 {
		v.Result = "FAILED"
	}
	return v, nil
}

// sortedIDs lists the ids of set in order.
func sortedIDs(set map[crypto.ID]bool) []crypto.ID {
	out := make([]crypto.ID, 0, len(set))
	for id := range set {
		out = append(out, id)
	}
	sort.Slice(out, func(i, j int) bool { return bytes.Compare(out[i][:], out[j][:]) < 0 })
	return out
}
