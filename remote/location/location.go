// Package location turns a repository URL, as given to --repo, into an open
// remote.Storage.
//
// Accepted forms:
//
//	file:///abs/path          a local directory (file://localhost/abs/path too)
//	/abs/path, rel/path       a local directory; relative paths are made absolute
//	sftp://user@host:port/abs/path
//	sftp://host/~/rel/path    a path relative to the login directory
//	s3://host[:port]/bucket[/prefix]       an S3-compatible store over HTTPS
//	s3+http://host[:port]/bucket[/prefix]  the same over plain HTTP (a local test store)
//
// For sftp the user defaults to the current user and the port to 22. The
// path after the host is absolute: sftp://root@127.0.0.1:2222/srv/repo is
// /srv/repo on the server; start it with /~/ for one under the login
// directory. Passwords in URLs are refused: sftp logs in with SSH keys.
//
// For s3 the host is the service endpoint (s3.amazonaws.com,
// s3.eu-west-1.amazonaws.com, minio.example:9000), the first path element
// the bucket and the rest a key prefix. Credentials are never part of the
// URL: they come from the environment or a credentials file (see
// s3.ResolveCredentials).
package location

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/remote/s3"
	"github.com/keepfs/keepfs/remote/sftp"
)

// Options carries what a URL cannot say.
type Options struct {
	// KnownHostsFile, InsecureIgnoreHostKey and IdentityFile configure
	// sftp; see sftp.Config. Empty means the ssh defaults.
	KnownHostsFile        string
	InsecureIgnoreHostKey bool
	IdentityFile          string
	// AllowNoFsync accepts an SFTP server without fsync@openssh.com; see
	// sftp.Config.
	AllowNoFsync bool
	// S3CredentialsFile, S3Profile, S3Region and S3PathStyle configure s3;
	// see s3.CredentialOptions and s3.Config.
	S3CredentialsFile string
	S3Profile         string
	S3Region          string
	S3PathStyle       bool
	// S3CreateBucket makes Create create a missing bucket.
	S3CreateBucket bool
	// Retry tunes the retry decorator every opened store is wrapped in.
	Retry remote.RetryOptions
	// Logger is handed to the backend and the retry decorator.
	Logger *slog.Logger
}

// Scheme is the kind of store a URL names.
type Scheme string

const (
	File Scheme = "file"
	SFTP Scheme = "sftp"
	S3   Scheme = "s3"
	// S3HTTP is S3 over plain HTTP.
	S3HTTP Scheme = "s3+http"
)

// Location is a parsed repository URL.
type Location struct {
	Scheme Scheme
	// Path is the local directory (File) or the directory on the server
	// (SFTP; relative to the login directory unless absolute).
	Path string
	User string // SFTP only; empty means the current user
	Host string // SFTP and S3
	Port int    // SFTP; S3 when given (0: the scheme's default)
	// Bucket and Prefix (no leading or trailing slash) name the place in
	// an S3 store.
	Bucket string
	Prefix string
}

// IsS3 reports whether l names an S3 store.
func (l Location) IsS3() bool { return l.Scheme == S3 || l.Scheme == S3HTTP }

// Parse parses a repository URL. Errors are one line and say what form
// was expected.
func Parse(raw string) (Location, error) {
	if strings.TrimSpace(raw) == "" {
		return Location{}, fmt.Errorf("no repository given: pass --repo or set KEEPFS_REPO (file:///path or sftp://user@host:port/path)")
	}
	if !strings.Contains(raw, "://") {
		return parsePath(raw)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return Location{}, fmt.Errorf("bad repository URL %q: %w", raw, err)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return Location{}, fmt.Errorf("bad repository URL %q: query strings and fragments are not supported", raw)
	}
	switch Scheme(strings.ToLower(u.Scheme)) {
	case File:
		if u.Host != "" && u.Host != "localhost" {
			return Location{}, fmt.Errorf("bad repository URL %q: file URLs name a local path, write file:///path", raw)
		}
		if u.User != nil || u.Path == "" || !path.IsAbs(u.Path) {
			return Location{}, fmt.Errorf("bad repository URL %q: want file:///absolute/path", raw)
		}
		return Location{Scheme: File, Path: filepath.Clean(u.Path)}, nil
	case SFTP:
		return parseSFTP(raw, u)
	case S3, S3HTTP:
		return parseS3(raw, u)
	default:
		return Location{}, fmt.Errorf("bad repository URL %q: unsupported scheme %q (want file://, sftp:// or s3://)", raw, u.Scheme)
	}
}

