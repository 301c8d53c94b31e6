// Package sftp is the remote backend for a repository on an SSH server,
// spoken over SFTP (OpenSSH's sftp-server or internal-sftp).
//
// Nouns: a Backend is one repository directory on one server; it holds at
// most one connection (an SSH client plus an SFTP session over it) at a
// time, shared by concurrent calls, and dials a new one on the next call
// after the old one died. The server's host key is always checked against a
// known_hosts file unless the caller explicitly opts out.
//
// Objects use the layout of remote.ObjectPath. Save uploads to a temporary
// name in the object's folder, fsyncs it (fsync@openssh.com), and moves it
// into place with a hard link (hardlink@openssh.com, which never replaces)
// or, without that extension, with SFTP v3 rename, which servers refuse
// over an existing file — so an object is either whole or absent, and never
// overwritten.
//
// Transport failures (refused connection, dropped or silent connection)
// wrap remote.ErrUnreachable. A keepalive detects a silent server: when a
// keepalive goes unanswered for Config.KeepAlive the connection is closed
// and every call blocked on it fails.
package sftp

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"github.com/keepfs/keepfs/remote"
)

// Config says where the repository is and how to reach it.
type Config struct {
	User string // default: the current user
	Host string
	Port int // default 22
	// Path is the repository directory on the server; a relative path is
	// relative to the login directory.
	Path string

	// KnownHostsFile lists the trusted host keys (default ~/.ssh/known_hosts).
	KnownHostsFile string
	// InsecureIgnoreHostKey accepts any host key: an explicit opt-in for
	// throwaway setups, since it allows a man in the middle.
	InsecureIgnoreHostKey bool
	// IdentityFiles are private keys to offer. Default: whichever of
	// ~/.ssh/id_ed25519, id_ecdsa and id_rsa exist. Keys in the agent at
	// SSH_AUTH_SOCK are offered too. Passphrase-protected files are
	// skipped (load them into ssh-agent instead).
	IdentityFiles []string

	// DialTimeout bounds connecting, handshake and SFTP start (default 20s).
	DialTimeout time.Duration
	// KeepAlive is the keepalive period and how long an unanswered
	// keepalive may stay so before the connection is declared dead
	// (default 15s).
	KeepAlive time.Duration
	// AllowNoFsync accepts a server without the fsync@openssh.com
	// extension. Without it an object the server acknowledged can still be
	// lost in the server's page cache by a crash or power cut, after the
	// local copy was dropped; so such a server is refused unless the caller
	// opts in (--sftp-no-fsync).
	AllowNoFsync bool
	// MaxConcurrentRequests is how many SFTP requests one transfer keeps in
	// flight (default 64).
	MaxConcurrentRequests int
	// Logger gets connection events (default slog.Default()).
	Logger *slog.Logger
}

// ErrHostKey is wrapped when the server's host key is unknown or does not
// match known_hosts. ErrAuth is wrapped when the server accepts none of our
// keys. Both also match fs.ErrPermission, so retry decorators treat them as
// permanent.
var (
	ErrHostKey = errors.New("host key verification failed")
	ErrAuth    = errors.New("ssh authentication failed")
	ErrNoFsync = errors.New("sftp server cannot fsync")
)

// refused is a permanent connection error with a one-line, actionable
// message.
type refused struct {
	msg  string
	kind error
}

func (e *refused) Error() string { return e.msg }

func (e *refused) Is(target error) bool { return target == e.kind || target == fs.ErrPermission }

// Backend is a remote.Storage over SFTP. It is safe for concurrent use.
type Backend struct {
	cfg     Config
	addr    string
	root    string
	log     *slog.Logger
	signers []ssh.Signer // from identity files
	hostKey ssh.HostKeyCallback
	algos   []string // host key algorithms known_hosts has keys for

	// connMu is a one-slot semaphore rather than a mutex so that callers
	// waiting for a dial can give up when their context ends.
	connMu chan struct{}
	cur    *conn // guarded by connMu
	closed bool  // guarded by connMu
}

