package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/keepfs/keepfs/remote/remotetest"
)

// s3World is a world whose repository is the prefix team/repo of bucket on
// the SeaweedFS cluster sw, with the credentials in the environment. It
// does not run init.
func s3World(t *testing.T, sw *remotetest.Seaweed, bucket string) *world {
	t.Helper()
	w := &world{t: t, dir: t.TempDir()}
	w.state = filepath.Join(w.dir, "state")
	w.mnt = filepath.Join(w.dir, "mnt")
	if err := os.Mkdir(w.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	w.url = sw.URL(bucket, "team/repo")
	w.env = sw.Env()
	return w
}

// with returns a copy of w with another state directory, as a second
// machine holding only the passphrase and the credentials would be.
func (w *world) with(state string) *world {
	c := *w
	c.state = filepath.Join(w.dir, state)
	return &c
}

func randomFile(t *testing.T, p string, seed int64, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return b
}

func sameFile(t *testing.T, p string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(p)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("%s: %d bytes (want %d), %v", p, len(got), len(want), err)
	}
}

// TestS3CLIAndMount drives the whole life of a repository on S3: init
// (refused without --s3-create-bucket for a missing bucket), import,
// restore, mount, cp -a and sync through the mount, check --read-data,
// prune, and a remount from the remote alone on a fresh state directory;
// then the same repository opened with --s3-credentials-file.
func TestS3CLIAndMount(t *testing.T) {
	requireFUSE(t)
	sw := remotetest.StartSeaweed(t, remotetest.SeaweedOptions{})
	w := s3World(t, sw, "keepfs-cli")

	code, out := exitCode(t, w.cmd("init"))
	if out = strings.TrimSpace(out); code != 1 || strings.Count(out, "\n") != 0 || !strings.Contains(out, "--s3-create-bucket") {
		t.Fatalf("init in a missing bucket: exit %d: %q", code, out)
	}
	w.kf("init", "--s3-create-bucket")
	if code, out := exitCode(t, w.cmd("init")); code != 1 || !strings.Contains(out, "already") {
		t.Fatalf("second init: exit %d: %s", code, out)
	}

	src := filepath.Join(w.dir, "src")
	genTree(t, src, 11)
	big := randomFile(t, filepath.Join(src, "big.bin"), 12, 40<<20) // several packs
	w.kf("import", src)
	restored := filepath.Join(w.dir, "restored")
	w.with("state-restore").kf("restore", "/", "--to", restored)
	run(t, "", "diff", "-r", "--no-dereference", src, restored)

	w.mount("--snapshot-interval", "1h")
	run(t, "", "cp", "-a", src, filepath.Join(w.mnt, "cp"))
	live := randomFile(t, filepath.Join(w.mnt, "written.bin"), 13, 9<<20)
	w.kf("sync", w.mnt)
	run(t, "", "diff", "-r", "--no-dereference", src, filepath.Join(w.mnt, "cp"))
	w.unmount()

	w.kf("check", "--read-data")
	w.kf("prune")
	w.kf("check")

	fresh := w.with("state-fresh")
	fresh.mount()
	run(t, "", "diff", "-r", "--no-dereference", src, filepath.Join(fresh.mnt, "cp"))
	sameFile(t, filepath.Join(fresh.mnt, "cp", "big.bin"), big)
	sameFile(t, filepath.Join(fresh.mnt, "written.bin"), live)
	fresh.unmount()
	// The secret is in no log or state file of any client.
	for _, dir := range []string{w.state, fresh.state} {
		noSecret(t, dir, sw.SecretKey)
	}

	// Credentials from a file, none in the environment.
	creds := filepath.Join(w.dir, "creds")
	content := fmt.Sprintf("[backup]\naws_access_key_id = %s\naws_secret_access_key = %s\n", sw.AccessKey, sw.SecretKey)
	if err := os.WriteFile(creds, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	byFile := w.with("state-file")
	byFile.env = []string{"AWS_ACCESS_KEY_ID=", "AWS_SECRET_ACCESS_KEY=", "AWS_PROFILE=", "HOME=" + w.dir}
	byFile.flags = []string{"--s3-credentials-file", creds, "--s3-profile", "backup", "--s3-path-style"}
	if out := byFile.kf("snapshots"); strings.Count(strings.TrimSpace(out), "\n") < 1 {
		t.Fatalf("snapshots with a credentials file:\n%s", out)
	}
}

// TestS3WrongCredentials: a wrong secret, an unknown key or no
// credentials at all fail with one line and exit 1, and the secret given
// appears in no output.
func TestS3WrongCredentials(t *testing.T) {
	sw := remotetest.StartSeaweed(t, remotetest.SeaweedOptions{})
	w := s3World(t, sw, sw.MakeBucket())
	w.kf("init")
	const wrong = "WrongSecretWrongSecretWrongSecret0123456"
	creds := filepath.Join(w.dir, "creds")
	if err := os.WriteFile(creds, []byte("[default]\naws_access_key_id = "+sw.AccessKey+"\naws_secret_access_key = "+wrong+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		env     []string
		flags   []string
		mention string
	}{
		{"wrong secret", []string{"AWS_ACCESS_KEY_ID=" + sw.AccessKey, "AWS_SECRET_ACCESS_KEY=" + wrong}, nil, "access denied"},
		{"unknown key", []string{"AWS_ACCESS_KEY_ID=AKIANOSUCHKEY", "AWS_SECRET_ACCESS_KEY=" + wrong}, nil, "access denied"},
		{"wrong secret in a file", []string{"AWS_ACCESS_KEY_ID=", "AWS_SECRET_ACCESS_KEY="}, []string{"--s3-credentials-file", creds}, "access denied"},
		{"none", []string{"AWS_ACCESS_KEY_ID=", "AWS_SECRET_ACCESS_KEY=", "HOME=" + w.dir, "AWS_SHARED_CREDENTIALS_FILE="}, nil, "AWS_ACCESS_KEY_ID"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := w.with("state-" + strings.ReplaceAll(tc.name, " ", "-"))
			c.env, c.flags = tc.env, tc.flags
			for _, args := range [][]string{{"snapshots"}, {"check"}} {
				code, out := exitCode(t, c.cmd(args...))
				out = strings.TrimSpace(out)
				if code != 1 || strings.Count(out, "\n") != 0 || !strings.Contains(out, tc.mention) || strings.Contains(out, wrong) {
					t.Fatalf("keepfs %s: exit %d: %q; want exit 1, one line mentioning %q, no secret", args[0], code, out, tc.mention)
				}
				t.Logf("keepfs %s: %s", args[0], out)
			}
		})
	}
}

// TestS3ReplicatedVolumeServerKilled: on a cluster of one master and two
// volume servers keeping two copies of everything (-defaultReplication=001),
// kill -9 one volume server while the mount uploads. Reads keep working
// (restore from the remote), writes stall and are retried, nothing is
// lost, the queue drains once the server is back, and check --read-data
// passes. (SeaweedFS writes every replica or fails the PUT with a 500, and
// cannot grow new volumes with one of two servers: the mount retries.)
func TestS3ReplicatedVolumeServerKilled(t *testing.T) {
	requireFUSE(t)
	sw := remotetest.StartSeaweed(t, remotetest.SeaweedOptions{VolumeServers: 2, Replication: "001", VolumeSizeLimitMB: 32})
	bucket := sw.MakeBucket()
	w := s3World(t, sw, bucket)
	w.kf("init")
	w.mount("--snapshot-interval", "2s") // snapshot walks queue uploads
	before := randomFile(t, filepath.Join(w.mnt, "before.bin"), 21, 6<<20)
	w.kf("sync", w.mnt)
	stored := map[string]string{}
	for oi := range sw.Client().ListObjectsIter(context.Background(), bucket, minio.ListObjectsOptions{Prefix: "team/repo/", Recursive: true}) {
		if oi.Err != nil {
			t.Fatal(oi.Err)
		}
		if !strings.Contains(oi.Key, "/locks/") {
			stored[oi.Key] = objectSum(t, sw, bucket, oi.Key)
		}
	}

	// Mid-upload: write enough for several packs, then kill a replica
	// holder as soon as the queue has something in flight (or, if the
	// first file's upload slipped between two polls, before the rest).
	want := map[string][]byte{}
	for i := range 4 {
		name := fmt.Sprintf("during%d.bin", i)
		want[name] = randomFile(t, filepath.Join(w.mnt, name), int64(30+i), 10<<20)
		if i == 0 {
			// The periodic snapshot can queue and upload this file between
			// two polls; then the kill comes before the next files' upload.
			for deadline := time.Now().Add(10 * time.Second); w.status().Status.QueueBlobs == 0; time.Sleep(50 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Log("the first file was uploaded between two polls: killing before the next files' upload")
					break
				}
			}
			sw.Kill("volume1")
		}
	}

	// Reads keep working: every object stored before the kill reads back
	// the same from the remaining copy, and commands that only read (no
	// lock object to write) work from a fresh state directory, reading
	// snapshots and tree blobs with ranged GETs.
	for key, sum := range stored {
		if got := objectSum(t, sw, bucket, key); got != sum {
			t.Fatalf("%s reads back differently with a volume server down", key)
		}
	}
	reader := w.with("state-read")
	if out := reader.kf("snapshots"); strings.TrimSpace(out) == "" {
		t.Fatalf("snapshots with a volume server down:\n%s", out)
	}
	if out := reader.kf("log", "/before.bin"); strings.TrimSpace(out) == "" {
		t.Fatal("log /before.bin with a volume server down printed nothing")
	}

	// Writes stall: the store refuses them while a replica is missing, and
	// the mount keeps them queued and retries.
	st := w.waitStatus("uploads fail and stay queued", 90*time.Second, func(st statusJSON) bool {
		return st.Status.QueueBlobs > 0 && st.Status.LastError != ""
	})
	t.Logf("with a volume server down: queue %d blobs, last error %q", st.Status.QueueBlobs, st.Status.LastError)

	sw.RestartVolume("volume1")
	w.waitStatus("the queue drains once the volume server is back", 3*time.Minute, func(st statusJSON) bool {
		return st.Status.RemoteReachable && st.Status.QueueBlobs == 0
	})
	w.kf("sync", w.mnt)
	w.unmount()
	w.kf("check", "--read-data")

	fresh := w.with("state-fresh")
	fresh.mount()
	sameFile(t, filepath.Join(fresh.mnt, "before.bin"), before)
	for name, b := range want {
		sameFile(t, filepath.Join(fresh.mnt, name), b)
	}
	fresh.unmount()
	noSecret(t, w.state, sw.SecretKey) // its daemon.log holds the retried errors
}