func parsePath(raw string) (Location, error) {
	first, _, _ := strings.Cut(raw, "/")
	if !filepath.IsAbs(raw) && strings.Contains(first, ":") {
		return Location{}, fmt.Errorf("bad repository %q: for a remote repository write sftp://user@host/path (scp-style host:path is not supported)", raw)
	}
	abs, err := filepath.Abs(raw)
	if err != nil {
		return Location{}, fmt.Errorf("bad repository path %q: %w", raw, err)
	}
	return Location{Scheme: File, Path: abs}, nil
}

func parseSFTP(raw string, u *url.URL) (Location, error) {
	loc := Location{Scheme: SFTP, Host: u.Hostname(), Port: 22}
	if loc.Host == "" {
		return Location{}, fmt.Errorf("bad repository URL %q: no host, want sftp://user@host:port/path", raw)
	}
	if u.User != nil {
		if _, has := u.User.Password(); has {
			return Location{}, fmt.Errorf("bad repository URL %q: passwords in URLs are not supported, log in with an SSH key", redact(u))
		}
		loc.User = u.User.Username()
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return Location{}, fmt.Errorf("bad repository URL %q: bad port %q", raw, p)
		}
		loc.Port = n
	} else if strings.HasSuffix(u.Host, ":") {
		return Location{}, fmt.Errorf("bad repository URL %q: empty port", raw)
	}
	switch {
	case u.Path == "" || u.Path == "/":
		return Location{}, fmt.Errorf("bad repository URL %q: no repository path after the host, want sftp://user@host:port/path", raw)
	case u.Path == "/~" || u.Path == "/~/":
		loc.Path = "."
	case strings.HasPrefix(u.Path, "/~/"):
		loc.Path = path.Clean(strings.TrimPrefix(u.Path, "/~/"))
	default:
		loc.Path = path.Clean(u.Path)
	}
	return loc, nil
}

func parseS3(raw string, u *url.URL) (Location, error) {
	scheme := Scheme(strings.ToLower(u.Scheme))
	form := string(scheme) + "://host[:port]/bucket[/prefix]"
	if u.User != nil {
		// Never echo the URL: it may hold a secret key.
		return Location{}, fmt.Errorf("bad repository URL: credentials in s3 URLs are not supported; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or pass --s3-credentials-file")
	}
	loc := Location{Scheme: scheme, Host: u.Hostname()}
	if loc.Host == "" {
		return Location{}, fmt.Errorf("bad repository URL %q: no host, want %s", raw, form)
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return Location{}, fmt.Errorf("bad repository URL %q: bad port %q", raw, p)
		}
		loc.Port = n
	} else if strings.HasSuffix(u.Host, ":") {
		return Location{}, fmt.Errorf("bad repository URL %q: empty port", raw)
	}
	p := strings.Trim(u.Path, "/")
	bucket, prefix, _ := strings.Cut(p, "/")
	if bucket == "" {
		return Location{}, fmt.Errorf("bad repository URL %q: no bucket, want %s", raw, form)
	}
	if !validBucket(bucket) {
		return Location{}, fmt.Errorf("bad repository URL %q: %q is not a valid bucket name (3-63 characters: a-z, 0-9, '.', '-')", raw, bucket)
	}
	if prefix != "" {
		if strings.Contains(prefix, "//") || path.Clean("/"+prefix) != "/"+prefix {
			return Location{}, fmt.Errorf("bad repository URL %q: the key prefix %q has empty, '.' or '..' elements", raw, prefix)
		}
	}
	loc.Bucket, loc.Prefix = bucket, prefix
	return loc, nil
}

// validBucket checks the S3 bucket naming rules that matter for a URL.
func validBucket(b string) bool {
	if len(b) < 3 || len(b) > 63 {
		return false
	}
	for i, c := range b {
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || (c == '.' || c == '-') && i > 0 && i < len(b)-1
		if !ok {
			return false
		}
	}
	return true
}

// Endpoint is host[:port] of an S3 location.
func (l Location) Endpoint() string {
	if l.Port == 0 {
		return l.Host
	}
	return net.JoinHostPort(l.Host, strconv.Itoa(l.Port))
}

func redact(u *url.URL) string {
	c := *u
	c.User = url.User(u.User.Username())
	return c.String()
}

// String formats l as a URL that Parse reads back.
func (l Location) String() string {
	if l.Scheme == File {
		return "file://" + filepath.ToSlash(l.Path)
	}
	if l.IsS3() {
		s := string(l.Scheme) + "://" + l.Endpoint() + "/" + l.Bucket
		if l.Prefix != "" {
			s += "/" + l.Prefix
		}
		return s
	}
	p := l.Path
	if !path.IsAbs(p) {
		p = "/~/" + strings.TrimPrefix(p, "./")
	}
	user := ""
	if l.User != "" {
		user = l.User + "@"
	}
	return "sftp://" + user + l.Host + ":" + strconv.Itoa(l.Port) + p
}

