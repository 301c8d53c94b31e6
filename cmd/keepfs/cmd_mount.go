package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/keepfs/keepfs/cache"
	"github.com/keepfs/keepfs/cmd/keepfs/daemon"
	"github.com/keepfs/keepfs/fs"
	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo"
)

func cmdMount() *cli.Command {
	return &cli.Command{
		Name:      "mount",
		Usage:     "mount the repository as a folder",
		ArgsUsage: "MNT",
		Description: `Mounts the repository at MNT (an empty directory). Without --foreground the
mount runs as a daemon and the command returns once the mount is ready; its
log is <state>/daemon.log. Files are committed when closed or fsynced,
uploaded in the background, and a snapshot is taken every
--snapshot-interval when something changed. .versions/ at the root shows
every snapshot read-only. Stop with 'keepfs unmount MNT' (or Ctrl-C with
--foreground).

Examples:
   keepfs mount ~/safe
   keepfs mount --foreground --snapshot-interval 5m --cache-size 4GiB ~/safe`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "foreground", Aliases: []string{"f"}, Usage: "stay attached; Ctrl-C unmounts"},
			&cli.StringFlag{Name: "cache-size", Value: "1GiB", Usage: "bound on cached clean data (`SIZE`, e.g. 512MiB, 4GiB)"},
			&cli.DurationFlag{Name: "snapshot-interval", Value: time.Minute, Usage: "take a snapshot this often when something changed"},
			&cli.BoolFlag{Name: "allow-other", Usage: "let other users use the mount (permissions still apply)"},
			&cli.BoolFlag{Name: "hide-versions", Usage: "leave .versions out of the root listing"},
			&cli.StringFlag{Name: "metrics-listen", Usage: "serve Prometheus metrics at /metrics on `ADDR` (127.0.0.1:9464, or unix:/path)"},
			&cli.DurationFlag{Name: "scrub-interval", Value: time.Hour, Usage: "run an integrity scrub (listing diff, sampled full reads, rollback check) this often; 0 disables"},
			&cli.DurationFlag{Name: "scrub-cycle", Value: 30 * 24 * time.Hour, Usage: "read every pack in full within this time"},
			&cli.DurationFlag{Name: "alert-after", Value: 15 * time.Minute, Usage: "raise an event when the remote has not answered for this long"},
			&cli.BoolFlag{Name: "debug-fuse", Usage: "log every FUSE request", Hidden: true},
			&cli.IntFlag{Name: "passphrase-fd", Hidden: true, Usage: "internal: read the passphrase from this fd"},
			&cli.IntFlag{Name: "ready-fd", Hidden: true, Usage: "internal: report readiness on this fd"},
		},
		Action: runMount,
	}
}

func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(strings.ToUpper(s))
	mult := int64(1)
	for _, u := range []struct {
		suf string
		m   int64
	}{{"KIB", 1 << 10}, {"MIB", 1 << 20}, {"GIB", 1 << 30}, {"TIB", 1 << 40}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40}, {"B", 1}} {
		if strings.HasSuffix(t, u.suf) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suf)), u.m
			break
		}
	}
	n, err := strconv.ParseFloat(t, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("invalid size %q: want e.g. 512MiB or 4GiB", s)
	}
	return int64(n * float64(mult)), nil
}

// checkMountpoint refuses what would surprise: a missing or non-empty
// directory, or one that is already a mount point.
func checkMountpoint(mnt string) error {
	fi, err := os.Stat(mnt)
	if err != nil {
		return fmt.Errorf("mount point: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("mount point %s is not a directory", mnt)
	}
	if mounted, _ := isMountpoint(mnt); mounted {
		return fmt.Errorf("%s is already a mount point (keepfs unmount %s?)", mnt, mnt)
	}
	f, err := os.Open(mnt)
	if err != nil {
		return fmt.Errorf("mount point: %w", err)
	}
	defer f.Close()
	if names, _ := f.Readdirnames(1); len(names) > 0 {
		return fmt.Errorf("mount point %s is not empty", mnt)
	}
	return nil
}

func defaultStateDir(repoID string) (string, error) {
	base := os.Getenv("XDG_STATE_HOME")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", errors.New("no --state given and no home directory to put the state in")
		}
		base = filepath.Join(home, ".local", "state")
	}
	return filepath.Join(base, "keepfs", repoID), nil
}

func stateDir(c *cli.Context, r *repo.Repository) (string, error) {
	s := c.String("state")
	if s == "" {
		return defaultStateDir(r.Config().ID)
	}
	return filepath.Abs(s)
}

