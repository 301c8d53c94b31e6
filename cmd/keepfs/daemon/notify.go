package daemon

import (
	"context"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// sdNotify sends state to systemd's $NOTIFY_SOCKET (sd_notify(3)): one
// datagram on a unix socket, a path or an abstract name ("@..."). Without
// NOTIFY_SOCKET it does nothing, so the mount runs the same outside
// systemd; no systemd library is needed for this.
func sdNotify(state string) error {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil
	}
	if strings.HasPrefix(addr, "@") {
		addr = "\x00" + addr[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = conn.Write([]byte(state))
	return err
}

// watchdogInterval is half of WATCHDOG_USEC when systemd asks this process
// for keep-alive pings (WatchdogSec=), else 0.
func watchdogInterval() time.Duration {
	us, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || us <= 0 {
		return 0
	}
	if pid := os.Getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return 0
	}
	return time.Duration(us) * time.Microsecond / 2
}

// watchdog pings systemd every interval until ctx ends. The pings come from
// a goroutine that also checks the cache answers, so a wedged daemon stops
// pinging and systemd restarts it.
func (d *daemon) watchdog(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = d.c.Status()
			if err := sdNotify("WATCHDOG=1"); err != nil {
				d.log.Warn("systemd watchdog ping failed", "err", err)
			}
		}
	}
}

func notifyLog(log *slog.Logger, state string) {
	if err := sdNotify(state); err != nil {
		log.Warn("systemd notify failed", "state", state, "err", err)
	}
}
