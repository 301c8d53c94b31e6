package main

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

func cmdSync() *cli.Command {
	return &cli.Command{
		Name:      "sync",
		Usage:     "commit closed files, take a snapshot, return when the remote holds it",
		ArgsUsage: "[MNT]",
		Description: `Everything closed or fsynced before the call is in the snapshot, and the
snapshot with all its data is in the remote when sync returns. If a file's
local data was lost before its upload (a power loss, a disk error), sync
names it and exits 1: the snapshot keeps its last backed-up version.

Examples:
   keepfs sync ~/safe
   keepfs sync --json`,
		Flags: []cli.Flag{jsonFlag()},
		Action: func(c *cli.Context) error {
			if c.NArg() > 1 {
				return usageError("sync takes at most one mount point")
			}
			sock, err := daemonSocket(c, c.Args().First())
			if err != nil {
				return err
			}
			resp, err := callDaemon(c.Context, sock, "sync")
			if err != nil {
				return fmt.Errorf("sync: %w", err)
			}
			var lost []string
			if resp.Status != nil {
				lost = resp.Status.LostFiles
			}
			if c.Bool("json") {
				if err := printJSON(c.App.Writer, map[string]any{"mount": resp.Mount, "snapshot": resp.Snapshot, "status": resp.Status}); err != nil {
					return err
				}
			} else if resp.Snapshot != "" {
				fmt.Fprintf(c.App.Writer, "snapshot %s is in the remote\n", resp.Snapshot)
			} else {
				fmt.Fprintln(c.App.Writer, "nothing changed since the last snapshot")
			}
			if len(lost) > 0 {
				// The snapshot is stored, but it does not hold everything
				// that was closed: a script must not take this for success.
				return fmt.Errorf("not backed up: %s", lostSummary(lost))
			}
			return nil
		},
	}
}
