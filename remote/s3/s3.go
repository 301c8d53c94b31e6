// Package s3 is the remote.Storage backend for S3-compatible object stores
// (AWS S3, Ceph RGW, MinIO, SeaweedFS), on github.com/minio/minio-go/v7.
//
// Objects live under an optional key prefix in one bucket, with the same
// layout as the file backend (remote.ObjectPath: packs fan out over the
// first two characters of their name), so a repository can be copied
// between a directory and a bucket with ordinary tools.
//
// What the backend assumes of the store, and how it keeps the guarantees
// of remote.Storage (see also docs/architecture.md, Backends):
//
//   - A PUT is atomic: an object is visible whole or not at all. Every Save
//     is one PUT of the whole object (packs are ~16 MiB, far below the 5 GiB
//     single-PUT limit), never a multipart upload.
//   - Read-after-write and list-after-write are strongly consistent (AWS S3
//     since 2020, MinIO, SeaweedFS, Ceph RGW).
//   - Never overwrite: Save first HEADs the key and refuses an existing
//     object, then PUTs with "If-None-Match: *", so a store that honours
//     conditional writes (AWS S3 since 2024, MinIO, SeaweedFS) refuses a
//     racing writer atomically with 412, which becomes remote.ErrExists.
//     On a store that ignores the header, the HEAD is the only check and
//     two writers racing for one name can both "succeed", the later one
//     winning. keepfs tolerates that: packs, index segments, snapshots, key
//     slots, retention policies and deletion marks are named by the hash of
//     their content (a race writes identical bytes), locks carry a random
//     id, and the only objects with chosen names, the config and
//     generation/<n>, are written by init and under the repository's
//     exclusive lock, so no two clients race for them.
//   - Deletes are idempotent in S3; Remove HEADs first to report a missing
//     object as remote.ErrNotFound, as the interface asks.
//   - The store refuses a corrupted upload: every PUT carries the body's
//     CRC32C (x-amz-checksum-crc32c), and a Content-MD5 as well until the
//     store has answered one PUT with the CRC32C it computed, which shows
//     it checks it (AWS S3, MinIO, SeaweedFS); a store that does not
//     answer with it keeps getting Content-MD5, which every S3 store
//     checks. MD5 cost a tenth of an import's CPU; CRC32C runs in hardware.
//
// Errors: 404 → remote.ErrNotFound, 412 → remote.ErrExists, throttling
// (429, SlowDown), a body damaged on the way (BadDigest), 5xx, timeouts and
// transport failures, among them a GET's body cut off before the length
// the store announced → remote.ErrUnreachable (retried by remote.WithRetry;
// only a range the store answers as shorter than asked is a short read); 401/403 wrap fs.ErrPermission and other 4xx
// fs.ErrInvalid, which are not retried. minio-go's own retries are turned
// off so that remote.WithRetry alone decides, and reports, retries.
// Credentials never appear in errors, logs or Location.
package s3

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/keepfs/keepfs/remote"
)

// Config describes one repository in a bucket.
type Config struct {
	// Endpoint is host[:port] of the S3 service.
	Endpoint string
	// Insecure talks plain HTTP (s3+http://); the default is HTTPS.
	Insecure bool
	Bucket   string
	// Prefix is the key prefix of the repository inside the bucket, without
	// leading or trailing slashes; empty means the bucket's root.
	Prefix string
	// Region is the bucket's region; empty lets the client ask the store.
	Region string
	// PathStyle forces path-style requests (http://host/bucket/key); the
	// default picks virtual-host style where the endpoint allows it.
	PathStyle bool
	Keys      Keys
	// CreateBucket makes Create create a missing bucket.
	CreateBucket bool
	// SignPayload signs the SHA-256 of every uploaded body (minio-go's
	// streaming signature on plain HTTP). By default bodies are sent as
	// UNSIGNED-PAYLOAD, as minio-go always does over TLS: the signed
	// digest headers (CRC32C, and Content-MD5 for a store that does not
	// check that) still make the store refuse a body altered on the way,
	// and keepfs authenticates every object it reads back anyway. A store
	// that refuses unsigned payloads is asked again signed, and signed it
	// stays for the Store's life.
	SignPayload bool
	// ListPageSize is the number of keys asked for per listing request
	// (default and maximum 1000); tests lower it to exercise paging.
	ListPageSize int
	// Transport overrides the HTTP transport (tests).
	Transport http.RoundTripper
	// StallTimeout fails an upload whose body the connection has not
	// taken a byte of for this long (default 2m): a peer that accepted
	// the request and then froze. ResponseHeaderTimeout only starts once
	// the body is sent.
	StallTimeout time.Duration
	Logger       *slog.Logger
}

