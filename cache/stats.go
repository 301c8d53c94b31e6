package cache

import "sync/atomic"

// Counters are running totals since the mount started, for monitoring.
type Counters struct {
	// ChunkHits counts chunk reads served from memory or the state
	// directory, ChunkMisses those fetched from the remote.
	ChunkHits   int64 `json:"chunk_hits"`
	ChunkMisses int64 `json:"chunk_misses"`
}

type counters struct {
	chunkHits, chunkMisses atomic.Int64
}

// Counters returns the running totals.
func (c *Cache) Counters() Counters {
	return Counters{ChunkHits: c.stats.chunkHits.Load(), ChunkMisses: c.stats.chunkMisses.Load()}
}
