package main

import (
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/keepfs/keepfs/cmd/keepfs/daemon"
	"github.com/keepfs/keepfs/repo"
)

func cmdPrune() *cli.Command {
	return &cli.Command{
		Name:  "prune",
		Usage: "apply retention and delete data no kept snapshot references",
		Description: `Forgets the snapshots the retention policy does not keep, then deletes every
blob that no remaining snapshot references: packs holding only such blobs are
emptied, packs holding any are rewritten without them, and the index is
rewritten. Prune holds the repository's exclusive lock: it waits for, or
refuses to run beside, any import, restore or mount (--retry-lock waits).
Deletion is in two phases: the old packs are marked now and deleted by a
prune run at least 6 minutes later, so that a writer whose lock lapsed
never names a deleted blob. Safe to interrupt: run it again to finish.

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
				resp, err := daemon.Send(c.Context, sock, daemon.Request{Op: "prune", DryRun: c.Bool("dry-run"), LockWait: c.Duration("retry-lock")})
				if err != nil {
					return fmt.Errorf("prune through the mount's daemon: %w", err)
				}
				res = resp.Prune
			} else {
				opts := repo.PruneOptions{DryRun: c.Bool("dry-run"), Lock: lockOptions(c, repo.ExclusiveLock, "prune")}
				if p := progressFor(c); p != nil {
					opts.Progress = p
				}
				res, err = r.Prune(c.Context, opts)
				if !opts.DryRun {
					recordAudit(c, r, repo.PruneAuditEntry(res, err, "prune"))
				}
				if err != nil {
					return lockError(err)
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
			fmt.Fprintf(c.App.Writer, "%s %d blobs (%s): %d packs emptied, %d rewritten (%d blobs moved); %d snapshots kept\n",
				verb, res.BlobsRemoved, humanBytes(res.BytesRemoved), res.PacksDeleted, res.PacksRewritten, res.BlobsRepacked, res.SnapshotsKept)
			if !res.DryRun && res.PacksMarked > 0 {
				fmt.Fprintf(c.App.Writer, "%d old packs marked for deletion: a prune after %s deletes them\n",
					res.PacksMarked, time.Now().Add(repo.DefaultGrace).Format("15:04"))
			}
			if res.PacksFreed > 0 {
				fmt.Fprintf(c.App.Writer, "deleted %d packs marked by earlier prunes\n", res.PacksFreed)
			}
			if res.PartialUploads > 0 {
				fmt.Fprintf(c.App.Writer, "deleted %d partial uploads (%s) that interrupted writers left\n", res.PartialUploads, humanBytes(res.PartialUploadsBytes))
			}
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
