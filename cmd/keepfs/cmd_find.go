package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/keepfs/keepfs/cmd/keepfs/daemon"
	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/find"
)

func cmdFind() *cli.Command {
	return &cli.Command{
		Name:      "find",
		Usage:     "find files by name and content in every version",
		ArgsUsage: "[PATH]",
		Description: `Searches the latest snapshot (and, in a mount, the live tree as it is now,
shown as the version "live"), the snapshot at --at TIME, or every snapshot
(--all-versions) below PATH. PATH is a path inside a keepfs mount, or with
--repo and no mount a repository path starting with / (default /).

--name GLOB matches the base name (path.Match; several are OR'ed); --content
REGEX (Go syntax) matches lines of the decrypted content; --content-file FILE
takes each non-empty line of FILE as a literal string, any of which may match.
With both --name and --content, a file must pass both.

One line per path and content: path, size, the versions showing it, with
--content the numbers of the matching lines, and other paths holding the same
content. Each distinct content is read once, however many versions share it.

Examples:
   keepfs find --all-versions --name '*scan*' ~/safe/hr
   keepfs find --all-versions --content 'born 19[0-9]{2}' ~/safe
   keepfs --repo file:///srv/backup find --at 2026-11-28 --json --content-file names.txt /hr`,
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "name", Usage: "base name `GLOB` (repeatable, OR'ed)"},
			&cli.StringFlag{Name: "content", Usage: "`REGEX` a line of the content must match"},
			&cli.StringFlag{Name: "content-file", Usage: "`FILE` of literal strings, one a line, any of which a line may contain"},
			&cli.StringFlag{Name: "at", Usage: "search the snapshot at or before `TIME` only"},
			&cli.BoolFlag{Name: "all-versions", Usage: "search every snapshot"},
			jsonFlag(),
		},
		Action: runFind,
	}
}

func runFind(c *cli.Context) error {
	if c.NArg() > 1 {
		return usageError("find takes at most one PATH")
	}
	names := c.StringSlice("name")
	for _, g := range names {
		if _, err := path.Match(g, ""); err != nil {
			return usageError("--name %q: %v", g, err)
		}
	}
	re, err := contentPattern(c)
	if err != nil {
		return err
	}
	if len(names) == 0 && re == nil {
		return usageError("find needs --name, --content or --content-file")
	}
	if c.IsSet("at") && c.Bool("all-versions") {
		return usageError("--at and --all-versions exclude each other")
	}
	if c.IsSet("at") {
		if err := checkAt(c.String("at")); err != nil {
			return err
		}
	}
	t, err := resolveFindTarget(c)
	if err != nil {
		return err
	}

	r, err := openRepo(c, repo.Options{})
	if err != nil {
		return err
	}
	defer r.Close()
	if t.mount != nil {
		ctx, cancel := context.WithTimeout(c.Context, 10*time.Second)
		_, err := daemon.Hello(ctx, t.mount.Source, r.Config().ID)
		cancel()
		if err != nil {
			return err
		}
	}
	unlock, err := lockShared(c, r, "find")
	if err != nil {
		return err
	}
	defer unlock()
	snaps, err := r.Snapshots(c.Context)
	if err != nil {
		return err
	}
	opts := find.Options{Names: names, Content: re, Root: t.repoPath,
		Warn: func(msg string) { fmt.Fprintf(c.App.ErrWriter, "keepfs: warning: %s\n", msg) }}
	switch {
	case c.Bool("all-versions"):
		opts.Snapshots = snaps
	case c.IsSet("at"):
		sn, err := pickSnapshot(snaps, c.String("at"))
		if err != nil {
			return err
		}
		opts.Snapshots = []*repo.Snapshot{sn}
	case len(snaps) > 0:
		opts.Snapshots = snaps[len(snaps)-1:]
	}
	if t.mount != nil && !c.IsSet("at") {
		opts.Live = os.DirFS(t.mount.Point)
	}
	if p := newProgress(c.App.ErrWriter); p != nil {
		opts.Progress = p
	}
	ms, _, ferr := find.Find(c.Context, r, opts)
	if ferr != nil && !errors.Is(ferr, find.ErrIncomplete) {
		return ferr
	}
	for i := range ms {
		ms[i].Path = t.display(ms[i].Path)
		for j, p := range ms[i].Copies {
			ms[i].Copies[j] = t.display(p)
		}
	}
	if c.Bool("json") {
		if err := printJSON(c.App.Writer, ms); err != nil {
			return err
		}
	} else {
		printMatches(c.App.Writer, ms, re != nil)
	}
	return ferr
}