// Store is an S3 bucket (and prefix) holding one repository.
type Store struct {
	cfg    Config
	client *minio.Client
	core   minio.Core
	tr     *http.Transport // nil when cfg.Transport was given
	// signed is set once the store refused an unsigned payload (or
	// cfg.SignPayload asked for signing): uploads sign their bodies.
	signed atomic.Bool
	// digests is what the store is known to check of an upload's body:
	// crcUnknown, crcChecked or crcIgnored.
	digests atomic.Int32
	// wholeObjects is set once the store answered a ranged GET with the
	// whole object (it ignores Range): logged once.
	wholeObjects atomic.Bool
}

var (
	_ remote.Storage     = (*Store)(nil)
	_ remote.RangeOpener = (*Store)(nil)
)

// Open opens the repository at cfg. A missing bucket is an error wrapping
// remote.ErrNotFound.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	s, err := newStore(cfg)
	if err != nil {
		return nil, err
	}
	ok, err := s.bucketExists(ctx)
	if err != nil {
		s.Close()
		return nil, err
	}
	if !ok {
		s.Close()
		return nil, fmt.Errorf("%s: bucket %q does not exist (create it, or run init with --s3-create-bucket): %w", s.Location(), cfg.Bucket, remote.ErrNotFound)
	}
	return s, nil
}

