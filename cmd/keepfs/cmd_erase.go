package main

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/keepfs/keepfs/cmd/keepfs/daemon"
	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/erase"
)

func cmdErase() *cli.Command {
	return &cli.Command{
		Name:      "erase",
		Usage:     "remove files from the live tree and every snapshot, verified, with a receipt (GDPR Art. 17)",
		ArgsUsage: "PATH...",
		Description: `Removes each PATH (a file, or a directory and all under it) from the live
tree (unless --keep-current) and from every snapshot that holds it, under
every earlier name it had (following renames as log does); with
--with-copies also every file in any version whose content is identical.
The affected snapshots are rewritten (time, host and order kept), every
blob no remaining file references is deleted at once and the packs that
held them are rewritten; chunks other files still use are kept and listed.
A mount's local copies of the erased data are purged, and every other
state directory of the repository drops them at its next start. Then the
erase verifies itself. The receipt names the person's files, so it is
written only where --receipt says, never into the repository.

PATH is a path inside a keepfs mount (the mount's daemon does the work), or
with --repo and no mount a repository path starting with /.

Examples:
   keepfs erase --dry-run --with-copies ~/safe/hr/alice
   keepfs erase --with-copies --request-id REQ-0001 --receipt ~/receipts/REQ-0001.json ~/safe/hr/alice/id-scan.bin
   keepfs --repo sftp://backup@nas/keepfs erase --keep-current /hr/alice/record.txt`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "dry-run", Aliases: []string{"n"}, Usage: "only list what would go"},
			&cli.BoolFlag{Name: "with-copies", Usage: "also erase files with identical content under other names"},
			&cli.BoolFlag{Name: "keep-current", Usage: "erase history only: keep the newest snapshot and the live file"},
			&cli.StringFlag{Name: "request-id", Usage: "the erasure request's `ID`, recorded in the receipt and the audit log"},
			&cli.StringFlag{Name: "receipt", Usage: "write the JSON receipt to `FILE` (mode 0600)"},
			jsonFlag(),
		},
		Action: func(c *cli.Context) error {
			if c.NArg() == 0 {
				return usageError("erase needs at least one PATH")
			}
			opts := erase.Options{WithCopies: c.Bool("with-copies"), KeepCurrent: c.Bool("keep-current"),
				DryRun: c.Bool("dry-run"), RequestID: c.String("request-id")}
			started := time.Now().UTC()
			res, err := runErase(c, opts)
			if err != nil {
				return err
			}
			if !res.DryRun && c.String("receipt") != "" {
				if err := writeReceipt(c.String("receipt"), res, started); err != nil {
					return err
				}
			}
			if c.Bool("json") {
				return printJSON(c.App.Writer, res)
			}
			printErase(c, res)
			if !res.DryRun && res.Verification.Result != "passed" {
				return integrityError("erase: verification failed: %+v", res.Verification)
			}
			return nil
		},
	}
}

// runErase sends the erase to the mount's daemon when the paths are in a
// mount (or a local daemon serves the repository), else runs it here.
func runErase(c *cli.Context, opts erase.Options) (*erase.Result, error) {
	first, err := filepath.Abs(c.Args().First())
	if err != nil {
		return nil, err
	}
	m, mounted, err := findMount(first)
	if err != nil {
		return nil, err
	}
	if mounted {
		for _, a := range c.Args().Slice() {
			abs, err := filepath.Abs(a)
			if err != nil {
				return nil, err
			}
			if mm, ok, _ := findMount(abs); !ok || mm.Point != m.Point {
				return nil, usageError("%s is not in the mount %s: erase paths of one mount at a time", a, m.Point)
			}
			opts.Paths = append(opts.Paths, m.repoPath(abs))
		}
		if err := daemon.CheckSocket(m.Source); err != nil {
			return nil, err
		}
		return eraseThrough(c, m.Source, opts)
	}
	for _, a := range c.Args().Slice() {
		if !strings.HasPrefix(a, "/") {
			return nil, usageError("%s is not inside a keepfs mount; name a repository path starting with /", a)
		}
		opts.Paths = append(opts.Paths, a)
	}
	r, err := openRepo(c, repo.Options{})
	if err != nil {
		return nil, err
	}
	defer r.Close()
	if sock, ok := localDaemonFor(c, r.Config().ID); ok {
		return eraseThrough(c, sock, opts)
	}
	if p := newProgress(c.App.ErrWriter); p != nil {
		opts.Progress = p
	}
	if dir, err := stateDir(c, r); err == nil {
		_ = r.SetAuditMirror(dir)
	}
	opts.Lock = lockOptions(c, repo.ExclusiveLock, "erase")
	res, err := erase.Erase(c.Context, r, opts)
	if errors.Is(err, erase.ErrNothing) {
		return nil, fmt.Errorf("erase: %w", err)
	}
	return res, lockError(err)
}