// contentPattern compiles --content or --content-file (nil: neither).
func contentPattern(c *cli.Context) (*regexp.Regexp, error) {
	if c.IsSet("content") && c.IsSet("content-file") {
		return nil, usageError("--content and --content-file exclude each other")
	}
	if c.IsSet("content") {
		re, err := regexp.Compile(c.String("content"))
		if err != nil {
			return nil, usageError("--content: %v", err)
		}
		return re, nil
	}
	if !c.IsSet("content-file") {
		return nil, nil
	}
	f, err := os.Open(c.String("content-file"))
	if err != nil {
		return nil, usageError("--content-file: %v", err)
	}
	defer f.Close()
	var alts []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if s := strings.TrimSuffix(sc.Text(), "\r"); s != "" {
			alts = append(alts, regexp.QuoteMeta(s))
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("--content-file: %w", err)
	}
	if len(alts) == 0 {
		return nil, usageError("--content-file %s has no non-empty line to look for", c.String("content-file"))
	}
	return regexp.Compile(strings.Join(alts, "|"))
}

// findTarget is where to search: a repository path, and the mount it was
// named through, if any.
type findTarget struct {
	repoPath string
	mount    *keepfsMount
	arg      string // PATH as given (mounted); results are shown below it
}

// resolveFindTarget resolves PATH. A path inside a mount names that mount's
// repository, opened through the daemon's location unless --repo is given;
// no PATH in a mount means the working directory.
func resolveFindTarget(c *cli.Context) (findTarget, error) {
	arg := c.Args().First()
	probe := arg
	if probe == "" {
		probe = "."
	}
	abs, err := filepath.Abs(probe)
	if err != nil {
		return findTarget{}, err
	}
	m, ok, err := findMount(abs)
	if err != nil {
		return findTarget{}, err
	}
	if !ok || (arg == "" && c.String("repo") != "") {
		if arg == "" {
			arg = "/"
		}
		if !strings.HasPrefix(arg, "/") {
			return findTarget{}, usageError("%s is not inside a keepfs mount; name a repository path starting with /", arg)
		}
		if _, err := repoURL(c); err != nil {
			return findTarget{}, usageError("%s is not inside a keepfs mount; pass --repo URL to search a repository path", arg)
		}
		return findTarget{repoPath: path.Clean(arg)}, nil
	}
	if c.String("repo") == "" {
		ctx, cancel := context.WithTimeout(c.Context, 10*time.Second)
		resp, err := daemon.Hello(ctx, m.Source, "")
		cancel()
		if err != nil {
			return findTarget{}, fmt.Errorf("%s: %w", probe, err)
		}
		if resp.Repo == "" {
			return findTarget{}, fmt.Errorf("the keepfs mount at %s did not say where its repository is; pass --repo URL", m.Point)
		}
		if err := c.Set("repo", resp.Repo); err != nil {
			return findTarget{}, err
		}
	}
	return findTarget{repoPath: m.repoPath(abs), mount: &m, arg: probe}, nil
}

// display turns a repository path into what the user named: below PATH
// as given when mounted, the repository path otherwise.
func (t findTarget) display(p string) string {
	if t.mount == nil {
		return p
	}
	rel, ok := strings.CutPrefix(p, t.repoPath)
	if t.repoPath == "/" {
		rel, ok = p, true
	}
	if !ok || (rel != "" && !strings.HasPrefix(rel, "/")) {
		return filepath.Join(t.mount.Point, p)
	}
	return filepath.Join(t.arg, rel)
}

// printMatches writes one line per match: path, size, versions, lines and
// copies, two spaces apart.
func printMatches(w io.Writer, ms []find.Match, content bool) {
	for _, m := range ms {
		fields := []string{m.Path, humanBytes(int64(m.Size)), versionList(m)}
		if content {
			fields = append(fields, "lines "+lineList(m))
		}
		if len(m.Copies) > 0 {
			fields = append(fields, "copy of "+shortList(m.Copies, 5))
		}
		fmt.Fprintln(w, strings.Join(fields, "  "))
	}
}

// versionList names the versions of a match, compressed when many.
func versionList(m find.Match) string {
	var s string
	switch n := len(m.Snapshots); {
	case n == 0:
	case n <= 2:
		s = strings.Join(m.Snapshots, ", ")
	default:
		s = fmt.Sprintf("%d versions: %s..%s", n, m.Snapshots[0], m.Snapshots[n-1])
	}
	if m.Live {
		if s != "" {
			s += " + "
		}
		s += find.LiveVersion
	}
	return s
}

func lineList(m find.Match) string {
	var b strings.Builder
	for i, l := range m.Lines {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(l))
	}
	if m.MoreLines > 0 {
		fmt.Fprintf(&b, " and %d more", m.MoreLines)
	}
	return b.String()
}

func shortList(s []string, max int) string {
	if len(s) <= max {
		return strings.Join(s, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(s[:max], ", "), len(s)-max)
}
