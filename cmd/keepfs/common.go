package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/remote/location"
	"github.com/keepfs/keepfs/repo"
)

func repoURL(c *cli.Context) (string, error) {
	u := c.String("repo")
	if u == "" {
		return "", usageError("no repository: pass --repo URL or set KEEPFS_REPO")
	}
	return u, nil
}

func locationOptions(c *cli.Context) location.Options {
	return location.Options{
		KnownHostsFile:        c.String("known-hosts"),
		InsecureIgnoreHostKey: c.Bool("insecure-ignore-host-key"),
		IdentityFile:          c.String("identity"),
		AllowNoFsync:          c.Bool("sftp-no-fsync"),
	}
}

func openBackend(c *cli.Context) (remote.Storage, error) {
	u, err := repoURL(c)
	if err != nil {
		return nil, err
	}
	return location.Open(c.Context, u, locationOptions(c))
}

// openRepo opens and unlocks the repository named by the global flags.
func openRepo(c *cli.Context, opts repo.Options) (*repo.Repository, error) {
	pw, err := passphrase(c, false)
	if err != nil {
		return nil, err
	}
	defer clear(pw)
	return openRepoWith(c, pw, opts)
}

// openRepoWith is openRepo with a passphrase already read.
func openRepoWith(c *cli.Context, pw []byte, opts repo.Options) (*repo.Repository, error) {
	be, err := openBackend(c)
	if err != nil {
		return nil, err
	}
	if opts.UploadConcurrency == 0 {
		// A local disk takes a pack in milliseconds, so one upload in flight
		// keeps up and saves 16 MiB of memory; a network link wants more.
		opts.UploadConcurrency = 1
		if strings.HasPrefix(c.String("repo"), "sftp:") {
			opts.UploadConcurrency = 4
		}
	}
	r, err := repo.Open(c.Context, be, pw, opts)
	if err != nil {
		be.Close()
		if errors.Is(err, repo.ErrWrongPassword) {
			return nil, errors.New("wrong passphrase: no key slot of this repository opens with it")
		}
		return nil, err
	}
	return r, nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
