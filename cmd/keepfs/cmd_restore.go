package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/keepfs/keepfs/cmd/keepfs/daemon"
	"github.com/keepfs/keepfs/policy/audit"
	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/restorer"
)

func cmdRestore() *cli.Command {
	return &cli.Command{
		Name:      "restore",
		Usage:     "restore files or trees from a snapshot",
		ArgsUsage: "PATH...",
		Description: `Restores each PATH (a path in the repository, "/" for everything, or a
path inside a keepfs mount of it) as it was at --at into the directory --to.
A file or directory is restored under its own name; "/" restores the
snapshot's contents directly into --to. Content, modes, times, symlinks,
hard links and xattrs are restored (ownership too when run as root).
Nothing is written outside --to. If the repository is mounted here, the
mount syncs first, so what was closed before the command is included.

--at takes a snapshot time (2026-11-28T130500Z), a prefix of one
(2026-11-28T13 means the end of that hour), RFC 3339, or "latest" (default):
the newest snapshot at or before that time is used. A name .versions shows
with a "-1", "-2" … suffix names that later snapshot of the same second.

With --in-place, PATH is a path inside a keepfs mount: the mount is synced
first (so the current version is kept in a snapshot), then PATH is replaced
by its version at --at, read from the mount's .versions tree, and synced
again. The restored state is a new version; nothing is lost.

Examples:
   keepfs restore / --to /tmp/everything
   keepfs restore /docs/report.odt --at 2026-11-28 --to ~/restored
   keepfs restore --in-place ~/safe/docs/report.odt --at 2026-11-28T13`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "at", Value: "latest", Usage: "point in `TIME` to restore"},
			&cli.StringFlag{Name: "to", Usage: "target `DIR` (created if missing)"},
			&cli.BoolFlag{Name: "in-place", Usage: "inside a mount: bring PATH back as it was at --at, as a new version (the current one stays in history)"},
			jsonFlag(),
		},
		Action: func(c *cli.Context) error {
			if c.NArg() == 0 {
				return usageError("restore needs at least one PATH (use / for everything)")
			}
			if c.Bool("in-place") {
				if c.String("to") != "" {
					return usageError("--in-place and --to exclude each other")
				}
				return restoreInPlace(c)
			}
			if c.String("to") == "" {
				return usageError("restore needs --to DIR")
			}
			// --at takes what .versions and diff take, "-N" names
			// included, to the same snapshots.
			if err := checkAt(c.String("at")); err != nil {
				return err
			}
			r, err := openRepo(c, repo.Options{})
			if err != nil {
				return err
			}
			defer r.Close()
			// A PATH inside a mount names that file in the mount's
			// repository; other relative paths are taken as they were.
			paths := make([]string, 0, c.NArg())
			for _, a := range c.Args().Slice() {
				p := a
				if abs, err := filepath.Abs(a); err == nil {
					if _, in, _ := findMount(abs); in || strings.HasPrefix(a, "/") {
						if p, err = repoPathArg(c.Context, a, r.Config().ID); err != nil {
							return err
						}
					}
				}
				paths = append(paths, p)
			}
			// A mounted repository syncs first, so that what was closed
			// before the command is in the snapshot restored from.
			if sock, ok := localDaemonFor(c, r.Config().ID); ok {
				if _, err := callDaemon(c.Context, sock, "sync"); err != nil {
					return fmt.Errorf("sync the mount before restoring: %w", err)
				}
			}
			unlock, err := lockShared(c, r, "restore")
			if err != nil {
				return err
			}
			defer unlock()
			snaps, err := r.Snapshots(c.Context)
			if err != nil {
				return err
			}
			sn, err := pickSnapshot(snaps, c.String("at"))
			if err != nil {
				return err
			}
			opts := restorer.Options{}
			if p := progressFor(c); p != nil {
				opts.Progress = p
			}
			stopProfile := startCPUProfile(c.App.ErrWriter)
			sum, err := restorer.Restore(c.Context, r, sn, paths, c.String("to"), opts)
			stopProfile()
			ae := audit.Entry{Action: audit.ActionRestore, Outcome: outcome(err), Paths: auditPaths(r, paths),
				Details: map[string]string{"snapshot": sn.ID.String()}}
			if sum != nil {
				ae.Details["files"] = strconv.FormatInt(sum.Files, 10)
				ae.Details["bytes"] = strconv.FormatInt(sum.Bytes, 10)
			}
			recordAudit(c, r, ae)
			if errors.Is(err, repo.ErrPathNotFound) {
				return fmt.Errorf("%w (snapshot %s)", err, sn.Name())
			}
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(c.App.Writer, sum)
			}
			fmt.Fprintf(c.App.Writer, "restored %d files, %d dirs, %s from snapshot %s in %.1fs\n",
				sum.Files, sum.Dirs, humanBytes(sum.Bytes), sn.Name(), sum.Seconds)
			return nil
		},
	}
}

