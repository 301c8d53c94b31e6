// Package daemon runs one mount: the cache, the FUSE server and the control
// socket through which the CLI asks for status, sync and unmount.
//
// The control socket lives in the state directory (mode 0600) and only
// answers peers with the daemon's uid or root (SO_PEERCRED). Its protocol
// is one JSON request and one JSON response per connection.
package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/keepfs/keepfs/cache"
	"github.com/keepfs/keepfs/fs"
	"github.com/keepfs/keepfs/repo"
)

// SocketName is the control socket's name inside the state directory.
const SocketName = "control.sock"

// Config describes one mount.
type Config struct {
	Mountpoint string
	Cache      cache.Options // StateDir must be set
	FS         fs.Options
	Logger     *slog.Logger
	// Ready is called once the mount serves requests.
	Ready func()
}

// Request is what a client sends.
type Request struct {
	Op     string `json:"op"` // "status", "sync", "unmount", "prune"
	DryRun bool   `json:"dry_run,omitempty"`
}

// Response is what the daemon answers.
type Response struct {
	OK       bool              `json:"ok"`
	Error    string            `json:"error,omitempty"`
	Status   *cache.Status     `json:"status,omitempty"`
	Snapshot string            `json:"snapshot,omitempty"`
	Mount    string            `json:"mount,omitempty"`
	PID      int               `json:"pid,omitempty"`
	RepoID   string            `json:"repo_id,omitempty"`
	Prune    *repo.PruneResult `json:"prune,omitempty"`
}

type daemon struct {
	cfg  Config
	c    *cache.Cache
	srv  *fuse.Server
	log  *slog.Logger
	stop chan struct{} // closed when an unmount was requested
	once sync.Once

	pruneMu   sync.Mutex // one prune at a time
	lastPrune time.Time  // guarded by pruneMu

	// bg bounds background work (retention); cancelled when shutdown starts.
	bg       context.Context
	cancelBg context.CancelFunc
	bgWG     sync.WaitGroup
}

// retentionEvery bounds how often the daemon applies retention after
// snapshots: a prune reads every snapshot's trees.
const retentionEvery = time.Hour

// Run mounts and serves until ctx is cancelled (SIGINT/SIGTERM), an
// unmount is requested, or the file system is unmounted from outside.
// Shutdown commits, takes a final snapshot and waits until the remote holds
// it before unmounting.
func Run(ctx context.Context, r *repo.Repository, cfg Config) error {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	cfg.Cache.Logger = log
	sock := filepath.Join(cfg.Cache.StateDir, SocketName)
	c, err := cache.Open(ctx, r, cfg.Cache)
	if err != nil {
		return err
	}
	d := &daemon{cfg: cfg, c: c, log: log, stop: make(chan struct{})}
	d.bg, d.cancelBg = context.WithCancel(context.Background())
	c.OnSnapshot(func(*repo.Snapshot) {
		if d.bg.Err() != nil {
			return
		}
		d.bgWG.Add(1)
		go func() { defer d.bgWG.Done(); d.applyRetention() }()
	})

	// A socket left by a killed daemon is stale: the state lock we now hold
	// proves nobody serves it.
	_ = os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		c.Close(ctx)
		return fmt.Errorf("control socket: %w", err)
	}
	defer ln.Close()
	if err := os.Chmod(sock, 0o600); err != nil {
		c.Close(ctx)
		return fmt.Errorf("control socket: %w", err)
	}
	cfg.FS.FsName = sock
	cfg.FS.Logger = log
	srv, err := fs.Mount(cfg.Mountpoint, c, cfg.FS)
	if err != nil {
		c.Close(context.WithoutCancel(ctx))
		return err
	}
	d.srv = srv
	go d.serve(ln)
	log.Info("mounted", "mountpoint", cfg.Mountpoint, "state", cfg.Cache.StateDir)
	if cfg.Ready != nil {
		cfg.Ready()
	}

	external := make(chan struct{})
	go func() { srv.Wait(); close(external) }()
	select {
	case <-ctx.Done():
		log.Info("signal: unmounting")
	case <-d.stop:
	case <-external:
		log.Warn("unmounted from outside; committing what is left")
		d.stopBackground()
		return d.closeCache()
	}
	d.stopBackground()
	return d.shutdown()
}

// stopBackground cancels a running retention prune and waits for it.
func (d *daemon) stopBackground() {
	d.cancelBg()
	d.bgWG.Wait()
}

// shutdown takes the final snapshot while the mount still answers, then
// unmounts and closes the cache (which commits anything written since).
func (d *daemon) shutdown() error {
	ctx := context.Background()
	if _, err := d.c.Sync(ctx); err != nil {
		d.log.Error("final sync", "err", err)
	}
	if err := d.unmount(); err != nil {
		d.log.Error("unmount", "err", err)
	}
	return d.closeCache()
}

