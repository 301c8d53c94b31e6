package daemon

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/keepfs/keepfs/policy/notify"
	"github.com/keepfs/keepfs/repo"
)

// watch is the mount's breach detection: a scrub every ScrubInterval
// (listing diff, sampled full reads, rollback and change guard), an alert
// when the remote has not answered for AlertAfter, and a refresh of the
// notifier so acknowledged incidents can open again. It runs until
// shutdown begins (d.bg).
func (d *daemon) watch(r *repo.Repository) {
	defer d.bgWG.Done()
	n := d.cfg.Notifier
	if n == nil {
		return
	}
	start := time.Now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var scrubC <-chan time.Time
	if d.cfg.ScrubInterval > 0 {
		t := time.NewTicker(d.cfg.ScrubInterval)
		defer t.Stop()
		scrubC = t.C
	}
	// The reachability check has a goroutine of its own: a scrub against a
	// dead remote blocks in retries for up to a minute, and the alert must
	// not wait for it.
	d.bgWG.Add(1)
	go func() {
		defer d.bgWG.Done()
		for {
			select {
			case <-d.bg.Done():
				return
			case <-tick.C:
				n.Refresh()
				d.checkReachable(start)
			}
		}
	}()
	for {
		select {
		case <-d.bg.Done():
			return
		case <-scrubC:
			d.scrub(r)
		}
	}
}

// scrub runs one pass; the remote's answer (or silence) counts as contact.
func (d *daemon) scrub(r *repo.Repository) {
	ctx, cancel := context.WithTimeout(d.bg, max(d.cfg.ScrubInterval*4, time.Minute))
	defer cancel()
	dir := d.cfg.Cache.StateDir
	evs, err := r.Guard(ctx, dir)
	if err != nil {
		d.recordContact(err)
		d.log.Warn("scrub: cannot compare the remote with what this client saw last", "err", err)
		return
	}
	if d.c != nil && slices.ContainsFunc(evs, func(ev notify.Event) bool { return ev.Type == notify.TypeRollback }) {
		// What this mount stored since the copy the remote went back to
		// is gone: upload again what is still here.
		if err := d.c.Resync(ctx); err != nil && d.bg.Err() == nil {
			d.log.Warn("scrub: cannot bring the mount in line with the rolled-back remote", "err", err)
		}
	}
	res, err := r.Scrub(ctx, repo.ScrubOptions{Cursor: repo.LoadScrubCursor(dir), Interval: d.cfg.ScrubInterval, Cycle: d.cfg.ScrubCycle})
	d.recordContact(err)
	if err != nil {
		if d.bg.Err() == nil {
			d.log.Warn("scrub", "err", err)
		}
		return
	}
	if err := repo.SaveScrubCursor(dir, res.Cursor); err != nil {
		d.log.Warn("scrub cursor", "err", err)
	}
	d.log.Debug("scrub", "packs", res.Packs, "read", res.PacksRead, "bytes", res.BytesRead, "problems", len(res.Problems), "skipped", res.Skipped)
}

func (d *daemon) recordContact(err error) {
	if h := d.cfg.Cache.Health; h != nil && (err == nil || d.bg.Err() == nil) {
		h.Record(err)
	}
}

// checkReachable raises an event once the remote has not answered for
// longer than AlertAfter (since the last success, or since the mount
// started).
func (d *daemon) checkReachable(start time.Time) {
	h := d.cfg.Cache.Health
	if h == nil || d.cfg.AlertAfter <= 0 {
		return
	}
	st := h.State()
	if st.Reachable || st.LastFail.IsZero() {
		return
	}
	since := st.LastOK
	if since.Before(start) {
		since = start
	}
	if down := time.Since(since); down > d.cfg.AlertAfter {
		d.cfg.Notifier.Raise(notify.Event{Type: notify.TypeUnreachable, Severity: notify.Warning, Object: "remote",
			Message: fmt.Sprintf("the remote has not answered for %s (over --alert-after %s): backups are not reaching it",
				down.Round(time.Second), d.cfg.AlertAfter)})
	}
}
