package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/history"
)

func cmdDiff() *cli.Command {
	return &cli.Command{
		Name:      "diff",
		Usage:     "show what changed between two points in time",
		ArgsUsage: "T1 T2",
		Description: `T1 and T2 are snapshot names, prefixes (2026-11-28T13), RFC 3339 times or
"latest"; each means the newest snapshot at or before it. Names with a
"-1", "-2" … suffix (later snapshots in the same second, as .versions
lists them) name that snapshot. Renamed files (same
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
				if ts[i], err = pickSnapshot(snaps, a); err != nil {
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

// checkAt tells whether arg is a point in time pickSnapshot takes: a
// snapshot name with or without a "-N" suffix, a prefix, RFC 3339 or
// latest; it returns a usage error if not.
func checkAt(arg string) error {
	if base, num, ok := strings.Cut(arg, "Z-"); ok {
		if n, err := strconv.Atoi(num); err == nil && n >= 0 && len(base)+1 == len(repo.TimeFormat) {
			if _, err := repo.ParseTimePrefix(base); err == nil {
				return nil
			}
		}
		return usageError("%s: not a point in time (want a snapshot name, a prefix such as 2026-11-28T13, RFC 3339 or latest)", arg)
	}
	if _, err := repo.ParseTime(arg); err != nil {
		return usageError("%v", err)
	}
	return nil
}

// pickSnapshot resolves a point in time as .versions does: a snapshot's
// name is that snapshot (the first of its second), with a "-N" suffix the
// N-th later one sharing that second (in repository order); anything else,
// and a full name no snapshot has, goes through repo.ParseTime.
func pickSnapshot(snaps []*repo.Snapshot, arg string) (*repo.Snapshot, error) {
	base, num, ok := strings.Cut(arg, "Z-")
	if !ok && len(arg) == len(repo.TimeFormat) && strings.HasSuffix(arg, "Z") {
		// A full name is the first snapshot of that second, as in
		// .versions; later ones in the same second carry suffixes.
		base, num, ok = strings.TrimSuffix(arg, "Z"), "0", true
	}
	if ok {
		n, err := strconv.Atoi(num)
		if err != nil || n < 0 {
			return nil, usageError("%s: not a point in time (want a snapshot name, a prefix such as 2026-11-28T13, RFC 3339 or latest)", arg)
		}
		k := 0
		for _, s := range snaps {
			if s.TimeName() == base+"Z" {
				if k == n {
					return s, nil
				}
				k++
			}
		}
		if num != "0" {
			return nil, fmt.Errorf("%w named %s", repo.ErrNoSnapshot, arg)
		}
	}
	at, err := repo.ParseTime(arg)
	if err != nil {
		return nil, usageError("%s: not a point in time (want a snapshot name, a prefix such as 2026-11-28T13, RFC 3339 or latest)", arg)
	}
	return repo.FindSnapshot(snaps, at)
}