// Create opens the repository at cfg for init: it creates the bucket if
// cfg.CreateBucket asks for it, and refuses a prefix that already holds a
// repository (a config object) with remote.ErrExists.
func Create(ctx context.Context, cfg Config) (*Store, error) {
	s, err := newStore(cfg)
	if err != nil {
		return nil, err
	}
	ok, err := s.bucketExists(ctx)
	if err == nil && !ok {
		if !cfg.CreateBucket {
			err = fmt.Errorf("%s: bucket %q does not exist (create it, or pass --s3-create-bucket): %w", s.Location(), cfg.Bucket, remote.ErrNotFound)
		} else if merr := s.client.MakeBucket(ctx, cfg.Bucket, minio.MakeBucketOptions{Region: cfg.Region}); merr != nil {
			err = s.classify(ctx, "create bucket", remote.Handle{}, merr)
		}
	}
	if err == nil {
		if _, serr := s.Stat(ctx, remote.Handle{Type: remote.Config}); serr == nil {
			err = fmt.Errorf("%s already holds a repository: %w", s.Location(), remote.ErrExists)
		} else if !errors.Is(serr, remote.ErrNotFound) {
			err = serr
		}
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func newStore(cfg Config) (*Store, error) {
	if cfg.Endpoint == "" || cfg.Bucket == "" {
		return nil, errors.New("s3: endpoint and bucket are required")
	}
	cfg.Prefix = strings.Trim(cfg.Prefix, "/")
	if cfg.ListPageSize <= 0 || cfg.ListPageSize > 1000 {
		cfg.ListPageSize = 1000
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.StallTimeout <= 0 {
		cfg.StallTimeout = 2 * time.Minute
	}
	s := &Store{cfg: cfg}
	s.signed.Store(cfg.SignPayload)
	rt := cfg.Transport
	if rt == nil {
		s.tr = &http.Transport{
			Proxy: http.ProxyFromEnvironment,
			DialContext: (&net.Dialer{
				Timeout:   10 * time.Second,
				KeepAlive: 15 * time.Second,
			}).DialContext,
			MaxIdleConns:        64,
			MaxIdleConnsPerHost: 32,
			// A store that accepted a request and then went silent (a
			// frozen server, a partition) fails the call within a minute
			// instead of hanging it; the retry decorator takes it from there.
			ResponseHeaderTimeout: time.Minute,
			IdleConnTimeout:       time.Minute,
			TLSHandshakeTimeout:   10 * time.Second,
			ExpectContinueTimeout: 10 * time.Second,
			DisableCompression:    true,
		}
		rt = s.tr
	}
	lookup := minio.BucketLookupAuto
	if cfg.PathStyle {
		lookup = minio.BucketLookupPath
	}
	client, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:        credentials.NewStaticV4(cfg.Keys.AccessKeyID, cfg.Keys.SecretAccessKey.Reveal(), cfg.Keys.SessionToken.Reveal()),
		Secure:       !cfg.Insecure,
		Transport:    rt,
		Region:       cfg.Region,
		BucketLookup: lookup,
		// remote.WithRetry retries, with backoff and health reporting;
		// minio-go retrying underneath would multiply the waits and hide
		// an outage from the mount's status for minutes.
		MaxRetries: 1,
	})
	if err != nil {
		// minio.New fails only on a malformed endpoint; its message holds no secret.
		return nil, fmt.Errorf("s3: endpoint %q: %w", cfg.Endpoint, err)
	}
	s.client = client
	s.core = minio.Core{Client: client}
	return s, nil
}

func (s *Store) bucketExists(ctx context.Context) (bool, error) {
	ok, err := s.client.BucketExists(ctx, s.cfg.Bucket)
	if err != nil {
		return false, s.classify(ctx, "open bucket", remote.Handle{}, err)
	}
	return ok, nil
}

// Location is s3://host/bucket/prefix (s3+http:// for plain HTTP).
func (s *Store) Location() string {
	scheme := "s3"
	if s.cfg.Insecure {
		scheme = "s3+http"
	}
	l := scheme + "://" + s.cfg.Endpoint + "/" + s.cfg.Bucket
	if s.cfg.Prefix != "" {
		l += "/" + s.cfg.Prefix
	}
	return l
}

func (s *Store) key(h remote.Handle) string {
	if s.cfg.Prefix == "" {
		return remote.ObjectPath(h)
	}
	return s.cfg.Prefix + "/" + remote.ObjectPath(h)
}

// Save PUTs data under h unless h exists (see the package comment).
func (s *Store) Save(ctx context.Context, h remote.Handle, data []byte) error {
	if err := h.Valid(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("save %s: %w", h, err)
	}
	// The HEAD is what refuses an overwrite on a store that ignores
	// If-None-Match; on the others it saves uploading 16 MiB for nothing.
	switch _, err := s.Stat(ctx, h); {
	case err == nil:
		return fmt.Errorf("save %s: %w", h, remote.ErrExists)
	case !errors.Is(err, remote.ErrNotFound):
		return err
	}
	// The store checks the body against its CRC32C (and, until it has
	// shown that it checks that, against its MD5) and refuses a corrupted
	// upload; see digests.
	crc := crc32.Checksum(data, castagnoli)
	sum := base64.StdEncoding.EncodeToString(binary.BigEndian.AppendUint32(nil, crc))
	opts := minio.PutObjectOptions{
		ContentType:  "application/octet-stream",
		UserMetadata: map[string]string{checksumHeader: sum},
	}
	opts.SetMatchETagExcept("*")
	var md5sum string
	sendMD5 := s.digests.Load() != crcChecked
	if sendMD5 {
		m := md5.Sum(data)
		md5sum = base64.StdEncoding.EncodeToString(m[:])
	}
	// Hashing every body with SHA-256 for the signature (and sending it in
	// signed 64 KiB chunks) costs more CPU than the rest of an upload;
	// see Config.SignPayload.
	unsigned := !s.signed.Load()
	opts.DisableContentSha256 = unsigned
	// minio.Core's PutObject is one PUT (atomic, and the condition above
	// applies to it: minio-go does not carry If-None-Match to
	// CompleteMultipartUpload) of the body as it is, with the digests
	// given here: the Client's would MD5 it itself, or refuse a checksum
	// header unless it may send it as an aws-chunked trailer.
	put := func() (minio.UploadInfo, error) {
		body := newStallReader(ctx, data, s.cfg.StallTimeout)
		defer body.stop()
		info, err := s.core.PutObject(body.ctx, s.cfg.Bucket, s.key(h), body, int64(len(data)), md5sum, "", opts)
		if err != nil && body.stalled.Load() && ctx.Err() == nil {
			return info, fmt.Errorf("save %s on %s: no byte of the body taken for %s (a frozen peer): %w",
				h, s.Location(), s.cfg.StallTimeout, remote.ErrUnreachable)
		}
		return info, err
	}
	info, err := put()
	if code := minio.ToErrorResponse(err).StatusCode; unsigned && (code == http.StatusBadRequest || code == http.StatusForbidden) &&
		minio.ToErrorResponse(err).Code != "BadDigest" {
		// Perhaps the store wants a signed payload: ask again signed, and
		// keep signing if that is what it takes.
		opts.DisableContentSha256 = false
		var serr error
		info, serr = put()
		if serr == nil {
			s.cfg.Logger.Warn("the S3 store refused an unsigned payload; signing uploads from now on", "store", s.Location(), "code", minio.ToErrorResponse(err).Code)
			s.signed.Store(true)
		}
		err = serr
	}
	if err == nil && sendMD5 && s.digests.Load() == crcUnknown {
		s.learnDigests(info.ChecksumCRC32C == sum)
	}
	return s.classify(ctx, "save", h, err)
}

// stallReader is an upload's body that cancels its request once the
// connection has taken nothing of it for a while.
type stallReader struct {
	r       *bytes.Reader // not embedded: a ReadAt would bypass Read
	ctx     context.Context
	timer   *time.Timer
	wait    time.Duration
	stalled atomic.Bool
	stop    func()
}

func newStallReader(ctx context.Context, data []byte, wait time.Duration) *stallReader {
	r := &stallReader{r: bytes.NewReader(data), wait: wait}
	var cancel context.CancelFunc
	r.ctx, cancel = context.WithCancel(ctx)
	r.timer = time.AfterFunc(wait, func() {
		r.stalled.Store(true)
		cancel()
	})
	r.stop = func() {
		r.timer.Stop()
		cancel()
	}
	return r
}

// Read counts as progress. (The transport reads the body as the
// connection takes it; a frozen peer stops the reads.)
func (r *stallReader) Read(p []byte) (int, error) {
	r.timer.Reset(r.wait)
	return r.r.Read(p)
}

// Seek lets the client rewind the body (signing reads it first).
func (r *stallReader) Seek(off int64, whence int) (int64, error) { return r.r.Seek(off, whence) }

// What the store is known to check of an upload (Store.digests).
const (
	// crcUnknown: uploads carry both a CRC32C and a Content-MD5.
	crcUnknown int32 = iota
	// crcChecked: the store answered with the CRC32C it computed, so it
	// checks the one it is sent; uploads carry no Content-MD5.
	crcChecked
	// crcIgnored: the store did not answer with a CRC32C; uploads keep
	// sending Content-MD5, which every S3 store checks.
	crcIgnored
)

// checksumHeader carries the CRC32C of an upload's body (S3's "additional
// checksums"). A store that knows it computes the CRC32C of what it
// received, refuses the PUT with BadDigest if they differ, and answers
// with the header; one that does not ignores it.
const checksumHeader = "x-amz-checksum-crc32c"

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// learnDigests records whether the store answered an upload with the
// CRC32C it was sent (see crcUnknown).
func (s *Store) learnDigests(echoed bool) {
	if echoed {
		s.digests.CompareAndSwap(crcUnknown, crcChecked)
		return
	}
	if s.digests.CompareAndSwap(crcUnknown, crcIgnored) {
		s.cfg.Logger.Info("the S3 store does not answer with the CRC32C of uploads; sending Content-MD5 with them", "store", s.Location())
	}
}

// Load GETs a byte range of h.
func (s *Store) Load(ctx context.Context, h remote.Handle, offset, length int64) ([]byte, error) {
	if err := h.Valid(); err != nil {
		return nil, err
	}
	if offset < 0 || length < 0 {
		return nil, fmt.Errorf("load %s: negative range [%d,+%d): %w", h, offset, length, fs.ErrInvalid)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("load %s: %w", h, err)
	}
	var opts minio.GetObjectOptions
	switch {
	case length > 0:
		opts.Set("Range", "bytes="+strconv.FormatInt(offset, 10)+"-"+strconv.FormatInt(offset+length-1, 10))
	case offset > 0:
		opts.Set("Range", "bytes="+strconv.FormatInt(offset, 10)+"-")
	}
	body, info, hdr, err := s.core.GetObject(ctx, s.cfg.Bucket, s.key(h), opts)
	if err != nil {
		if minio.ToErrorResponse(err).StatusCode == http.StatusRequestedRangeNotSatisfiable {
			return s.unsatisfiable(ctx, h, offset, length)
		}
		return nil, s.classify(ctx, "load", h, err)
	}
	defer body.Close()
	if opts.Header().Get("Range") != "" {
		if info.Size, err = s.toRange(h, hdr, body, offset, length, info.Size); err != nil {
			return nil, err
		}
	}
	if length > 0 {
		if info.Size >= 0 && info.Size < length {
			// A store answers a range running past the end with what it has.
			return nil, remote.ShortRange(h, offset, length, offset+info.Size)
		}
		buf := make([]byte, length)
		n, err := io.ReadFull(body, buf)
		switch {
		case info.Size < 0 && (errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)):
			// No length announced: what it has is all there is.
			return nil, remote.ShortRange(h, offset, length, offset+int64(n))
		case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
			// The body ended short of the length the store announced: the
			// connection was cut (a gateway or volume server lost mid-body),
			// a transport failure to retry, not an object shorter than the
			// range (a permanent error, and an integrity incident).
			return nil, fmt.Errorf("load %s [%d,+%d) on %s: the body ended after %d of %d bytes: %w",
				h, offset, length, s.Location(), n, info.Size, remote.ErrUnreachable)
		case err != nil:
			return nil, s.classify(ctx, "load", h, err)
		}
		return buf, nil
	}
	var buf bytes.Buffer
	if info.Size > 0 {
		buf.Grow(int(info.Size))
	}
	if _, err := buf.ReadFrom(body); err != nil {
		return nil, s.classify(ctx, "load", h, err)
	}
	if info.Size >= 0 && int64(buf.Len()) != info.Size {
		return nil, fmt.Errorf("load %s: got %d bytes, the store announced %d: %w", h, buf.Len(), info.Size, remote.ErrUnreachable)
	}
	return buf.Bytes(), nil
}

