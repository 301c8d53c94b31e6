package repo_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keepfs/keepfs/policy/audit"
	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/crypto"
)

func TestAuditAppendersRace(t *testing.T) {
	ctx := context.Background()
	be, _ := newRepo(t)
	a, b := reopen(t, be), reopen(t, be)
	if err := a.SetAuditMirror(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	const each = 15
	var wg sync.WaitGroup
	for i, h := range []interface {
		AppendAudit(context.Context, audit.Entry) (string, error)
	}{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < each; j++ {
				if _, err := h.AppendAudit(ctx, audit.Entry{Action: audit.ActionMount, Details: map[string]string{"client": fmt.Sprint(i)}}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	rep, err := a.VerifyAudit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || rep.Head.Seq != 2*each {
		t.Fatalf("problems %v, head %+v", rep.Problems, rep.Head)
	}
	n := 0
	_ = be.List(ctx, remote.Audit, func(fi remote.Info) error {
		if len(fi.Handle.Name) != 16 {
			t.Errorf("audit object name %q", fi.Handle.Name)
		}
		n++
		return nil
	})
	if n != 2*each {
		t.Fatalf("%d audit objects, want %d", n, 2*each)
	}
}

func TestAuditHeadInSnapshotDetectsTruncation(t *testing.T) {
	ctx := context.Background()
	be, r := newRepo(t)
	hash1, err := r.AppendAudit(ctx, audit.Entry{Action: audit.ActionInit})
	if err != nil {
		t.Fatal(err)
	}
	hash2, err := r.AppendAudit(ctx, audit.Entry{Action: audit.ActionErase, RequestID: "REQ-1", Paths: []string{r.AuditPathHash("/hr/alice")}})
	if err != nil {
		t.Fatal(err)
	}
	if hash1 == hash2 || len(hash2) != 64 {
		t.Fatal(hash1, hash2)
	}
	sn := saveSnapshot(t, r, time.Now(), map[string][]byte{"a": []byte("x")})
	if sn.AuditHead == nil || sn.AuditHead.Seq != 2 || sn.AuditHead.Hash != hash2 {
		t.Fatalf("snapshot audit head %+v", sn.AuditHead)
	}
	// A fresh client (no mirror) still sees the truncation through the
	// snapshot.
	r2 := reopen(t, be)
	if rep, err := r2.VerifyAudit(ctx); err != nil || !rep.OK() {
		t.Fatal(err, rep.Problems)
	}
	if err := be.Remove(ctx, remote.Handle{Type: remote.Audit, Name: fmt.Sprintf("%016x", 2)}); err != nil {
		t.Fatal(err)
	}
	rep, err := reopen(t, be).VerifyAudit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() || rep.Problems[0].Seq != 2 || !strings.Contains(rep.Problems[0].String(), "truncated") {
		t.Fatalf("problems %v", rep.Problems)
	}
	// Entries hold no path in the clear.
	items, _ := r2.Audit().Read(ctx)
	for _, it := range items {
		if it.Entry != nil && strings.Contains(fmt.Sprint(*it.Entry), "alice") {
			t.Fatal("path in the clear")
		}
	}
}

func TestAuditQueuedWhileUnreachable(t *testing.T) {
	ctx := context.Background()
	mem := remote.NewMem()
	f := remote.NewFaulty(mem)
	if _, err := repo.Create(ctx, mem, pw, repo.Options{KDF: &crypto.TestKDF}); err != nil {
		t.Fatal(err)
	}
	r := reopen(t, f)
	if err := r.SetAuditMirror(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	f.Break()
	if _, err := r.AppendAudit(ctx, audit.Entry{Action: audit.ActionMount}); !errors.Is(err, audit.ErrQueued) {
		t.Fatalf("append on a broken remote: %v", err)
	}
	f.Heal()
	if _, err := r.AppendAudit(ctx, audit.Entry{Action: audit.ActionUnmount}); err != nil {
		t.Fatal(err)
	}
	rep, err := r.VerifyAudit(ctx)
	if err != nil || !rep.OK() || rep.Head.Seq != 2 || rep.Items[0].Entry.Action != audit.ActionMount {
		t.Fatal(err, rep.Problems, rep.Head)
	}
}

// TestAuditDeletedLastEntryReplacedIsFound: the remote drops the newest
// entry and the next append takes its seq again, chaining from the entry
// before. The local mirror holds both records of that seq; the first is
// the one the remote took, so verify reports the replacement (it took the
// later one for the copy and passed).
func TestAuditDeletedLastEntryReplacedIsFound(t *testing.T) {
	ctx := context.Background()
	be, r := newRepo(t)
	dir := t.TempDir()
	if err := r.SetAuditMirror(dir); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{audit.ActionImport, audit.ActionRestore} {
		if _, err := r.AppendAudit(ctx, audit.Entry{Action: a, Outcome: audit.OutcomeOK}); err != nil {
			t.Fatal(err)
		}
	}
	if err := be.Remove(ctx, remote.Handle{Type: remote.Audit, Name: fmt.Sprintf("%016x", 2)}); err != nil {
		t.Fatal(err)
	}
	r2 := reopen(t, be)
	if err := r2.SetAuditMirror(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := r2.AppendAudit(ctx, audit.Entry{Action: audit.ActionRestore, Outcome: audit.OutcomeOK}); err != nil {
		t.Fatal(err)
	}
	rep, err := r2.VerifyAudit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() || rep.Problems[0].Seq != 2 {
		t.Fatalf("a replaced entry 2 passed: problems %v, head %+v", rep.Problems, rep.Head)
	}
}
