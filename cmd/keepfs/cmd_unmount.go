package main

import (
	"fmt"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
)

func cmdUnmount() *cli.Command {
	return &cli.Command{
		Name:      "unmount",
		Aliases:   []string{"umount"},
		Usage:     "commit, take a final snapshot, wait for the upload, unmount",
		ArgsUsage: "MNT",
		Description: `Asks the daemon of the mount containing MNT to commit every open file, take a
final snapshot, wait until the remote holds it, and unmount. Returns once
the mount is gone.

Examples:
   keepfs unmount ~/safe`,
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usageError("unmount takes one mount point")
			}
			m, ok, err := findMount(c.Args().First())
			if err != nil {
				return err
			}
			if !ok {
				return fmt.Errorf("%s is not a keepfs mount", c.Args().First())
			}
			resp, err := callDaemon(c.Context, m.Source, "unmount")
			if err != nil {
				return fmt.Errorf("unmount %s: %w (if the daemon is gone, run fusermount3 -u %s)", m.Point, err, m.Point)
			}
			// The daemon unmounts after answering; wait for the mount to go.
			for i := 0; ; i++ {
				mounted, err := isMountpoint(m.Point)
				if err != nil || !mounted {
					break
				}
				if i == 600 {
					return fmt.Errorf("%s is still mounted after 60 s (busy? see the daemon log)", m.Point)
				}
				time.Sleep(100 * time.Millisecond)
			}
			// And for the daemon to finish closing its state, so that a
			// remount or a copy of the state directory finds it at rest.
			for i := 0; resp.PID > 0 && syscall.Kill(resp.PID, 0) == nil; i++ {
				if i == 600 {
					return fmt.Errorf("%s unmounted, but its daemon (pid %d) is still closing; see its log", m.Point, resp.PID)
				}
				time.Sleep(100 * time.Millisecond)
			}
			if resp.Snapshot != "" {
				fmt.Fprintf(c.App.Writer, "unmounted %s (final snapshot %s)\n", m.Point, resp.Snapshot)
			} else {
				fmt.Fprintf(c.App.Writer, "unmounted %s\n", m.Point)
			}
			return nil
		},
	}
}
