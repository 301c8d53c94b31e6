package main

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/keepfs/keepfs/policy/audit"
	"github.com/keepfs/keepfs/repo"
)

func cmdKey() *cli.Command {
	newPw := &cli.StringFlag{Name: "new-password-file", Usage: "read the new passphrase from `FILE` (or set KEEPFS_NEW_PASSWORD)"}
	return &cli.Command{
		Name:  "key",
		Usage: "manage key slots (passphrases that open the repository)",
		Description: `Each key slot wraps the repository's master key under one passphrase.

Examples:
   keepfs key add --new-password-file /root/second-pass
   keepfs key list
   keepfs key remove 3fa2c1
   keepfs key passwd --new-password-file /root/new-pass`,
		Subcommands: []*cli.Command{
			{
				Name: "add", Usage: "add a key slot for a new passphrase", Flags: []cli.Flag{newPw},
				Description: "Adds a key slot: the repository then opens with either passphrase.\n\nExamples:\n   keepfs key add --new-password-file /root/second-pass\n   KEEPFS_NEW_PASSWORD=... keepfs key add",
				Action: func(c *cli.Context) error {
					r, err := openRepo(c, repo.Options{NoIndex: true})
					if err != nil {
						return err
					}
					defer r.Close()
					np, err := newPassphrase(c)
					if err != nil {
						return err
					}
					defer clear(np)
					id, err := r.AddKey(c.Context, np)
					if err != nil {
						return err
					}
					recordAudit(c, r, audit.Entry{Action: audit.ActionKeyAdd, Details: map[string]string{"slot": id}})
					fmt.Fprintf(c.App.Writer, "added key slot %s\n", id[:12])
					return nil
				},
			},
			{
				Name: "list", Usage: "list key slots", Flags: []cli.Flag{jsonFlag()},
				Description: "Lists the key slots; CURRENT marks the one the passphrase opened.\n\nExamples:\n   keepfs key list\n   keepfs key list --json",
				Action: func(c *cli.Context) error {
					r, pw, err := openRepoKeepPassphrase(c)
					if err != nil {
						return err
					}
					defer r.Close()
					defer clear(pw)
					keys, err := r.Keys(c.Context, pw)
					if err != nil {
						return err
					}
					if c.Bool("json") {
						return printJSON(c.App.Writer, keys)
					}
					tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "ID\tCREATED\tHOST\tUSER\tCURRENT")
					for _, k := range keys {
						cur := ""
						if k.Current {
							cur = "*"
						}
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", k.ID[:12], k.Created.Format("2006-01-02 15:04:05"), k.Hostname, k.Username, cur)
					}
					return tw.Flush()
				},
			},
			{
				Name: "remove", Usage: "remove a key slot", ArgsUsage: "ID",
				Description: "Removes a key slot by (a prefix of) its ID from keepfs key list.\n\nExamples:\n   keepfs key remove 3fa2c1",
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return usageError("key remove takes one key slot ID (see `keepfs key list`)")
					}
					r, err := openRepo(c, repo.Options{NoIndex: true})
					if err != nil {
						return err
					}
					defer r.Close()
					id, err := r.FindKey(c.Context, c.Args().First())
					if err != nil {
						return err
					}
					if err := r.RemoveKey(c.Context, id); err != nil {
						return err
					}
					recordAudit(c, r, audit.Entry{Action: audit.ActionKeyRemove, Details: map[string]string{"slot": id}})
					fmt.Fprintf(c.App.Writer, "removed key slot %s\n", id[:12])
					return nil
				},
			},
			{
				Name: "passwd", Usage: "change the passphrase of the current key slot", Flags: []cli.Flag{newPw},
				Description: "Replaces the passphrase of the slot the current passphrase opens.\n\nExamples:\n   keepfs key passwd --new-password-file /root/new-pass",
				Action: func(c *cli.Context) error {
					r, pw, err := openRepoKeepPassphrase(c)
					if err != nil {
						return err
					}
					defer r.Close()
					defer clear(pw)
					keys, err := r.Keys(c.Context, pw)
					if err != nil {
						return err
					}
					np, err := newPassphrase(c)
					if err != nil {
						return err
					}
					defer clear(np)
					// Add first, then remove: a crash in between leaves two
					// working slots, never none.
					id, err := r.AddKey(c.Context, np)
					if err != nil {
						return err
					}
					var removed []string
					for _, k := range keys {
						if k.Current && k.ID != id {
							if err := r.RemoveKey(c.Context, k.ID); err != nil {
								return err
							}
							removed = append(removed, k.ID)
						}
					}
					recordAudit(c, r, audit.Entry{Action: audit.ActionKeyPasswd,
						Details: map[string]string{"slot": id, "removed": strings.Join(removed, ",")}})
					fmt.Fprintf(c.App.Writer, "passphrase changed (key slot %s)\n", id[:12])
					return nil
				},
			},
		},
	}
}

// openRepoKeepPassphrase opens the repository and also returns the
// passphrase, read once: on a terminal, asking twice would be a second prompt.
func openRepoKeepPassphrase(c *cli.Context) (*repo.Repository, []byte, error) {
	pw, err := passphrase(c, false)
	if err != nil {
		return nil, nil, err
	}
	r, err := openRepoWith(c, pw, repo.Options{NoIndex: true})
	if err != nil {
		clear(pw)
		return nil, nil, err
	}
	return r, pw, nil
}