var (
	_ remote.Storage     = (*Backend)(nil)
	_ remote.RangeOpener = (*Backend)(nil)
)

// conn is one SSH connection and its SFTP session.
type conn struct {
	ssh       *ssh.Client
	sftp      *sftp.Client
	hardlink  bool
	fsync     bool
	dead      chan struct{} // closed once the SSH connection is gone
	closeOnce sync.Once
}

// kill drops the connection; calls blocked on it fail. The SSH side goes
// first: closing the SFTP client waits for its write lock, which a write
// stuck on a silent peer holds until the socket closes.
func (c *conn) kill() {
	c.closeOnce.Do(func() {
		_ = c.ssh.Close()
		go func() { _ = c.sftp.Close() }()
	})
}

func (c *conn) isDead() bool {
	select {
	case <-c.dead:
		return true
	default:
		return false
	}
}

// Open connects to an existing repository directory. A missing directory
// is an error wrapping remote.ErrNotFound.
func Open(ctx context.Context, cfg Config) (*Backend, error) {
	b, err := newBackend(cfg)
	if err != nil {
		return nil, err
	}
	c, err := b.conn(ctx)
	if err != nil {
		return nil, err
	}
	fi, err := c.sftp.Stat(b.root)
	if err != nil {
		b.Close()
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("open %s: no repository directory: %w", b.Location(), remote.ErrNotFound)
		}
		return nil, b.classify(c, "open", b.root, err)
	}
	if !fi.IsDir() {
		b.Close()
		return nil, fmt.Errorf("open %s: not a directory", b.Location())
	}
	return b, nil
}

// Create makes the directory structure of a new repository (creating the
// directory and its parents if needed) and returns the open backend. A
// directory that already holds a config is refused with remote.ErrExists.
func Create(ctx context.Context, cfg Config) (*Backend, error) {
	b, err := newBackend(cfg)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*Backend, error) {
		b.Close()
		return nil, err
	}
	c, err := b.conn(ctx)
	if err != nil {
		return fail(err)
	}
	if err := c.sftp.MkdirAll(b.root); err != nil {
		return fail(b.classify(c, "create", b.root, err))
	}
	if err := c.sftp.Chmod(b.root, 0o700); err != nil {
		return fail(b.classify(c, "create", b.root, err))
	}
	if _, err := c.sftp.Stat(b.path(remote.Handle{Type: remote.Config})); err == nil {
		return fail(fmt.Errorf("create %s: %w", b.Location(), remote.ErrExists))
	}
	for _, t := range remote.Types {
		if t == remote.Config {
			continue
		}
		if err := b.mkdir(c, path.Join(b.root, string(t))); err != nil {
			return fail(b.classify(c, "create", b.root, err))
		}
	}
	return b, nil
}

func newBackend(cfg Config) (*Backend, error) {
	if cfg.Host == "" {
		return nil, errors.New("sftp: no host given")
	}
	if cfg.Port == 0 {
		cfg.Port = 22
	}
	if cfg.User == "" {
		u, err := currentUser()
		if err != nil {
			return nil, err
		}
		cfg.User = u
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 20 * time.Second
	}
	if cfg.KeepAlive <= 0 {
		cfg.KeepAlive = 15 * time.Second
	}
	if cfg.MaxConcurrentRequests <= 0 {
		cfg.MaxConcurrentRequests = 64
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	root := path.Clean(cfg.Path)
	if cfg.Path == "" {
		root = "."
	}
	b := &Backend{
		cfg:    cfg,
		addr:   net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port)),
		root:   root,
		log:    cfg.Logger.With("remote", "sftp", "host", cfg.Host),
		connMu: make(chan struct{}, 1),
	}
	var err error
	if b.signers, err = loadIdentities(cfg.IdentityFiles, b.log); err != nil {
		return nil, err
	}
	if b.hostKey, b.algos, err = hostKeyCallback(cfg, b.addr); err != nil {
		return nil, err
	}
	return b, nil
}

