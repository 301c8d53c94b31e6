package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/keepfs/keepfs/policy/audit"
	"github.com/keepfs/keepfs/repo"
)

func cmdAudit() *cli.Command {
	return &cli.Command{
		Name:  "audit",
		Usage: "show and verify the audit log",
		Description: `Lists the repository's audit log: one sealed, MAC'd, hash-chained entry per
init, key change, mount, unmount, import, restore, prune, retention change,
erase and integrity problem found. Entries name no files: paths are kept as
keyed hashes, and the listing never shows them.

--verify checks every entry's MAC, that entries run from 1 without gaps and
that each names the hash of the one before, and that the log reaches the head
recorded by every snapshot and by the local mirror in the state directory
(so a log cut short is detected). It exits 3 naming each entry that was
edited, moved, deleted or cut off.

Examples:
   keepfs audit
   keepfs audit --since 2026-11-01 --json
   keepfs audit --verify`,
		Flags: []cli.Flag{
			jsonFlag(),
			&cli.StringFlag{Name: "since", Usage: "only entries at or after `TIME` (RFC 3339, 2026-11-28, 2026-11-28T130500Z, or a duration ago: 24h, 7d)"},
			&cli.BoolFlag{Name: "verify", Usage: "check MACs, the chain and truncation; exit 3 on any problem"},
		},
		Action: runAudit,
	}
}

// auditJSON is one entry as `audit --json` prints it.
type auditJSON struct {
	Seq       uint64            `json:"seq"`
	Time      *time.Time        `json:"time,omitempty"`
	Action    string            `json:"action,omitempty"`
	User      string            `json:"user,omitempty"`
	Host      string            `json:"host,omitempty"`
	Outcome   string            `json:"outcome,omitempty"`
	RequestID string            `json:"request_id,omitempty"`
	Paths     []string          `json:"path_hashes,omitempty"`
	Details   map[string]string `json:"details,omitempty"`
	Hash      string            `json:"hash"`
	Prev      string            `json:"prev,omitempty"`
	Error     string            `json:"error,omitempty"`
}

