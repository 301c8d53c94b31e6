package main

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/keepfs/keepfs/policy/notify"
	"github.com/keepfs/keepfs/repo"
)

func cmdIncidents() *cli.Command {
	return &cli.Command{
		Name:  "incidents",
		Usage: "list open integrity incidents (tampering, deletion, rollback, key changes…)",
		Description: `Lists the incidents raised by integrity events in this state directory (by the
mount, scrubs and commands) that nobody acknowledged yet: type, severity,
object, when first and last seen, how often, and whether each notification
target received it. --all includes acknowledged ones.

Examples:
   keepfs incidents
   keepfs incidents --json
   keepfs incidents ack 3f2a9c   (or: ack all)`,
		Flags: []cli.Flag{jsonFlag(), &cli.BoolFlag{Name: "all", Usage: "include acknowledged incidents"}},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usageError("incidents takes no arguments (did you mean `incidents ack ID`?)")
			}
			st, err := incidentStore(c)
			if err != nil {
				return err
			}
			var in []notify.Incident
			if c.Bool("all") {
				in, err = st.List()
			} else {
				in, err = st.OpenIncidents()
			}
			if err != nil {
				return err
			}
			if c.Bool("json") {
				if in == nil {
					in = []notify.Incident{}
				}
				return printJSON(c.App.Writer, in)
			}
			if len(in) == 0 {
				fmt.Fprintln(c.App.Writer, "no open incidents")
				return nil
			}
			printIncidents(c.App.Writer, in)
			return nil
		},
		Subcommands: []*cli.Command{{
			Name:      "ack",
			Usage:     "acknowledge an incident (it leaves status and check; the next event of its kind opens a new one)",
			ArgsUsage: "ID|all",
			Description: `Marks an open incident as seen: status no longer lists it and check no
longer exits 3 for it. The next event of the same kind opens a new one.

Examples:
   keepfs incidents ack 3f2a9c1e
   keepfs incidents ack all`,
			Action: func(c *cli.Context) error {
				if c.NArg() != 1 {
					return usageError("incidents ack takes one incident id (or all)")
				}
				st, err := incidentStore(c)
				if err != nil {
					return err
				}
				ids, err := st.Ack(c.Args().First(), time.Now())
				if errors.Is(err, notify.ErrNoIncident) {
					return err
				}
				if err != nil {
					return err
				}
				for _, id := range ids {
					fmt.Fprintf(c.App.Writer, "acknowledged %s\n", id)
				}
				return nil
			},
		}},
	}
}

// incidentStore opens the incidents of --state, or of the repository's
// default state directory (which needs the repository id: unlocking).
func incidentStore(c *cli.Context) (*notify.Store, error) {
	if s := c.String("state"); s != "" {
		abs, err := filepath.Abs(s)
		if err != nil {
			return nil, err
		}
		return notify.OpenStore(abs)
	}
	r, err := openRepo(c, repo.Options{NoIndex: true})
	if err != nil {
		return nil, err
	}
	defer r.Close()
	dir, err := stateDir(c, r)
	if err != nil {
		return nil, err
	}
	return notify.OpenStore(dir)
}

// printIncidents writes one block per incident.
func printIncidents(w io.Writer, in []notify.Incident) {
	for _, i := range in {
		state := "OPEN"
		if !i.Open() {
			state = "acknowledged " + i.AckedAt.Local().Format(time.DateTime)
		}
		fmt.Fprintf(w, "%s  %s  %s  %s  %s\n", i.ID, strings.ToUpper(i.Severity), i.Type, i.Object, state)
		fmt.Fprintf(w, "    %s\n", i.Message)
		seen := fmt.Sprintf("first seen %s", i.DetectedAt.Local().Format(time.DateTime))
		if i.Count > 1 {
			seen += fmt.Sprintf(", %d times, last %s", i.Count, i.LastSeen.Local().Format(time.DateTime))
		}
		fmt.Fprintf(w, "    %s on %s\n", seen, i.Host)
		for _, d := range i.Deliveries {
			fmt.Fprintf(w, "    %s: %s\n", d.Target, deliveryState(d))
		}
	}
}

func deliveryState(d notify.Delivery) string {
	switch {
	case d.Delivered:
		return "delivered (" + d.Answer + ")"
	case d.Expired:
		return "NOT DELIVERED, gave up: " + d.LastError
	case d.Attempts == 0:
		return "pending"
	}
	return fmt.Sprintf("NOT DELIVERED yet (%d attempts, retrying): %s", d.Attempts, d.LastError)
}

func cmdNotify() *cli.Command {
	return &cli.Command{
		Name:  "notify",
		Usage: "notification targets",
		Subcommands: []*cli.Command{{
			Name:  "test",
			Usage: "send a test event to each --notify-exec and --notify-webhook target and say what each answered",
			Description: `Examples:
   keepfs --notify-webhook https://alerts.example/keepfs --notify-secret-file ~/.keepfs-hook-secret notify test
   keepfs --notify-exec 'mail -s keepfs admin@example.org' notify test`,
			Flags: []cli.Flag{jsonFlag()},
			Action: func(c *cli.Context) error {
				n, err := cmdNotifier(c)
				if err != nil {
					return usageError("%v", err)
				}
				if len(n.Targets()) == 0 {
					return usageError("no notification target: pass --notify-exec CMD and/or --notify-webhook URL")
				}
				res := n.Test(c.Context, "")
				if c.Bool("json") {
					if err := printJSON(c.App.Writer, res); err != nil {
						return err
					}
				} else {
					for _, r := range res {
						if r.Delivered {
							fmt.Fprintf(c.App.Writer, "%s: delivered (%s)\n", r.Target, r.Answer)
						} else {
							fmt.Fprintf(c.App.Writer, "%s: FAILED: %s\n", r.Target, r.Error)
						}
					}
				}
				for _, r := range res {
					if !r.Delivered {
						return fmt.Errorf("%s did not take the test event: %s", r.Target, r.Error)
					}
				}
				return nil
			},
		}},
	}
}