// Location implements remote.Storage: sftp://user@host:port/path, with a
// relative path written /~/path as package location parses it.
func (b *Backend) Location() string {
	p := b.root
	if !path.IsAbs(p) {
		p = "/~/" + strings.TrimPrefix(p, "./")
	}
	return "sftp://" + b.cfg.User + "@" + b.addr + p
}

func (b *Backend) path(h remote.Handle) string {
	return path.Join(b.root, remote.ObjectPath(h))
}

// conn returns the live connection, dialling one if there is none.
func (b *Backend) conn(ctx context.Context) (*conn, error) {
	select {
	case b.connMu <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("sftp %s: %w", b.addr, ctx.Err())
	}
	defer func() { <-b.connMu }()
	if b.closed {
		return nil, fmt.Errorf("sftp %s: backend closed", b.addr)
	}
	if b.cur != nil && !b.cur.isDead() {
		return b.cur, nil
	}
	if b.cur != nil {
		b.log.Info("reconnecting")
	}
	c, err := b.dial(ctx)
	if err != nil {
		return nil, err
	}
	b.cur = c
	return c, nil
}

func (b *Backend) dial(ctx context.Context) (*conn, error) {
	d := net.Dialer{Timeout: b.cfg.DialTimeout}
	nc, err := d.DialContext(ctx, "tcp", b.addr)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("sftp connect %s: %w", b.addr, ctx.Err())
		}
		return nil, fmt.Errorf("sftp connect %s: %w: %w", b.addr, remote.ErrUnreachable, err)
	}
	// The deadline bounds handshake and SFTP start against a server that
	// accepts and then says nothing; cancelling ctx cuts it short.
	_ = nc.SetDeadline(time.Now().Add(b.cfg.DialTimeout))
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	var hostKeyErr error
	agentConn, agentSigners := agentSigners(b.log)
	if agentConn != nil {
		defer agentConn.Close()
	}
	signers := append(agentSigners, b.signers...)
	if len(signers) == 0 {
		nc.Close()
		return nil, &refused{kind: ErrAuth, msg: fmt.Sprintf("sftp %s: no SSH key to log in with: no agent at SSH_AUTH_SOCK and no usable identity file (looked for %s)", b.addr, strings.Join(b.identityCandidates(), ", "))}
	}
	clientCfg := &ssh.ClientConfig{
		User: b.cfg.User,
		Auth: []ssh.AuthMethod{ssh.PublicKeys(signers...)},
		HostKeyCallback: func(hostname string, remoteAddr net.Addr, key ssh.PublicKey) error {
			hostKeyErr = b.hostKey(hostname, remoteAddr, key)
			return hostKeyErr
		},
		HostKeyAlgorithms: b.algos,
		Timeout:           b.cfg.DialTimeout,
	}
	sc, chans, reqs, err := ssh.NewClientConn(nc, b.addr, clientCfg)
	if err != nil {
		nc.Close()
		switch {
		case hostKeyErr != nil:
			return nil, hostKeyErr
		case ctx.Err() != nil:
			return nil, fmt.Errorf("sftp connect %s: %w", b.addr, ctx.Err())
		case strings.Contains(err.Error(), "unable to authenticate"):
			return nil, &refused{kind: ErrAuth, msg: fmt.Sprintf("sftp %s: the server accepted none of our keys for user %q (%d offered)", b.addr, b.cfg.User, len(signers))}
		}
		return nil, fmt.Errorf("sftp connect %s: %w: %w", b.addr, remote.ErrUnreachable, err)
	}
	client := ssh.NewClient(sc, chans, reqs)
	sc2, err := sftp.NewClient(client,
		sftp.UseConcurrentWrites(true),
		sftp.UseConcurrentReads(true),
		sftp.MaxConcurrentRequestsPerFile(b.cfg.MaxConcurrentRequests),
	)
	if err != nil {
		client.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("sftp start %s: %w", b.addr, ctx.Err())
		}
		return nil, fmt.Errorf("sftp start %s (is the sftp subsystem enabled?): %w: %w", b.addr, remote.ErrUnreachable, err)
	}
	if !stop() {
		// ctx ended just as we finished; the deadline may already be set.
		client.Close()
		return nil, fmt.Errorf("sftp connect %s: %w", b.addr, ctx.Err())
	}
	_ = nc.SetDeadline(time.Time{})
	c := &conn{ssh: client, sftp: sc2, dead: make(chan struct{})}
	_, c.hardlink = sc2.HasExtension("hardlink@openssh.com")
	_, c.fsync = sc2.HasExtension("fsync@openssh.com")
	if err := checkFsync(b.addr, c.fsync, b.cfg.AllowNoFsync); err != nil {
		_ = sc2.Close()
		client.Close()
		return nil, err
	}
	go func() {
		_ = client.Wait()
		close(c.dead)
	}()
	go b.keepAlive(c)
	b.log.Debug("connected", "hardlink", c.hardlink, "fsync", c.fsync)
	return c, nil
}

