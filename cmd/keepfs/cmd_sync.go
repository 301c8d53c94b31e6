package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/keepfs/keepfs/cmd/keepfs/daemon"
)

func cmdSync() *cli.Command {
	return &cli.Command{
		Name:      "sync",
		Usage:     "commit closed files, take a snapshot, return when the remote holds it",
		ArgsUsage: "[MNT]",
		Description: `Everything closed or fsynced before the call is in the snapshot, and the
snapshot with all its data is in the remote when sync returns. If a file's
data is lost, held neither locally nor by the remote (a power loss or a
disk error before its upload, or a remote that went back to an older copy
of itself), sync names it and exits 1: the snapshot keeps its last
backed-up version.

If the remote does not take everything within --timeout (default 2m), sync
exits 1 saying so; nothing is lost: the data stays queued in the state
directory and the mount uploads it when the remote returns.

Examples:
   keepfs sync ~/safe
   keepfs sync --json
   keepfs sync --timeout 10s ~/safe`,
		Flags: []cli.Flag{jsonFlag(), timeoutFlag()},
		Action: func(c *cli.Context) error {
			if c.NArg() > 1 {
				return usageError("sync takes at most one mount point")
			}
			timeout, err := flagTimeout(c)
			if err != nil {
				return err
			}
			sock, err := daemonSocket(c, c.Args().First())
			if err != nil {
				return err
			}
			ctx, cancel := daemonWait(c.Context, timeout)
			defer cancel()
			cl, err := daemon.Dial(ctx, sock)
			if err != nil {
				return fmt.Errorf("sync: %w", err)
			}
			stopWatch := watchSync(c, sock)
			resp, err := cl.SyncWithin(ctx, timeout)
			var uploaded int64
			if resp != nil {
				uploaded = resp.Uploaded
			}
			stopWatch(err == nil, uploaded)
			if err != nil {
				if resp != nil && resp.TimedOut {
					return fmt.Errorf("sync: %s", remoteDidNotAnswer(timeout, resp.Status, "stay queued and will upload when it returns"))
				}
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
