package fs

import (
	"os"
	"time"

	"github.com/keepfs/keepfs/cache"
	"github.com/keepfs/keepfs/fs/versions"
	"github.com/keepfs/keepfs/repo"
)

// newVersionsRoot builds the read-only .versions tree for c; it refreshes
// its snapshot list whenever the cache stores a new snapshot.
func newVersionsRoot(c *cache.Cache, opts Options) *versions.Root {
	vo := versions.Options{Logger: opts.Logger}
	// Tests of the daemon's wait for .versions to switch (Settle) make the
	// switch slow enough to be seen.
	if d, err := time.ParseDuration(os.Getenv("KEEPFS_TEST_VERSIONS_DELAY")); err == nil {
		vo.InvalidateDelay = d
	}
	root := versions.NewRoot(versions.RepoSource{Repository: c.Repository()}, vo)
	c.OnSnapshot(func(*repo.Snapshot) { root.Refresh() })
	if opts.OnVersions != nil {
		opts.OnVersions(root.Settle)
	}
	return root
}
