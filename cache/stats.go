package cache

// Counters are running totals since the mount started, for monitoring.
type Counters struct {
	// ChunkHits counts chunk reads served from memory or the state
	// directory, ChunkMisses those fetched from the remote.
	ChunkHits   int64 `json:"chunk_hits"`
	ChunkMisses int64 `json:"chunk_misses"`
	// TreesBuilt counts directory trees snapshot walks encoded (the
	// others came from the tree cache), TreesUploaded those of them the
	// repository did not hold yet, WalkInodes the inodes the walks read.
	TreesBuilt    int64 `json:"trees_built"`
	TreesUploaded int64 `json:"trees_uploaded"`
	WalkInodes    int64 `json:"walk_inodes"`
	// DeadChunks and DeadBytes count the chunks no file named that were
	// dropped from the state directory (versions of files rewritten
	// between snapshots; see sweep.go).
	DeadChunks int64 `json:"dead_chunks_dropped"`
	DeadBytes  int64 `json:"dead_bytes_dropped"`
}

// Counters returns the running totals.
func (c *Cache) Counters() Counters {
	built, uploaded, inodes := c.snap.Counters()
	hits, misses := c.chunks.Counters()
	return Counters{ChunkHits: hits, ChunkMisses: misses,
		TreesBuilt: built, TreesUploaded: uploaded, WalkInodes: inodes,
		DeadChunks: c.sweep.dropped.Load(), DeadBytes: c.sweep.droppedBytes.Load()}
}
