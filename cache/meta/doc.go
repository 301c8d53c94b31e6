// Package meta is the Badger key schema of the local state directory and
// the binary encoding of its records. It is the one place that knows how a
// key is laid out; everything else calls the builders below.
//
// Key schema (all integers big-endian, so prefix scans come out ordered):
//
//	i <ino:8>            → Inode (EncodeInode)
//	d <parent:8> <name>  → child ino:8 || type:1          one per directory entry
//	c <blob id:32>       → plaintext size:8               the chunk is kept locally, sealed in a
//	                                                      file beside Badger (cache/chunkfiles.go)
//	q <blob id:32>       → empty                          upload queue: the chunk's c entry holds the data
//	f <ino:8>            → Intent (EncodeIntent)          an fsync's changes not yet committed,
//	                                                      held by a staging file (cache/intent.go)
//	t <ino:8>            → TreeEntry (EncodeTreeEntry)    the tree a snapshot built for directory ino,
//	                                                      kept while it is unchanged; loaded at Open
//	                                                      only after a clean Close (cache/treecache.go)
//	s <name>             → state values: "nextino" (uint64), "stateid" (16 random
//	                       bytes), "lastsnap" (snapshot id:32), "trees" (present
//	                       while the t keys are complete: set by Close, deleted by Open)
//
// Names appear in d keys, but Badger encrypts keys and values at rest with
// the repository's local-state subkey, so nothing here is plaintext on disk.
package meta
