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
the mount is gone. If a process still holds files open, the mount is
detached from the file tree and serves those files for up to 15 s more:
what they write and close by then is committed and uploaded; after that
their writes fail.

If the remote does not take everything within --timeout (default 2m),
unmount exits 1 and leaves the mount running, so nothing is lost: its
uploader keeps retrying and the queue drains when the remote returns. With
--force it unmounts anyway; what is not uploaded stays queued in the state
directory (encrypted, durable) and uploads at the next mount. It still
exits 1 then, as the data is not in the remote yet.

Examples:
   keepfs unmount ~/safe
   keepfs unmount --timeout 30s --force ~/safe`,
		Flags: []cli.Flag{timeoutFlag(), &cli.BoolFlag{Name: "force",
			Usage: "unmount even if the remote does not answer in time; the queue stays in the state directory for the next mount"}},
		Action: func(c *cli.Context) error {
			arg := c.Args().First()
			if c.NArg() == 0 {
				arg = profileMountpoint(c)
			}
			if c.NArg() > 1 || arg == "" {
				return usageError("unmount takes one mount point (or a profile's mountpoint)")
			}
			timeout, err := flagTimeout(c)
			if err != nil {
				return err
			}
			force := c.Bool("force")
			m, ok, err := findMount(arg)
			if err != nil {
				return err
			}
			if !ok {
				return fmt.Errorf("%s is not a keepfs mount", arg)
			}
			cl, err := daemon.Dial(c.Context, m.Source)
			if err != nil {
				return fmt.Errorf("unmount %s: %w (if the daemon is gone, run fusermount3 -u %s)", m.Point, err, m.Point)
			}
			// Returns once the daemon has taken the final snapshot, the
			// remote holds it, and the cache is closed.
			ctx, cancel := daemonWait(c.Context, timeout+forcedShutdownWait)
			defer cancel()
			resp, err := cl.UnmountWith(ctx, timeout, force)
			if resp != nil && resp.TimedOut && !force {
				return fmt.Errorf("unmount %s: %s", m.Point, remoteDidNotAnswer(timeout, resp.Status,
					"stay queued and will upload when it returns; still mounted, so nothing is lost (--force unmounts now and keeps the queue in the state directory for the next mount)"))
			}
			var notUploaded error
			if resp != nil && resp.OK && resp.Error != "" {
				// Forced: the daemon unmounts although the remote did not
				// take everything.
				notUploaded = fmt.Errorf("unmount %s: %s", m.Point, forcedNotUploaded(timeout, resp))
				err = nil
			}
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
			if notUploaded != nil {
				return notUploaded
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

// forcedShutdownWait is how much longer than --timeout an unmount may
// take: a forced one gives the remote a last few seconds while closing.
const forcedShutdownWait = 15 * time.Second

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
