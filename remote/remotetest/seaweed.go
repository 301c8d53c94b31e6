package remotetest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// RequireS3Env names the variable that turns a missing or broken SeaweedFS
// from a skipped test into a failed one; CI sets it (as does a non-empty CI).
const RequireS3Env = "KEEPFS_REQUIRE_S3"

// WeedEnv names a weed binary to use instead of bin/tools/weed.
const WeedEnv = "KEEPFS_WEED"

// SeaweedOptions shapes a test cluster.
type SeaweedOptions struct {
	// VolumeServers is the number of volume servers (default 1).
	VolumeServers int
	// Replication is the master's -defaultReplication (default "000";
	// "001" keeps a second copy on another server of the same rack).
	Replication string
	// VolumeSizeLimitMB is the master's -volumeSizeLimitMB (default 64).
	VolumeSizeLimitMB int
	// TLS makes the S3 gateway speak HTTPS only, with a certificate for
	// 127.0.0.1 that no system trusts: CAFile names it for clients.
	TLS bool
}

// Seaweed is a SeaweedFS cluster on 127.0.0.1, private to one test: one
// master, VolumeServers volume servers, a filer and the S3 gateway, in
// a temporary directory, on free ports. Its S3 endpoint accepts only
// requests signed with AccessKey/SecretKey.
type Seaweed struct {
	Endpoint  string // 127.0.0.1:port of the S3 gateway
	AccessKey string
	SecretKey string
	// CAFile is the PEM certificate a client must trust (TLS only), as
	// SSL_CERT_FILE for a keepfs process.
	CAFile string

	t      testing.TB
	binary string
	dir    string
	opts   SeaweedOptions
	master string // host:port.grpcport, as volume servers and the filer want it

	mu      sync.Mutex
	procs   map[string]*weedProc // guarded by mu; by name: master, volume0, volume1, filer
	volArgs map[string][]string  // how to restart each volume server
}

type weedProc struct {
	cmd    *exec.Cmd
	exited chan struct{}
	log    *os.File
}

// WeedBinary finds the weed binary: $KEEPFS_WEED, else bin/tools/weed in
// the module root above the working directory.
func WeedBinary() (string, error) {
	if p := os.Getenv(WeedEnv); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s=%s: %w", WeedEnv, p, err)
		}
		return p, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			p := filepath.Join(dir, "bin", "tools", "weed")
			if _, err := os.Stat(p); err != nil {
				return "", fmt.Errorf("no SeaweedFS binary at %s (run 'make weed', or set %s)", p, WeedEnv)
			}
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the working directory to find bin/tools/weed (set %s)", WeedEnv)
		}
		dir = parent
	}
}

func requireS3() bool { return os.Getenv(RequireS3Env) == "1" || os.Getenv("CI") != "" }

// seaweedFatal fails the test when SeaweedFS is required, else skips it.
func seaweedFatal(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if requireS3() {
		t.Fatalf("SeaweedFS is required (%s=1 or CI set): %s", RequireS3Env, msg)
	}
	t.Skipf("%s; set %s=1 to make this a failure", msg, RequireS3Env)
}

