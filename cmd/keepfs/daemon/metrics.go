package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/keepfs/keepfs/cache"
	"github.com/keepfs/keepfs/remote"
)

// Metrics are the mount's Prometheus metrics. The counters live here and
// in the packages that own them (cache.Counters, cache.Status); this file
// renders the text exposition format itself, so nothing below cmd imports
// a metrics library.
type Metrics struct {
	uploaded, downloaded atomic.Int64
	remoteOps            map[string]*opStats // by storage call; fixed keys
	fuseOps              map[string]*opStats // by FUSE request; fixed keys
	snapshots            atomic.Int64        // -1 until counted
	newest               atomic.Int64        // unix nanoseconds of the newest snapshot, 0 if none
	// openIncidents counts the state directory's open incidents; nil: 0.
	openIncidents func() int
}

// latencyBuckets are the histogram's upper bounds in seconds.
var latencyBuckets = []float64{0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60}

type opStats struct {
	errors  atomic.Int64
	count   atomic.Int64
	sumNs   atomic.Int64
	buckets []atomic.Int64 // cumulative counts are computed when rendered
}

func newOpStats() *opStats { return &opStats{buckets: make([]atomic.Int64, len(latencyBuckets))} }

func (s *opStats) observe(d time.Duration, failed bool) {
	s.count.Add(1)
	s.sumNs.Add(int64(d))
	if failed {
		s.errors.Add(1)
	}
	sec := d.Seconds()
	for i, b := range latencyBuckets {
		if sec <= b {
			s.buckets[i].Add(1)
			return
		}
	}
}

var remoteOpNames = []string{"save", "load", "stat", "list", "remove"}

// fuseOpNames are the requests counted one by one; the rest are "other".
var fuseOpNames = []string{"lookup", "getattr", "setattr", "mknod", "mkdir", "unlink", "rmdir", "rename", "link",
	"symlink", "readlink", "access", "getxattr", "listxattr", "setxattr", "removexattr", "create", "open", "read",
	"lseek", "release", "write", "copy_file_range", "flush", "fsync", "fallocate", "opendir", "readdir",
	"readdirplus", "releasedir", "fsyncdir", "statfs", "other"}

// NewMetrics returns empty metrics.
func NewMetrics() *Metrics {
	m := &Metrics{remoteOps: map[string]*opStats{}, fuseOps: map[string]*opStats{}}
	for _, n := range remoteOpNames {
		m.remoteOps[n] = newOpStats()
	}
	for _, n := range fuseOpNames {
		m.fuseOps[n] = newOpStats()
	}
	m.snapshots.Store(-1)
	return m
}

// WrapStorage counts and times every call to the remote.
func (m *Metrics) WrapStorage(s remote.Storage) remote.Storage { return &meteredStorage{s, m} }

type meteredStorage struct {
	remote.Storage
	m *Metrics
}

func (s *meteredStorage) done(op string, start time.Time, err error) {
	// A missing object is an answer, not a failure of the remote.
	failed := err != nil && !errors.Is(err, remote.ErrNotFound) && !errors.Is(err, context.Canceled)
	s.m.remoteOps[op].observe(time.Since(start), failed)
}

func (s *meteredStorage) Save(ctx context.Context, h remote.Handle, data []byte) error {
	start := time.Now()
	err := s.Storage.Save(ctx, h, data)
	s.done("save", start, err)
	if err == nil {
		s.m.uploaded.Add(int64(len(data)))
	}
	return err
}

func (s *meteredStorage) Load(ctx context.Context, h remote.Handle, off, n int64) ([]byte, error) {
	start := time.Now()
	b, err := s.Storage.Load(ctx, h, off, n)
	s.done("load", start, err)
	s.m.downloaded.Add(int64(len(b)))
	return b, err
}

func (s *meteredStorage) Stat(ctx context.Context, h remote.Handle) (remote.Info, error) {
	start := time.Now()
	i, err := s.Storage.Stat(ctx, h)
	s.done("stat", start, err)
	return i, err
}

func (s *meteredStorage) List(ctx context.Context, t remote.Type, fn func(remote.Info) error) error {
	start := time.Now()
	err := s.Storage.List(ctx, t, fn)
	s.done("list", start, err)
	return err
}

