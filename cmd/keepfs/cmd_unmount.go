package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/keepfs/keepfs/cmd/keepfs/daemon"
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
			cl, err := daemon.Dial(c.Context, m.Source)
			if err != nil {
				return fmt.Errorf("unmount %s: %w (if the daemon is gone, run fusermount3 -u %s)", m.Point, err, m.Point)
			}
			// Returns once the daemon has taken the final snapshot, the
			// remote holds it, and the cache is closed.
			resp, err := cl.Unmount(c.Context)
			if err != nil {
				return fmt.Errorf("unmount %s: %w", m.Point, err)
			}
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
			// And for the process to go, so that a remount or a copy of the
			// state directory finds it at rest.
			for i := 0; resp.PID > 0 && processRunning(resp.PID); i++ {
				if i == 600 {
					return fmt.Errorf("%s unmounted, but its daemon (pid %d) is still running; see its log", m.Point, resp.PID)
				}
				time.Sleep(50 * time.Millisecond)
			}
			if resp.Snapshot != "" {
				fmt.Fprintf(c.App.Writer, "unmounted %s (final snapshot %s)\n", m.Point, resp.Snapshot)
			} else {
				fmt.Fprintf(c.App.Writer, "unmounted %s\n", m.Point)
			}
			if resp.Status != nil && len(resp.Status.LostFiles) > 0 {
				// Unmounted as asked, but the final snapshot lacks them.
				fmt.Fprintf(c.App.ErrWriter, "keepfs: warning: not backed up: %s\n", lostSummary(resp.Status.LostFiles))
			}
			return nil
		},
	}
}

// processRunning reports whether pid is alive and not a zombie: the daemon
// is nobody's child once its starter exited, and a parent that reaps late
// must not make unmount wait.
func processRunning(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// pid (comm) state ...: comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	return b[i+2] != 'Z' && b[i+2] != 'X'
}
