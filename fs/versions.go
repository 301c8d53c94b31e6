package fs

import (
	"github.com/keepfs/keepfs/cache"
	"github.com/keepfs/keepfs/fs/versions"
	"github.com/keepfs/keepfs/repo"
)

// newVersionsRoot builds the read-only .versions tree for c; it refreshes
// its snapshot list whenever the cache stores a new snapshot.
func newVersionsRoot(c *cache.Cache, opts Options) *versions.Root {
	root := versions.NewRoot(versions.RepoSource{Repository: c.Repository()}, versions.Options{Logger: opts.Logger})
	c.OnSnapshot(func(*repo.Snapshot) { root.Refresh() })
	return root
}
