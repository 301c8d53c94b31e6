// Package cache is the local state of a mounted repository: the namespace
// (inodes, directory entries, chunk lists, xattrs) in Badger, with its
// in-memory metadata cache in package cache/namespace, encrypted
// staging of dirty file data, the size-bounded chunk store (package
// cache/chunkstore; chunks.go wires it), the durable upload queue
// (package cache/upload) and the snapshotter (package cache/snapshot: the
// walk, the tree-id cache, scheduling and storing).
// It has no FUSE import: package fs maps kernel requests onto the
// methods here.
//
// Nouns:
//   - inode: one file, directory, symlink or special file (meta.Inode).
//   - dirent: a name in a directory pointing at an inode.
//   - chunk: a content-defined piece of a file, identified by its blob id.
//     The chunk store (package cache/chunkstore) keeps it, recorded by a c
//     key, inline, in a segment or sealed in a file under chunks/ until
//     evicted; clean chunks (those the repository index already holds) may
//     be evicted, others never. A commit's chunk records go into the same
//     transaction as its inode (chunkstore.Batch).
//   - queue: q keys naming chunks that still have to reach the remote,
//     owned with the uploader by package cache/upload (uploadqueue.go
//     wires it to the state directory and the chunk store). Only
//     a snapshot walk sets them, to the chunks of the files it included
//     (DESIGN invariant 7: commits never queue). A key is removed only
//     after repo.Flush stored the pack and index holding it, or by the next
//     walk if that no longer needs it.
//   - staging: an unlinked, encrypted temporary file per open file holding
//     the bytes written since the last commit, plus the dirty extents.
//   - commit: turning a file's staging into chunks (on flush/close/fsync):
//     only the span from the chunk boundary before the first dirty byte to
//     where the chunker re-synchronises with an old boundary is re-chunked.
//   - snapshot: repo trees built from the metadata by the walk of package
//     cache/snapshot, taken and stored by its Scheduler (the change count,
//     the periodic snapshots; snapshot.go wires it); unchanged directories under unchanged ignore rules
//     reuse their cached tree id from the tree cache (snapshot.Trees,
//     kept in Badger across clean restarts; treecache.go wires it).
//
// Lock order (outer first): the snapshot scheduler's run lock
// (snapshot.Scheduler.Hold) → openFile.mu → Cache.nsMu → the upload
// queue's hold (upload.Queue.Hold) → the chunk store's eviction pause
// (chunkstore.Store.PauseEviction) → Cache.mu (small state) → the chunk
// store's own locks, remoteLock.mu, the upload queue's own mu, the
// scheduler's mu (→ the tree cache's mu) (leaves). Badger transactions are taken under any of them.
// Nothing waits for the remote while holding nsMu or Cache.mu; a read or a
// commit may fetch a chunk from the remote while holding its file's mu.
//
// Durability: Badger's logs are memory-mapped, so a committed transaction
// survives kill -9 of the process once Commit returns; fsync additionally
// syncs Badger for power loss. Chunks are stored before the inode that
// names them, and a queue entry is removed only after repo.Flush put its
// blob in the remote's index.
//
// Unlinked inodes stay (with no links) while a handle is open or the
// kernel may still stat them; Forget, the last release, or the next Open
// removes them.
package cache
