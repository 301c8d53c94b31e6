package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/keepfs/keepfs/repo"
)

type snapshotJSON struct {
	ID         string `json:"id"`
	Name       string `json:"name"`
	Time       string `json:"time"`
	Tree       string `json:"tree"`
	Parent     string `json:"parent,omitempty"`
	Hostname   string `json:"hostname,omitempty"`
	Source     string `json:"source,omitempty"`
	Files      int64  `json:"files"`
	Dirs       int64  `json:"dirs"`
	Bytes      int64  `json:"bytes"`
	BytesAdded int64  `json:"bytes_added"`
}

func cmdSnapshots() *cli.Command {
	return &cli.Command{
		Name:  "snapshots",
		Usage: "list snapshots, oldest first",
		Description: `Examples:
   keepfs snapshots
   keepfs snapshots --json | jq '.[-1].name'`,
		Flags: []cli.Flag{jsonFlag()},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usageError("snapshots takes no arguments")
			}
			r, err := openRepo(c, repo.Options{NoIndex: true})
			if err != nil {
				return err
			}
			defer r.Close()
			snaps, err := r.Snapshots(c.Context)
			if err != nil {
				return err
			}
			// The names .versions shows, "-1" … for a later snapshot of
			// the same second.
			names := repo.UniqueNames(snaps)
			if c.Bool("json") {
				out := make([]snapshotJSON, 0, len(snaps))
				for i, s := range snaps {
					j := snapshotJSON{ID: s.ID.String(), Name: names[i], Time: s.Time.UTC().Format("2006-01-02T15:04:05.000000000Z"),
						Tree: s.Tree.String(), Hostname: s.Hostname, Source: s.Source, Files: s.Stats.Files,
						Dirs: s.Stats.Dirs, Bytes: s.Stats.Bytes, BytesAdded: s.Stats.BytesAdded}
					if s.Parent != nil {
						j.Parent = s.Parent.String()
					}
					out = append(out, j)
				}
				return printJSON(c.App.Writer, out)
			}
			tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tTIME\tFILES\tSIZE\tADDED\tHOST\tSOURCE")
			for i, s := range snaps {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", s.ID.Short(), names[i], s.Stats.Files,
					humanBytes(s.Stats.Bytes), humanBytes(s.Stats.BytesAdded), s.Hostname, s.Source)
			}
			return tw.Flush()
		},
	}
}
