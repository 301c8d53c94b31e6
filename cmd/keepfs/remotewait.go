package main

import (
	"context"
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/keepfs/keepfs/cache"
	"github.com/keepfs/keepfs/cmd/keepfs/daemon"
)

// timeoutFlag bounds how long sync and unmount wait for the remote.
func timeoutFlag() cli.Flag {
	return &cli.DurationFlag{Name: "timeout", Value: daemon.DefaultTimeout,
		Usage: "give up waiting for the remote after this long; what is not uploaded stays queued"}
}

// flagTimeout reads --timeout, refusing a useless value.
func flagTimeout(c *cli.Context) (time.Duration, error) {
	t := c.Duration("timeout")
	if t <= 0 {
		return 0, usageError("--timeout must be positive")
	}
	return t, nil
}

// daemonWait bounds the client's own wait: the daemon answers at the
// timeout, and a little later still if it is busy committing.
func daemonWait(ctx context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, timeout+30*time.Second)
}

// remoteDidNotAnswer says, in one line, that the remote did not take
// everything within timeout and what became of the data.
func remoteDidNotAnswer(timeout time.Duration, st *cache.Status, fate string) string {
	var queued int64
	why := ""
	reachable := false
	if st != nil {
		queued = st.QueueBytes + st.DirtyBytes
		reachable = st.RemoteReachable
		if st.LastError != "" {
			why = " (last error: " + st.LastError + ")"
		}
	}
	if reachable {
		return fmt.Sprintf("the upload did not finish within %s; %s %s", timeout, humanBytes(queued), fate)
	}
	return fmt.Sprintf("the remote did not answer within %s%s; %s %s", timeout, why, humanBytes(queued), fate)
}

// forcedNotUploaded says, in one line, why a forced unmount went ahead
// without the final snapshot reaching the remote: the wait ran out, or
// the snapshot failed at once (a lapsed lock, say), which no timeout
// explains.
func forcedNotUploaded(timeout time.Duration, resp *daemon.Response) string {
	const fate = "stay queued in the state directory and will upload at the next mount"
	if resp.TimedOut {
		return remoteDidNotAnswer(timeout, resp.Status, fate)
	}
	var queued int64
	if st := resp.Status; st != nil {
		queued = st.QueueBytes + st.DirtyBytes
	}
	return fmt.Sprintf("unmounted without a final snapshot (%s); %s %s", resp.Error, humanBytes(queued), fate)
}
