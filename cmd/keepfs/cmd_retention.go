package main

import (
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/keepfs/keepfs/policy/audit"
	"github.com/keepfs/keepfs/repo"
)

func cmdRetention() *cli.Command {
	return &cli.Command{
		Name:  "retention",
		Usage: "set or show how long snapshots are kept (GDPR storage limitation)",
		Subcommands: []*cli.Command{
			{
				Name:  "set",
				Usage: "store the retention policy in the repository",
				Description: `A snapshot is kept if any rule keeps it, and the newest snapshot of each source (host and mount or imported directory) always is;
--max-age is a hard limit no rule overrides. Durations take m, h, d, w, mo and y units (2y, 30d, 1y6mo).
The policy is applied by prune and by a mount after each snapshot.

Examples:
   keepfs retention set --keep-within 24h --hourly 48 --daily 30 --weekly 12 --monthly 12 --max-age 2y
   keepfs retention set --max-age 90d`,
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "keep-within", Usage: "keep every snapshot younger than `DURATION`"},
					&cli.IntFlag{Name: "hourly", Usage: "keep the newest snapshot of each of the last `N` hours"},
					&cli.IntFlag{Name: "daily", Usage: "keep the newest snapshot of each of the last `N` days"},
					&cli.IntFlag{Name: "weekly", Usage: "keep the newest snapshot of each of the last `N` weeks"},
					&cli.IntFlag{Name: "monthly", Usage: "keep the newest snapshot of each of the last `N` months"},
					&cli.StringFlag{Name: "max-age", Usage: "remove every snapshot older than `DURATION`, whatever else says"},
				},
				Action: func(c *cli.Context) error {
					if c.NArg() > 0 {
						return usageError("retention set takes only flags")
					}
					p := repo.Retention{Hourly: c.Int("hourly"), Daily: c.Int("daily"), Weekly: c.Int("weekly"),
						Monthly: c.Int("monthly"), Set: time.Now().UTC()}
					var err error
					if p.KeepWithin, err = repo.ParseDuration(c.String("keep-within")); err != nil {
						return usageError("--keep-within: %v", err)
					}
					if p.MaxAge, err = repo.ParseDuration(c.String("max-age")); err != nil {
						return usageError("--max-age: %v", err)
					}
					if p.Hourly < 0 || p.Daily < 0 || p.Weekly < 0 || p.Monthly < 0 {
						return usageError("counts must not be negative")
					}
					r, err := openRepo(c, repo.Options{NoIndex: true})
					if err != nil {
						return err
					}
					defer r.Close()
					err = r.SetRetention(c.Context, p)
					recordAudit(c, r, audit.Entry{Action: audit.ActionRetention, Outcome: outcome(err),
						Details: map[string]string{"policy": p.String()}})
					if err != nil {
						return err
					}
					fmt.Fprintf(c.App.Writer, "retention: %s\n", p)
					return nil
				},
			},
			{
				Name:  "show",
				Usage: "show the retention policy",
				Flags: []cli.Flag{jsonFlag()},
				Description: `Examples:
   keepfs retention show
   keepfs retention show --json`,
				Action: func(c *cli.Context) error {
					r, err := openRepo(c, repo.Options{NoIndex: true})
					if err != nil {
						return err
					}
					defer r.Close()
					p, err := r.Retention(c.Context)
					if err != nil {
						return err
					}
					if c.Bool("json") {
						return printJSON(c.App.Writer, map[string]any{
							"keep_within": repo.FormatDuration(p.KeepWithin), "hourly": p.Hourly, "daily": p.Daily,
							"weekly": p.Weekly, "monthly": p.Monthly, "max_age": repo.FormatDuration(p.MaxAge),
							"summary": p.String(),
						})
					}
					fmt.Fprintf(c.App.Writer, "retention: %s\n", p)
					return nil
				},
			},
		},
	}
}
