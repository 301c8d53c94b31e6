package main

import (
	"context"
	"encoding/json"
	"io"
	"sync"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/keepfs/keepfs/cmd/keepfs/daemon"
)

// progressEvent is one line of --progress-json: what is being done, how
// far, out of how much (-1: not known yet), in which unit.
type progressEvent struct {
	What  string `json:"what"`
	Done  int64  `json:"done"`
	Total int64  `json:"total"`
	Unit  string `json:"unit"`
	Files int64  `json:"files,omitempty"`
	Final bool   `json:"final,omitempty"`
}

// jsonProgress writes progress events, one JSON object per line, at most
// every jsonProgressEvery and always at the start and end of each stage.
type jsonProgress struct {
	mu    sync.Mutex
	w     io.Writer
	ev    progressEvent
	last  time.Time
	every time.Duration
}

const jsonProgressEvery = 250 * time.Millisecond

func newJSONProgress(w io.Writer, unit string) *jsonProgress {
	return &jsonProgress{w: w, ev: progressEvent{Unit: unit}, every: jsonProgressEvery}
}

func (p *jsonProgress) emitLocked(force bool) {
	if !force && time.Since(p.last) < p.every {
		return
	}
	p.last = time.Now()
	b, _ := json.Marshal(p.ev)
	_, _ = p.w.Write(append(b, '\n'))
}

// Start, Add and Done make it a repo/restorer progress.
func (p *jsonProgress) Start(what string, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ev = progressEvent{What: what, Total: total, Unit: p.ev.Unit}
	p.emitLocked(true)
}

func (p *jsonProgress) Add(n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ev.Done += n
	p.emitLocked(false)
}

func (p *jsonProgress) Done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ev.Final = true
	p.emitLocked(true)
	p.ev.Final = false
}

// set reports absolute numbers (import's running totals, sync's drain).
func (p *jsonProgress) set(what string, done, total, files int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	first := p.ev.What != what
	p.ev.What, p.ev.Done, p.ev.Total, p.ev.Files = what, done, total, files
	p.emitLocked(first)
}

func progressJSON(c *cli.Context) bool { return c.Bool("progress-json") }

// stageProgress is what restore, check and prune report to.
type stageProgress interface {
	Start(what string, total int64)
	Add(n int64)
	Done()
}

// progressFor is the progress of a long command: JSON events with
// --progress-json, a bar on a terminal, else nothing (nil).
func progressFor(c *cli.Context) stageProgress {
	if progressJSON(c) {
		return newJSONProgress(c.App.ErrWriter, "bytes")
	}
	if p := newProgress(c.App.ErrWriter); p != nil {
		return p
	}
	return nil
}

// importJSON reports import's running totals (the total is not known
// until the walk ends).
type importJSON struct{ p *jsonProgress }

func (i importJSON) Update(files, bytes int64) { i.p.set("import", bytes, -1, files) }

// syncBarMin is the queue from which sync shows a bar on a terminal: a
// small queue drains before a bar would say anything.
const syncBarMin = 8 << 20

// watchSync shows how the upload queue drains while a sync waits for it,
// by asking the daemon for its status: a bar on a terminal (when the queue
// is large), JSON events with --progress-json, nothing otherwise. The
// returned function stops it, saying whether the sync succeeded.
func watchSync(c *cli.Context, sock string) (stop func(ok bool, uploaded int64)) {
	jsonOut := progressJSON(c)
	tty := isTerminal(c.App.ErrWriter)
	if !jsonOut && !tty {
		return func(bool, int64) {}
	}
	var jp *jsonProgress
	if jsonOut {
		jp = newJSONProgress(c.App.ErrWriter, "bytes")
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	var succeeded bool
	var uploaded int64
	go func() {
		defer close(finished)
		var total, last int64
		var bar interface {
			Set64(int64) error
			ChangeMax64(int64)
			Finish() error
		}
		first := true
		t := time.NewTicker(jsonProgressEvery)
		defer t.Stop()
		for {
			resp, err := daemonStatus(c, sock)
			if err == nil && resp.Status != nil {
				q := resp.Status.QueueBytes
				if first {
					total = q + resp.Status.DirtyBytes
				}
				d := max(total-q, last)
				total = max(total, d+q)
				last = d
				if jp != nil {
					jp.set("upload", d, total, 0)
				}
				if tty && !jsonOut && first && total >= syncBarMin {
					bar = newBar(c.App.ErrWriter, "upload", total, true)
				}
				if bar != nil {
					bar.ChangeMax64(total)
					_ = bar.Set64(d)
				}
				first = false
			}
			select {
			case <-done:
				if bar != nil {
					_ = bar.Finish()
				}
				if jp != nil {
					if succeeded {
						// The drain may have begun and ended between
						// two looks at the queue: the final event counts
						// at least what the snapshot added.
						jp.mu.Lock()
						jp.ev.Total = max(jp.ev.Total, uploaded)
						jp.ev.Done = max(jp.ev.Done, jp.ev.Total)
						jp.mu.Unlock()
					}
					jp.Done()
				}
				return
			case <-t.C:
			}
		}
	}()
	return func(ok bool, up int64) { succeeded, uploaded = ok, up; close(done); <-finished }
}

func daemonStatus(c *cli.Context, sock string) (*daemon.Response, error) {
	ctx, cancel := context.WithTimeout(c.Context, 5*time.Second)
	defer cancel()
	return daemon.Send(ctx, sock, daemon.Request{Op: "status"})
}
