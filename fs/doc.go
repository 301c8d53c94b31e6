// Package fs serves the live tree of a cache.Cache over FUSE (go-fuse's fs
// API) and plugs in the read-only .versions tree.
//
// It stays thin: every operation is one call into package cache, and this
// is the only package that speaks errno (toErrno). Node types: dirNode,
// fileNode, symlinkNode and specialNode (fifos, devices, sockets), all
// embedding node; fileHandle is the open-file handle.
package fs
