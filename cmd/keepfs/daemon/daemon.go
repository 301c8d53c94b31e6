// Package daemon runs one mount: the cache, the FUSE server and the control
// socket through which the CLI asks for status, sync and unmount.
//
// The control socket lives in the state directory (mode 0600) and only
// answers peers with the daemon's uid or root (SO_PEERCRED). Clients trust
// it only the other way round: the socket must belong to them or root and
// the daemon's peer uid be theirs or root's (CheckSocket, dial). Its protocol
// is one JSON request and one JSON response per connection; "unmount"
// answers twice: once the final snapshot is in the remote, and again with
// the outcome of the shutdown (cache closed, queue drained), so that the
// client returns only when the state directory is at rest.
//
// SIGINT/SIGTERM (a cancelled Run context) unmount the same way; a second
// signal exits at once, which is as safe as kill -9.
package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/keepfs/keepfs/cache"
	"github.com/keepfs/keepfs/fs"
	"github.com/keepfs/keepfs/policy/audit"
	"github.com/keepfs/keepfs/policy/notify"
	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/erase"
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
	// Metrics, if set, counts FUSE requests (and whatever the caller
	// wrapped with it, such as the remote); MetricsListen, if set, serves
	// them at /metrics on host:port or unix:/path.
	Metrics       *Metrics
	MetricsListen string
	// Notifier raises integrity events (bound to the state directory);
	// ScrubInterval and ScrubCycle pace the scrub (0: no scrub);
	// AlertAfter is how long the remote may not answer before an event.
	Notifier      *notify.Notifier
	ScrubInterval time.Duration
	ScrubCycle    time.Duration
	AlertAfter    time.Duration
}

// Request is what a client sends.
type Request struct {
	Op     string `json:"op"` // "status", "sync", "unmount", "prune"
	DryRun bool   `json:"dry_run,omitempty"`
	// Timeout bounds how long sync and unmount wait for the remote
	// (DefaultTimeout if zero). Force makes unmount go ahead when the
	// remote did not take everything in time; what is left stays queued
	// in the state directory for the next mount.
	Timeout time.Duration `json:"timeout,omitempty"`
	Force   bool          `json:"force,omitempty"`
	// LockWait is how long prune and erase retry while another client
	// holds a conflicting lock (--retry-lock).
	LockWait time.Duration `json:"lock_wait,omitempty"`
	// Erase is an erase request (op "erase"), paths from the mount's root.
	Erase *erase.Options `json:"erase,omitempty"`
	// Restored is what an in-place restore brought back through the mount
	// (op "restored"): the daemon holds the keys, so it writes the audit
	// entry the client cannot.
	Restored *Restored `json:"restored,omitempty"`
}

// Restored describes one in-place restore: paths from the mount's root and
// the snapshot each came from.
type Restored struct {
	Paths     []string `json:"paths"`
	Snapshots []string `json:"snapshots"`
	Failed    bool     `json:"failed,omitempty"`
}

// DefaultTimeout is how long sync and unmount wait for the remote.
const DefaultTimeout = 2 * time.Minute

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
	Erase    *erase.Result     `json:"erase,omitempty"`
	// TimedOut says that sync or unmount gave up waiting for the remote
	// after the request's timeout; Status then says what is left queued.
	TimedOut bool `json:"timed_out,omitempty"`
	// Uploaded is what the snapshot a sync stored added to the repository,
	// in bytes (0 when the sync found nothing changed): a client watching
	// the queue may have missed a drain that was over between two looks.
	Uploaded int64 `json:"uploaded,omitempty"`

	// Repo is the repository's location (what --repo names), so that a
	// command given only a path in the mount can open the repository.
	Repo string `json:"repo,omitempty"`

	// Incidents are the open integrity incidents of the state directory.
	Incidents []notify.Incident `json:"incidents,omitempty"`
}