func (s *meteredStorage) Remove(ctx context.Context, h remote.Handle) error {
	start := time.Now()
	err := s.Storage.Remove(ctx, h)
	s.done("remove", start, err)
	return err
}

// setSnapshots records the repository's snapshot count and newest time.
func (m *Metrics) setSnapshots(n int, newest time.Time) {
	m.snapshots.Store(int64(n))
	if !newest.IsZero() {
		m.newest.Store(newest.UnixNano())
	}
}

// snapshotTaken counts one more snapshot, taken at t.
func (m *Metrics) snapshotTaken(t time.Time) {
	if m.snapshots.Load() >= 0 {
		m.snapshots.Add(1)
	}
	if t.UnixNano() > m.newest.Load() {
		m.newest.Store(t.UnixNano())
	}
}

// write renders everything in the Prometheus text format (version 0.0.4).
func (m *Metrics) write(w io.Writer, st cache.Status, cn cache.Counters, now time.Time) {
	g := func(name, help, typ string, v float64) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n%s %s\n", name, help, name, typ, name, num(v))
	}
	b2f := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	g("keepfs_dirty_bytes", "Bytes written to open files and not yet committed.", "gauge", float64(st.DirtyBytes))
	g("keepfs_upload_queue_chunks", "Chunks committed locally and waiting for upload.", "gauge", float64(st.QueueBlobs))
	g("keepfs_upload_queue_bytes", "Bytes of chunks waiting for upload.", "gauge", float64(st.QueueBytes))
	g("keepfs_upload_queue_age_seconds", "Time since the upload queue was last empty (0 while empty).", "gauge", st.QueueAgeSeconds)
	g("keepfs_remote_uploaded_bytes_total", "Bytes stored in the remote by this mount.", "counter", float64(m.uploaded.Load()))
	g("keepfs_remote_downloaded_bytes_total", "Bytes read from the remote by this mount.", "counter", float64(m.downloaded.Load()))
	g("keepfs_remote_up", "1 if the last contact with the remote succeeded.", "gauge", b2f(st.RemoteReachable))
	if n := m.snapshots.Load(); n >= 0 {
		g("keepfs_snapshots", "Snapshots in the repository.", "gauge", float64(n))
	}
	if t := m.newest.Load(); t > 0 {
		g("keepfs_last_snapshot_timestamp_seconds", "Unix time of the newest snapshot.", "gauge", float64(t)/1e9)
		g("keepfs_last_snapshot_age_seconds", "Age of the newest snapshot.", "gauge", now.Sub(time.Unix(0, t)).Seconds())
	}
	g("keepfs_cache_bytes", "Bytes of chunks kept in the local cache.", "gauge", float64(st.CacheBytes))
	g("keepfs_cache_hits_total", "Chunk reads served locally.", "counter", float64(cn.ChunkHits))
	g("keepfs_cache_misses_total", "Chunk reads fetched from the remote.", "counter", float64(cn.ChunkMisses))
	ratio := 0.0
	if t := cn.ChunkHits + cn.ChunkMisses; t > 0 {
		ratio = float64(cn.ChunkHits) / float64(t)
	}
	g("keepfs_cache_hit_ratio", "Share of chunk reads served locally since the mount started.", "gauge", ratio)
	g("keepfs_snapshot_trees_built_total", "Directory trees snapshot walks encoded (the rest came from the tree cache).", "counter", float64(cn.TreesBuilt))
	g("keepfs_snapshot_trees_uploaded_total", "Directory trees snapshots stored that the repository did not hold.", "counter", float64(cn.TreesUploaded))
	g("keepfs_snapshot_walk_inodes_total", "Inodes snapshot walks read.", "counter", float64(cn.WalkInodes))
	g("keepfs_dead_chunks_dropped_total", "Chunks no file named dropped from the state directory (versions rewritten between snapshots).", "counter", float64(cn.DeadChunks))
	g("keepfs_dead_chunk_bytes_dropped_total", "Bytes of those chunks.", "counter", float64(cn.DeadBytes))
	g("keepfs_lost_files", "Files whose data is held neither locally nor by the remote.", "gauge", float64(len(st.LostFiles)))
	g("keepfs_read_only", "1 while the mount refuses writes (repository lock lapsed).", "gauge", b2f(st.ReadOnly != ""))
	incidents := 0
	if m.openIncidents != nil {
		incidents = m.openIncidents()
	}
	g("keepfs_incidents_open", "Open security or integrity incidents.", "gauge", float64(incidents))

	writeOps(w, "keepfs_remote", "remote storage call", m.remoteOps, "errors")
	writeOps(w, "keepfs_fuse", "FUSE request", m.fuseOps, "")
}

