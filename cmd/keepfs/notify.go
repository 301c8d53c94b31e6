package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/keepfs/keepfs/policy/audit"
	"github.com/keepfs/keepfs/policy/notify"
	"github.com/keepfs/keepfs/repo"
)

func notifyFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "notify-exec", EnvVars: []string{"KEEPFS_NOTIFY_EXEC"}, Usage: "run `CMD` (via sh -c) with each integrity event's JSON on stdin"},
		&cli.StringFlag{Name: "notify-webhook", EnvVars: []string{"KEEPFS_NOTIFY_WEBHOOK"}, Usage: "POST each integrity event's JSON to `URL`, retried with backoff"},
		&cli.StringFlag{Name: "notify-secret-file", EnvVars: []string{"KEEPFS_NOTIFY_SECRET_FILE"}, Usage: "sign webhook bodies (X-Keepfs-Signature: sha256=HMAC) with the secret in `FILE`"},
	}
}

const notifierKey = "keepfs.notifier"

// cmdNotifier is this invocation's notifier, made at first use from the
// global notify flags; app.After closes it, waiting for deliveries.
func cmdNotifier(c *cli.Context) (*notify.Notifier, error) {
	if n, ok := c.App.Metadata[notifierKey].(*notify.Notifier); ok {
		return n, nil
	}
	o := notify.Options{Exec: c.String("notify-exec"), Webhook: c.String("notify-webhook"), Logger: slog.Default()}
	if f := c.String("notify-secret-file"); f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("--notify-secret-file: %w", err)
		}
		o.Secret = []byte(strings.TrimRight(string(b), "\r\n"))
		if len(o.Secret) == 0 {
			return nil, fmt.Errorf("--notify-secret-file %s is empty", f)
		}
	}
	n := notify.New(o)
	if c.App.Metadata == nil {
		c.App.Metadata = map[string]any{}
	}
	c.App.Metadata[notifierKey] = n
	return n, nil
}

// closeNotifier waits (bounded) for deliveries started by this command;
// what is not delivered stays in the state directory and the next mount
// or command delivers it.
func closeNotifier(c *cli.Context) {
	n, ok := c.App.Metadata[notifierKey].(*notify.Notifier)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n.Close(ctx)
}

// bindNotifier stores this command's events in the state directory, names
// the repository in them and records each new incident in the audit log;
// then it compares the remote with what this client saw last (rollback,
// key slots, config, locks).
func bindNotifier(c *cli.Context, r *repo.Repository) {
	n, err := cmdNotifier(c)
	if err != nil {
		return
	}
	dir, err := stateDir(c, r)
	if err != nil {
		return
	}
	if err := r.SetAuditMirror(dir); err != nil {
		slog.Warn("audit mirror", "err", err)
	}
	// After the Guard below: the first one remembers the whole view.
	defer r.SetViewDir(dir)
	if err := n.Bind(dir, r.Config().ID, auditEvent(r)); err != nil {
		slog.Warn("incidents", "err", err)
	}
	resetUnlockFailures(c)
	if _, err := r.Guard(c.Context, dir); err != nil {
		slog.Warn("cannot compare the remote with what this client saw last", "err", err)
	}
}

// auditEvent records an integrity event in the audit log: ids only.
func auditEvent(r *repo.Repository) func(notify.Event) {
	return func(ev notify.Event) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := r.AppendAudit(ctx, audit.Entry{Action: audit.ActionIntegrity, Outcome: audit.OutcomeProblems,
			Details: map[string]string{"by": "detection", "event": ev.ID, "type": ev.Type, "severity": ev.Severity, "object": ev.Object}})
		if err != nil {
			slog.Warn("integrity event not in the audit log yet", "event", ev.ID, "err", err)
		}
	}
}

// unlockFailuresFile counts wrong passphrases in a row: in --state if
// given, else (the repository id is sealed, so unknown before unlocking)
// beside the default state directories, per repository URL.
func unlockFailuresFile(c *cli.Context) string {
	if s := c.String("state"); s != "" {
		if abs, err := filepath.Abs(s); err == nil {
			return filepath.Join(abs, "unlock-failures")
		}
	}
	base, err := defaultStateDir("")
	if err != nil {
		return ""
	}
	sum := sha256.Sum256([]byte(c.String("repo")))
	return filepath.Join(base, "unlock-failures-"+hex.EncodeToString(sum[:8]))
}

// failedUnlockThreshold wrong passphrases in a row raise an event.
const failedUnlockThreshold = 3

// noteUnlockFailure counts a wrong passphrase and raises an event from
// the third in a row on.
func noteUnlockFailure(c *cli.Context) {
	f := unlockFailuresFile(c)
	if f == "" {
		return
	}
	_ = os.MkdirAll(filepath.Dir(f), 0o700)
	b, _ := os.ReadFile(f)
	count, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	count++
	_ = os.WriteFile(f, []byte(strconv.Itoa(count)+"\n"), 0o600)
	if count < failedUnlockThreshold {
		return
	}
	n, err := cmdNotifier(c)
	if err != nil {
		return
	}
	if c.String("state") != "" {
		_ = n.Bind(filepath.Dir(f), "", nil)
	}
	n.Raise(notify.Event{Type: notify.TypeFailedUnlocks, Severity: notify.Warning, Object: "unlock",
		Message: fmt.Sprintf("%d wrong passphrases in a row for this repository on this host", count)})
}

func resetUnlockFailures(c *cli.Context) {
	if f := unlockFailuresFile(c); f != "" {
		_ = os.Remove(f)
	}
}