func runMount(c *cli.Context) error {
	// Before the passphrase is read: this process (and the daemon it
	// starts, which runs this too) holds the master key.
	if err := daemon.Harden(); err != nil {
		return err
	}
	arg := c.Args().First()
	if c.NArg() == 0 {
		arg = profileMountpoint(c)
	}
	if c.NArg() > 1 || arg == "" {
		return usageError("mount takes one mount point (or a profile's mountpoint)")
	}
	mnt, err := filepath.Abs(arg)
	if err != nil {
		return err
	}
	size, err := parseSize(c.String("cache-size"))
	if err != nil {
		return usageError("--cache-size: %v", err)
	}
	if c.Duration("snapshot-interval") <= 0 {
		return usageError("--snapshot-interval must be positive")
	}
	if fd := c.Int("ready-fd"); fd > 0 {
		// Started by a parent mount: report the outcome on the pipe.
		w := os.NewFile(uintptr(fd), "ready")
		defer w.Close()
		progress := func(p cache.Progress) { fmt.Fprintf(w, "progress %d %d %s %s\n", p.Done, p.Total, p.Unit, p.What) }
		err := mountForeground(c, mnt, size, func() { fmt.Fprintln(w, "ok") }, progress)
		if err != nil {
			fmt.Fprintf(w, "error: %s\n", oneLine(err))
		}
		return err
	}
	if err := checkMountpoint(mnt); err != nil {
		return err
	}
	if c.Bool("foreground") {
		sp := newStartupProgress(c.App.ErrWriter)
		return mountForeground(c, mnt, size, func() {
			sp.finish()
			fmt.Fprintf(c.App.ErrWriter, "mounted at %s; Ctrl-C to unmount\n", mnt)
		}, sp.report)
	}
	return mountDaemon(c, mnt)
}

func oneLine(err error) string {
	s := strings.TrimSpace(err.Error())
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

func mountForeground(c *cli.Context, mnt string, size int64, ready func(), progress func(cache.Progress)) error {
	// Every retried remote call reports its failure to the mount's health
	// record at once, so status says the remote is gone within seconds.
	health := cache.NewHealth()
	lo := locationOptions(c)
	lo.Retry.OnRetry = health.RecordRetry
	pw, err := passphrase(c, false)
	if err != nil {
		return err
	}
	var metrics *daemon.Metrics
	var wrap func(remote.Storage) remote.Storage
	if c.String("metrics-listen") != "" {
		metrics = daemon.NewMetrics()
		wrap = metrics.WrapStorage
	}
	r, err := openRepoWrapped(c, pw, repo.Options{FastCompression: true, NoIndex: true}, lo, wrap)
	clear(pw)
	if err != nil {
		return err
	}
	defer r.Close()
	state, err := stateDir(c, r)
	if err != nil {
		return err
	}
	notifier, err := cmdNotifier(c)
	if err != nil {
		return err
	}
	level := slog.LevelInfo
	if c.Bool("verbose") {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(c.App.ErrWriter, &slog.HandlerOptions{Level: level}))
	// A prune or erase holds the exclusive lock for a while: wait for it.
	lockWait := c.Duration("retry-lock")
	if !c.IsSet("retry-lock") {
		lockWait = time.Minute
	}
	err = daemon.Run(c.Context, r, daemon.Config{
		Mountpoint: mnt,
		Cache: cache.Options{StateDir: state, CacheSize: size, SnapshotInterval: c.Duration("snapshot-interval"), Progress: progress,
			Health: health, LockWait: lockWait},
		FS:            fs.Options{AllowOther: c.Bool("allow-other"), HideVersions: c.Bool("hide-versions"), Debug: c.Bool("debug-fuse")},
		Logger:        log,
		Ready:         ready,
		Metrics:       metrics,
		MetricsListen: c.String("metrics-listen"),
		Notifier:      notifier, ScrubInterval: c.Duration("scrub-interval"), ScrubCycle: c.Duration("scrub-cycle"),
		AlertAfter: c.Duration("alert-after"),
	})
	if errors.Is(err, cache.ErrLocked) || errors.Is(err, cache.ErrRepoLocked) {
		return fmt.Errorf("refusing a second mount: %w", err)
	}
	return lockError(err)
}

// mountDaemon starts `keepfs mount --foreground` detached, hands it the
// passphrase through a pipe (never argv or the environment) and returns
// when it reports the mount ready or fails.
func mountDaemon(c *cli.Context, mnt string) error {
	// Unlock here first: a wrong passphrase is reported by this process,
	// and the state directory can be derived from the repository id.
	pw, err := passphrase(c, false)
	if err != nil {
		return err
	}
	defer clear(pw)
	r, err := openRepoWith(c, pw, repo.Options{NoIndex: true})
	if err != nil {
		return err
	}
	state, err := stateDir(c, r)
	r.Close()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(state, 0o700); err != nil {
		return fmt.Errorf("create state directory: %w", err)
	}
	logPath := filepath.Join(state, "daemon.log")
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("daemon log: %w", err)
	}
	defer logf.Close()
	pwR, pwW, err := os.Pipe()
	if err != nil {
		return err
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	args := []string{"--repo", c.String("repo"), "--state", state}
	for _, f := range []string{"known-hosts", "identity", "notify-exec", "notify-webhook", "notify-secret-file", "s3-credentials-file", "s3-profile", "s3-region"} {
		if v := c.String(f); v != "" {
			args = append(args, "--"+f, v)
		}
	}
	for _, f := range []string{"insecure-ignore-host-key", "sftp-no-fsync", "s3-path-style", "verbose"} {
		if c.Bool(f) {
			args = append(args, "--"+f)
		}
	}
	args = append(args, "mount", "--foreground", "--passphrase-fd", "3", "--ready-fd", "4",
		"--cache-size", c.String("cache-size"), "--snapshot-interval", c.Duration("snapshot-interval").String(),
		"--scrub-interval", c.Duration("scrub-interval").String(), "--scrub-cycle", c.Duration("scrub-cycle").String(),
		"--alert-after", c.Duration("alert-after").String())
	if m := c.String("metrics-listen"); m != "" {
		args = append(args, "--metrics-listen", m)
	}
	for _, f := range []string{"allow-other", "hide-versions", "debug-fuse"} {
		if c.Bool(f) {
			args = append(args, "--"+f)
		}
	}
	args = append(args, "--", mnt)
	cmd := exec.Command(exe, args...)
	cmd.Stdin = nil
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{pwR, readyW}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	for _, e := range os.Environ() {
		// The daemon gets every setting on its command line: it reads no
		// profile (one given by --config would not be found again).
		if !strings.HasPrefix(e, "KEEPFS_PASSWORD") && !strings.HasPrefix(e, "KEEPFS_PROFILE=") && !strings.HasPrefix(e, "KEEPFS_CONFIG=") {
			cmd.Env = append(cmd.Env, e)
		}
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start daemon: %w", err)
	}
	pwR.Close()
	readyW.Close()
	_, werr := pwW.Write(append(append([]byte(nil), pw...), '\n'))
	pwW.Close()
	if werr != nil {
		return fmt.Errorf("hand the passphrase to the daemon: %w", werr)
	}
	sp := newStartupProgress(c.App.ErrWriter)
	line := waitReady(readyR, sp.report)
	sp.finish()
	readyR.Close()
	switch {
	case line == "ok":
		fmt.Fprintf(c.App.ErrWriter, "mounted at %s (daemon pid %d, log %s)\n", mnt, cmd.Process.Pid, logPath)
		_ = cmd.Process.Release()
		return nil
	case strings.HasPrefix(line, "error: "):
		_ = cmd.Wait()
		return errors.New(strings.TrimPrefix(line, "error: "))
	}
	_ = cmd.Wait()
	return fmt.Errorf("the mount daemon exited before the mount was ready: %s", lastLine(logPath))
}

// waitReady reads what the daemon reports on its readiness pipe: progress
// lines ("progress DONE TOTAL UNIT WHAT") while it starts, then "ok" or
// "error: …", which it returns; "" if the daemon died first.
func waitReady(r io.Reader, progress func(cache.Progress)) string {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		rest, ok := strings.CutPrefix(line, "progress ")
		if !ok {
			return line
		}
		f := strings.SplitN(rest, " ", 4)
		if len(f) != 4 {
			continue
		}
		done, err1 := strconv.ParseInt(f[0], 10, 64)
		total, err2 := strconv.ParseInt(f[1], 10, 64)
		if err1 == nil && err2 == nil {
			progress(cache.Progress{What: f[3], Done: done, Total: total, Unit: f[2]})
		}
	}
	return ""
}

