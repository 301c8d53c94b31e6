package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/keepfs/keepfs/cache"
	"github.com/keepfs/keepfs/policy/notify"
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
				in := resp.Incidents
				if in == nil {
					in = []notify.Incident{}
				}
				return printJSON(c.App.Writer, map[string]any{"mount": resp.Mount, "pid": resp.PID, "status": st, "incidents": in})
			}
			remote := remoteHealth(st, time.Now())
			last := st.LastSnapshot
			if last == "" {
				last = "none yet"
			}
			queue := fmt.Sprintf("%d chunks, %s", st.QueueBlobs, humanBytes(st.QueueBytes))
			if st.QueueSince != nil {
				queue += fmt.Sprintf(", waiting %s", time.Duration(st.QueueAgeSeconds*float64(time.Second)).Round(time.Second))
			}
			fmt.Fprintf(c.App.Writer, "mount:         %s (pid %d)\ndirty:         %s\nupload queue:  %s\nlast snapshot: %s\nremote:        %s\ncache:         %s\n",
				resp.Mount, resp.PID, humanBytes(st.DirtyBytes), queue, last, remote, humanBytes(st.CacheBytes))
			if len(st.LostFiles) > 0 {
				fmt.Fprintf(c.App.Writer, "NOT BACKED UP: %s\n", lostSummary(st.LostFiles))
			}
			if st.ReadOnly != "" {
				fmt.Fprintf(c.App.Writer, "READ-ONLY:     %s\n", st.ReadOnly)
			}
			if n := len(resp.Incidents); n > 0 {
				fmt.Fprintf(c.App.Writer, "INCIDENTS:     %d open (details: keepfs incidents; acknowledge: keepfs incidents ack ID)\n", n)
				for _, i := range resp.Incidents {
					fmt.Fprintf(c.App.Writer, "  %s %s %s: %s\n", i.ID, i.Type, i.Object, i.Message)
					for _, d := range i.Deliveries {
						if !d.Delivered {
							fmt.Fprintf(c.App.Writer, "    %s: %s\n", d.Target, deliveryState(d))
						}
					}
				}
			}
			return nil
		},
	}
}

// remoteHealth says how contact with the remote went, as of now.
func remoteHealth(st *cache.Status, now time.Time) string {
	ago := func(t *time.Time) string {
		if t == nil {
			return "never"
		}
		return now.Sub(*t).Round(time.Second).String() + " ago"
	}
	if st.RemoteReachable {
		s := "reachable (last contact " + ago(st.LastContactOK)
		if st.LastContactFailed != nil {
			s += ", last failure " + ago(st.LastContactFailed)
		}
		return s + ")"
	}
	s := "UNREACHABLE (last failure " + ago(st.LastContactFailed)
	if st.LastError != "" {
		s += ": " + st.LastError
	}
	return s + "; last success " + ago(st.LastContactOK) + ")"
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
	return fmt.Sprintf("%d %s whose data is lost, held neither here nor by the remote (%s); snapshots keep the last backed-up version, if any, until you rewrite or delete them", len(paths), noun, names)
}
