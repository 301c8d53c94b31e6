// Command scalegen fills a keepfs repository's local state with many empty
// files for the scale benchmark (integration/bench/scale_tree.sh), through
// the cache API rather than a mount: a million FUSE creates take longer
// than the measurement they prepare. It closes the state cleanly, so the
// final snapshot is stored and the next mount starts from it.
//
//	KEEPFS_PASSWORD=... scalegen -repo file:///r -state /s -files 1000000 -dirs 200 [-bigdir 100000]
//	scalegen -native DIR -bigdir 100000      the big directory alone, on the native disk
//
// Layout: /dNNNN/fNNNNNNN, files spread evenly over the directories, and
// with -bigdir N a directory /big of N more files.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/keepfs/keepfs/cache"
	"github.com/keepfs/keepfs/remote/location"
	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/tree"
)

func main() {
	repoURL := flag.String("repo", "", "repository URL")
	state := flag.String("state", "", "state directory (absolute)")
	files := flag.Int("files", 10000, "files to create in the dirs")
	dirs := flag.Int("dirs", 200, "directories to spread them over")
	big := flag.Int("bigdir", 0, "files in /big")
	native := flag.String("native", "", "create /big under this directory on the native disk instead")
	flag.Parse()
	if err := run(*repoURL, *state, *native, *files, *dirs, *big); err != nil {
		fmt.Fprintln(os.Stderr, "scalegen:", err)
		os.Exit(1)
	}
}

func run(repoURL, state, native string, files, dirs, big int) error {
	start := time.Now()
	if native != "" {
		d := filepath.Join(native, "big")
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		for i := 0; i < big; i++ {
			f, err := os.Create(filepath.Join(d, fmt.Sprintf("f%07d", i)))
			if err != nil {
				return err
			}
			f.Close()
		}
		fmt.Printf("created %d files natively in %.1f s\n", big, time.Since(start).Seconds())
		return nil
	}
	ctx := context.Background()
	be, err := location.Open(ctx, repoURL, location.Options{})
	if err != nil {
		return err
	}
	r, err := repo.Open(ctx, be, []byte(os.Getenv("KEEPFS_PASSWORD")), repo.Options{})
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	c, err := cache.Open(ctx, r, cache.Options{StateDir: state, SnapshotInterval: time.Hour, Logger: log})
	if err != nil {
		return err
	}
	mk := func(parent uint64, name string, t tree.Type, mode uint32) (uint64, error) {
		a, err := c.Create(ctx, parent, name, cache.NewNode{Type: t, Mode: mode, UID: uint32(os.Getuid()), GID: uint32(os.Getgid())})
		return a.Ino, err
	}
	n := 0
	for d := 0; d < dirs; d++ {
		dino, err := mk(c.Root(), fmt.Sprintf("d%04d", d), tree.Dir, 0o755)
		if err != nil {
			return err
		}
		per := files / dirs
		if d < files%dirs {
			per++
		}
		for i := 0; i < per; i++ {
			if _, err := mk(dino, fmt.Sprintf("f%07d", n), tree.File, 0o644); err != nil {
				return err
			}
			n++
		}
	}
	if big > 0 {
		bino, err := mk(c.Root(), "big", tree.Dir, 0o755)
		if err != nil {
			return err
		}
		for i := 0; i < big; i++ {
			if _, err := mk(bino, fmt.Sprintf("f%07d", i), tree.File, 0o644); err != nil {
				return err
			}
		}
	}
	created := time.Since(start)
	if err := c.Close(ctx); err != nil {
		return err
	}
	fmt.Printf("created %d files in %d dirs (+%d in /big) in %.1f s; first snapshot and close %.1f s\n",
		n, dirs, big, created.Seconds(), (time.Since(start) - created).Seconds())
	return r.Close()
}