type daemon struct {
	cfg  Config
	c    *cache.Cache
	srv  *fuse.Server
	log  *slog.Logger
	stop chan struct{} // closed when an unmount was requested
	once sync.Once
	// done is closed when Run returns: unmount requests hold their
	// connection open until then, so the client knows the daemon finished.
	done chan struct{}
	// final is Run's result, set before done is closed; waiters counts
	// unmount requests still to be told it.
	final   error
	waiters sync.WaitGroup
	// forced is set by an unmount --force whose sync did not finish:
	// shutdown then waits for the remote only briefly, leaving the queue
	// in the state directory.
	forced atomic.Bool
	// served is closed once the kernel's connection is gone (the file
	// system unmounted, lazily detached ones once their last file closed).
	served chan struct{}

	// settle waits until .versions shows the newest snapshot (set once
	// the file system is mounted, fs.Options.OnVersions).
	settle atomic.Pointer[func(context.Context) error]

	pruneMu   sync.Mutex // one prune at a time
	lastPrune time.Time  // guarded by pruneMu

	// bg bounds background work (retention); cancelled when shutdown starts.
	bg       context.Context
	cancelBg context.CancelFunc
	bgWG     sync.WaitGroup

	// mountAudit is the mount's audit entry, appended in the background
	// so a slow remote does not delay the mount; the unmount entry waits
	// for it, so the two stay in order.
	mountAudit sync.WaitGroup
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
	limitMemory()
	if stop := startProfile(log); stop != nil {
		defer stop()
	}
	sock := filepath.Join(cfg.Cache.StateDir, SocketName)
	c, err := cache.Open(ctx, r, cfg.Cache)
	if err != nil {
		return err
	}
	d := &daemon{cfg: cfg, c: c, log: log, stop: make(chan struct{}), done: make(chan struct{})}
	go watchPeakHeap(log, d.done)
	defer func() {
		close(d.done)
		// Let unmount clients read the outcome before the process exits.
		waitTimeout(&d.waiters, 5*time.Second)
	}()
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
	if cfg.MetricsListen != "" && cfg.Metrics == nil {
		cfg.Metrics = NewMetrics()
		d.cfg.Metrics = cfg.Metrics
	}
	if m := cfg.Metrics; m != nil {
		state := cfg.Cache.StateDir
		m.openIncidents = func() int {
			store, err := notify.OpenStore(state)
			if err != nil {
				return 0
			}
			open, _ := store.OpenIncidents()
			return len(open)
		}
		cfg.FS.WrapRaw = m.wrapFUSE
		c.OnSnapshot(func(sn *repo.Snapshot) { m.snapshotTaken(sn.Time) })
		go d.countSnapshots(ctx)
	}
	if cfg.MetricsListen != "" {
		stopMetrics, err := d.serveMetrics(cfg.MetricsListen)
		if err != nil {
			c.Close(context.WithoutCancel(ctx))
			return err
		}
		defer stopMetrics()
	}
	fo := cfg.FS
	fo.OnVersions = func(settle func(context.Context) error) { d.settle.Store(&settle) }
	srv, err := fs.Mount(cfg.Mountpoint, c, fo)
	if err != nil {
		c.Close(context.WithoutCancel(ctx))
		return err
	}
	d.srv = srv
	go d.serve(ln)
	d.auditMount(r)
	d.bgWG.Add(1)
	go d.watch(r)
	log.Info("mounted", "mountpoint", cfg.Mountpoint, "state", cfg.Cache.StateDir)
	if cfg.Ready != nil {
		cfg.Ready()
	}
	// Under systemd (Type=notify) the unit is started once the mount serves.
	notifyLog(log, "READY=1\nSTATUS=serving "+cfg.Mountpoint+"\nMAINPID="+strconv.Itoa(os.Getpid()))
	if every := watchdogInterval(); every > 0 {
		wctx, stopWatchdog := context.WithCancel(context.Background())
		defer stopWatchdog()
		go d.watchdog(wctx, every)
	}

	external := make(chan struct{})
	d.served = external
	go func() { srv.Wait(); close(external) }()
	select {
	case <-ctx.Done():
		notifyLog(log, "STOPPING=1\nSTATUS=signal: final snapshot and upload")
		log.Info("signal: unmounting (a second signal stops at once)")
		d.forceOnSecondSignal()
	case <-d.stop:
		notifyLog(log, "STOPPING=1\nSTATUS=unmount: final snapshot and upload")
	case <-external:
		notifyLog(log, "STOPPING=1\nSTATUS=unmounted from outside: final snapshot and upload")
		log.Warn("unmounted from outside; committing what is left")
		writeHeapProfile(log)
		d.stopBackground()
		d.final = d.closeCache()
		d.auditUnmount(r, "outside")
		return d.final
	}
	writeHeapProfile(log)
	d.stopBackground()
	d.final = d.shutdown()
	d.auditUnmount(r, "request")
	return d.final
}