func eraseThrough(c *cli.Context, sock string, opts erase.Options) (*erase.Result, error) {
	resp, err := daemon.Send(c.Context, sock, daemon.Request{Op: "erase", Erase: &opts, LockWait: c.Duration("retry-lock")})
	if err != nil {
		return nil, fmt.Errorf("erase through the mount's daemon: %w", err)
	}
	if resp.Erase == nil {
		return nil, errors.New("erase: the daemon answered nothing")
	}
	return resp.Erase, nil
}

// Receipt is what `erase --receipt` writes: schema in docs/erase-receipt.md.
type Receipt struct {
	Schema    string        `json:"schema"`
	RequestID string        `json:"request_id,omitempty"`
	Who       string        `json:"who"`
	Host      string        `json:"host"`
	Started   time.Time     `json:"started"`
	Finished  time.Time     `json:"finished"`
	Erase     *erase.Result `json:"erase"`
	// LocalState says what happened to the local copies.
	LocalState string `json:"local_state"`
}

func writeReceipt(file string, res *erase.Result, started time.Time) error {
	rc := Receipt{Schema: "keepfs-erase-receipt/1", RequestID: res.RequestID, Started: started, Finished: time.Now().UTC(), Erase: res,
		LocalState: "the mount's copies of the erased blobs purged (chunk keys, files, segment records wiped); other state directories purge them at their next start (repository generation)"}
	rc.Host, _ = os.Hostname()
	if u, err := user.Current(); err == nil {
		rc.Who = u.Username
	}
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write receipt: %w", err)
	}
	if err := printJSON(f, rc); err != nil {
		f.Close()
		return fmt.Errorf("write receipt: %w", err)
	}
	return f.Close()
}

func printErase(c *cli.Context, res *erase.Result) {
	w := c.App.Writer
	verb := "erased"
	if res.DryRun {
		verb = "would erase"
	}
	for _, v := range res.Versions {
		fmt.Fprintf(w, "%s %s  %s  (%s)\n", verb, v.Snapshot, v.Path, humanBytes(int64(v.Size)))
	}
	for _, v := range res.Copies {
		fmt.Fprintf(w, "%s copy %s  %s  (%s)\n", verb, v.Snapshot, v.Path, humanBytes(int64(v.Size)))
	}
	for _, k := range res.KeptShared {
		fmt.Fprintf(w, "kept chunk %s: also used by %s\n", k.Blob[:16], strings.Join(k.Paths, ", "))
	}
	fmt.Fprintf(w, "%s %d versions and %d copies: %d blobs (%s), %d snapshots rewritten, %d packs rewritten, %d deleted\n",
		verb, len(res.Versions), len(res.Copies), len(res.ErasedBlobs), humanBytes(res.BytesRemoved), len(res.Rewritten),
		res.PacksRewritten, res.PacksDeleted)
	if res.PartialUploads > 0 {
		fmt.Fprintf(w, "deleted %d partial uploads that interrupted writers left (they may have held erased data)\n", res.PartialUploads)
	}
	if !res.DryRun {
		fmt.Fprintf(w, "verification: %s (erased names found: %d, erased blobs readable: %d, snapshots checked: %d ok, %d failed)\n",
			res.Verification.Result, res.Verification.NamesFound, res.Verification.BlobsReadable,
			res.Verification.SnapshotsOK, res.Verification.SnapshotsFailed)
	}
}