// checkFsync decides whether a server with (has) or without the
// fsync@openssh.com extension may hold the repository: without it an
// uploaded object is durable only when the server happens to flush it, so
// it is refused unless allow (Config.AllowNoFsync) says otherwise.
func checkFsync(addr string, has, allow bool) error {
	if has || allow {
		return nil
	}
	return &refused{kind: ErrNoFsync, msg: fmt.Sprintf("sftp %s: the server does not offer fsync@openssh.com, so uploads could be lost in a server crash; use an OpenSSH server, or pass --sftp-no-fsync to accept the risk", addr)}
}

// keepAlive closes c when the server stops answering, so that calls
// blocked on a silent connection fail instead of hanging.
func (b *Backend) keepAlive(c *conn) {
	t := time.NewTicker(b.cfg.KeepAlive)
	defer t.Stop()
	for {
		select {
		case <-c.dead:
			return
		case <-t.C:
		}
		answered := make(chan error, 1)
		go func() {
			_, _, err := c.ssh.SendRequest("keepalive@openssh.com", true, nil)
			answered <- err
		}()
		timeout := time.NewTimer(b.cfg.KeepAlive)
		select {
		case err := <-answered:
			timeout.Stop()
			if err != nil {
				c.kill()
				return
			}
		case <-timeout.C:
			b.log.Warn("server stopped answering, closing connection", "after", b.cfg.KeepAlive)
			c.kill()
			return
		case <-c.dead:
			timeout.Stop()
			return
		}
	}
}

// classify wraps err from an SFTP call on c. Answers from the server
// (missing file, permission, failure status) pass through; anything else
// means the transport broke, so c is dropped for the next call to redial.
func (b *Backend) classify(c *conn, op, what string, err error) error {
	var status *sftp.StatusError
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s %s: %w", op, what, remote.ErrNotFound)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s %s: %w", op, what, err)
	case errors.Is(err, fs.ErrPermission), errors.As(err, &status):
		return fmt.Errorf("%s %s on %s: %w", op, what, b.addr, err)
	}
	// io.EOF lands here too: the library reports both a closed channel
	// and a server's EOF status as io.EOF, and the latter cannot happen
	// for reads within the size we just stat'ed of an immutable object.
	c.kill()
	return fmt.Errorf("%s %s on %s: %w: %w", op, what, b.addr, remote.ErrUnreachable, err)
}