func (d *daemon) closeCache() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := d.c.Close(ctx); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	return nil
}

// unmount retries while the mount is busy, then detaches it lazily: the
// data is already committed, and a stuck process must not keep the daemon.
func (d *daemon) unmount() error {
	var err error
	for i := 0; i < 20; i++ {
		if err = d.srv.Unmount(); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	d.log.Warn("mount busy; detaching lazily", "err", err)
	if lerr := unix.Unmount(d.cfg.Mountpoint, unix.MNT_DETACH); lerr != nil {
		return errors.Join(err, lerr)
	}
	return nil
}

func (d *daemon) serve(ln net.Listener) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		go d.handle(conn.(*net.UnixConn))
	}
}

func peerAllowed(conn *net.UnixConn) bool {
	raw, err := conn.SyscallConn()
	if err != nil {
		return false
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil || cerr != nil {
		return false
	}
	return cred.Uid == 0 || int(cred.Uid) == os.Getuid()
}

func (d *daemon) handle(conn *net.UnixConn) {
	defer conn.Close()
	enc := json.NewEncoder(conn)
	if !peerAllowed(conn) {
		_ = enc.Encode(Response{Error: "permission denied: the control socket answers only its owner"})
		return
	}
	var req Request
	if err := json.NewDecoder(conn).Decode(&req); err != nil {
		_ = enc.Encode(Response{Error: "bad request: " + err.Error()})
		return
	}
	resp := Response{OK: true, Mount: d.cfg.Mountpoint, PID: os.Getpid(), RepoID: d.c.Repository().Config().ID}
	ctx := context.Background()
	switch req.Op {
	case "status":
		st := d.c.Status()
		resp.Status = &st
	case "sync", "unmount":
		// Unmount snapshots before answering too, so the client returns
		// only when the remote holds it; the unmount itself follows.
		sn, err := d.c.Sync(ctx)
		if err != nil {
			resp = Response{Error: err.Error()}
			break
		}
		if sn != nil {
			resp.Snapshot = sn.Name()
		}
		st := d.c.Status()
		resp.Status = &st
		if req.Op == "unmount" {
			d.once.Do(func() { close(d.stop) })
		}
	case "prune":
		res, err := d.prune(ctx, req.DryRun)
		if err != nil {
			resp = Response{Error: err.Error()}
			break
		}
		resp.Prune = res
	default:
		resp = Response{Error: fmt.Sprintf("unknown request %q", req.Op)}
	}
	_ = enc.Encode(resp)
}

func (d *daemon) prune(ctx context.Context, dryRun bool) (*repo.PruneResult, error) {
	d.pruneMu.Lock()
	defer d.pruneMu.Unlock()
	res, err := d.c.Prune(ctx, repo.PruneOptions{DryRun: dryRun})
	if err == nil && !dryRun {
		d.lastPrune = time.Now()
	}
	return res, err
}

// applyRetention runs after snapshots: with a retention policy stored in
// the repository, it prunes at most once per retentionEvery.
func (d *daemon) applyRetention() {
	d.pruneMu.Lock()
	due := time.Since(d.lastPrune) >= retentionEvery
	d.pruneMu.Unlock()
	if !due {
		return
	}
	ctx, cancel := context.WithTimeout(d.bg, 30*time.Minute)
	defer cancel()
	p, err := d.c.Repository().Retention(ctx)
	if err != nil {
		d.log.Warn("cannot read the retention policy", "err", err)
		return
	}
	if p.IsZero() {
		d.pruneMu.Lock()
		d.lastPrune = time.Now()
		d.pruneMu.Unlock()
		return
	}
	if _, err := d.prune(ctx, false); err != nil {
		d.log.Warn("applying retention failed; will retry after the next snapshot", "err", err)
	}
}

// Call sends one request to the daemon behind sock.
func Call(ctx context.Context, sock string, op string) (*Response, error) {
	return Send(ctx, sock, Request{Op: op})
}

// Send sends req to the daemon behind sock.
func Send(ctx context.Context, sock string, req Request) (*Response, error) {
	op := req.Op
	var dl net.Dialer
	conn, err := dl.DialContext(ctx, "unix", sock)
	if err != nil {
		return nil, fmt.Errorf("no keepfs daemon answers at %s: %w", sock, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if err := json.NewEncoder(conn).Encode(req); err != nil {
		return nil, fmt.Errorf("send %s: %w", op, err)
	}
	var resp Response
	if err := json.NewDecoder(conn).Decode(&resp); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%s: no answer from the daemon: %w", op, err)
	}
	if !resp.OK {
		return &resp, errors.New(resp.Error)
	}
	return &resp, nil
}