// objectSum GETs bucket/key directly and returns its SHA-256.
func objectSum(t *testing.T, sw *remotetest.Seaweed, bucket, key string) string {
	t.Helper()
	obj, err := sw.Client().GetObject(context.Background(), bucket, key, minio.GetObjectOptions{})
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	defer obj.Close()
	h := sha256.New()
	if _, err := io.Copy(h, obj); err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// s3Locks counts the lock objects of w's repository in bucket.
func s3Locks(t *testing.T, sw *remotetest.Seaweed, bucket string) int {
	t.Helper()
	n := 0
	for oi := range sw.Client().ListObjectsIter(context.Background(), bucket, minio.ListObjectsOptions{Prefix: "team/repo/locks/", Recursive: true}) {
		if oi.Err != nil {
			t.Fatal(oi.Err)
		}
		n++
	}
	return n
}

func waitS3Locks(t *testing.T, sw *remotetest.Seaweed, bucket string, more int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for s3Locks(t, sw, bucket) < more {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than %d lock objects in the bucket after 30s", more)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestS3Locks: the repository lock works on S3 as on a directory: a prune
// beside a running import is refused (the import holds a shared lock), an
// import beside a prune holding the exclusive lock is refused, and waits
// with --retry-lock until the prune's process is gone.
func TestS3Locks(t *testing.T) {
	sw := remotetest.StartSeaweed(t, remotetest.SeaweedOptions{})
	bucket := sw.MakeBucket()
	w := s3World(t, sw, bucket)
	w.kf("init")
	src := filepath.Join(w.dir, "src")
	bigTree(t, src, 16, 4<<20)

	imp := w.cmd("import", src)
	// Held for a while after it is taken: a fast import of 64 MiB could
	// otherwise end (and release its lock) before the prune looks.
	imp.Env = append(imp.Env, "KEEPFS_TEST_HOLD_LOCK=8s")
	var impOut strings.Builder
	imp.Stdout, imp.Stderr = &impOut, &impOut
	if err := imp.Start(); err != nil {
		t.Fatal(err)
	}
	waitS3Locks(t, sw, bucket, 1)
	code, out := exitCode(t, w.cmd("prune"))
	if err := imp.Wait(); err != nil {
		t.Fatalf("import: %v\n%s", err, impOut.String())
	}
	if code != 1 || !strings.Contains(out, "locked") || strings.Count(strings.TrimSpace(out), "\n") > 0 {
		t.Fatalf("prune beside an import: exit %d, want 1 and one line naming the lock: %s", code, out)
	}

	prune := w.cmd("prune")
	prune.Env = append(prune.Env, "KEEPFS_TEST_HOLD_LOCK=30s")
	if err := prune.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = prune.Process.Kill() })
	waitS3Locks(t, sw, bucket, 1)
	if code, out := exitCode(t, w.cmd("import", src)); code != 1 || !strings.Contains(out, "exclusive lock for prune") {
		t.Fatalf("import beside a prune: exit %d: %s", code, out)
	}
	go func() {
		time.Sleep(time.Second)
		_ = prune.Process.Kill()
		_ = prune.Wait() // reaped: a zombie still answers kill(pid, 0)
	}()
	w.kf("import", "--retry-lock", "1m", src)
	w.kf("check", "--read-data")
	if n := s3Locks(t, sw, bucket); n != 0 {
		t.Fatalf("%d lock objects left behind", n)
	}
}

// noSecret fails if any file under dir contains secret.
func noSecret(t *testing.T, dir, secret string) {
	t.Helper()
	files := 0
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files++
		if bytes.Contains(b, []byte(secret)) {
			t.Errorf("%s holds the S3 secret key", p)
		}
		return nil
	})
	if err != nil || files == 0 {
		t.Fatalf("walk %s: %d files, %v", dir, files, err)
	}
}