// call runs one SFTP request, returning early if ctx ends; the request
// itself finishes (or fails with the connection) in the background. Only
// requests that leave nothing behind on the server go through it.
func call[T any](ctx context.Context, fn func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := fn()
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// transferSlice bounds how much one Save or Load moves between context
// checks; each slice is itself split into concurrent SFTP requests.
const transferSlice = 4 << 20

// Save implements remote.Storage.
func (b *Backend) Save(ctx context.Context, h remote.Handle, data []byte) error {
	if err := h.Valid(); err != nil {
		return fmt.Errorf("save: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("save %s: %w", h, err)
	}
	c, err := b.conn(ctx)
	if err != nil {
		return fmt.Errorf("save %s: %w", h, err)
	}
	final := b.path(h)
	dir := path.Dir(final)
	tmp := path.Join(dir, remote.TempPrefix+randomSuffix())
	f, err := c.sftp.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
	if errors.Is(err, fs.ErrNotExist) {
		if err := b.mkdirFor(c, h); err != nil {
			return err
		}
		f, err = c.sftp.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
	}
	if err != nil {
		return b.classify(c, "save", h.String(), err)
	}
	placed := false
	closed := false
	defer func() {
		if !closed {
			_ = f.Close()
		}
		if !placed && !c.isDead() {
			_ = c.sftp.Remove(tmp)
		}
	}()
	// The server creates files 0666 minus its umask; objects are for the
	// owner only.
	if err := f.Chmod(0o600); err != nil {
		return b.classify(c, "save", h.String(), err)
	}
	for off := 0; off < len(data); off += transferSlice {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("save %s: %w", h, err)
		}
		if _, err := f.Write(data[off:min(off+transferSlice, len(data))]); err != nil {
			return b.classify(c, "save", h.String(), err)
		}
	}
	if c.fsync {
		if err := f.Sync(); err != nil {
			return b.classify(c, "save", h.String(), err)
		}
	}
	closed = true
	if err := f.Close(); err != nil {
		return b.classify(c, "save", h.String(), err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("save %s: %w", h, err)
	}
	if err := b.place(c, tmp, final); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("save %s: %w", h, remote.ErrExists)
		}
		return b.classify(c, "save", h.String(), err)
	}
	placed = true
	return nil
}

// place moves tmp to final without ever replacing final; an existing final
// is reported as fs.ErrExist.
func (b *Backend) place(c *conn, tmp, final string) error {
	var err error
	if c.hardlink {
		if err = c.sftp.Link(tmp, final); err == nil {
			_ = c.sftp.Remove(tmp)
			return nil
		}
	} else {
		// SFTP v3 rename fails if the target exists (OpenSSH implements
		// it with link+unlink); the Stat only gives a clearer error.
		if _, serr := c.sftp.Lstat(final); serr == nil {
			return fs.ErrExist
		}
		if err = c.sftp.Rename(tmp, final); err == nil {
			return nil
		}
	}
	// Servers answer a generic failure for an existing target; look.
	if _, serr := c.sftp.Lstat(final); serr == nil {
		return fs.ErrExist
	}
	return err
}

// mkdirFor creates the folders of h, but never the repository root: a
// missing root means the repository is gone, not that it needs creating.
func (b *Backend) mkdirFor(c *conn, h remote.Handle) error {
	typeDir := path.Join(b.root, string(h.Type))
	dirs := []string{typeDir}
	if h.Type == remote.Pack {
		dirs = append(dirs, path.Dir(b.path(h)))
	}
	for _, d := range dirs {
		if err := b.mkdir(c, d); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("save %s: repository directory %s is gone: %w", h, b.Location(), remote.ErrUnreachable)
			}
			return b.classify(c, "save", h.String(), err)
		}
	}
	return nil
}

func (b *Backend) mkdir(c *conn, dir string) error {
	err := c.sftp.Mkdir(dir)
	if err == nil {
		return c.sftp.Chmod(dir, 0o700)
	}
	// Servers answer a generic failure for an existing directory.
	if fi, serr := c.sftp.Stat(dir); serr == nil && fi.IsDir() {
		return nil
	}
	return err
}

