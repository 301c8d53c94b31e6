package repo

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"strconv"

	"github.com/keepfs/keepfs/policy/audit"
	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo/crypto"
)

// The audit log lives in the remote as audit/<%016x seq>: one sealed,
// MAC'd record per entry (policy/audit defines the format). This file
// adapts the remote and the keys to that package.

// auditStore is audit.Store over the remote.
type auditStore struct{ be remote.Storage }

func auditHandle(seq uint64) remote.Handle {
	return remote.Handle{Type: remote.Audit, Name: fmt.Sprintf("%016x", seq)}
}

func (s auditStore) Append(ctx context.Context, seq uint64, sealed []byte) error {
	err := s.be.Save(ctx, auditHandle(seq), sealed)
	if errors.Is(err, remote.ErrExists) {
		return fmt.Errorf("%w: %v", audit.ErrExists, err)
	}
	return err
}

func (s auditStore) List(ctx context.Context) ([]uint64, error) {
	var out []uint64
	err := s.be.List(ctx, remote.Audit, func(fi remote.Info) error {
		n := fi.Handle.Name
		seq, err := strconv.ParseUint(n, 16, 64)
		if err != nil || len(n) != 16 || seq == 0 {
			return fmt.Errorf("unexpected object audit/%s", n)
		}
		out = append(out, seq)
		return nil
	})
	return out, err
}

func (s auditStore) Load(ctx context.Context, seq uint64) ([]byte, error) {
	return remote.LoadAll(ctx, s.be, auditHandle(seq))
}

// auditKeys is audit.Keys: the data key seals, the audit subkey MACs.
type auditKeys struct{ k *crypto.Key }

func (a auditKeys) Seal(p, ad []byte) []byte          { return a.k.Seal(nil, p, ad) }
func (a auditKeys) Open(s, ad []byte) ([]byte, error) { return a.k.Open(nil, s, ad) }
func (a auditKeys) MAC(d []byte) []byte               { return a.k.AuditMAC(d) }

// SetAuditMirror mirrors the audit log into dir (the state directory) and
// queues there what the remote does not take. Call it before the first
// AppendAudit; later calls do nothing.
func (r *Repository) SetAuditMirror(dir string) error {
	r.auditMu.Lock()
	defer r.auditMu.Unlock()
	if r.auditLog != nil || r.auditMirror != nil {
		return nil
	}
	m, err := audit.OpenMirror(dir, r.cfg.ID)
	if err != nil {
		return fmt.Errorf("audit mirror: %w", err)
	}
	r.auditMirror = m
	return nil
}

// AuditMirror returns the local mirror, if SetAuditMirror set one.
func (r *Repository) AuditMirror() *audit.Mirror {
	r.auditMu.Lock()
	defer r.auditMu.Unlock()
	return r.auditMirror
}

// Audit returns the repository's audit log.
func (r *Repository) Audit() *audit.Log {
	r.auditMu.Lock()
	defer r.auditMu.Unlock()
	if r.auditLog == nil {
		o := audit.Options{Mirror: r.auditMirror}
		o.Host, _ = os.Hostname()
		if u, err := user.Current(); err == nil {
			o.User = u.Username
		}
		r.auditLog = audit.New(auditStore{r.be}, auditKeys{r.key}, o)
	}
	return r.auditLog
}

// AppendAudit appends e to the audit log (remote and local mirror) and
// returns the entry's hash, for receipts. Paths in e must already be keyed
// hashes (AuditPathHash); seq, prev, time, user and host are filled in. If
// the remote does not take the entry it is queued in the mirror (when one
// is set) and the error wraps audit.ErrQueued; the hash is then "".
func (r *Repository) AppendAudit(ctx context.Context, e audit.Entry) (string, error) {
	return r.Audit().Append(ctx, e)
}

// AuditPathHash is the keyed hash (HMAC-SHA-256 under the audit subkey,
// hex) an audit entry carries instead of a path.
func (r *Repository) AuditPathHash(path string) string {
	return audit.HashPath(auditKeys{r.key}, path)
}

// auditHead is the newest audit head this handle knows, read from the
// remote once if it knows none; zero if there is none or it cannot be read.
func (r *Repository) auditHead(ctx context.Context) audit.Head {
	h, err := r.Audit().ReadHead(ctx)
	if err != nil {
		return audit.Head{}
	}
	return h
}

// VerifyAudit reads and checks the whole audit log against the heads the
// snapshots recorded and the local mirror (if set). Snapshots that do not
// load are left out of the anchors (check reports them).
func (r *Repository) VerifyAudit(ctx context.Context) (*audit.Report, error) {
	var anchors []audit.Anchor
	if snaps, err := r.Snapshots(ctx); err == nil {
		for _, sn := range snaps {
			if sn.AuditHead != nil {
				anchors = append(anchors, audit.Anchor{Source: "snapshot " + sn.ID.Short(), Head: *sn.AuditHead})
			}
		}
	}
	var mirror map[uint64]string
	if m := r.AuditMirror(); m != nil {
		var err error
		if mirror, err = m.Entries(); err != nil {
			return nil, fmt.Errorf("read the local audit mirror: %w", err)
		}
	}
	return r.Audit().Verify(ctx, anchors, mirror)
}

// PruneAuditEntry is the audit entry of a prune (by names who ran it:
// "prune", "retention"): counts and snapshot names, no paths.
func PruneAuditEntry(res *PruneResult, err error, by string) audit.Entry {
	e := audit.Entry{Action: audit.ActionPrune, Outcome: audit.OutcomeOK, Details: map[string]string{"by": by}}
	if err != nil {
		e.Outcome = audit.OutcomeFailed
	}
	if res != nil {
		e.Details["snapshots_removed"] = strconv.Itoa(len(res.SnapshotsRemoved))
		e.Details["snapshots_kept"] = strconv.Itoa(res.SnapshotsKept)
		e.Details["blobs_removed"] = strconv.Itoa(res.BlobsRemoved)
		e.Details["bytes_removed"] = strconv.FormatInt(res.BytesRemoved, 10)
		e.Details["packs_deleted"] = strconv.Itoa(res.PacksDeleted + res.PacksFreed)
		e.Details["packs_rewritten"] = strconv.Itoa(res.PacksRewritten)
		e.Details["policy"] = res.Policy
		if res.Generation > 0 {
			e.Details["generation"] = strconv.FormatUint(res.Generation, 10)
		}
	}
	return e
}
