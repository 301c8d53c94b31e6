// Package fstest mounts a keepfs live tree in-process for tests: a memory
// remote, a fresh repository, a cache in a temporary state directory and a
// real FUSE mount, all torn down by t.Cleanup.
package fstest

import (
	"context"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/keepfs/keepfs/cache"
	keepfs "github.com/keepfs/keepfs/fs"
	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/crypto"
)

// Password is the repository passphrase of test mounts.
var Password = []byte("fstest password")

// Mount is a mounted test file system.
type Mount struct {
	Dir      string // the mount point
	StateDir string
	Remote   remote.Storage
	Repo     *repo.Repository
	Cache    *cache.Cache
	Server   *fuse.Server
	closed   bool
}

// Config tunes New; the zero value is fine.
type Config struct {
	Remote   remote.Storage // default: a new memory remote with a new repository
	StateDir string         // default: a temporary directory
	Options  keepfs.Options
	Cache    cache.Options
}

// RequireFUSE fails (with KEEPFS_REQUIRE_FUSE=1) or skips t when FUSE
// cannot be used here.
func RequireFUSE(t testing.TB) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		if os.Getenv("KEEPFS_REQUIRE_FUSE") == "1" {
			t.Fatalf("FUSE required (KEEPFS_REQUIRE_FUSE=1) but unavailable: %v", err)
		}
		t.Skipf("FUSE unavailable: %v", err)
	}
}

func logger() *slog.Logger {
	if os.Getenv("KEEPFS_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// New mounts a file system and registers its unmount with t.Cleanup.
func New(t testing.TB, cfg Config) *Mount {
	t.Helper()
	RequireFUSE(t)
	ctx := context.Background()
	m := &Mount{Dir: t.TempDir(), StateDir: cfg.StateDir, Remote: cfg.Remote}
	if m.StateDir == "" {
		m.StateDir = t.TempDir()
	}
	var err error
	if m.Remote == nil {
		m.Remote = remote.NewMem()
		m.Repo, err = repo.Create(ctx, m.Remote, Password, repo.Options{KDF: &crypto.TestKDF})
	} else {
		m.Repo, err = repo.Open(ctx, m.Remote, Password, repo.Options{KDF: &crypto.TestKDF})
	}
	if err != nil {
		t.Fatal(err)
	}
	co := cfg.Cache
	co.StateDir = m.StateDir
	if co.SnapshotInterval == 0 {
		co.SnapshotInterval = time.Hour
	}
	if co.Logger == nil {
		co.Logger = logger()
	}
	m.Cache, err = cache.Open(ctx, m.Repo, co)
	if err != nil {
		t.Fatal(err)
	}
	opts := cfg.Options
	if opts.Logger == nil {
		opts.Logger = co.Logger
	}
	opts.Debug = opts.Debug || os.Getenv("KEEPFS_FUSE_DEBUG") != ""
	m.Server, err = keepfs.Mount(m.Dir, m.Cache, opts)
	if err != nil {
		m.Cache.Close(ctx)
		if os.Getenv("KEEPFS_REQUIRE_FUSE") == "1" {
			t.Fatalf("mount: %v", err)
		}
		t.Skipf("cannot mount FUSE here: %v", err)
	}
	t.Cleanup(func() { m.Close(t) })
	return m
}

// Close unmounts and closes the cache (final snapshot included).
func (m *Mount) Close(t testing.TB) {
	t.Helper()
	if m.closed {
		return
	}
	m.closed = true
	if err := m.Server.Unmount(); err != nil {
		t.Errorf("unmount: %v", err)
	}
	m.Server.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := m.Cache.Close(ctx); err != nil {
		t.Errorf("close cache: %v", err)
	}
}