// restoreInPlace brings mounted paths back to an earlier version through
// the mount itself: copy out of .versions into a temporary sibling, then
// swap it in. The daemon syncs before (keeping the current version) and
// after (recording the restored one).
func restoreInPlace(c *cli.Context) error {
	at := c.String("at")
	if err := checkAt(at); err != nil {
		return err
	}
	name := "latest"
	var instant time.Time // an RFC 3339 --at, resolved in each mount's .versions
	if strings.Contains(at, "Z-") {
		name = at // a later snapshot of its second, as .versions names it
	} else if t, _ := repo.ParseTime(at); !t.IsZero() {
		if _, perr := repo.ParseTimePrefix(at); perr == nil {
			name = at // .versions resolves names and prefixes itself
		} else {
			instant = t
		}
	}
	type done struct {
		Path string `json:"path"`
		From string `json:"from"`
	}
	var results []done
	synced := map[string]bool{}
	// What each mount restored, for the audit entry its daemon writes:
	// also when a later path fails, so that nothing done goes unrecorded.
	restored := map[string]*daemon.Restored{}
	var failedAt string
	defer func() {
		for src, rec := range restored {
			if len(rec.Paths) == 0 {
				continue
			}
			rec.Failed = src == failedAt
			if _, err := daemon.Send(context.WithoutCancel(c.Context), src, daemon.Request{Op: "restored", Restored: rec}); err != nil {
				fmt.Fprintf(c.App.ErrWriter, "warning: audit entry of the in-place restore: %s\n", oneLine(err))
			}
		}
	}()
	for _, arg := range c.Args().Slice() {
		abs, err := filepath.Abs(arg)
		if err != nil {
			return err
		}
		m, ok, err := findMount(abs)
		if err != nil {
			return err
		}
		if !ok {
			return usageError("--in-place needs a path inside a keepfs mount; %s is not", arg)
		}
		rel := m.repoPath(abs)
		if rel == "/" {
			return usageError("--in-place restores files and directories, not a whole mount")
		}
		if !synced[m.Source] {
			if _, err := callDaemon(c.Context, m.Source, "sync"); err != nil {
				return fmt.Errorf("sync before restoring: %w", err)
			}
			synced[m.Source] = true
			restored[m.Source] = &daemon.Restored{}
		}
		name := name
		if !instant.IsZero() {
			if name, err = versionsAt(m.Point, instant); err != nil {
				return err
			}
		}
		if err := restoreOne(c, m.Point, rel, abs, name, at); err != nil {
			restored[m.Source].Paths = append(restored[m.Source].Paths, rel)
			failedAt = m.Source
			return err
		}
		snap, _ := filepath.EvalSymlinks(filepath.Join(m.Point, ".versions", name))
		rec := restored[m.Source]
		rec.Paths = append(rec.Paths, rel)
		rec.Snapshots = append(rec.Snapshots, filepath.Base(snap))
		results = append(results, done{Path: abs, From: filepath.Base(snap)})
	}
	for src := range synced {
		if _, err := callDaemon(c.Context, src, "sync"); err != nil {
			failedAt = src
			return fmt.Errorf("sync after restoring: %w", err)
		}
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, results)
	}
	for _, r := range results {
		fmt.Fprintf(c.App.Writer, "restored %s as of %s (the replaced version stays in earlier snapshots)\n", r.Path, r.From)
	}
	return nil
}

// restoreOne copies rel out of .versions/name into a temporary sibling of
// abs and swaps it in, putting the current version back if the swap fails.
func restoreOne(c *cli.Context, point, rel, abs, name, at string) error {
	src := filepath.Join(point, ".versions", name, rel)
	if _, err := filepath.EvalSymlinks(filepath.Join(point, ".versions", name)); err != nil {
		return fmt.Errorf("no snapshot at or before %s: %w", at, err)
	}
	if _, err := os.Lstat(src); err != nil {
		return fmt.Errorf("%s did not exist at %s", rel, at)
	}
	dir := filepath.Dir(abs)
	tmp, err := os.MkdirTemp(dir, ".keepfs-restore-")
	if err != nil {
		return err
	}
	staged := filepath.Join(tmp, filepath.Base(abs))
	if out, err := exec.CommandContext(c.Context, "cp", "-a", "--", src, staged).CombinedOutput(); err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("copy %s out of %s: %v: %s", rel, name, err, strings.TrimSpace(string(out)))
	}
	var old string
	if _, err := os.Lstat(abs); err == nil {
		old = filepath.Join(tmp, ".replaced")
		if err := os.Rename(abs, old); err != nil {
			os.RemoveAll(tmp)
			return fmt.Errorf("move the current %s aside: %w", rel, err)
		}
	}
	if err := os.Rename(staged, abs); err != nil {
		if old != "" {
			_ = os.Rename(old, abs)
		}
		os.RemoveAll(tmp)
		return fmt.Errorf("put the restored %s in place: %w", rel, err)
	}
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("clean up %s: %w", tmp, err)
	}
	return nil
}

// versionsAt names the snapshot in the .versions of the mount at point
// that is the newest at or before t. Names are by the second, so the name
// of t's second may be a snapshot taken after t; a snapshot directory's
// mtime is its time to the nanosecond. Names sort as times, so the search
// goes from the newest name not after t's second back to the first
// snapshot at or before t.
func versionsAt(point string, t time.Time) (string, error) {
	dir := filepath.Join(point, ".versions")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	last := t.UTC().Format(repo.TimeFormat)
	for i := len(ents) - 1; i >= 0; i-- {
		n := ents[i].Name()
		if n == "latest" {
			continue
		}
		if base, _, _ := strings.Cut(n, "Z-"); strings.TrimSuffix(base, "Z")+"Z" > last {
			continue // taken in a later second
		}
		fi, err := os.Stat(filepath.Join(dir, n))
		if err != nil {
			continue // pruned since the listing
		}
		if !fi.ModTime().After(t) {
			return n, nil
		}
	}
	return "", fmt.Errorf("%w at or before %s in %s", repo.ErrNoSnapshot, t.UTC().Format(time.RFC3339Nano), dir)
}
