package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/history"
)

// repoPathArg turns a PATH argument into a repository path: a path inside
// a keepfs mount names that file in the mounted repository; otherwise a
// path starting with / is a repository path.
func repoPathArg(arg string) (string, error) {
	abs, err := filepath.Abs(arg)
	if err != nil {
		return "", err
	}
	if m, ok, err := findMount(abs); err != nil {
		return "", err
	} else if ok {
		return m.repoPath(abs), nil
	}
	if strings.HasPrefix(arg, "/") {
		return arg, nil
	}
	return "", usageError("%s is not inside a keepfs mount; name a repository path starting with /", arg)
}

func cmdLog() *cli.Command {
	return &cli.Command{
		Name:      "log",
		Usage:     "list every version of one file, following renames",
		ArgsUsage: "PATH",
		Description: `One line per version, oldest first: the first snapshot showing it, size,
content id (a keyed hash: equal ids mean equal content) and the path it had.

Examples:
   keepfs log ~/safe/docs/contract.txt
   keepfs --repo file:///srv/backup log /docs/contract.txt --json`,
		Flags: []cli.Flag{jsonFlag()},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usageError("log takes one PATH")
			}
			p, err := repoPathArg(c.Args().First())
			if err != nil {
				return err
			}
			r, err := openRepo(c, repo.Options{})
			if err != nil {
				return err
			}
			defer r.Close()
			vs, err := history.Log(c.Context, r, p)
			if errors.Is(err, repo.ErrPathNotFound) {
				return fmt.Errorf("%s: in no snapshot", p)
			}
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(c.App.Writer, vs)
			}
			for _, v := range vs {
				fmt.Fprintf(c.App.Writer, "%s  %10s  %s  %s\n", v.Snapshot, humanBytes(int64(v.Size)), v.Content, v.Path)
			}
			return nil
		},
	}
}

func cmdDiff() *cli.Command {
	return &cli.Command{
		Name:      "diff",
		Usage:     "show what changed between two points in time",
		ArgsUsage: "T1 T2",
		Description: `T1 and T2 are snapshot names, prefixes (2026-11-28T13), RFC 3339 times or
"latest"; each means the newest snapshot at or before it. Renamed files (same
content, new path) are shown as renames.

Examples:
   keepfs diff 2026-11-27 latest
   keepfs diff 2026-11-28T09 2026-11-28T17 --json`,
		Flags: []cli.Flag{jsonFlag()},
		Action: func(c *cli.Context) error {
			if c.NArg() != 2 {
				return usageError("diff takes two points in time")
			}
			var ts [2]*repo.Snapshot
			r, err := openRepo(c, repo.Options{})
			if err != nil {
				return err
			}
			defer r.Close()
			snaps, err := r.Snapshots(c.Context)
			if err != nil {
				return err
			}
			for i, a := range c.Args().Slice() {
				at, err := repo.ParseTime(a)
				if err != nil {
					return usageError("%v", err)
				}
				if ts[i], err = repo.FindSnapshot(snaps, at); err != nil {
					return err
				}
			}
			changes, err := history.Diff(c.Context, r, ts[0], ts[1])
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(c.App.Writer, map[string]any{"from": ts[0].Name(), "to": ts[1].Name(), "changes": changes})
			}
			sign := map[string]string{history.Added: "+", history.Removed: "-", history.Modified: "M", history.Renamed: "R"}
			for _, ch := range changes {
				if ch.Kind == history.Renamed {
					fmt.Fprintf(c.App.Writer, "%s %s -> %s\n", sign[ch.Kind], ch.From, ch.Path)
					continue
				}
				fmt.Fprintf(c.App.Writer, "%s %s\n", sign[ch.Kind], ch.Path)
			}
			return nil
		},
	}
}
