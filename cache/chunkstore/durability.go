package chunkstore

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/keepfs/keepfs/repo/crypto"
)

// unsynced remembers chunks stored without reaching the disk (by a close,
// not an fsync). An fsync makes the inodes of every file committed so far
// durable (Badger's sync is all or nothing), so it first makes all these
// chunks durable: otherwise a power loss could leave a fsynced file, or one
// committed by a close, naming chunks that never reached the disk. Every
// minute while any are noted (and at open) one syncfs of the state
// directory covers them and the list starts over.
type unsynced struct {
	mu     sync.Mutex
	chunks map[crypto.ID]int64 // chunk → segment number, or fileChunk
}

// fileChunk marks a chunk kept in a file of its own.
const fileChunk = -1

func (u *unsynced) add(id crypto.ID, where int64) {
	u.mu.Lock()
	if u.chunks == nil {
		u.chunks = map[crypto.ID]int64{}
	}
	u.chunks[id] = where
	u.mu.Unlock()
}

// reset forgets every chunk noted so far and returns them.
func (u *unsynced) reset() map[crypto.ID]int64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	old := u.chunks
	u.chunks = nil
	return old
}

func (u *unsynced) len() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.chunks)
}

// Unsynced is how many chunks were stored without reaching the disk since
// the last sync.
func (s *Store) Unsynced() int { return s.unsynced.len() }

// SyncNoted makes every chunk stored without reaching the disk durable:
// their files and the directories naming them, and the segments holding
// them. Chunks evicted meanwhile are in the repository and need nothing.
func (s *Store) SyncNoted() error {
	if s.unsynced.len() > syncOneByOne {
		return s.Sync()
	}
	pending := s.unsynced.reset()
	if len(pending) == 0 {
		return nil
	}
	dirs := map[string]bool{}
	segs := map[uint32]bool{}
	var firstErr error
	for id, where := range pending {
		if where != fileChunk {
			segs[uint32(where)] = true
			continue
		}
		p := s.files.path(id)
		if err := SyncPath(p); err != nil && !os.IsNotExist(err) && firstErr == nil {
			firstErr = err
		}
		dirs[filepath.Dir(p)] = true
	}
	for n := range segs {
		if err := s.segs.sync(n); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	for d := range dirs {
		if err := SyncPath(d); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	if firstErr != nil {
		// Keep them noted: the next fsync or the periodic sync retries.
		for id, where := range pending {
			s.unsynced.add(id, where)
		}
		return fmt.Errorf("sync chunks: %w", firstErr)
	}
	return nil
}

// syncOneByOne is how many noted chunks an fsync syncs file by file; past
// it, one syncfs of the state directory costs less than a sync per file.
const syncOneByOne = 64

// Sync makes everything written to the state directory so far durable
// (one syncfs: the chunks and whatever else the directory holds) and
// forgets the unsynced chunks it covered.
func (s *Store) Sync() error {
	old := s.unsynced.reset()
	d, err := os.Open(s.dir)
	if err == nil {
		err = unix.Syncfs(int(d.Fd()))
		d.Close()
	}
	if err != nil {
		for id, where := range old {
			s.unsynced.add(id, where)
		}
		return fmt.Errorf("sync state directory: %w", err)
	}
	return nil
}

// SyncPath makes the file or directory p durable.
func SyncPath(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
