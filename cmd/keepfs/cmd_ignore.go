package main

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/keepfs/keepfs/policy/ignore"
)

func cmdIgnore() *cli.Command {
	return &cli.Command{
		Name:  "ignore",
		Usage: "explain .gdprignore exclusion",
		Subcommands: []*cli.Command{{
			Name:      "check",
			Usage:     "tell whether paths are excluded from backup, and why",
			ArgsUsage: "PATH...",
			Description: `Like git check-ignore: prints each excluded PATH; with -v also the deciding
FILE:LINE:PATTERN, separated from the path by a tab. For a path in a keepfs
mount the .gdprignore files from the mount root down apply; for any other
path on disk those from / down. Exits 0 when at least one
path is excluded, 1 when none is.

Examples:
   keepfs ignore check -v ~/Documents/tmp/cache.o
   keepfs ignore check -v --non-matching *.log`,
			Flags: []cli.Flag{
				&cli.BoolFlag{Name: "verbose", Aliases: []string{"v"}, Usage: "show the deciding file, line and pattern"},
				&cli.BoolFlag{Name: "non-matching", Aliases: []string{"n"}, Usage: "also show paths that are not excluded"},
				jsonFlag(),
			},
			Action: func(c *cli.Context) error {
				if c.NArg() == 0 {
					return usageError("ignore check needs at least one PATH")
				}
				type result struct {
					Path     string `json:"path"`
					Excluded bool   `json:"excluded"`
					Source   string `json:"source,omitempty"`
					Line     int    `json:"line,omitempty"`
					Pattern  string `json:"pattern,omitempty"`
				}
				var results []result
				any := false
				for _, p := range c.Args().Slice() {
					abs, err := filepath.Abs(p)
					if err != nil {
						return err
					}
					// Inside a mount, the mount is the tree: its root's
					// .gdprignore is the outermost that applies.
					root := "/"
					if m, ok, err := findMount(abs); err != nil {
						return err
					} else if ok {
						root = m.Point
					}
					d, err := ignore.CheckPathIn(root, abs)
					if err != nil {
						return err
					}
					any = any || d.Ignored
					results = append(results, result{Path: p, Excluded: d.Ignored, Source: d.Source, Line: d.Line, Pattern: d.Pattern})
					if c.Bool("json") {
						continue
					}
					switch {
					case c.Bool("verbose") && (d.Ignored || c.Bool("non-matching")):
						fmt.Fprintln(c.App.Writer, d.Format(p))
					case d.Ignored || c.Bool("non-matching"):
						fmt.Fprintln(c.App.Writer, p)
					}
				}
				if c.Bool("json") {
					if err := printJSON(c.App.Writer, results); err != nil {
						return err
					}
				}
				if !any {
					return &exitError{exitFailure, errors.New("no path is excluded")}
				}
				return nil
			},
		}},
	}
}
