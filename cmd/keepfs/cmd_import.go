package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"

	"github.com/urfave/cli/v2"

	"github.com/keepfs/keepfs/policy/audit"
	"github.com/keepfs/keepfs/policy/ignore"
	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/archiver"
)

func cmdImport() *cli.Command {
	return &cli.Command{
		Name:      "import",
		Usage:     "snapshot a directory tree without mounting",
		ArgsUsage: "DIR",
		Description: `Takes a snapshot of DIR: DIR becomes the root of the snapshot, as a mount's
root would. Files matched by .gdprignore files (git's .gitignore rules) are
left out. Files unchanged since the previous snapshot of DIR are not read
again, and content already in the repository is not uploaded again.

Examples:
   keepfs import ~/Documents
   keepfs import /srv/data --json`,
		Flags: []cli.Flag{jsonFlag()},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usageError("import takes exactly one directory")
			}
			dir, err := filepath.Abs(c.Args().First())
			if err != nil {
				return err
			}
			r, err := openRepo(c, repo.Options{})
			if err != nil {
				return err
			}
			defer r.Close()
			unlock, err := lockShared(c, r, "import")
			if err != nil {
				return err
			}
			defer unlock()
			snaps, err := r.Snapshots(c.Context)
			if err != nil {
				return err
			}
			opts := archiver.Options{Excluder: excluder{ignore.New(dir)}}
			// The parent is the newest snapshot of the same directory.
			for _, s := range snaps {
				if s.Source == dir {
					opts.Parent = s
				}
			}
			var prog *importProgress
			var jprog *jsonProgress
			if progressJSON(c) {
				jprog = newJSONProgress(c.App.ErrWriter, "bytes")
				opts.Progress = importJSON{jprog}
			} else if prog = newImportProgress(c.App.ErrWriter); prog != nil {
				opts.Progress = prog
			}
			stopProfile := startCPUProfile(c.App.ErrWriter)
			sn, sum, err := archiver.Import(c.Context, r, dir, opts)
			stopProfile()
			prog.finish()
			if jprog != nil {
				jprog.Done()
			}
			ae := audit.Entry{Action: audit.ActionImport, Outcome: outcome(err), Paths: auditPaths(r, []string{dir})}
			if err == nil {
				ae.Details = map[string]string{"snapshot": sn.ID.String(), "files": strconv.FormatInt(sum.Files, 10),
					"bytes_added": strconv.FormatInt(sum.BytesAdded, 10), "unreadable": strconv.Itoa(len(sum.Warnings))}
			}
			recordAudit(c, r, ae)
			if err != nil {
				return err
			}
			for _, w := range sum.Warnings {
				fmt.Fprintf(c.App.ErrWriter, "warning: %s\n", w)
			}
			if c.Bool("json") {
				if err := printJSON(c.App.Writer, sum); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(c.App.Writer, "snapshot %s (%s): %d files, %d dirs, %s; %d new, %d changed, %d unchanged, %d excluded; added %s in %.1fs\n",
					sn.ID.Short(), sum.Time, sum.Files, sum.Dirs, humanBytes(sum.Bytes), sum.FilesNew, sum.FilesChanged,
					sum.FilesUnchanged, sum.Excluded, humanBytes(sum.BytesAdded), sum.Seconds)
			}
			if len(sum.Warnings) > 0 {
				return fmt.Errorf("%d files could not be read (see warnings above); the snapshot holds the rest", len(sum.Warnings))
			}
			return nil
		},
	}
}

// excluder adapts the .gdprignore matcher to the archiver. The walk does
// not descend into excluded directories, so Match (without parent
// exclusion) is the whole answer.
type excluder struct{ m *ignore.Matcher }

func (e excluder) AddPatterns(dir []string, source string, content []byte) {
	e.m.AddPatterns(dir, source, content)
}

func (e excluder) Excluded(path []string, isDir bool) bool { return e.m.Match(path, isDir).Ignored }

// startCPUProfile writes a CPU profile of the import (or restore) to
// $KEEPFS_CPUPROFILE (go tool pprof reads it) until stop is called; unset,
// it does nothing.
// The mount daemon reads the same variable for its own profile.
func startCPUProfile(stderr io.Writer) (stop func()) {
	path := os.Getenv("KEEPFS_CPUPROFILE")
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err == nil {
		if err = pprof.StartCPUProfile(f); err != nil {
			f.Close()
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "warning: no CPU profile: %v\n", err)
		return func() {}
	}
	return func() { pprof.StopCPUProfile(); f.Close() }
}