// StartSeaweed starts a cluster for t and kills every process of it when t
// ends. Without a weed binary the test is skipped, or fails when
// KEEPFS_REQUIRE_S3=1 or CI is set; a cluster that does not come up fails.
func StartSeaweed(t testing.TB, opts SeaweedOptions) *Seaweed {
	t.Helper()
	binary, err := WeedBinary()
	if err != nil {
		seaweedFatal(t, "%v", err)
	}
	if opts.VolumeServers <= 0 {
		opts.VolumeServers = 1
	}
	if opts.Replication == "" {
		opts.Replication = "000"
	}
	if opts.VolumeSizeLimitMB <= 0 {
		opts.VolumeSizeLimitMB = 64
	}
	// Unix socket paths are limited to 108 bytes; t.TempDir can be longer.
	dir, err := os.MkdirTemp("", "keepfs-weed-")
	if err != nil {
		t.Fatal(err)
	}
	w := &Seaweed{
		AccessKey: "keepfs" + randomHex(7),
		SecretKey: randomHex(20),
		t:         t, binary: binary, dir: dir, opts: opts,
		procs: make(map[string]*weedProc), volArgs: make(map[string][]string),
	}
	t.Cleanup(func() {
		w.StopAll()
		if t.Failed() {
			w.dumpLogs()
		}
		_ = os.RemoveAll(dir)
	})
	// Ports are picked free and released before weed binds them; another
	// process may take one in between, so a failed start is tried again.
	for attempt := 1; ; attempt++ {
		err := w.start()
		if err == nil {
			break
		}
		if attempt == 3 {
			w.dumpLogs()
			t.Fatalf("SeaweedFS did not start: %v", err)
		}
		t.Logf("SeaweedFS did not start (%v); trying again on other ports", err)
		w.StopAll()
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			_ = os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
	w.WaitReady()
	return w
}

// Client is a minio-go client of the cluster's S3 gateway, signed with
// its credentials, for tests that set up buckets or look underneath.
func (w *Seaweed) Client() *minio.Client {
	w.t.Helper()
	o := &minio.Options{Creds: credentials.NewStaticV4(w.AccessKey, w.SecretKey, ""), Region: "us-east-1"}
	if w.opts.TLS {
		pem, err := os.ReadFile(w.CAFile)
		if err != nil {
			w.t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		o.Secure = true
		o.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	}
	cl, err := minio.New(w.Endpoint, o)
	if err != nil {
		w.t.Fatal(err)
	}
	return cl
}

// MakeBucket creates a bucket with a fresh random name and returns it.
func (w *Seaweed) MakeBucket() string {
	w.t.Helper()
	name := "b" + randomHex(10)
	if err := w.Client().MakeBucket(context.Background(), name, minio.MakeBucketOptions{}); err != nil {
		w.t.Fatalf("make bucket: %v", err)
	}
	return name
}

// Env is the environment a keepfs process needs to reach the cluster.
func (w *Seaweed) Env() []string {
	return []string{"AWS_ACCESS_KEY_ID=" + w.AccessKey, "AWS_SECRET_ACCESS_KEY=" + w.SecretKey}
}

// URL is the repository URL of bucket/prefix on the cluster: s3+http://,
// or s3:// when the gateway speaks TLS.
func (w *Seaweed) URL(bucket, prefix string) string {
	scheme := "s3+http://"
	if w.opts.TLS {
		scheme = "s3://"
	}
	u := scheme + w.Endpoint + "/" + bucket
	if prefix != "" {
		u += "/" + prefix
	}
	return u
}

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key
// into dir, valid for a day.
func selfSigned(dir string) (certFile, keyFile string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "keepfs test S3"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(dir, "s3-cert.pem"), filepath.Join(dir, "s3-key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// freePorts returns n distinct ports that were free a moment ago: all are
// held open until the last is picked, so none is handed out twice.
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func (w *Seaweed) start() error {
	p, err := freePorts(6 + 2*w.opts.VolumeServers)
	if err != nil {
		return err
	}
	next := func() int { n := p[0]; p = p[1:]; return n }
	mPort, mGrpc := next(), next()
	w.master = fmt.Sprintf("127.0.0.1:%d.%d", mPort, mGrpc)
	mdir := filepath.Join(w.dir, "master")
	if err := os.MkdirAll(mdir, 0o700); err != nil {
		return err
	}
	if err := w.spawn("master", "master", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
		"-port="+strconv.Itoa(mPort), "-port.grpc="+strconv.Itoa(mGrpc), "-mdir="+mdir,
		"-volumeSizeLimitMB="+strconv.Itoa(w.opts.VolumeSizeLimitMB),
		"-defaultReplication="+w.opts.Replication, "-telemetry=false"); err != nil {
		return err
	}
	if err := w.waitPort(fmt.Sprintf("127.0.0.1:%d", mPort), "master"); err != nil {
		return err
	}
	for i := range w.opts.VolumeServers {
		name := "volume" + strconv.Itoa(i)
		vdir := filepath.Join(w.dir, name)
		if err := os.MkdirAll(vdir, 0o700); err != nil {
			return err
		}
		vp, vg := next(), next()
		args := []string{"volume", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
			"-port=" + strconv.Itoa(vp), "-port.grpc=" + strconv.Itoa(vg), "-dir=" + vdir, "-max=0",
			"-master=" + w.master, "-preStopSeconds=0", "-minFreeSpace=1MiB"}
		w.volArgs[name] = args
		if err := w.spawn(name, args...); err != nil {
			return err
		}
		if err := w.waitPort(fmt.Sprintf("127.0.0.1:%d", vp), name); err != nil {
			return err
		}
	}
	cfg := map[string]any{"identities": []any{map[string]any{
		"name":        "keepfs",
		"credentials": []any{map[string]string{"accessKey": w.AccessKey, "secretKey": w.SecretKey}},
		"actions":     []string{"Admin", "Read", "List", "Tagging", "Write"},
	}}}
	cfgData, _ := json.Marshal(cfg)
	cfgPath := filepath.Join(w.dir, "s3.json")
	if err := os.WriteFile(cfgPath, cfgData, 0o600); err != nil {
		return err
	}
	fdir := filepath.Join(w.dir, "filer")
	if err := os.MkdirAll(fdir, 0o700); err != nil {
		return err
	}
	fPort, fGrpc := next(), next()
	sPort, sGrpc := next(), next()
	var tlsArgs []string
	if w.opts.TLS {
		cert, key, err := selfSigned(w.dir)
		if err != nil {
			return err
		}
		w.CAFile = cert
		tlsArgs = []string{"-cert.file=" + cert, "-key.file=" + key}
	}
	w.Endpoint = fmt.Sprintf("127.0.0.1:%d", sPort)
	if err := w.spawn("filer", "filer", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
		"-port="+strconv.Itoa(fPort), "-port.grpc="+strconv.Itoa(fGrpc), "-master="+w.master,
		"-defaultStoreDir="+fdir, "-localSocket="+filepath.Join(w.dir, "filer.sock")); err != nil {
		return err
	}
	if err := w.waitPort(fmt.Sprintf("127.0.0.1:%d", fPort), "filer"); err != nil {
		return err
	}
	// The gateway runs as its own process: `weed filer -s3` hands the
	// gateway the filer's address without its gRPC port.
	s3args := []string{"s3", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
		"-port=" + strconv.Itoa(sPort), "-port.grpc=" + strconv.Itoa(sGrpc),
		fmt.Sprintf("-filer=127.0.0.1:%d.%d", fPort, fGrpc),
		"-config=" + cfgPath, "-localSocket=" + filepath.Join(w.dir, "s3.sock"),
		// It also serves Iceberg and Lance catalogs on fixed ports by default.
		"-port.iceberg=0", "-port.lance=0"}
	if err := w.spawn("s3", append(s3args, tlsArgs...)...); err != nil {
		return err
	}
	return w.waitPort(w.Endpoint, "s3")
}

// spawn starts `weed args...` as its own process group, logging to a file.
func (w *Seaweed) spawn(name string, args ...string) error {
	logf, err := os.OpenFile(filepath.Join(w.dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	// glog writes its own log files to $TMPDIR unless told otherwise;
	// keep them in the cluster's directory, which the test removes.
	cmd := exec.Command(w.binary, append([]string{"-logdir=" + w.dir}, args...)...)
	cmd.Dir = w.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start weed %s: %w", name, err)
	}
	p := &weedProc{cmd: cmd, exited: make(chan struct{}), log: logf}
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	w.mu.Lock()
	w.procs[name] = p
	w.mu.Unlock()
	return nil
}

func (w *Seaweed) waitPort(addr, name string) error {
	w.mu.Lock()
	p := w.procs[name]
	w.mu.Unlock()
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-p.exited:
			return fmt.Errorf("weed %s exited at start: %s", name, w.tail(name))
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("weed %s did not listen on %s within 60s: %s", name, addr, w.tail(name))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Kill sends SIGKILL to one process of the cluster ("master", "volume0",
// "volume1", ..., "filer", "s3") and waits until it is gone.
func (w *Seaweed) Kill(name string) {
	w.mu.Lock()
	p := w.procs[name]
	delete(w.procs, name)
	w.mu.Unlock()
	if p == nil {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.exited
	p.log.Close()
}

// RestartVolume starts a killed volume server again with its data.
func (w *Seaweed) RestartVolume(name string) {
	w.t.Helper()
	args := w.volArgs[name]
	if args == nil {
		w.t.Fatalf("no volume server %q", name)
	}
	var port string
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "-port="); ok {
			port = v
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := w.spawn(name, args...)
		if err == nil {
			err = w.waitPort("127.0.0.1:"+port, name)
		}
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("restart %s: %v", name, err)
		}
		w.Kill(name)
		time.Sleep(200 * time.Millisecond)
	}
}

// StopAll kills every process of the cluster. It is safe to call twice.
func (w *Seaweed) StopAll() {
	w.mu.Lock()
	names := make([]string, 0, len(w.procs))
	for n := range w.procs {
		names = append(names, n)
	}
	w.mu.Unlock()
	for _, n := range names {
		w.Kill(n)
	}
}

func (w *Seaweed) tail(name string) string {
	data, _ := os.ReadFile(filepath.Join(w.dir, name+".log"))
	s := strings.TrimSpace(string(data))
	if len(s) > 2000 {
		s = "..." + s[len(s)-2000:]
	}
	return s
}

func (w *Seaweed) dumpLogs() {
	entries, _ := os.ReadDir(w.dir)
	for _, e := range entries {
		if n, ok := strings.CutSuffix(e.Name(), ".log"); ok {
			w.t.Logf("weed %s log:\n%s", n, w.tail(n))
		}
	}
}

// WaitReady returns once the cluster stores an object: the gateway listens
// before the filer has found the master and the master has volume servers
// to grow volumes on. StartSeaweed calls it; a test that restarted part of
// the cluster may too.
func (w *Seaweed) WaitReady() {
	w.t.Helper()
	cl := w.Client()
	probe := func(ctx context.Context) error {
		err := cl.MakeBucket(ctx, "keepfs-ready", minio.MakeBucketOptions{})
		if code := minio.ToErrorResponse(err).Code; err != nil && code != "BucketAlreadyOwnedByYou" && code != "BucketAlreadyExists" {
			return err
		}
		_, err = cl.PutObject(ctx, "keepfs-ready", "probe-"+randomHex(4), bytes.NewReader([]byte("x")), 1, minio.PutObjectOptions{})
		return err
	}
	deadline := time.Now().Add(90 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		last = probe(ctx)
		cancel()
		if last == nil {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	w.dumpLogs()
	w.t.Fatalf("SeaweedFS S3 at %s not ready within 90s: %v", w.Endpoint, last)
}