// Load implements remote.Storage.
func (b *Backend) Load(ctx context.Context, h remote.Handle, offset, length int64) ([]byte, error) {
	r, err := b.openRange(ctx, h, offset, length)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	buf := make([]byte, r.sr.Size())
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, err
	}
	return buf, nil
}

// Open implements remote.RangeOpener: one open and one stat for the whole
// range, which is read as the caller goes (a restore reads a pack's extent
// this way), instead of both for every piece of OpenRange's fallback.
func (b *Backend) Open(ctx context.Context, h remote.Handle, offset, length int64) (io.ReadCloser, error) {
	return b.openRange(ctx, h, offset, length)
}

func (b *Backend) openRange(ctx context.Context, h remote.Handle, offset, length int64) (*sftpRange, error) {
	if err := h.Valid(); err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("load %s: %w", h, err)
	}
	c, err := b.conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", h, err)
	}
	f, err := call(ctx, func() (*sftp.File, error) { return c.sftp.Open(b.path(h)) })
	if err != nil {
		return nil, b.classify(c, "load", h.String(), err)
	}
	fi, err := call(ctx, f.Stat)
	if err != nil {
		f.Close()
		return nil, b.classify(c, "load", h.String(), err)
	}
	n, err := remote.CheckRange(h, offset, length, fi.Size())
	if err != nil {
		f.Close()
		return nil, err
	}
	return &sftpRange{ctx: ctx, b: b, c: c, h: h, f: f, sr: io.NewSectionReader(f, offset, n)}, nil
}

// sftpRange reads a range of an open file a slice at a time, so that a
// cancel is seen between slices.
type sftpRange struct {
	ctx context.Context
	b   *Backend
	c   *conn
	h   remote.Handle
	f   *sftp.File
	sr  *io.SectionReader
}

func (r *sftpRange) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, fmt.Errorf("load %s: %w", r.h, err)
	}
	n, err := r.sr.Read(p[:min(len(p), transferSlice)])
	if err != nil && err != io.EOF {
		return n, r.b.classify(r.c, "load", r.h.String(), err)
	}
	if err == io.EOF {
		if pos, _ := r.sr.Seek(0, io.SeekCurrent); pos < r.sr.Size() {
			// Objects are immutable: one that shrank under us is
			// reported, not read short.
			return n, fmt.Errorf("load %s: the object ended at byte %d of %d: %w", r.h, pos, r.sr.Size(), io.ErrUnexpectedEOF)
		}
	}
	return n, err
}

func (r *sftpRange) Close() error { return r.f.Close() }