// auditMount records the mount in the audit log (the mount point only as
// a keyed hash). The mount never waits for the remote here: an entry the
// remote does not take is queued in the state directory's mirror, and the
// unmount entry (or the next command using this state directory) pushes
// it.
func (d *daemon) auditMount(r *repo.Repository) {
	if err := r.SetAuditMirror(d.cfg.Cache.StateDir); err != nil {
		d.log.Warn("audit mirror", "err", err)
	}
	d.mountAudit.Add(1)
	go func() {
		defer d.mountAudit.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		d.appendAudit(ctx, r, audit.Entry{Action: audit.ActionMount, Paths: []string{r.AuditPathHash(d.cfg.Mountpoint)}})
	}()
}

// auditUnmount records the end of the mount and its outcome.
func (d *daemon) auditUnmount(r *repo.Repository, by string) {
	d.mountAudit.Wait()
	wait := time.Minute
	if d.forced.Load() {
		wait = forcedCloseWait
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	e := audit.Entry{Action: audit.ActionUnmount, Paths: []string{r.AuditPathHash(d.cfg.Mountpoint)},
		Details: map[string]string{"by": by}}
	if d.final != nil {
		e.Outcome = audit.OutcomeFailed
	}
	d.appendAudit(ctx, r, e)
}

func (d *daemon) appendAudit(ctx context.Context, r *repo.Repository, e audit.Entry) {
	if _, err := r.AppendAudit(ctx, e); errors.Is(err, audit.ErrQueued) {
		d.log.Warn("audit entry queued in the state directory; it is pushed with the next one", "action", e.Action, "err", err)
	} else if err != nil {
		d.log.Warn("audit entry not recorded", "action", e.Action, "err", err)
	}
}

func waitTimeout(wg *sync.WaitGroup, d time.Duration) {
	ch := make(chan struct{})
	go func() { wg.Wait(); close(ch) }()
	select {
	case <-ch:
	case <-time.After(d):
	}
}

// forceOnSecondSignal lets an impatient user (Ctrl-C twice) stop a
// shutdown that waits on a slow or unreachable remote. Exiting then is as
// safe as kill -9: everything closed or fsynced is committed in the state
// directory, and its upload resumes at the next mount.
func (d *daemon) forceOnSecondSignal() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		var s os.Signal
		select {
		case s = <-sig:
		case <-d.done:
			signal.Stop(sig)
			return
		}
		d.log.Warn("second signal: exiting without waiting for the upload; it resumes at the next mount", "signal", s.String())
		_ = lazyUnmount(d.cfg.Mountpoint)
		os.Exit(1)
	}()
}

// stopBackground cancels a running retention prune and waits for it.
func (d *daemon) stopBackground() {
	d.cancelBg()
	d.bgWG.Wait()
}

