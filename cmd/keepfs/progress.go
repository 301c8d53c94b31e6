package main

import (
	"fmt"
	"io"
	"sync"

	"github.com/schollz/progressbar/v3"

	"github.com/keepfs/keepfs/cache"
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
	p.bar = newBar(p.w, what, total, true)
}

// newBar is the one look of keepfs's progress bars: of bytes, or else of
// a count; a total of -1 makes it a spinner.
func newBar(w io.Writer, what string, total int64, bytes bool) *progressbar.ProgressBar {
	opts := []progressbar.Option{
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(what),
		progressbar.OptionThrottle(100e6),
		progressbar.OptionClearOnFinish(),
	}
	if bytes {
		opts = append(opts, progressbar.OptionShowBytes(true))
	} else {
		opts = append(opts, progressbar.OptionShowCount())
	}
	return progressbar.NewOptions64(total, opts...)
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
	tty  bool
	bar  *progressbar.ProgressBar
	what string
}

func newStartupProgress(w io.Writer) *startupProgress {
	return &startupProgress{w: w, tty: isTerminal(w)}
}

func (p *startupProgress) report(pr cache.Progress) {
	if pr.What != p.what {
		p.finish()
		p.what = pr.What
		bytes := pr.Unit == "bytes"
		if !p.tty {
			unit := pr.Unit
			if pr.Total == 1 && unit == "directories" {
				unit = "directory"
			}
			size := fmt.Sprintf("%d %s", pr.Total, unit)
			if bytes {
				size = humanBytes(pr.Total)
			}
			if pr.Total > 0 {
				fmt.Fprintf(p.w, "%s (%s)...\n", pr.What, size)
			} else {
				fmt.Fprintf(p.w, "%s...\n", pr.What)
			}
			return
		}
		total := pr.Total
		if total <= 0 {
			total = -1 // a spinner
		}
		p.bar = newBar(p.w, pr.What, total, bytes)
	}
	if p.bar != nil {
		_ = p.bar.Set64(pr.Done)
	}
}

func (p *startupProgress) finish() {
	if p.bar != nil {
		_ = p.bar.Finish()
		p.bar = nil
	}
}
