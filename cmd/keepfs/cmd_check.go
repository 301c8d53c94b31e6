package main

import (
	"fmt"
	"strconv"

	"github.com/urfave/cli/v2"

	"github.com/keepfs/keepfs/policy/audit"
	"github.com/keepfs/keepfs/policy/notify"
	"github.com/keepfs/keepfs/repo"
)

func cmdCheck() *cli.Command {
	return &cli.Command{
		Name:  "check",
		Usage: "verify repository integrity",
		Description: `Checks that every pack the index names exists with the right size and that
every snapshot's trees and data are present. --read-data also downloads every
pack and authenticates every blob. Exits 3 naming each missing or corrupt
object.

Examples:
   keepfs check
   keepfs check --read-data --json`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "read-data", Usage: "read and verify all data"},
			jsonFlag(),
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usageError("check takes no arguments")
			}
			r, err := openRepo(c, repo.Options{NoIndex: true})
			if err != nil {
				return err
			}
			defer r.Close()
			// Shared: what a prune is halfway through is not a finding.
			unlock, err := lockRepo(c, r, repo.SharedLock, "check")
			if err != nil {
				return err
			}
			defer unlock()
			opts := repo.CheckOptions{ReadData: c.Bool("read-data")}
			if p := progressFor(c); p != nil {
				opts.Progress = p
			}
			res, err := r.Check(c.Context, opts)
			if err != nil {
				return err
			}
			// Open incidents (raised by the mount, scrubs, other commands,
			// or this check's own reads) make the repository suspect too.
			var open []notify.Incident
			if dir, err := stateDir(c, r); err == nil {
				if st, err := notify.OpenStore(dir); err == nil {
					open, _ = st.OpenIncidents()
				}
			}
			if c.Bool("json") {
				out := struct {
					*repo.CheckResult
					Incidents []notify.Incident `json:"open_incidents"`
				}{res, open}
				if out.Incidents == nil {
					out.Incidents = []notify.Incident{}
				}
				if err := printJSON(c.App.Writer, out); err != nil {
					return err
				}
			} else {
				for _, p := range res.Problems {
					level := "error"
					if p.Warning {
						level = "warning"
					}
					fmt.Fprintf(c.App.Writer, "%s: %s\n", level, p)
				}
				fmt.Fprintf(c.App.Writer, "checked %d snapshots, %d trees, %d packs, %d blobs", res.Snapshots, res.Trees, res.Packs, res.Blobs)
				if opts.ReadData {
					fmt.Fprintf(c.App.Writer, ", read %s", humanBytes(res.ReadBytes))
				}
				fmt.Fprintln(c.App.Writer)
			}
			if len(open) > 0 && !c.Bool("json") {
				fmt.Fprintf(c.App.Writer, "%d open integrity incidents (acknowledge with `keepfs incidents ack ID`):\n", len(open))
				printIncidents(c.App.Writer, open)
			}
			if n := res.Errors(); n > 0 {
				recordAudit(c, r, audit.Entry{Action: audit.ActionIntegrity, Outcome: audit.OutcomeProblems,
					Details: map[string]string{"by": "check", "read_data": strconv.FormatBool(opts.ReadData), "problems": strconv.Itoa(n)}})
				return integrityError("%d integrity problems found", n)
			}
			if len(open) > 0 {
				return integrityError("%d open integrity incidents", len(open))
			}
			if !c.Bool("json") {
				fmt.Fprintln(c.App.Writer, "no errors found")
			}
			return nil
		},
	}
}