// shutdown takes the final snapshot while the mount still answers, then
// unmounts and closes the cache (which commits anything written since).
func (d *daemon) shutdown() error {
	if !d.forced.Load() {
		if _, _, err := d.syncWithin(DefaultTimeout); err != nil {
			d.log.Error("final sync", "err", err)
		}
	}
	lazy, err := d.unmount()
	if err != nil {
		d.log.Error("unmount", "err", err)
	}
	if lazy && err == nil {
		// Files are still open: the kernel keeps the connection, and
		// sends what they write and their closes, until the last one is
		// closed. Served meanwhile, that is committed like any close.
		select {
		case <-d.served:
		case <-time.After(openFilesWait):
			d.log.Warn("files are still open after the unmount; closing without what they write from now on (their writers get errors)", "waited", openFilesWait)
		}
	}
	return d.closeCache()
}

// openFilesWait bounds how long an unmount detached while files were
// open keeps serving them, so that a writer that closes soon loses
// nothing; the unmount client waits 30 s for the daemon to exit.
var openFilesWait = 15 * time.Second

// forcedCloseWait bounds the final snapshot and drain of a forced unmount:
// the remote already failed to answer within the request's timeout.
const forcedCloseWait = 10 * time.Second

func (d *daemon) closeCache() error {
	wait := 10 * time.Minute
	if d.forced.Load() {
		wait = forcedCloseWait
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := d.c.Close(ctx); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	return nil
}

// unmount retries while the mount is busy, then detaches it lazily (lazy
// reports that): what was closed or fsynced is committed, and a stuck
// process must not keep the daemon (shutdown serves open files a while).
func (d *daemon) unmount() (lazy bool, err error) {
	// Each try runs fusermount3 (a few hundred ms): bound the time, not
	// the count, so a busy mount costs about two seconds.
	for deadline := time.Now().Add(2 * time.Second); ; {
		if err = d.srv.Unmount(); err == nil {
			return false, nil
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	d.log.Warn("mount busy; detaching lazily", "err", err)
	if lerr := lazyUnmount(d.cfg.Mountpoint); lerr != nil {
		return true, errors.Join(err, lerr)
	}
	return true, nil
}

// lazyUnmount detaches mnt now and lets the kernel finish when it is no
// longer busy. umount2 needs CAP_SYS_ADMIN; fusermount3 (setuid) does it
// for ordinary users.
func lazyUnmount(mnt string) error {
	if err := unix.Unmount(mnt, unix.MNT_DETACH); err == nil {
		return nil
	}
	if out, err := exec.Command("fusermount3", "-u", "-z", mnt).CombinedOutput(); err != nil {
		return fmt.Errorf("fusermount3 -u -z %s: %w: %s", mnt, err, strings.TrimSpace(string(out)))
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
	uid, err := peerUID(conn)
	return err == nil && (uid == 0 || int(uid) == os.Getuid())
}

// peerUID returns the uid of the process at the other end of conn.
func peerUID(conn *net.UnixConn) (uint32, error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if cerr != nil {
		return 0, cerr
	}
	return cred.Uid, nil
}

// maxRequest bounds what the daemon reads of one request.
const maxRequest = 64 << 10

func (d *daemon) handle(conn *net.UnixConn) {
	defer conn.Close()
	enc := json.NewEncoder(conn)
	// Read the (small, bounded) request before judging the peer: answering
	// and closing first would make the client's write fail with EPIPE and
	// hide the reason from it.
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var req Request
	derr := json.NewDecoder(io.LimitReader(conn, maxRequest)).Decode(&req)
	_ = conn.SetReadDeadline(time.Time{})
	if !peerAllowed(conn) {
		_ = enc.Encode(Response{Error: "permission denied: the control socket answers only its owner"})
		return
	}
	if derr != nil {
		_ = enc.Encode(Response{Error: "bad request: " + derr.Error()})
		return
	}
	resp := Response{OK: true, Mount: d.cfg.Mountpoint, PID: os.Getpid(), RepoID: d.c.Repository().Config().ID}
	resp.Repo = d.c.Repository().Backend().Location()
	ctx := context.Background()
	switch req.Op {
	case "status":
		st := d.c.Status()
		resp.Status = &st
		if store, err := notify.OpenStore(d.cfg.Cache.StateDir); err == nil {
			resp.Incidents, _ = store.OpenIncidents()
		}
	case "sync", "unmount":
		// Unmount snapshots before answering too, so the client returns
		// only when the remote holds it; the unmount itself follows.
		before := d.c.Status().LastSnapshotID
		sn, timedOut, err := d.syncWithin(req.Timeout)
		st := d.c.Status()
		if err != nil && (req.Op != "unmount" || !req.Force) {
			// An unmount that could not sync keeps the mount (and its
			// uploader) running: nothing is lost, and the queue drains
			// when the remote returns.
			resp = Response{Error: err.Error(), Status: &st, TimedOut: timedOut, Mount: d.cfg.Mountpoint, PID: os.Getpid()}
			break
		}
		if err != nil {
			d.log.Warn("unmount --force: going ahead without the remote; the queue stays in the state directory", "err", err)
			d.forced.Store(true)
			resp.TimedOut = timedOut
			resp.Error = err.Error()
		}
		if sn != nil {
			// As .versions and the other commands name it: an import may
			// have stored a snapshot in the same second.
			nctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			resp.Snapshot = d.c.Repository().NameOf(nctx, sn)
			cancel()
			// A script that reads .versions/latest once sync returns
			// must find this snapshot there, not the one before it.
			if settle := d.settle.Load(); settle != nil && req.Op != "unmount" {
				sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				if err := (*settle)(sctx); err != nil {
					d.log.Warn(".versions still shows an older snapshot after the sync", "err", err)
				}
				cancel()
			}
			if sn.ID.String() != before {
				resp.Uploaded = sn.Stats.BytesAdded
			}
		}
		resp.Status = &st
		if req.Op == "unmount" {
			// Answer now, then keep the connection until shutdown is over
			// and send its outcome: the client returns only when the cache
			// is closed, so a remount finds the state directory at rest.
			d.waiters.Add(1)
			defer d.waiters.Done()
			d.once.Do(func() { close(d.stop) })
			_ = enc.Encode(resp)
			<-d.done
			fin := Response{OK: d.final == nil, Mount: d.cfg.Mountpoint, PID: os.Getpid()}
			if d.final != nil {
				fin.Error = "shutdown: " + d.final.Error()
			}
			_ = enc.Encode(fin)
			return
		}
	case "erase":
		if req.Erase == nil {
			resp = Response{Error: "erase: no request"}
			break
		}
		opts := *req.Erase
		opts.Lock.Wait = req.LockWait
		d.pruneMu.Lock()
		res, err := d.c.Erase(ctx, opts)
		d.pruneMu.Unlock()
		if err != nil {
			resp = Response{Error: err.Error()}
			break
		}
		resp.Erase = res
	case "restored":
		if req.Restored == nil || len(req.Restored.Paths) == 0 {
			resp = Response{Error: "restored: no paths"}
			break
		}
		r := d.c.Repository()
		e := audit.Entry{Action: audit.ActionRestore, Details: map[string]string{
			"in_place": "true", "snapshots": strings.Join(req.Restored.Snapshots, ","),
		}}
		for _, p := range req.Restored.Paths {
			e.Paths = append(e.Paths, r.AuditPathHash(p))
		}
		if req.Restored.Failed {
			e.Outcome = audit.OutcomeFailed
		}
		actx, cancel := context.WithTimeout(ctx, time.Minute)
		d.appendAudit(actx, r, e)
		cancel()
	case "prune":
		res, err := d.prune(ctx, repo.PruneOptions{DryRun: req.DryRun, Lock: repo.LockOptions{Wait: req.LockWait}}, "prune")
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

// syncWithin runs a sync and waits for it at most limit (DefaultTimeout if
// not positive). The sync may be stuck behind a periodic snapshot that
// waits on the remote, so the wait is bounded here rather than only by the
// context handed to it; a sync given up on is cancelled and ends by itself.
// Nothing is lost either way: everything committed stays queued durably.
func (d *daemon) syncWithin(limit time.Duration) (sn *repo.Snapshot, timedOut bool, err error) {
	if limit <= 0 {
		limit = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	type result struct {
		sn  *repo.Snapshot
		err error
	}
	done := make(chan result, 1)
	go func() {
		sn, err := d.c.Sync(ctx)
		done <- result{sn, err}
	}()
	select {
	case r := <-done:
		if r.err != nil && ctx.Err() != nil {
			return nil, true, r.err
		}
		return r.sn, false, r.err
	case <-ctx.Done():
		return nil, true, fmt.Errorf("sync did not finish within %s", limit)
	}
}

func (d *daemon) prune(ctx context.Context, opts repo.PruneOptions, by string) (*repo.PruneResult, error) {
	d.pruneMu.Lock()
	defer d.pruneMu.Unlock()
	dryRun := opts.DryRun
	res, err := d.c.Prune(ctx, opts)
	if !dryRun {
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		d.appendAudit(actx, d.c.Repository(), repo.PruneAuditEntry(res, err, by))
		cancel()
	}
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
	if _, err := d.prune(ctx, repo.PruneOptions{}, "retention"); err != nil {
		d.log.Warn("applying retention failed; will retry after the next snapshot", "err", err)
	}
}

// Harden makes the calling process non-dumpable (PR_SET_DUMPABLE 0): it
// writes no core file, and other processes of the same user can neither
// ptrace it nor read its /proc/PID/mem, environ or fds. The mount process
// holds the master key and the plaintext of open files for its whole life,
// so it calls this before reading the passphrase.
func Harden() error {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("make the mount process non-dumpable: %w", err)
	}
	return nil
}

// Call sends one request to the daemon behind sock.
func Call(ctx context.Context, sock string, op string) (*Response, error) {
	return Send(ctx, sock, Request{Op: op})
}

// Send sends req to the daemon behind sock.
func Send(ctx context.Context, sock string, req Request) (*Response, error) {
	conn, _, resp, err := exchange(ctx, sock, req)
	if conn != nil {
		conn.Close()
	}
	return resp, err
}

// exchange sends req and reads the first response, leaving the connection
// open (when non-nil) for a request that answers twice.
func exchange(ctx context.Context, sock string, req Request) (net.Conn, *json.Decoder, *Response, error) {
	op := req.Op
	conn, err := dial(ctx, sock)
	if err != nil {
		return nil, nil, nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if err := json.NewEncoder(conn).Encode(req); err != nil {
		return conn, nil, nil, fmt.Errorf("send %s: %w", op, err)
	}
	dec := json.NewDecoder(conn)
	var resp Response
	if err := dec.Decode(&resp); err != nil {
		if ctx.Err() != nil {
			return conn, nil, nil, ctx.Err()
		}
		return conn, nil, nil, fmt.Errorf("%s: no answer from the daemon: %w", op, err)
	}
	if !resp.OK {
		return conn, dec, &resp, errors.New(resp.Error)
	}
	return conn, dec, &resp, nil
}

// Client talks to one daemon's control socket; each call is one connection.
type Client struct {
	sock string
}

// Dial returns a client for the daemon behind sock. It fails when nothing
// listens there, so callers can say so before sending anything.
func Dial(ctx context.Context, sock string) (*Client, error) {
	conn, err := dial(ctx, sock)
	if err != nil {
		return nil, err
	}
	conn.Close()
	return &Client{sock: sock}, nil
}

// ErrUntrusted is wrapped when a control socket, or the process behind it,
// is not the caller's (or root's): any user can mount a fuse.keepfs file
// system whose source names a socket of their own, so the mount table alone
// proves nothing.
var ErrUntrusted = errors.New("untrusted keepfs control socket")

// CheckSocket refuses a control socket the caller must not trust: it must
// be a socket, owned by the caller's effective uid or root, and writable by
// nobody else (the daemon makes it 0600).
func CheckSocket(sock string) error {
	var st unix.Stat_t
	if err := unix.Lstat(sock, &st); err != nil {
		return fmt.Errorf("no keepfs daemon answers at %s: %w", sock, &os.PathError{Op: "lstat", Path: sock, Err: err})
	}
	euid := uint32(os.Geteuid())
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFSOCK:
		return fmt.Errorf("%w: %s is not a socket", ErrUntrusted, sock)
	case st.Uid != euid && st.Uid != 0:
		return fmt.Errorf("%w: %s belongs to uid %d, not to you (uid %d) or root; refusing to talk to it", ErrUntrusted, sock, st.Uid, euid)
	case st.Mode&0o022 != 0:
		return fmt.Errorf("%w: %s is writable by others (mode %04o); refusing to talk to it", ErrUntrusted, sock, st.Mode&0o7777)
	}
	return nil
}

// dial connects to the daemon behind sock after CheckSocket, and refuses a
// listener (found by SO_PEERCRED) run by another user: the socket file
// could be swapped between the check and the connect.
func dial(ctx context.Context, sock string) (net.Conn, error) {
	if err := CheckSocket(sock); err != nil {
		return nil, err
	}
	var dl net.Dialer
	conn, err := dl.DialContext(ctx, "unix", sock)
	if err != nil {
		return nil, fmt.Errorf("no keepfs daemon answers at %s: %w", sock, err)
	}
	uid, err := peerUID(conn.(*net.UnixConn))
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("%w: %s: cannot tell who listens: %w", ErrUntrusted, sock, err)
	}
	if euid := uint32(os.Geteuid()); uid != euid && uid != 0 {
		conn.Close()
		return nil, fmt.Errorf("%w: %s is served by uid %d, not by you (uid %d) or root; refusing to talk to it", ErrUntrusted, sock, uid, euid)
	}
	return conn, nil
}

// HelloTimeout bounds Hello: a daemon that does not answer its status by
// then (stopped, hung) is passed over rather than waited for forever.
var HelloTimeout = 10 * time.Second

// Hello asks the daemon behind sock for its status and checks that it is a
// keepfs daemon serving repository wantRepo (any repository when empty),
// so that a path resolved through its mount names a file of that
// repository. It waits at most HelloTimeout: commands ask every keepfs
// mount on the machine, and one stopped daemon (of any repository) hung
// prune, erase and restore for good.
func Hello(ctx context.Context, sock, wantRepo string) (*Response, error) {
	hctx, cancel := context.WithTimeout(ctx, HelloTimeout)
	defer cancel()
	resp, err := Send(hctx, sock, Request{Op: "status"})
	if err != nil {
		if ctx.Err() == nil && (hctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded)) {
			return nil, fmt.Errorf("the keepfs daemon at %s did not answer within %s (stopped or hung?)", sock, HelloTimeout)
		}
		return nil, err
	}
	if resp.RepoID == "" {
		return nil, fmt.Errorf("%w: %s did not name its repository; is it a keepfs daemon?", ErrUntrusted, sock)
	}
	if wantRepo != "" && resp.RepoID != wantRepo {
		return nil, fmt.Errorf("the keepfs mount at %s serves repository %s, not %s (the one --repo names)", resp.Mount, short(resp.RepoID), short(wantRepo))
	}
	return resp, nil
}

func short(id string) string {
	if len(id) > 16 {
		return id[:16]
	}
	return id
}

// Status returns the daemon's cache status.
func (c *Client) Status(ctx context.Context) (*Response, error) {
	return Send(ctx, c.sock, Request{Op: "status"})
}

// Sync returns once the remote holds a snapshot of everything closed or
// fsynced before the call.
func (c *Client) Sync(ctx context.Context) (*Response, error) {
	return Send(ctx, c.sock, Request{Op: "sync"})
}

// SyncWithin is Sync with the daemon's wait for the remote bounded by
// timeout; on timeout the error response has TimedOut set and a Status.
func (c *Client) SyncWithin(ctx context.Context, timeout time.Duration) (*Response, error) {
	return Send(ctx, c.sock, Request{Op: "sync", Timeout: timeout})
}

// Unmount asks for a final snapshot and an unmount, and returns once the
// daemon has finished shutting down (cache closed, queue drained). The
// response names the final snapshot; the daemon process exits right after.
func (c *Client) Unmount(ctx context.Context) (*Response, error) {
	return c.UnmountWith(ctx, 0, false)
}

// UnmountWith is Unmount with the daemon's wait for the remote bounded by
// timeout (DefaultTimeout if zero). If the remote does not take everything
// in time, the daemon keeps the mount and answers an error with TimedOut
// set, unless force: then it unmounts anyway, the first response carries
// the sync's error and the queue stays in the state directory.
func (c *Client) UnmountWith(ctx context.Context, timeout time.Duration, force bool) (*Response, error) {
	conn, dec, resp, err := exchange(ctx, c.sock, Request{Op: "unmount", Timeout: timeout, Force: force})
	if conn != nil {
		defer conn.Close()
	}
	if err != nil {
		return resp, err
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	var fin Response
	if err := dec.Decode(&fin); err != nil {
		if ctx.Err() != nil {
			return resp, ctx.Err()
		}
		return resp, fmt.Errorf("the daemon (pid %d) exited without confirming a clean shutdown: %w; see its log", resp.PID, err)
	}
	if !fin.OK {
		return resp, errors.New(fin.Error)
	}
	return resp, nil
}

// startProfile writes a CPU profile of the daemon to $KEEPFS_CPUPROFILE
// until it exits: the mount's cost is in this process, not the client's.
func startProfile(log *slog.Logger) (stop func()) {
	path := os.Getenv("KEEPFS_CPUPROFILE")
	if path == "" {
		return nil
	}
	f, err := os.Create(path)
	if err != nil {
		log.Warn("cannot write a CPU profile", "err", err)
		return nil
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		log.Warn("cannot start the CPU profile", "err", err)
		return nil
	}
	return func() { pprof.StopCPUProfile(); f.Close() }
}

// writeHeapProfile writes the live heap to $KEEPFS_MEMPROFILE as shutdown
// begins, when the caches still hold what the mount's work left there.
func writeHeapProfile(log *slog.Logger) {
	path := os.Getenv("KEEPFS_MEMPROFILE")
	if path == "" {
		return
	}
	f, err := os.Create(path)
	if err == nil {
		err = pprof.Lookup("heap").WriteTo(f, 0)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		log.Warn("cannot write a heap profile", "err", err)
	}
}

// memoryLimit is the Go memory past which the daemon's garbage collector
// works harder. With GOGC at 25 the heap may grow a quarter past the live
// data before a collection; during an upload drain the live heap reaches
// 120-150 MiB (pack buffers, a memtable flush, a commit's chunker), and
// the garbage on top of it is what set the daemon's peak RSS (issue 18).
// 168 MiB caps that garbage there and stays above the live heap of every
// step of the mount bench, so the collector does not run back to back;
// 150 took little more off the peak for twice the collections in a drain,
// and 128-140 slowed cp -a and sync several times (docs/architecture.md,
// "Issue 18, fourth pass").
const memoryLimit = 168 << 20

// limitMemory sets memoryLimit unless GOMEMLIMIT says otherwise.
func limitMemory() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memoryLimit)
	}
}
