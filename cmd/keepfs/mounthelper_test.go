package main

import (
	"strings"
	"testing"
)

func TestMountHelperArgs(t *testing.T) {
	cases := []struct {
		args []string
		want string
		err  string
	}{
		{[]string{"/sbin/mount.fuse.keepfs", "work", "/mnt", "-o", "rw,allow_other,_netdev,x-systemd.automount,cache_size=4GiB,snapshot-interval=5m"},
			"keepfs --profile work mount --allow-other --cache-size 4GiB --snapshot-interval 5m -- /mnt", ""},
		{[]string{"keepfs", "keepfs#work", "/mnt", "-o", "config=/etc/k.toml,nodev,nosuid,state=/var/lib/k"},
			"keepfs --profile work --config /etc/k.toml --state /var/lib/k mount -- /mnt", ""},
		{[]string{"mount.keepfs", "sftp://u@h/p", "/mnt", "-n", "-oallow_other"}, "keepfs --repo sftp://u@h/p mount --allow-other -- /mnt", ""},
		{[]string{"mount.keepfs", "work", "/mnt", "-o", "ro"}, "", "read-write"},
		{[]string{"mount.keepfs", "work", "/mnt", "-o", "bogus=1"}, "", `unknown mount option "bogus"`},
		{[]string{"mount.keepfs", "work", "/mnt", "-o", "cache_size"}, "", "needs a value"},
		{[]string{"mount.keepfs", "work"}, "", "SOURCE MOUNTPOINT"},
	}
	for _, tc := range cases {
		got, _, err := mountHelperArgs(tc.args)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%v: err %v, want %q", tc.args, err, tc.err)
			}
			continue
		}
		if err != nil || strings.Join(got, " ") != tc.want {
			t.Errorf("%v:\n got %q %v\nwant %q", tc.args, strings.Join(got, " "), err, tc.want)
		}
	}
	if _, fake, _ := mountHelperArgs([]string{"mount.keepfs", "w", "/mnt", "-f"}); !fake {
		t.Error("-f is not fake")
	}
	app := newApp(nil, nil, nil)
	if isMountHelperCall(app, []string{"keepfs", "mount", "/tmp"}) || isMountHelperCall(app, []string{"keepfs", "--repo", "x", "snapshots"}) ||
		isMountHelperCall(app, []string{"keepfs", "moutn", "/tmp"}) {
		t.Error("a command line taken for a helper call")
	}
	if !isMountHelperCall(app, []string{"keepfs", "work", "/tmp", "-o", "rw"}) || !isMountHelperCall(app, []string{"/sbin/mount.fuse.keepfs", "work", "/x"}) {
		t.Error("a helper call not recognised")
	}
}
