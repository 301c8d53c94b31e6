package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

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
			opts := repo.PruneOptions{DryRun: c.Bool("dry-run")}
			if p := newProgress(c.App.ErrWriter); p != nil {
				opts.Progress = p
			}
			res, err := r.Prune(c.Context, opts)
			if err != nil {
				return err
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