// toRange checks that a ranged GET's answer starts at offset and returns
// the size of what the body holds from there. A store that ignores Range
// answers with the whole object (no Content-Range): its first offset bytes
// are read past, so that the caller gets the bytes it asked for, not bytes
// from the object's start that would fail to decrypt and be reported as
// tampering. size is the body's announced length (-1 if none).
func (s *Store) toRange(h remote.Handle, hdr http.Header, body io.Reader, offset, length, size int64) (int64, error) {
	cr := hdr.Get("Content-Range")
	if cr == "" {
		if offset == 0 {
			return size, nil
		}
		if s.wholeObjects.CompareAndSwap(false, true) {
			s.cfg.Logger.Warn("the S3 store ignores ranged GETs and sends whole objects; reads cost more", "store", s.Location())
		}
		n, err := io.CopyN(io.Discard, body, offset)
		switch {
		case err == nil:
		case errors.Is(err, io.EOF) && (size < 0 || n == size):
			// The object ends before the range starts.
			return 0, remote.ShortRange(h, offset, length, n)
		default:
			return 0, fmt.Errorf("load %s [%d,+%d) on %s: the whole object's body ended after %d bytes: %w",
				h, offset, length, s.Location(), n, remote.ErrUnreachable)
		}
		if size >= 0 {
			size -= offset
		}
		return size, nil
	}
	var first int64
	if _, err := fmt.Sscanf(cr, "bytes %d-", &first); err != nil || first != offset {
		return 0, fmt.Errorf("load %s [%d,+%d) on %s: the store answered the range %q: %w",
			h, offset, length, s.Location(), cr, remote.ErrUnreachable)
	}
	return size, nil
}