func lastLine(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return "see " + path
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > 4096 {
		_, _ = f.Seek(-4096, io.SeekEnd)
	}
	b, _ := io.ReadAll(f)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1] + " (see " + path + ")"
}

// isMountpoint reports whether p is a mount point of any file system.
func isMountpoint(p string) (bool, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && unescapeMount(fields[4]) == p {
			return true, nil
		}
	}
	return false, sc.Err()
}

// daemonSocket finds the control socket: of the mount containing arg if
// given, else of --state, else of the only keepfs mount.
func daemonSocket(c *cli.Context, arg string) (string, error) {
	if arg != "" {
		m, ok, err := findMount(arg)
		if err != nil {
			return "", err
		}
		if !ok {
			return "", fmt.Errorf("%s is not inside a keepfs mount", arg)
		}
		return m.Source, nil
	}
	if s := c.String("state"); s != "" {
		abs, err := filepath.Abs(s)
		if err != nil {
			return "", err
		}
		return filepath.Join(abs, daemon.SocketName), nil
	}
	all, err := listMounts()
	if err != nil {
		return "", err
	}
	switch len(all) {
	case 0:
		return "", errors.New("no keepfs mount found (mount one with `keepfs mount MNT`)")
	case 1:
		return all[0].Source, nil
	}
	return "", fmt.Errorf("%d keepfs mounts: name one (keepfs %s MNT)", len(all), c.Command.Name)
}

// callDaemon sends op with no deadline but the command's own context.
func callDaemon(ctx context.Context, sock, op string) (*daemon.Response, error) {
	return daemon.Call(ctx, sock, op)
}
