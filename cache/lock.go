package cache

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/keepfs/keepfs/remote"
)

// The remote lock: locks/<name> holds a sealed lockInfo, replaced by a
// fresh object every lockRefresh. A lock older than lockStale belongs to a
// mount that died; one naming our own state directory is ours from before
// a crash (the state directory's flock proves no other process has it).
const (
	lockRefresh = time.Minute
	lockStale   = 5 * time.Minute
	lockAD      = "keepfs lock v1"
)

type lockInfo struct {
	Host    string    `json:"host"`
	PID     int       `json:"pid"`
	StateID string    `json:"state_id"`
	Time    time.Time `json:"time"`
}

type remoteLock struct {
	c    *Cache
	mu   sync.Mutex
	name string // current object, "" if none
}

func (c *Cache) acquireRemoteLock(ctx context.Context) (*remoteLock, error) {
	l := &remoteLock{c: c}
	be := c.r.Backend()
	var stale []string
	err := be.List(ctx, remote.Lock, func(fi remote.Info) error {
		b, err := remote.LoadAll(ctx, be, fi.Handle)
		if errors.Is(err, remote.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		plain, err := c.r.Key().Open(nil, b, []byte(lockAD))
		if err != nil {
			return nil // not ours to judge: check reports foreign objects
		}
		var li lockInfo
		if err := json.Unmarshal(plain, &li); err != nil {
			return nil
		}
		switch {
		case li.StateID == hex.EncodeToString(c.stateID):
			stale = append(stale, fi.Handle.Name)
		case c.opts.Now().Sub(li.Time) > lockStale:
			stale = append(stale, fi.Handle.Name)
		default:
			return fmt.Errorf("%w (held by pid %d on %s since %s)", ErrRepoLocked, li.PID, li.Host, li.Time.UTC().Format(time.RFC3339))
		}
		return nil
	})
	if errors.Is(err, ErrRepoLocked) {
		return nil, err
	}
	if err != nil {
		// An unreachable remote must not stop a mount that works from
		// local state; the refresher takes the lock when it returns.
		c.log.Warn("cannot check the repository lock now", "err", err)
		c.setRemoteHealth(err)
		return l, nil
	}
	for _, n := range stale {
		_ = be.Remove(ctx, remote.Handle{Type: remote.Lock, Name: n})
	}
	if err := l.refresh(ctx); err != nil {
		c.log.Warn("cannot write the repository lock now", "err", err)
	}
	return l, nil
}

// refresh writes a new lock object, then removes the previous one.
func (l *remoteLock) refresh(ctx context.Context) error {
	c := l.c
	host, _ := os.Hostname()
	b, err := json.Marshal(lockInfo{Host: host, PID: os.Getpid(), StateID: hex.EncodeToString(c.stateID), Time: c.opts.Now().UTC()})
	if err != nil {
		return err
	}
	var rnd [16]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return err
	}
	name := hex.EncodeToString(rnd[:])
	be := c.r.Backend()
	if err := be.Save(ctx, remote.Handle{Type: remote.Lock, Name: name}, c.r.Key().Seal(nil, b, []byte(lockAD))); err != nil {
		return fmt.Errorf("save lock: %w", err)
	}
	l.mu.Lock()
	old := l.name
	l.name = name
	l.mu.Unlock()
	if old != "" {
		_ = be.Remove(ctx, remote.Handle{Type: remote.Lock, Name: old})
	}
	return nil
}

func (l *remoteLock) release(ctx context.Context) {
	l.mu.Lock()
	name := l.name
	l.name = ""
	l.mu.Unlock()
	if name != "" {
		if err := l.c.r.Backend().Remove(ctx, remote.Handle{Type: remote.Lock, Name: name}); err != nil {
			l.c.log.Warn("cannot remove the repository lock", "err", err)
		}
	}
}

func (c *Cache) lockLoop() {
	defer c.wg.Done()
	t := time.NewTicker(lockRefresh)
	defer t.Stop()
	for {
		select {
		case <-c.bg.Done():
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(c.bg, lockRefresh)
			if err := c.rlock.refresh(ctx); err != nil && c.bg.Err() == nil {
				c.log.Warn("cannot refresh the repository lock", "err", err)
			}
			cancel()
		}
	}
}
