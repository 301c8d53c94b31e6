package main

import (
	"errors"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/restorer"
)

func cmdRestore() *cli.Command {
	return &cli.Command{
		Name:      "restore",
		Usage:     "restore files or trees from a snapshot",
		ArgsUsage: "PATH...",
		Description: `Restores each PATH (a path in the repository, "/" for everything) as it was
at --at into the directory --to. A file or directory is restored under its
own name; "/" restores the snapshot's contents directly into --to. Content,
modes, times, symlinks, hard links and xattrs are restored (ownership too
when run as root). Nothing is written outside --to.

--at takes a snapshot time (2026-11-28T130500Z), a prefix of one
(2026-11-28T13 means the end of that hour), RFC 3339, or "latest" (default):
the newest snapshot at or before that time is used.

Examples:
   keepfs restore / --to /tmp/everything
   keepfs restore /docs/report.odt --at 2026-11-28 --to ~/restored`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "at", Value: "latest", Usage: "point in `TIME` to restore"},
			&cli.StringFlag{Name: "to", Usage: "target `DIR` (created if missing)"},
			jsonFlag(),
		},
		Action: func(c *cli.Context) error {
			if c.NArg() == 0 {
				return usageError("restore needs at least one PATH (use / for everything)")
			}
			if c.String("to") == "" {
				return usageError("restore needs --to DIR")
			}
			at, err := repo.ParseTime(c.String("at"))
			if err != nil {
				return usageError("%v", err)
			}
			r, err := openRepo(c, repo.Options{})
			if err != nil {
				return err
			}
			defer r.Close()
			snaps, err := r.Snapshots(c.Context)
			if err != nil {
				return err
			}
			sn, err := repo.FindSnapshot(snaps, at)
			if err != nil {
				return err
			}
			opts := restorer.Options{}
			if p := newProgress(c.App.ErrWriter); p != nil {
				opts.Progress = p
			}
			sum, err := restorer.Restore(c.Context, r, sn, c.Args().Slice(), c.String("to"), opts)
			if errors.Is(err, repo.ErrPathNotFound) {
				return fmt.Errorf("%w (snapshot %s)", err, sn.Name())
			}
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(c.App.Writer, sum)
			}
			fmt.Fprintf(c.App.Writer, "restored %d files, %d dirs, %s from snapshot %s in %.1fs\n",
				sum.Files, sum.Dirs, humanBytes(sum.Bytes), sn.Name(), sum.Seconds)
			return nil
		},
	}
}
