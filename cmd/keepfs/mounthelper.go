package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"
)

// mount(8) mounts type fuse.keepfs (a line in fstab, or mount -t
// fuse.keepfs) through a helper: /sbin/mount.fuse.keepfs if it exists
// (make install links it to keepfs), else fuse3's mount.fuse, which runs
// `keepfs SOURCE MOUNTPOINT -o OPTIONS` from $PATH. Both end up here: SOURCE
// names a profile of the config file (or, containing "://", a repository
// URL), and the options map to mount's flags.

// helperOptions maps mount options to keepfs flags; "" marks a boolean.
var helperOptions = map[string]struct {
	flag   string
	value  bool
	global bool
}{
	"allow_other":       {"allow-other", false, false},
	"hide_versions":     {"hide-versions", false, false},
	"cache_size":        {"cache-size", true, false},
	"snapshot_interval": {"snapshot-interval", true, false},
	"metrics_listen":    {"metrics-listen", true, false},
	"config":            {"config", true, true},
	"state":             {"state", true, true},
}

// Options mount(8), fstab and systemd use for themselves, or that a FUSE
// mount has anyway (nosuid, nodev; default_permissions always).
var helperIgnored = map[string]bool{
	"rw": true, "defaults": true, "auto": true, "noauto": true, "user": true, "users": true,
	"nouser": true, "owner": true, "nofail": true, "_netdev": true, "dev": true, "nodev": true,
	"suid": true, "nosuid": true, "exec": true, "noexec": true, "atime": true, "noatime": true,
	"relatime": true, "strictatime": true, "nodiratime": true, "default_permissions": true,
	"async": true, "sync": false,
}

// isMountHelperCall says whether args look like a mount helper's call
// rather than a keepfs command line.
func isMountHelperCall(app *cli.App, args []string) bool {
	base := filepath.Base(args[0])
	if strings.HasPrefix(base, "mount.") {
		return true
	}
	if len(args) < 3 || strings.HasPrefix(args[1], "-") || findCommand(app.Commands, args[1]) != nil {
		return false
	}
	// mount.fuse3 always passes options: without -o, `keepfs typo DIR` is
	// a mistyped command, not a mount.
	hasOpts := false
	for _, a := range args[3:] {
		if strings.HasPrefix(a, "-o") {
			hasOpts = true
		}
	}
	if !hasOpts {
		return false
	}
	fi, err := os.Stat(args[2])
	return err == nil && fi.IsDir()
}

// mountHelperArgs turns `SOURCE MOUNTPOINT [-o OPTS] [-n] [-s] [-v]` into
// keepfs's own command line; fake is set for mount -f (do nothing).
func mountHelperArgs(args []string) (out []string, fake bool, err error) {
	var pos, opts []string
	for i := 1; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-o":
			if i+1 == len(args) {
				return nil, false, usageError("mount helper: -o needs options")
			}
			opts = append(opts, strings.Split(args[i+1], ",")...)
			i++
		case strings.HasPrefix(a, "-o"):
			opts = append(opts, strings.Split(a[2:], ",")...)
		case a == "-f":
			fake = true
		case a == "-n" || a == "-s" || a == "-v":
			// no mtab, sloppy, verbose: nothing to do
		case strings.HasPrefix(a, "-t"):
			if a == "-t" {
				i++
			}
		case strings.HasPrefix(a, "-"):
			return nil, false, usageError("mount helper: unknown option %s", a)
		default:
			pos = append(pos, a)
		}
	}
	if len(pos) != 2 {
		return nil, false, usageError("mount helper: want SOURCE MOUNTPOINT [-o OPTIONS], got %d arguments", len(pos))
	}
	source := strings.TrimPrefix(pos[0], "keepfs#")
	var global, local []string
	if strings.Contains(source, "://") {
		global = append(global, "--repo", source)
	} else {
		global = append(global, "--profile", source)
	}
	for _, o := range opts {
		o = strings.TrimSpace(o)
		k, v, hasV := strings.Cut(o, "=")
		norm := strings.ReplaceAll(k, "-", "_")
		if o == "" || helperIgnored[k] || strings.HasPrefix(k, "x-") || k == "comment" {
			continue
		}
		if k == "ro" {
			return nil, false, usageError("mount option ro: a keepfs mount is read-write (history is read-only under .versions)")
		}
		m, ok := helperOptions[norm]
		if !ok {
			return nil, false, usageError("unknown mount option %q (known: allow_other, hide_versions, cache_size=, snapshot_interval=, metrics_listen=, config=, state=)", k)
		}
		if m.value != hasV {
			if m.value {
				return nil, false, usageError("mount option %s needs a value (%s=...)", k, k)
			}
			return nil, false, usageError("mount option %s takes no value", k)
		}
		f := []string{"--" + m.flag}
		if hasV {
			f = append(f, v)
		}
		if m.global {
			global = append(global, f...)
		} else {
			local = append(local, f...)
		}
	}
	out = append([]string{"keepfs"}, global...)
	out = append(out, "mount")
	out = append(out, local...)
	return append(out, "--", pos[1]), fake, nil
}

// runMountHelper runs keepfs as mount(8)'s helper.
func runMountHelper(args []string, run func([]string) int, stderr func(string)) int {
	kargs, fake, err := mountHelperArgs(args)
	if err != nil {
		stderr(fmt.Sprintf("keepfs: %s\n", oneLine(err)))
		return exitUsage
	}
	if fake {
		return exitOK
	}
	return run(kargs)
}
