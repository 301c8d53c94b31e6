package sftp

import (
	"errors"
	"io/fs"
	"strings"
	"testing"
)

// A server without fsync@openssh.com could lose an acknowledged upload in
// a crash, after the local copy is gone: it is refused, permanently (no
// retry), with a one-line error naming the opt-out, unless opted out.
func TestCheckFsync(t *testing.T) {
	for _, tc := range []struct {
		has, allow, ok bool
	}{
		{has: true, allow: false, ok: true},
		{has: true, allow: true, ok: true},
		{has: false, allow: true, ok: true},
		{has: false, allow: false, ok: false},
	} {
		err := checkFsync("host:22", tc.has, tc.allow)
		if (err == nil) != tc.ok {
			t.Errorf("has=%v allow=%v: %v", tc.has, tc.allow, err)
			continue
		}
		if err == nil {
			continue
		}
		if !errors.Is(err, ErrNoFsync) || !errors.Is(err, fs.ErrPermission) {
			t.Errorf("error %v does not wrap ErrNoFsync and fs.ErrPermission", err)
		}
		if msg := err.Error(); strings.Contains(msg, "\n") || !strings.Contains(msg, "--sftp-no-fsync") || !strings.Contains(msg, "host:22") {
			t.Errorf("error is not one actionable line: %q", msg)
		}
	}
}