func runAudit(c *cli.Context) error {
	if c.NArg() > 0 {
		return usageError("audit takes no arguments")
	}
	var since time.Time
	if s := c.String("since"); s != "" {
		var err error
		if since, err = parseSince(s, time.Now()); err != nil {
			return usageError("--since: %v", err)
		}
	}
	r, err := openRepo(c, repo.Options{NoIndex: true})
	if err != nil {
		return err
	}
	defer r.Close()
	if dir, err := stateDir(c, r); err == nil {
		if err := r.SetAuditMirror(dir); err != nil {
			fmt.Fprintf(c.App.ErrWriter, "warning: %s; verifying without the local mirror\n", oneLine(err))
		}
	}
	var rep *audit.Report
	if c.Bool("verify") {
		if rep, err = r.VerifyAudit(c.Context); err != nil {
			return err
		}
	} else {
		items, err := r.Audit().Read(c.Context)
		if err != nil {
			return err
		}
		rep = &audit.Report{Items: items}
	}
	var shown []audit.Item
	for _, it := range rep.Items {
		if since.IsZero() || it.Entry == nil || !it.Entry.Time.Before(since) {
			shown = append(shown, it)
		}
	}
	if c.Bool("json") {
		out := make([]auditJSON, 0, len(shown))
		for _, it := range shown {
			j := auditJSON{Seq: it.Seq, Hash: it.Hash}
			if e := it.Entry; e != nil {
				t := e.Time
				j.Time, j.Action, j.User, j.Host, j.Outcome = &t, e.Action, e.User, e.Host, e.Outcome
				j.RequestID, j.Paths, j.Details, j.Prev = e.RequestID, e.Paths, e.Details, e.Prev
			}
			if it.Err != nil {
				j.Error = it.Err.Error()
			}
			out = append(out, j)
		}
		if c.Bool("verify") {
			if err := printJSON(c.App.Writer, map[string]any{
				"entries": out, "verified": rep.OK(), "head": rep.Head, "problems": nonNil(rep.Problems),
			}); err != nil {
				return err
			}
		} else if err := printJSON(c.App.Writer, out); err != nil {
			return err
		}
	} else {
		tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SEQ\tTIME\tACTION\tWHO\tREQUEST\tOUTCOME\tHASH")
		for _, it := range shown {
			e := it.Entry
			if e == nil {
				fmt.Fprintf(tw, "%d\t?\t?\t?\t\t%s\t%s\n", it.Seq, it.Err, audit.ShortHash(it.Hash))
				continue
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s@%s\t%s\t%s\t%s\n", it.Seq, e.Time.Local().Format("2006-01-02 15:04:05"),
				e.Action, e.User, e.Host, orDash(e.RequestID), e.Outcome, audit.ShortHash(it.Hash))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if !c.Bool("verify") {
		return nil
	}
	if !rep.OK() {
		for _, p := range rep.Problems {
			fmt.Fprintf(c.App.ErrWriter, "audit: %s\n", p)
		}
		msg := "audit: " + rep.Problems[0].String()
		if n := len(rep.Problems); n > 1 {
			msg += fmt.Sprintf(" (and %d more problems)", n-1)
		}
		return integrityError("%s", msg)
	}
	if !c.Bool("json") {
		fmt.Fprintf(c.App.Writer, "audit log verified: %d entries, head %s\n", len(rep.Items), audit.ShortHash(rep.Head.Hash))
	}
	return nil
}

func nonNil(p []audit.Problem) []audit.Problem {
	if p == nil {
		return []audit.Problem{}
	}
	return p
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// parseSince reads --since: a time, a date, a snapshot name or a prefix of
// one (its start), or a duration before now.
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := repo.ParseDuration(s); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(-d), nil
	}
	for _, f := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02 15:04:05", repo.TimeFormat, "2006-01-02T150405", "2006-01-02T1504", "2006-01-02T15", "2006-01-02", "2006-01", "2006"} {
		loc := time.Local
		if f == repo.TimeFormat {
			loc = time.UTC
		}
		if t, err := time.ParseInLocation(f, s, loc); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("cannot read %q as a time (2026-11-28, 2026-11-28T13:05:00Z) or a duration (24h, 7d)", s)
}

// recordAudit appends e to the repository's audit log, mirrored in the
// state directory, and returns its hash. The action already happened, so
// a failure to record it is a warning, not a failure of the command: the
// entry is queued in the mirror when the remote does not take it, and the
// next entry from this state directory pushes it.
func recordAudit(c *cli.Context, r *repo.Repository, e audit.Entry) string {
	if dir, err := stateDir(c, r); err == nil {
		if err := r.SetAuditMirror(dir); err != nil {
			fmt.Fprintf(c.App.ErrWriter, "warning: %s\n", oneLine(err))
		}
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Context), 2*time.Minute)
	defer cancel()
	h, err := r.AppendAudit(ctx, e)
	switch {
	case errors.Is(err, audit.ErrQueued):
		fmt.Fprintf(c.App.ErrWriter, "warning: the audit entry for %s is queued in the state directory: the remote did not take it; the next command pushes it\n", e.Action)
	case err != nil:
		fmt.Fprintf(c.App.ErrWriter, "warning: audit log: %s\n", oneLine(err))
	}
	return h
}

// outcome is the audit outcome of a command's error.
func outcome(err error) string {
	if err != nil {
		return audit.OutcomeFailed
	}
	return audit.OutcomeOK
}

// auditPaths hashes repository paths for an audit entry.
func auditPaths(r *repo.Repository, paths []string) []string {
	var out []string
	for _, p := range paths {
		out = append(out, r.AuditPathHash(strings.TrimSpace(p)))
	}
	return out
}
