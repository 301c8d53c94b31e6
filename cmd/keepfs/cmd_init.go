package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/keepfs/keepfs/policy/audit"
	"github.com/keepfs/keepfs/remote/location"
	"github.com/keepfs/keepfs/repo"
)

func cmdInit() *cli.Command {
	return &cli.Command{
		Name:  "init",
		Usage: "create a new repository",
		Description: `Creates an encrypted repository at --repo with a random master key, wrapped
by a key slot for the passphrase.

Examples:
   KEEPFS_PASSWORD_FILE=~/.keepfs-pass keepfs --repo file:///srv/backup init
   keepfs --repo sftp://backup@nas.example:22/srv/keepfs init
   AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... keepfs --repo s3://s3.eu-west-1.amazonaws.com/my-bucket/laptop init --s3-create-bucket`,
		Flags: []cli.Flag{jsonFlag(),
			&cli.BoolFlag{Name: "s3-create-bucket", Usage: "s3: create the bucket if it does not exist"}},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usageError("init takes no arguments")
			}
			u, err := repoURL(c)
			if err != nil {
				return err
			}
			pw, err := passphrase(c, true)
			if err != nil {
				return err
			}
			defer clear(pw)
			lo := locationOptions(c)
			lo.S3CreateBucket = c.Bool("s3-create-bucket")
			be, err := location.Create(c.Context, u, lo)
			if err != nil {
				return err
			}
			r, err := repo.Create(c.Context, be, pw, repo.Options{})
			if err != nil {
				be.Close()
				return err
			}
			defer r.Close()
			recordAudit(c, r, audit.Entry{Action: audit.ActionInit, Details: map[string]string{"repository": r.Config().ID}})
			if c.Bool("json") {
				return printJSON(c.App.Writer, map[string]string{"id": r.Config().ID, "location": be.Location()})
			}
			fmt.Fprintf(c.App.Writer, "created repository %s at %s\n", r.Config().ID[:8], be.Location())
			return nil
		},
	}
}