// Open GETs a byte range of h and streams the body: a restore reads a
// pack's needed extent with one request, holding a blob at a time.
func (s *Store) Open(ctx context.Context, h remote.Handle, offset, length int64) (io.ReadCloser, error) {
	if err := h.Valid(); err != nil {
		return nil, err
	}
	if offset < 0 || length <= 0 {
		return nil, fmt.Errorf("open %s: range [%d,+%d): %w", h, offset, length, fs.ErrInvalid)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("load %s: %w", h, err)
	}
	var opts minio.GetObjectOptions
	opts.Set("Range", "bytes="+strconv.FormatInt(offset, 10)+"-"+strconv.FormatInt(offset+length-1, 10))
	body, info, hdr, err := s.core.GetObject(ctx, s.cfg.Bucket, s.key(h), opts)
	if err != nil {
		if minio.ToErrorResponse(err).StatusCode == http.StatusRequestedRangeNotSatisfiable {
			if _, err := s.unsatisfiable(ctx, h, offset, length); err != nil {
				return nil, err
			}
			// An empty range at the very end: nothing to stream.
			return nil, remote.ShortRange(h, offset, length, offset)
		}
		return nil, s.classify(ctx, "load", h, err)
	}
	if info.Size, err = s.toRange(h, hdr, body, offset, length, info.Size); err != nil {
		body.Close()
		return nil, err
	}
	if info.Size >= 0 && info.Size < length {
		// A store answers a range running past the end with what it has.
		body.Close()
		return nil, remote.ShortRange(h, offset, length, offset+info.Size)
	}
	return &bodyReader{s: s, ctx: ctx, h: h, body: body, left: length}, nil
}

