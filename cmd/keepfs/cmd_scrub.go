package main

import (
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/keepfs/keepfs/repo"
)

func cmdScrub() *cli.Command {
	return &cli.Command{
		Name:  "scrub",
		Usage: "one integrity scrub pass now: listing diff against the index plus sampled full reads",
		Description: `Runs the pass a mount runs every --scrub-interval: compares the remote's
listing with what the index segments name (missing, unexpected or resized
packs, segments or snapshots that do not hash to their name or do not
authenticate), compares snapshots, key slots, config and locks with what
this client saw last (rollback, changes by others), and reads in full the
next packs of a rotating sample (so that every pack is read within
--scrub-cycle), or all of them with --read-all. Every finding raises an
integrity event (log, audit log, --notify-exec, --notify-webhook) and an
incident; the command exits 3 if it found any.

Examples:
   keepfs scrub
   keepfs scrub --read-all --json`,
		Flags: []cli.Flag{
			jsonFlag(),
			&cli.BoolFlag{Name: "read-all", Usage: "read every pack in full"},
			&cli.DurationFlag{Name: "scrub-interval", Value: time.Hour, Usage: "how often passes run (sizes the sample)"},
			&cli.DurationFlag{Name: "scrub-cycle", Value: 30 * 24 * time.Hour, Usage: "every pack is read within this time"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usageError("scrub takes no arguments")
			}
			r, err := openRepo(c, repo.Options{})
			if err != nil {
				return err
			}
			defer r.Close()
			unlock, err := lockRepo(c, r, repo.SharedLock, "scrub")
			if err != nil {
				return err
			}
			defer unlock()
			dir, err := stateDir(c, r)
			if err != nil {
				return err
			}
			opts := repo.ScrubOptions{Cursor: repo.LoadScrubCursor(dir), All: c.Bool("read-all"),
				Interval: c.Duration("scrub-interval"), Cycle: c.Duration("scrub-cycle")}
			if p := newProgress(c.App.ErrWriter); p != nil {
				opts.Progress = p
			}
			res, err := r.Scrub(c.Context, opts)
			if err != nil {
				return err
			}
			if err := repo.SaveScrubCursor(dir, res.Cursor); err != nil {
				fmt.Fprintf(c.App.ErrWriter, "warning: scrub cursor: %s\n", oneLine(err))
			}
			if c.Bool("json") {
				if res.Problems == nil {
					res.Problems = []repo.Problem{}
				}
				if err := printJSON(c.App.Writer, res); err != nil {
					return err
				}
			} else {
				for _, p := range res.Problems {
					fmt.Fprintf(c.App.Writer, "error: %s\n", p)
				}
				fmt.Fprintf(c.App.Writer, "scrubbed %d packs, %d index segments, %d snapshots; read %d packs (%s)\n",
					res.Packs, res.Indexes, res.Snapshots, res.PacksRead, humanBytes(res.BytesRead))
				if res.Skipped != "" {
					fmt.Fprintf(c.App.Writer, "listing diff skipped: %s\n", res.Skipped)
				}
			}
			if n := len(res.Problems); n > 0 {
				return integrityError("%d integrity problems found (see `keepfs incidents`)", n)
			}
			return nil
		},
	}
}
