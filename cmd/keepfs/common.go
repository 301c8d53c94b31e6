package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/remote/location"
	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/crypto"
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
		S3CredentialsFile:     c.String("s3-credentials-file"),
		S3Profile:             c.String("s3-profile"),
		S3Region:              c.String("s3-region"),
		S3PathStyle:           c.Bool("s3-path-style"),
	}
}

func openBackendWith(c *cli.Context, o location.Options) (remote.Storage, error) {
	u, err := repoURL(c)
	if err != nil {
		return nil, err
	}
	return location.Open(c.Context, u, o)
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
	return openRepoLoc(c, pw, opts, locationOptions(c))
}

// openRepoLoc is openRepoWith with the backend's options given.
func openRepoLoc(c *cli.Context, pw []byte, opts repo.Options, lo location.Options) (*repo.Repository, error) {
	return openRepoWrapped(c, pw, opts, lo, nil)
}

// openRepoWrapped is openRepoLoc with the backend wrapped (by the mount's
// metrics) if wrap is set.
func openRepoWrapped(c *cli.Context, pw []byte, opts repo.Options, lo location.Options, wrap func(remote.Storage) remote.Storage) (*repo.Repository, error) {
	be, err := openBackendWith(c, lo)
	if err != nil {
		return nil, err
	}
	if wrap != nil {
		be = wrap(be)
	}
	if opts.UploadConcurrency == 0 {
		// A local disk takes a pack in milliseconds, so one upload in flight
		// keeps up and saves 16 MiB of memory; a network link wants more.
		opts.UploadConcurrency = 1
		switch u := c.String("repo"); {
		case strings.HasPrefix(u, "sftp:"):
			opts.UploadConcurrency = 4
		case strings.HasPrefix(u, "s3:"), strings.HasPrefix(u, "s3+http:"):
			// An object store takes many PUTs at once and each waits on a
			// round trip; 4 packs in flight (64 MiB) keep a link busy.
			opts.UploadConcurrency = 4
		}
	}
	n, err := cmdNotifier(c)
	if err != nil {
		be.Close()
		return nil, usageError("%v", err)
	}
	if opts.Events == nil {
		opts.Events = n
	}
	// The index is loaded once the notifier is bound to the state
	// directory: a segment that fails to load raises an event, which must
	// open an incident (and reach the audit log), not only be delivered.
	loadIndex := !opts.NoIndex
	opts.NoIndex = true
	r, err := repo.Open(c.Context, be, pw, opts)
	if err != nil {
		be.Close()
		if errors.Is(err, repo.ErrWrongPassword) {
			noteUnlockFailure(c)
			if err != repo.ErrWrongPassword {
				return nil, err // it names damaged key slots
			}
			return nil, errors.New("wrong passphrase: no key slot of this repository opens with it")
		}
		return nil, err
	}
	bindNotifier(c, r)
	if loadIndex {
		if err := r.LoadIndex(c.Context); err != nil {
			r.Close()
			if errors.Is(err, repo.ErrNameMismatch) || errors.Is(err, crypto.ErrAuth) {
				return nil, &exitError{exitIntegrity, fmt.Errorf("%w (see `keepfs incidents`)", err)}
			}
			return nil, err
		}
	}
	return r, nil
}

// lockRepo takes the repository lock for this command (shared for
// writers and readers, exclusive for prune and erase) and returns how to
// let it go.
func lockRepo(c *cli.Context, r *repo.Repository, kind repo.LockKind, purpose string) (func(), error) {
	l, err := r.Lock(c.Context, lockOptions(c, kind, purpose))
	if err != nil {
		return nil, lockError(err)
	}
	return func() { l.Release(context.WithoutCancel(c.Context)) }, nil
}

// lockShared takes the shared lock for a command that reads or adds to
// the repository, and reloads the index under it: a prune may have run
// between Open and the lock.
func lockShared(c *cli.Context, r *repo.Repository, purpose string) (func(), error) {
	unlock, err := lockRepo(c, r, repo.SharedLock, purpose)
	if err != nil {
		return nil, err
	}
	if err := r.LoadIndex(c.Context); err != nil {
		unlock()
		return nil, err
	}
	return unlock, nil
}

func lockOptions(c *cli.Context, kind repo.LockKind, purpose string) repo.LockOptions {
	return repo.LockOptions{Kind: kind, Purpose: purpose, Wait: c.Duration("retry-lock"),
		ForceUnlock: c.Bool("force-unlock"), Log: slog.Default()}
}

// lockError says what to do about a lock held by someone else.
func lockError(err error) error {
	if errors.Is(err, repo.ErrLocked) {
		return fmt.Errorf("%w; try again when it is done, wait with --retry-lock 10m, or --force-unlock if its owner is gone", err)
	}
	return err
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