func writeOps(w io.Writer, prefix, what string, ops map[string]*opStats, errName string) {
	names := make([]string, 0, len(ops))
	for n := range ops {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintf(w, "# HELP %s_requests_total Each %s, by type.\n# TYPE %s_requests_total counter\n", prefix, what, prefix)
	for _, n := range names {
		fmt.Fprintf(w, "%s_requests_total{op=%q} %d\n", prefix, n, ops[n].count.Load())
	}
	if errName != "" {
		fmt.Fprintf(w, "# HELP %s_%s_total Each failed %s, by type.\n# TYPE %s_%s_total counter\n", prefix, errName, what, prefix, errName)
		for _, n := range names {
			fmt.Fprintf(w, "%s_%s_total{op=%q} %d\n", prefix, errName, n, ops[n].errors.Load())
		}
	}
	h := prefix + "_request_duration_seconds"
	fmt.Fprintf(w, "# HELP %s Latency of each %s, by type.\n# TYPE %s histogram\n", h, what, h)
	for _, n := range names {
		s := ops[n]
		count := s.count.Load()
		var cum int64
		for i, b := range latencyBuckets {
			cum += s.buckets[i].Load()
			fmt.Fprintf(w, "%s_bucket{op=%q,le=%q} %d\n", h, n, num(b), min(cum, count))
		}
		fmt.Fprintf(w, "%s_bucket{op=%q,le=\"+Inf\"} %d\n", h, n, count)
		fmt.Fprintf(w, "%s_sum{op=%q} %s\n", h, n, num(float64(s.sumNs.Load())/1e9))
		fmt.Fprintf(w, "%s_count{op=%q} %d\n", h, n, count)
	}
}

func num(v float64) string {
	if math.IsInf(v, 1) {
		return "+Inf"
	}
	return strings.TrimSuffix(fmt.Sprintf("%g", v), ".0")
}

// serveMetrics serves /metrics on addr: host:port, or unix:/path (mode
// 0600). It returns a function that stops the server.
func (d *daemon) serveMetrics(addr string) (func(), error) {
	var ln net.Listener
	var err error
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		_ = os.Remove(p)
		ln, err = net.Listen("unix", p)
		if err == nil {
			err = os.Chmod(p, 0o600)
		}
	} else {
		ln, err = net.Listen("tcp", addr)
	}
	if err != nil {
		if ln != nil {
			ln.Close()
		}
		return nil, fmt.Errorf("metrics listener %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		d.cfg.Metrics.write(w, d.c.Status(), d.c.Counters(), time.Now())
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	d.log.Info("metrics", "listen", ln.Addr().String())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}

// countSnapshots lists the repository's snapshots for the metrics.
func (d *daemon) countSnapshots(ctx context.Context) {
	snaps, err := d.c.Repository().Snapshots(ctx)
	if err != nil {
		d.log.Debug("metrics: cannot list snapshots", "err", err)
		return
	}
	var newest time.Time
	for _, s := range snaps {
		if s.Time.After(newest) {
			newest = s.Time
		}
	}
	d.cfg.Metrics.setSnapshots(len(snaps), newest)
}

// fuseMetrics wraps the FUSE file system, timing every request by type.
type fuseMetrics struct {
	fuse.RawFileSystem
	m map[string]*opStats
}

func (m *Metrics) wrapFUSE(raw fuse.RawFileSystem) fuse.RawFileSystem {
	return &fuseMetrics{raw, m.fuseOps}
}

func (f *fuseMetrics) obs(op string, start time.Time, st fuse.Status) {
	s, ok := f.m[op]
	if !ok {
		s = f.m["other"]
	}
	s.observe(time.Since(start), !st.Ok() && st != fuse.ENOENT)
}

func (f *fuseMetrics) Lookup(c <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	t := time.Now()
	st := f.RawFileSystem.Lookup(c, h, name, out)
	f.obs("lookup", t, st)
	return st
}
func (f *fuseMetrics) GetAttr(c <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	t := time.Now()
	st := f.RawFileSystem.GetAttr(c, in, out)
	f.obs("getattr", t, st)
	return st
}
func (f *fuseMetrics) SetAttr(c <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	t := time.Now()
	st := f.RawFileSystem.SetAttr(c, in, out)
	f.obs("setattr", t, st)
	return st
}
func (f *fuseMetrics) Mkdir(c <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	t := time.Now()
	st := f.RawFileSystem.Mkdir(c, in, name, out)
	f.obs("mkdir", t, st)
	return st
}
func (f *fuseMetrics) Unlink(c <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	t := time.Now()
	st := f.RawFileSystem.Unlink(c, h, name)
	f.obs("unlink", t, st)
	return st
}
func (f *fuseMetrics) Rmdir(c <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	t := time.Now()
	st := f.RawFileSystem.Rmdir(c, h, name)
	f.obs("rmdir", t, st)
	return st
}
func (f *fuseMetrics) Rename(c <-chan struct{}, in *fuse.RenameIn, o, n string) fuse.Status {
	t := time.Now()
	st := f.RawFileSystem.Rename(c, in, o, n)
	f.obs("rename", t, st)
	return st
}
func (f *fuseMetrics) Create(c <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	t := time.Now()
	st := f.RawFileSystem.Create(c, in, name, out)
	f.obs("create", t, st)
	return st
}
func (f *fuseMetrics) Open(c <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	t := time.Now()
	st := f.RawFileSystem.Open(c, in, out)
	f.obs("open", t, st)
	return st
}
func (f *fuseMetrics) Read(c <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	t := time.Now()
	r, st := f.RawFileSystem.Read(c, in, buf)
	f.obs("read", t, st)
	return r, st
}
func (f *fuseMetrics) Write(c <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	t := time.Now()
	n, st := f.RawFileSystem.Write(c, in, data)
	f.obs("write", t, st)
	return n, st
}
func (f *fuseMetrics) Release(c <-chan struct{}, in *fuse.ReleaseIn) {
	t := time.Now()
	f.RawFileSystem.Release(c, in)
	f.obs("release", t, fuse.OK)
}
func (f *fuseMetrics) Flush(c <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	t := time.Now()
	st := f.RawFileSystem.Flush(c, in)
	f.obs("flush", t, st)
	return st
}
func (f *fuseMetrics) Fsync(c <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	t := time.Now()
	st := f.RawFileSystem.Fsync(c, in)
	f.obs("fsync", t, st)
	return st
}
func (f *fuseMetrics) OpenDir(c <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	t := time.Now()
	st := f.RawFileSystem.OpenDir(c, in, out)
	f.obs("opendir", t, st)
	return st
}
func (f *fuseMetrics) ReadDir(c <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	t := time.Now()
	st := f.RawFileSystem.ReadDir(c, in, out)
	f.obs("readdir", t, st)
	return st
}
func (f *fuseMetrics) ReadDirPlus(c <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	t := time.Now()
	st := f.RawFileSystem.ReadDirPlus(c, in, out)
	f.obs("readdirplus", t, st)
	return st
}
func (f *fuseMetrics) GetXAttr(c <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	t := time.Now()
	n, st := f.RawFileSystem.GetXAttr(c, h, attr, dest)
	f.obs("getxattr", t, st)
	return n, st
}
func (f *fuseMetrics) StatFs(c <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	t := time.Now()
	st := f.RawFileSystem.StatFs(c, h, out)
	f.obs("statfs", t, st)
	return st
}

// Writev is how go-fuse delivers writes first; ENOSYS sends it to Write,
// which then counts the request instead.
func (f *fuseMetrics) Writev(c <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	t := time.Now()
	n, st := f.RawFileSystem.Writev(c, in, data)
	if st != fuse.ENOSYS {
		f.obs("write", t, st)
	}
	return n, st
}

// RemoveTemp passes remote.TempSweeper through (prune and erase run in the
// daemon while it is mounted).
func (s *meteredStorage) RemoveTemp(ctx context.Context) (remote.TempRemoved, error) {
	return remote.RemoveTemp(ctx, s.Storage)
}
