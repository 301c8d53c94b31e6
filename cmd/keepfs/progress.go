package main

import (
	"fmt"
	"io"
	"sync"

	"github.com/schollz/progressbar/v3"
)

// barProgress renders repo/restorer progress on a terminal; elsewhere
// (scripts, CI) it stays silent.
type barProgress struct {
	w   io.Writer
	mu  sync.Mutex
	bar *progressbar.ProgressBar
}

func newProgress(w io.Writer) *barProgress {
	if !isTerminal(w) {
		return nil
	}
	return &barProgress{w: w}
}

func (p *barProgress) Start(what string, total int64) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.bar = progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(p.w),
		progressbar.OptionSetDescription(what),
		progressbar.OptionShowBytes(true),
		progressbar.OptionThrottle(100e6),
		progressbar.OptionClearOnFinish(),
	)
}

func (p *barProgress) Add(n int64) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		_ = p.bar.Add64(n)
	}
}

func (p *barProgress) Done() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		_ = p.bar.Finish()
	}
}

// importProgress shows running file and byte counts (the total is not known
// until the walk ends).
type importProgress struct {
	mu  sync.Mutex
	bar *progressbar.ProgressBar
}

func newImportProgress(w io.Writer) *importProgress {
	if !isTerminal(w) {
		return nil
	}
	return &importProgress{bar: progressbar.NewOptions64(-1,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription("import"),
		progressbar.OptionShowBytes(true),
		progressbar.OptionThrottle(100e6),
		progressbar.OptionSpinnerType(14),
		progressbar.OptionClearOnFinish(),
	)}
}

func (p *importProgress) Update(files, bytes int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	_ = p.bar.Set64(bytes)
}

func (p *importProgress) finish() {
	if p != nil {
		_ = p.bar.Finish()
	}
}

// startupProgress shows the long work a mount does before it serves (see
// cache.Options.Progress): a bar on a terminal, elsewhere one line when
// the work starts.
type startupProgress struct {
	w    io.Writer
	bar  *barProgress
	what string
	done int64
}

func newStartupProgress(w io.Writer) *startupProgress {
	return &startupProgress{w: w, bar: newProgress(w)}
}

func (p *startupProgress) report(what string, done, total int64) {
	if what != p.what {
		p.bar.Done()
		p.what, p.done = what, 0
		if p.bar == nil {
			fmt.Fprintf(p.w, "%s (%s)...\n", what, humanBytes(total))
		}
		p.bar.Start(what, total)
	}
	p.bar.Add(done - p.done)
	p.done = done
}

func (p *startupProgress) finish() { p.bar.Done() }
