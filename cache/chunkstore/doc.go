// Package chunkstore keeps the chunks of a mounted repository in its state
// directory: each chunk's record (its c key: meta.ChunkKey), its bytes by
// size (inline in the record, sealed in an append-only segment file, or in
// a block-sealed file of its own), the LRU of clean chunks and their
// eviction down to the cache size, a bounded set of recent chunk
// plaintexts in memory, background fetches for sequential readers, the
// descriptors of recently read chunk files, segment compaction, and the
// list of chunks stored without reaching the disk (a close's), which an
// fsync makes durable first.
//
// Nouns:
//   - record: a chunk's c key and value; the value says where its bytes
//     are and how long it is. Bytes are always written before the record
//     that names them and removed after it.
//   - clean: a chunk the repository's index holds. Only clean chunks are
//     in the LRU, so eviction never drops data that is not yet uploaded;
//     eviction checks the index again when it evicts and stops while
//     paused (PauseEviction, during a prune or erase).
//   - batch: a store of chunks whose records go into a write transaction
//     the caller owns (Prepare, Batch.Write, Batch.Finish), so that a small
//     file's chunks and its inode commit together.
//
// The package reaches the rest of the mount through small interfaces: the
// state directory's transactions (DB, Reader, Txn) and the repository
// (Repository: is a blob indexed, fetch it). Package cache implements them
// over Badger and the repository; the tests here use in-memory fakes.
//
// Lock order: Store.evictMu (held for writing by PauseEviction) → the
// LRU's, the memory cache's, the segments' and the descriptor cache's
// mutexes, and the unsynced list's (leaves). Transactions are taken under
// evictMu only.
package chunkstore