// bodyReader is a GET's body: a transport failure part way, or a body
// shorter than the range, fails a Read with remote.ErrUnreachable (so
// the retry decorator opens the rest again), never with a bare io.EOF.
type bodyReader struct {
	s    *Store
	ctx  context.Context
	h    remote.Handle
	body io.ReadCloser
	left int64
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.body.Read(p)
	b.left -= int64(n)
	switch {
	case err == nil || b.left == 0:
		return n, nil
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return n, fmt.Errorf("load %s on %s: the body ended %d bytes short: %w", b.h, b.s.Location(), b.left, remote.ErrUnreachable)
	}
	return n, b.s.classify(b.ctx, "load", b.h, err)
}

func (b *bodyReader) Close() error { return b.body.Close() }

// unsatisfiable answers a range the store refused (416): an empty read at
// the very end is valid, anything else past the end is a short range.
func (s *Store) unsatisfiable(ctx context.Context, h remote.Handle, offset, length int64) ([]byte, error) {
	fi, err := s.Stat(ctx, h)
	if err != nil {
		return nil, err
	}
	n, err := remote.CheckRange(h, offset, length, fi.Size)
	if err != nil {
		return nil, err
	}
	if n != 0 {
		return nil, fmt.Errorf("load %s [%d,+%d): the store refused a range within %d bytes: %w", h, offset, length, fi.Size, remote.ErrUnreachable)
	}
	return []byte{}, nil
}

// Stat HEADs h.
func (s *Store) Stat(ctx context.Context, h remote.Handle) (remote.Info, error) {
	if err := h.Valid(); err != nil {
		return remote.Info{}, err
	}
	if err := ctx.Err(); err != nil {
		return remote.Info{}, fmt.Errorf("stat %s: %w", h, err)
	}
	oi, err := s.client.StatObject(ctx, s.cfg.Bucket, s.key(h), minio.StatObjectOptions{})
	if err != nil {
		return remote.Info{}, s.classify(ctx, "stat", h, err)
	}
	return remote.Info{Handle: h, Size: oi.Size}, nil
}

