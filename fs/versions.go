package fs

import (
	gofs "github.com/hanwen/go-fuse/v2/fs"

	"github.com/keepfs/keepfs/cache"
)

// newVersionsRoot builds the read-only .versions tree for c, or returns
// nil to leave it out.
//
// TODO(versions): plug in fs/versions here once it lands:
//
//	return versions.NewRoot(versionsSource{c})  // with c.OnSnapshot(src.Refresh)
func newVersionsRoot(c *cache.Cache) gofs.InodeEmbedder { return nil }
