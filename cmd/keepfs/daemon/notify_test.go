package daemon

import (
	"net"
	"path/filepath"
	"testing"
	"time"
)

func TestSdNotify(t *testing.T) {
	if err := sdNotify("READY=1"); err != nil {
		t.Fatalf("without NOTIFY_SOCKET: %v", err)
	}
	for _, name := range []string{filepath.Join(t.TempDir(), "n.sock"), "@keepfs-test-" + time.Now().Format("150405.000000000")} {
		addr := name
		if name[0] == '@' {
			addr = "\x00" + name[1:]
		}
		ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		t.Setenv("NOTIFY_SOCKET", name)
		if err := sdNotify("READY=1\nSTATUS=x"); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 100)
		_ = ln.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := ln.ReadFromUnix(buf)
		if err != nil || string(buf[:n]) != "READY=1\nSTATUS=x" {
			t.Fatalf("%s: got %q %v", name, buf[:n], err)
		}
		ln.Close()
	}
	t.Setenv("WATCHDOG_USEC", "3000000")
	t.Setenv("WATCHDOG_PID", "")
	if d := watchdogInterval(); d != 1500*time.Millisecond {
		t.Fatalf("watchdog interval %v", d)
	}
	t.Setenv("WATCHDOG_PID", "1")
	if d := watchdogInterval(); d != 0 {
		t.Fatalf("watchdog for another pid: %v", d)
	}
}
