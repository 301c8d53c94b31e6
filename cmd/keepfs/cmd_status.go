package main

import (
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"
)

func cmdStatus() *cli.Command {
	return &cli.Command{
		Name:      "status",
		Usage:     "show a mount's dirty data, upload queue, last snapshot and remote health",
		ArgsUsage: "[MNT]",
		Description: `Without MNT: the mount of --state, or the only keepfs mount.

Examples:
   keepfs status ~/safe
   keepfs status --json`,
		Flags: []cli.Flag{jsonFlag()},
		Action: func(c *cli.Context) error {
			if c.NArg() > 1 {
				return usageError("status takes at most one mount point")
			}
			sock, err := daemonSocket(c, c.Args().First())
			if err != nil {
				return err
			}
			resp, err := callDaemon(c.Context, sock, "status")
			if err != nil {
				return err
			}
			st := resp.Status
			if c.Bool("json") {
				return printJSON(c.App.Writer, map[string]any{"mount": resp.Mount, "pid": resp.PID, "status": st})
			}
			remote := "reachable"
			if !st.RemoteReachable {
				remote = "UNREACHABLE"
				if st.LastError != "" {
					remote += " (" + st.LastError + ")"
				}
			}
			last := st.LastSnapshot
			if last == "" {
				last = "none yet"
			}
			fmt.Fprintf(c.App.Writer, "mount:         %s (pid %d)\ndirty:         %s\nupload queue:  %d chunks, %s\nlast snapshot: %s\nremote:        %s\ncache:         %s\n",
				resp.Mount, resp.PID, humanBytes(st.DirtyBytes), st.QueueBlobs, humanBytes(st.QueueBytes), last, remote, humanBytes(st.CacheBytes))
			if len(st.LostFiles) > 0 {
				fmt.Fprintf(c.App.Writer, "NOT BACKED UP: %s\n", lostSummary(st.LostFiles))
			}
			if st.ReadOnly != "" {
				fmt.Fprintf(c.App.Writer, "READ-ONLY:     %s\n", st.ReadOnly)
			}
			return nil
		},
	}
}

// lostSummary says which files the last snapshot could not back up as
// they are now, naming the first few.
func lostSummary(paths []string) string {
	names := strings.Join(paths[:min(len(paths), 3)], ", ")
	if len(paths) > 3 {
		names += ", …"
	}
	noun := "files"
	if len(paths) == 1 {
		noun = "file"
	}
	return fmt.Sprintf("%d %s whose local data was lost before upload (%s); snapshots keep the last backed-up version, if any, until you rewrite or delete them", len(paths), noun, names)
}
