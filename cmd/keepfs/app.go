package main

import (
	"io"

	"github.com/urfave/cli/v2"
)

func globalFlags() []cli.Flag {
	return append([]cli.Flag{
		&cli.StringFlag{Name: "config", EnvVars: []string{"KEEPFS_CONFIG"}, Usage: "read profiles from `FILE` (default $XDG_CONFIG_HOME/keepfs/config.toml, then /etc/keepfs/config.toml)"},
		&cli.StringFlag{Name: "profile", EnvVars: []string{"KEEPFS_PROFILE"}, Usage: "use the settings of profile `NAME` from the config file; flags and environment override them"},
		&cli.StringFlag{Name: "repo", Aliases: []string{"r"}, EnvVars: []string{"KEEPFS_REPO"}, Usage: "repository `URL`: file:///path, sftp://user@host:port/path or s3://host[:port]/bucket[/prefix]"},
		&cli.StringFlag{Name: "state", EnvVars: []string{"KEEPFS_STATE"}, Usage: "local state `DIR` (default $XDG_STATE_HOME/keepfs/<repo-id>)"},
		&cli.StringFlag{Name: "password-file", EnvVars: []string{"KEEPFS_PASSWORD_FILE"}, Usage: "read the passphrase from `FILE` (first line)"},
		&cli.StringFlag{Name: "password-command", EnvVars: []string{"KEEPFS_PASSWORD_COMMAND"}, Usage: "run `CMD` (via sh -c) and read the passphrase from its output"},
		&cli.StringFlag{Name: "known-hosts", EnvVars: []string{"KEEPFS_KNOWN_HOSTS"}, Usage: "sftp: known_hosts `FILE` (default ~/.ssh/known_hosts)"},
		&cli.StringFlag{Name: "identity", EnvVars: []string{"KEEPFS_IDENTITY"}, Usage: "sftp: private key `FILE` (default: ssh-agent and ~/.ssh/id_*)"},
		&cli.BoolFlag{Name: "insecure-ignore-host-key", Usage: "sftp: do not verify the server's host key (dangerous)"},
		&cli.BoolFlag{Name: "sftp-no-fsync", Usage: "sftp: accept a server without fsync@openssh.com (an upload may be lost if the server crashes)"},
		&cli.BoolFlag{Name: "progress-json", EnvVars: []string{"KEEPFS_PROGRESS_JSON"}, Usage: "report progress of long work (import, restore, check, prune, sync) as one JSON object per line on stderr: {\"what\",\"done\",\"total\",\"unit\"}"},
		&cli.StringFlag{Name: "s3-credentials-file", EnvVars: []string{"KEEPFS_S3_CREDENTIALS_FILE"}, Usage: "s3: AWS-style credentials `FILE` (default: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, then ~/.aws/credentials)"},
		&cli.StringFlag{Name: "s3-profile", EnvVars: []string{"AWS_PROFILE"}, Usage: "s3: `PROFILE` of the credentials file (default \"default\")"},
		&cli.StringFlag{Name: "s3-region", EnvVars: []string{"AWS_REGION"}, Usage: "s3: the bucket's `REGION` (default: ask the store)"},
		&cli.BoolFlag{Name: "s3-path-style", Usage: "s3: path-style requests (host/bucket/key) instead of virtual-host style"},
		&cli.BoolFlag{Name: "verbose", Aliases: []string{"v"}, Usage: "log debug detail to stderr"},
		&cli.DurationFlag{Name: "retry-lock", EnvVars: []string{"KEEPFS_RETRY_LOCK"}, Usage: "wait up to `DURATION` for another client's conflicting repository lock (a prune, an import) to go"},
		&cli.BoolFlag{Name: "force-unlock", Usage: "remove every repository lock first: only when you know their owners are gone"},
	}, notifyFlags()...)
}

func newApp(stdin io.Reader, stdout, stderr io.Writer) *cli.App {
	app := &cli.App{
		Name:  "keepfs",
		Usage: "versioned, encrypted backup filesystem",
		Description: `keepfs keeps a folder in an encrypted, deduplicated, versioned repository on a
local directory, an SFTP server or an S3-compatible object store. The passphrase comes from KEEPFS_PASSWORD,
--password-file, --password-command or a prompt on the terminal, never from
the command line.

Exit codes: 0 success, 1 failure, 2 usage error, 3 integrity problem found.

Examples:
   export KEEPFS_REPO=file:///srv/backup KEEPFS_PASSWORD_FILE=~/.keepfs-pass
   keepfs init
   keepfs import ~/Documents
   keepfs snapshots
   keepfs restore /reports --at 2026-11-28T13 --to /tmp/restored
   keepfs check --read-data`,
		Flags:                  globalFlags(),
		Reader:                 stdin,
		Writer:                 stdout,
		ErrWriter:              stderr,
		HideHelpCommand:        true,
		Version:                currentVersion().Version,
		EnableBashCompletion:   true,
		UseShortOptionHandling: false,
		Before: func(c *cli.Context) error {
			setupLogging(c)
			return setupProfile(c)
		},
		After: func(c *cli.Context) error {
			closeNotifier(c)
			return nil
		},
		ExitErrHandler: func(*cli.Context, error) {}, // run maps errors to exit codes
		OnUsageError: func(c *cli.Context, err error, isSubcommand bool) error {
			return usageError("%v", err)
		},
		Commands: []*cli.Command{
			cmdInit(),
			cmdKey(),
			cmdImport(),
			cmdSnapshots(),
			cmdRestore(),
			cmdCheck(),
			cmdErase(),
			cmdIgnore(),
			cmdRetention(),
			cmdPrune(),
			cmdMount(),
			cmdUnmount(),
			cmdStatus(),
			cmdSync(),
			cmdLog(),
			cmdDiff(),
			cmdAudit(),
			cmdFind(),
			cmdVersion(),
			cmdCompletion(),
			cmdMan(),
			cmdIncidents(),
			cmdNotify(),
			cmdScrub(),
		},
	}
	setUsageErrors(app.Commands)
	applyProfileToCommands(app.Commands)
	return app
}

func setUsageErrors(cmds []*cli.Command) {
	for _, c := range cmds {
		c.OnUsageError = func(c *cli.Context, err error, isSubcommand bool) error {
			return usageError("%v", err)
		}
		setUsageErrors(c.Subcommands)
	}
}

func jsonFlag() cli.Flag {
	return &cli.BoolFlag{Name: "json", Usage: "print machine-readable JSON"}
}