func (o Options) sftpConfig(l Location) sftp.Config {
	cfg := sftp.Config{
		User:                  l.User,
		Host:                  l.Host,
		Port:                  l.Port,
		Path:                  l.Path,
		KnownHostsFile:        o.KnownHostsFile,
		InsecureIgnoreHostKey: o.InsecureIgnoreHostKey,
		AllowNoFsync:          o.AllowNoFsync,
		Logger:                o.Logger,
	}
	if o.IdentityFile != "" {
		cfg.IdentityFiles = []string{o.IdentityFile}
	}
	return cfg
}

func (o Options) s3Config(l Location) (s3.Config, error) {
	keys, err := s3.ResolveCredentials(s3.CredentialOptions{File: o.S3CredentialsFile, Profile: o.S3Profile})
	if err != nil {
		return s3.Config{}, err
	}
	return s3.Config{
		Endpoint:     l.Endpoint(),
		Insecure:     l.Scheme == S3HTTP,
		Bucket:       l.Bucket,
		Prefix:       l.Prefix,
		Region:       o.S3Region,
		PathStyle:    o.S3PathStyle,
		Keys:         keys,
		CreateBucket: o.S3CreateBucket,
		Logger:       o.Logger,
	}, nil
}

func (o Options) wrap(s remote.Storage) remote.Storage {
	r := o.Retry
	if r.Logger == nil {
		r.Logger = o.Logger
	}
	return remote.WithRetry(s, r)
}

// reach opens a networked store, trying again while it does not answer
// (remote.ErrUnreachable: refused, reset, timed out, a 5xx), as every call
// to it later is: a gateway restarting or an SSH server rebooting must not
// fail a backup job that could wait for it. Each retry logs a warning, so
// that a mistyped host shows at once; anything else fails at once.
func (o Options) reach(ctx context.Context, l Location, open func() (remote.Storage, error)) (remote.Storage, error) {
	r := o.Retry
	if r.Logger == nil {
		r.Logger = o.Logger
	}
	var s remote.Storage
	err := remote.Retry(ctx, r, "open "+l.String(), func() error {
		var err error
		s, err = open()
		if err != nil && !errors.Is(err, remote.ErrUnreachable) {
			return remote.Permanent(err)
		}
		return err
	})
	return s, err
}

// Open opens the existing repository at rawURL. A missing repository
// directory is an error wrapping remote.ErrNotFound.
func Open(ctx context.Context, rawURL string, opts Options) (remote.Storage, error) {
	l, err := Parse(rawURL)
	if err != nil {
		return nil, err
	}
	var s remote.Storage
	switch l.Scheme {
	case File:
		s, err = remote.NewFile(l.Path)
	case SFTP:
		s, err = opts.reach(ctx, l, func() (remote.Storage, error) { return sftp.Open(ctx, opts.sftpConfig(l)) })
	case S3, S3HTTP:
		var cfg s3.Config
		if cfg, err = opts.s3Config(l); err == nil {
			s, err = opts.reach(ctx, l, func() (remote.Storage, error) { return s3.Open(ctx, cfg) })
		}
	}
	if err != nil {
		return nil, err
	}
	if l.IsS3() {
		// Every GET is a round trip of milliseconds: read small blobs of a
		// pack a window at a time.
		return remote.WithReadAhead(opts.wrap(s), remote.ReadAheadOptions{}), nil
	}
	return opts.wrap(s), nil
}

// Create makes the folders of a new repository at rawURL and opens it. An
// existing repository (one with a config) is refused with remote.ErrExists.
func Create(ctx context.Context, rawURL string, opts Options) (remote.Storage, error) {
	l, err := Parse(rawURL)
	if err != nil {
		return nil, err
	}
	var s remote.Storage
	switch l.Scheme {
	case File:
		s, err = remote.CreateFile(l.Path)
	case SFTP:
		s, err = opts.reach(ctx, l, func() (remote.Storage, error) { return sftp.Create(ctx, opts.sftpConfig(l)) })
	case S3, S3HTTP:
		var cfg s3.Config
		if cfg, err = opts.s3Config(l); err == nil {
			s, err = opts.reach(ctx, l, func() (remote.Storage, error) { return s3.Create(ctx, cfg) })
		}
	}
	if err != nil {
		return nil, err
	}
	return opts.wrap(s), nil
}
