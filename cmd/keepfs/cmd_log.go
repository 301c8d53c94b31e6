package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/keepfs/keepfs/cmd/keepfs/daemon"
	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/history"
)

// repoPathArg turns a PATH argument into a repository path: a path inside
// a keepfs mount names that file in the mounted repository, which must be
// repository repoID (the one --repo names: its daemon is asked); otherwise
// a path starting with / is a repository path.
func repoPathArg(ctx context.Context, arg, repoID string) (string, error) {
	abs, err := filepath.Abs(arg)
	if err != nil {
		return "", err
	}
	if m, ok, err := findMount(abs); err != nil {
		return "", err
	} else if ok {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if _, err := daemon.Hello(ctx, m.Source, repoID); err != nil {
			return "", fmt.Errorf("%s: %w", arg, err)
		}
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
			r, err := openRepo(c, repo.Options{})
			if err != nil {
				return err
			}
			defer r.Close()
			p, err := repoPathArg(c.Context, c.Args().First(), r.Config().ID)
			if err != nil {
				return err
			}
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