// List pages through the keys under t's folder (ListObjectsV2, up to
// ListPageSize keys per request) and skips any key that is not exactly the
// place of a valid handle of type t.
func (s *Store) List(ctx context.Context, t remote.Type, fn func(remote.Info) error) error {
	if err := remote.ValidType(t); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("list %s: %w", t, err)
	}
	prefix := s.key(remote.Handle{Type: t})
	if t != remote.Config {
		prefix += "/"
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for oi := range s.client.ListObjectsIter(ctx, s.cfg.Bucket, minio.ListObjectsOptions{
		Prefix:    prefix,
		Recursive: true,
		MaxKeys:   s.cfg.ListPageSize,
	}) {
		if oi.Err != nil {
			return s.classify(ctx, "list", remote.Handle{Type: t}, oi.Err)
		}
		h := remote.Handle{Type: t}
		if t != remote.Config {
			h.Name = oi.Key[strings.LastIndexByte(oi.Key, '/')+1:]
		}
		if h.Valid() != nil || s.key(h) != oi.Key {
			continue // a stray key, not one of ours
		}
		if err := fn(remote.Info{Handle: h, Size: oi.Size}); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// Remove deletes h, or reports remote.ErrNotFound if it is not there.
func (s *Store) Remove(ctx context.Context, h remote.Handle) error {
	if _, err := s.Stat(ctx, h); err != nil {
		return err
	}
	err := s.client.RemoveObject(ctx, s.cfg.Bucket, s.key(h), minio.RemoveObjectOptions{})
	return s.classify(ctx, "remove", h, err)
}

// Close drops idle connections.
func (s *Store) Close() error {
	if s.tr != nil {
		s.tr.CloseIdleConnections()
	}
	return nil
}

// classify turns a minio-go or transport error into one the rest of keepfs
// understands (see the package comment). The message names the operation,
// object and the store's error code; never the credentials.
func (s *Store) classify(ctx context.Context, op string, h remote.Handle, err error) error {
	if err == nil {
		return nil
	}
	what := op
	if h.Type != "" {
		what += " " + h.String()
	}
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("%s: %w", what, cerr)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		// A transport deadline (not ours): the store did not answer in time.
		return fmt.Errorf("%s on %s: %w: %v", what, s.Location(), remote.ErrUnreachable, err)
	}
	if untrustedCert(err) {
		// Never transient: retried, it only delays the answer.
		return fmt.Errorf("%s on %s: the server's TLS certificate is not trusted: %v: %w", what, s.Location(), err, fs.ErrPermission)
	}
	var er minio.ErrorResponse
	if !errors.As(err, &er) || (er.StatusCode == 0 && er.Code == "") {
		// No answer from the store: connection refused or reset, timeout, DNS.
		return fmt.Errorf("%s on %s: %w: %v", what, s.Location(), remote.ErrUnreachable, err)
	}
	status := er.StatusCode
	desc := er.Code
	if desc == "" {
		desc = http.StatusText(status)
	}
	desc = fmt.Sprintf("%s (HTTP %d)", desc, status)
	switch {
	case er.Code == "NoSuchKey" || status == http.StatusNotFound && er.Code != "NoSuchBucket":
		return fmt.Errorf("%s: %w", what, remote.ErrNotFound)
	case er.Code == "NoSuchBucket":
		return fmt.Errorf("%s: bucket %q does not exist at %s: %w", what, s.cfg.Bucket, s.cfg.Endpoint, remote.ErrNotFound)
	case status == http.StatusPreconditionFailed || er.Code == "PreconditionFailed":
		return fmt.Errorf("%s: %w", what, remote.ErrExists)
	case status == http.StatusUnauthorized || status == http.StatusForbidden ||
		er.Code == "AccessDenied" || er.Code == "InvalidAccessKeyId" || er.Code == "SignatureDoesNotMatch" ||
		er.Code == "ExpiredToken" || er.Code == "InvalidToken":
		src := s.cfg.Keys.Source
		if src == "" {
			src = "the configured credentials"
		}
		return &deniedError{fmt.Sprintf("%s on %s: access denied, %s: check the S3 credentials (from %s) and their rights on bucket %q",
			what, s.Location(), desc, src, s.cfg.Bucket)}
	case status == http.StatusTooManyRequests || status >= 500 || status == http.StatusRequestTimeout ||
		er.Code == "SlowDown" || er.Code == "RequestTimeout" || er.Code == "InternalError" ||
		er.Code == "ServiceUnavailable" || er.Code == "ConditionalRequestConflict" || er.Code == "OperationAborted",
		// The body the store received does not match the digest sent
		// with it: damaged on the way, and sent again from memory.
		er.Code == "BadDigest" || er.Code == "XAmzContentSHA256Mismatch":
		return fmt.Errorf("%s on %s: %s: %w", what, s.Location(), desc, remote.ErrUnreachable)
	case status >= 400:
		return fmt.Errorf("%s on %s: %s: %s: %w", what, s.Location(), desc, firstLine(er.Message), fs.ErrInvalid)
	}
	return fmt.Errorf("%s on %s: %s: %w", what, s.Location(), desc, remote.ErrUnreachable)
}

// untrustedCert reports whether err is a failed check of the server's
// certificate (unknown authority, wrong host name, expired).
func untrustedCert(err error) bool {
	var verify *tls.CertificateVerificationError
	var authority x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	return errors.As(err, &verify) || errors.As(err, &authority) || errors.As(err, &host) || errors.As(err, &invalid)
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

// deniedError is a refusal of the credentials: errors.Is(err,
// fs.ErrPermission) holds (so the retry decorator does not retry it), and
// its message is the hint alone, without "permission denied" tacked on.
type deniedError struct{ msg string }

func (e *deniedError) Error() string        { return e.msg }
func (e *deniedError) Is(target error) bool { return target == fs.ErrPermission }