// TestS3OverTLS: s3:// speaks HTTPS and verifies the server's certificate.
// A store behind a private CA is refused (one line, exit 1) until the CA
// is trusted through SSL_CERT_FILE; then init, import and restore work.
func TestS3OverTLS(t *testing.T) {
	sw := remotetest.StartSeaweed(t, remotetest.SeaweedOptions{TLS: true})
	w := s3World(t, sw, "keepfs-tls")
	if !strings.HasPrefix(w.url, "s3://") {
		t.Fatalf("TLS cluster URL %s", w.url)
	}
	// An empty CA file: nothing is trusted, not even the system's roots.
	none := filepath.Join(w.dir, "no-ca.pem")
	if err := os.WriteFile(none, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	untrusted := w.with("state-untrusted")
	untrusted.env = append(sw.Env(), "SSL_CERT_FILE="+none, "SSL_CERT_DIR="+w.dir)
	code, out := exitCode(t, untrusted.cmd("init", "--s3-create-bucket"))
	if out = strings.TrimSpace(out); code != 1 || strings.Count(out, "\n") != 0 || !strings.Contains(out, "certificate") {
		t.Fatalf("init against an untrusted certificate: exit %d: %q", code, out)
	}

	w.env = append(sw.Env(), "SSL_CERT_FILE="+sw.CAFile)
	w.kf("init", "--s3-create-bucket")
	src := filepath.Join(w.dir, "src")
	genTree(t, src, 21)
	big := randomFile(t, filepath.Join(src, "big.bin"), 22, 20<<20)
	w.kf("import", src)
	restored := filepath.Join(w.dir, "restored")
	w.with("state-restore").kf("restore", "/", "--to", restored)
	run(t, "", "diff", "-r", "--no-dereference", src, restored)
	sameFile(t, filepath.Join(restored, "big.bin"), big)
	w.kf("check", "--read-data")
}