// Stat implements remote.Storage.
func (b *Backend) Stat(ctx context.Context, h remote.Handle) (remote.Info, error) {
	if err := h.Valid(); err != nil {
		return remote.Info{}, fmt.Errorf("stat: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return remote.Info{}, fmt.Errorf("stat %s: %w", h, err)
	}
	c, err := b.conn(ctx)
	if err != nil {
		return remote.Info{}, fmt.Errorf("stat %s: %w", h, err)
	}
	fi, err := call(ctx, func() (os.FileInfo, error) { return c.sftp.Stat(b.path(h)) })
	if err != nil {
		return remote.Info{}, b.classify(c, "stat", h.String(), err)
	}
	return remote.Info{Handle: h, Size: fi.Size()}, nil
}

// Remove implements remote.Storage.
func (b *Backend) Remove(ctx context.Context, h remote.Handle) error {
	if err := h.Valid(); err != nil {
		return fmt.Errorf("remove: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("remove %s: %w", h, err)
	}
	c, err := b.conn(ctx)
	if err != nil {
		return fmt.Errorf("remove %s: %w", h, err)
	}
	if _, err := call(ctx, func() (struct{}, error) { return struct{}{}, c.sftp.Remove(b.path(h)) }); err != nil {
		return b.classify(c, "remove", h.String(), err)
	}
	return nil
}

// List implements remote.Storage.
func (b *Backend) List(ctx context.Context, t remote.Type, fn func(remote.Info) error) error {
	if err := remote.ValidType(t); err != nil {
		return fmt.Errorf("list: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("list %s: %w", t, err)
	}
	if t == remote.Config {
		fi, err := b.Stat(ctx, remote.Handle{Type: remote.Config})
		if errors.Is(err, remote.ErrNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("list %s: %w", t, err)
		}
		return fn(fi)
	}
	c, err := b.conn(ctx)
	if err != nil {
		return fmt.Errorf("list %s: %w", t, err)
	}
	typeDir := path.Join(b.root, string(t))
	readDir := func(dir string) ([]os.FileInfo, error) {
		entries, err := c.sftp.ReadDirContext(ctx, dir)
		if err != nil && ctx.Err() != nil {
			return nil, fmt.Errorf("list %s: %w", t, ctx.Err())
		}
		if errors.Is(err, fs.ErrNotExist) && dir == typeDir {
			// No object of this type yet, unless the whole repository
			// is gone.
			if _, rerr := c.sftp.Stat(b.root); errors.Is(rerr, fs.ErrNotExist) {
				return nil, fmt.Errorf("list %s: repository directory %s is gone: %w", t, b.Location(), remote.ErrUnreachable)
			}
			return nil, nil
		}
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil // fan-out folder removed while listing
		}
		if err != nil {
			return nil, b.classify(c, "list", string(t), err)
		}
		return entries, nil
	}
	dirs := []string{typeDir}
	if t == remote.Pack {
		entries, err := readDir(typeDir)
		if err != nil {
			return err
		}
		dirs = dirs[:0]
		for _, e := range entries {
			if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
				dirs = append(dirs, path.Join(typeDir, e.Name()))
			}
		}
	}
	for _, dir := range dirs {
		entries, err := readDir(dir)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("list %s: %w", t, err)
			}
			h := remote.Handle{Type: t, Name: e.Name()}
			if !e.Mode().IsRegular() || h.Valid() != nil {
				continue // temporary files and strays are not objects
			}
			if err := fn(remote.Info{Handle: h, Size: e.Size()}); err != nil {
				return err
			}
		}
	}
	return nil
}

// Close implements remote.Storage. Calls after Close fail.
func (b *Backend) Close() error {
	b.connMu <- struct{}{}
	defer func() { <-b.connMu }()
	b.closed = true
	if b.cur != nil {
		b.cur.kill()
		<-b.cur.dead
		b.cur = nil
	}
	return nil
}

func randomSuffix() string {
	var buf [12]byte
	_, _ = rand.Read(buf[:])
	return hex.EncodeToString(buf[:])
}

// RemoveTemp implements remote.TempSweeper: every file below the
// repository directory whose name starts with remote.TempPrefix.
func (b *Backend) RemoveTemp(ctx context.Context) (remote.TempRemoved, error) {
	var out remote.TempRemoved
	c, err := b.conn(ctx)
	if err != nil {
		return out, fmt.Errorf("remove partial uploads: %w", err)
	}
	w := c.sftp.Walk(b.root)
	for w.Step() {
		if err := ctx.Err(); err != nil {
			return out, fmt.Errorf("remove partial uploads: %w", err)
		}
		if err := w.Err(); err != nil {
			if errors.Is(err, fs.ErrNotExist) && w.Path() != b.root {
				continue // removed while walking
			}
			return out, b.classify(c, "remove partial uploads in", b.root, err)
		}
		st := w.Stat()
		if st.IsDir() || !strings.HasPrefix(path.Base(w.Path()), remote.TempPrefix) {
			continue
		}
		if _, err := call(ctx, func() (struct{}, error) { return struct{}{}, c.sftp.Remove(w.Path()) }); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return out, b.classify(c, "remove partial upload", w.Path(), err)
		}
		out.Objects++
		out.Bytes += st.Size()
	}
	return out, nil
}

var _ remote.TempSweeper = (*Backend)(nil)
