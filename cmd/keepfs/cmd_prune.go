package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/keepfs/keepfs/cache"
	"github.com/keepfs/keepfs/cmd/keepfs/daemon"
	"github.com/keepfs/keepfs/repo"
)

func cmdPrune() *cli.Command {
	return &cli.Command{
		Name:  "prune",
		Usage: "apply retention and delete data no kept snapshot references",
		Description: `Forgets the snapshots the retention policy does not keep, then deletes every
blob that no remaining snapshot references: packs holding only such blobs are
deleted, packs holding any are rewritten without them, and the index is
rewritten. Safe to interrupt: run it again to finish.

Examples:
   keepfs prune --dry-run
   keepfs prune --json`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "dry-run", Aliases: []string{"n"}, Usage: "only say what would be removed"},
			jsonFlag(),
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usageError("prune takes no arguments")
			}
			r, err := openRepo(c, repo.Options{})
			if err != nil {
				return err
			}
			defer r.Close()
			var res *repo.PruneResult
			// A mounted repository is pruned by its daemon, which pauses
			// uploads meanwhile; pruning under a running mount from outside
			// could delete data the mount has just deduplicated against.
			if sock, ok := localDaemonFor(c, r.Config().ID); ok {
				resp, err := daemon.Send(c.Context, sock, daemon.Request{Op: "prune", DryRun: c.Bool("dry-run")})
				if err != nil {
					return fmt.Errorf("prune through the mount's daemon: %w", err)
				}
				res = resp.Prune
			} else {
				if n, err := cache.ActiveLocks(c.Context, r, time.Now()); err != nil {
					return err
				} else if n > 0 && !c.Bool("dry-run") {
					return errors.New("the repository is mounted elsewhere: unmount it, or run prune on the machine that mounts it")
				}
				opts := repo.PruneOptions{DryRun: c.Bool("dry-run")}
				if p := newProgress(c.App.ErrWriter); p != nil {
					opts.Progress = p
				}
				if res, err = r.Prune(c.Context, opts); err != nil {
					return err
				}
			}
			if c.Bool("json") {
				return printJSON(c.App.Writer, res)
			}
			verb := "removed"
			if res.DryRun {
				verb = "would remove"
			}
			fmt.Fprintf(c.App.Writer, "policy: %s\n", res.Policy)
			for _, s := range res.SnapshotsRemoved {
				fmt.Fprintf(c.App.Writer, "%s snapshot %s\n", verb, s)
			}
			fmt.Fprintf(c.App.Writer, "%s %d blobs (%s): %d packs deleted, %d rewritten (%d blobs moved); %d snapshots kept\n",
				verb, res.BlobsRemoved, humanBytes(res.BytesRemoved), res.PacksDeleted, res.PacksRewritten, res.BlobsRepacked, res.SnapshotsKept)
			return nil
		},
	}
}

// localDaemonFor finds a keepfs mount on this machine serving repository
// id. Mounts whose control socket is not ours or root's, or whose daemon
// serves another repository, are passed over (daemon.Hello).
func localDaemonFor(c *cli.Context, id string) (string, bool) {
	all, err := listMounts()
	if err != nil {
		return "", false
	}
	for _, m := range all {
		if _, err := daemon.Hello(c.Context, m.Source, id); err == nil {
			return m.Source, true
		}
	}
	return "", false
}
