package cache

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/dgraph-io/badger/v4"

	"github.com/keepfs/keepfs/cache/chunkstore"
	"github.com/keepfs/keepfs/cache/meta"
	"github.com/keepfs/keepfs/repo/crypto"
)

// A power loss can undo writes the state directory took without a sync.
// Closes store chunks without one (see unsynced), and Badger writes its
// log back on the kernel's schedule, so after a reboot a chunk key may
// survive while the data it names does not. A commit deduplicating against
// such a key would name lost data, and a snapshot needing the chunk could
// never be taken. kill -9 loses nothing of the kind: the page cache
// outlives the process.
//
// So Open records the session (boot id, not yet closed) durably, Close
// marks it closed after syncing everything, and an Open that finds a
// session left open on an earlier boot reads back every chunk kept locally
// and drops the keys of those that fail: their files read as errors, and
// snapshots keep the last backed-up version of them (see snapshot.Walk.lostFile).

// bootID identifies the running boot; tests replace it to simulate one.
var bootID = func() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "" // unknown: every unclean shutdown counts as a reboot
	}
	return strings.TrimSpace(string(b))
}

var sessionKey = meta.StateKey("session")

const (
	sessionOpen   = 0
	sessionClosed = 1
)

// checkPowerLoss verifies the local chunks if the last session ended
// without Close on another boot, then records this session as open.
func (c *Cache) checkPowerLoss(ctx context.Context) error {
	boot := bootID()
	var prev []byte
	err := c.view(func(txn *badger.Txn) error {
		v, err := getValue(txn, sessionKey)
		prev = v
		return err
	})
	if err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
		return fmt.Errorf("read session record: %w", err)
	}
	c.cleanStart = len(prev) > 0 && prev[0] == sessionClosed
	if len(prev) > 0 && prev[0] == sessionOpen && (string(prev[1:]) != boot || boot == "") {
		if err := c.verifyChunks(ctx); err != nil {
			return err
		}
	}
	return c.recordSession(sessionOpen)
}

// recordSession stores the session record and makes it durable.
func (c *Cache) recordSession(state byte) error {
	v := append([]byte{state}, bootID()...)
	if err := c.update(func(txn *wtxn) error { return txn.Set(sessionKey, v) }); err != nil {
		return fmt.Errorf("record session: %w", err)
	}
	return c.sync()
}

// verifyChunks reads back every chunk kept outside Badger and drops the
// chunk and queue keys of those that are missing or do not authenticate.
func (c *Cache) verifyChunks(ctx context.Context) error {
	var ids []crypto.ID
	var total int64
	err := c.chunks.Outside(func(id crypto.ID, size int64) {
		ids = append(ids, id)
		total += size
	})
	if err != nil {
		return fmt.Errorf("list local chunks: %w", err)
	}
	c.log.Warn("the last mount ended without unmounting before a reboot; checking the chunks kept locally", "chunks", len(ids), "bytes", total)
	progress := c.progressReporter("checking local data after an unclean shutdown", "bytes", total)
	var bad []crypto.ID
	var done int64
	progress(0, false)
	for _, id := range ids {
		if err := ctx.Err(); err != nil {
			return err
		}
		data, err := c.chunks.Load(id)
		if err != nil {
			bad = append(bad, id)
		}
		done += int64(len(data))
		progress(done, false)
	}
	progress(total, true)
	c.chunksVerified.Add(int64(len(ids)))
	if err := c.chunks.DropLost(bad, func(txn chunkstore.Txn, id crypto.ID) error {
		return txn.Delete(meta.QueueKey(id))
	}); err != nil {
		return fmt.Errorf("drop lost chunks: %w", err)
	}
	c.chunksLost.Add(int64(len(bad)))
	if n := c.chunksLost.Load(); n > 0 {
		c.log.Error("chunks stored shortly before the power loss did not survive it; files naming them read as errors and keep their last backed-up version in snapshots", "lost", n, "checked", len(ids))
	}
	return nil
}
