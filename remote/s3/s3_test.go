package s3_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/remote/remotetest"
	"github.com/keepfs/keepfs/remote/s3"
)

var quiet = slog.New(slog.DiscardHandler)

// cluster is one SeaweedFS cluster shared by a test's subtests, each with
// its own bucket or prefix.
type cluster struct {
	*remotetest.Seaweed
	t testing.TB
}

func startCluster(t *testing.T, opts remotetest.SeaweedOptions) *cluster {
	t.Helper()
	w := remotetest.StartSeaweed(t, opts)
	return &cluster{Seaweed: w, t: t}
}

func (c *cluster) rawClient() *minio.Client { return c.Client() }

func (c *cluster) config(bucket, prefix string) s3.Config {
	return s3.Config{
		Endpoint: c.Endpoint, Insecure: true, Bucket: bucket, Prefix: prefix,
		Keys:   s3.Keys{AccessKeyID: c.AccessKey, SecretAccessKey: s3.Secret(c.SecretKey), Source: "test"},
		Logger: quiet,
	}
}

func (c *cluster) bucket(testing.TB) string { return c.MakeBucket() }

func TestS3Conformance(t *testing.T) {
	c := startCluster(t, remotetest.SeaweedOptions{})
	bucket := c.bucket(t)
	// Every subtest gets its own prefix; a page size of 7 makes the
	// listings of the suite span several pages.
	t.Run("Prefix", func(t *testing.T) {
		remotetest.Run(t, func(t *testing.T) remote.Storage {
			cfg := c.config(bucket, "repos/"+remotetest.RandomName()[:12])
			cfg.ListPageSize = 7
			s, err := s3.Open(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			return s
		})
	})
	// And the bucket's root, through the retry decorator, as the CLI opens it.
	t.Run("BucketRootWithRetry", func(t *testing.T) {
		remotetest.Run(t, func(t *testing.T) remote.Storage {
			s, err := s3.Open(context.Background(), c.config(c.bucket(t), ""))
			if err != nil {
				t.Fatal(err)
			}
			return remote.WithRetry(s, remote.RetryOptions{InitialInterval: 10 * time.Millisecond, MaxElapsed: 10 * time.Second, Logger: quiet})
		})
	})
	t.Run("ListBeyond1000Keys", func(t *testing.T) { testListPaged(t, c) })
	t.Run("ConditionalPutEnforced", func(t *testing.T) { testConditionalPut(t, c, bucket) })
	t.Run("StrayKeysIgnored", func(t *testing.T) { testStrayKeys(t, c) })
	t.Run("WrongCredentials", func(t *testing.T) { testWrongCredentials(t, c, bucket) })
	t.Run("CreateBucket", func(t *testing.T) { testCreateBucket(t, c) })
}

// testListPaged stores more keys than one ListObjectsV2 page holds (1000)
// and lists them with the default page size.
func testListPaged(t *testing.T, c *cluster) {
	ctx := context.Background()
	s, err := s3.Open(ctx, c.config(c.bucket(t), "paged"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const n = 1050
	want := make(map[string]bool, n)
	var mu sync.Mutex
	var wg sync.WaitGroup
	work := make(chan int)
	errs := make(chan error, n)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				h := remote.Handle{Type: remote.Index, Name: fmt.Sprintf("seg%05d", i)}
				if err := s.Save(ctx, h, []byte{byte(i)}); err != nil {
					errs <- err
				}
				mu.Lock()
				want[h.Name] = true
				mu.Unlock()
			}
		}()
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got := 0
	err = s.List(ctx, remote.Index, func(fi remote.Info) error {
		if !want[fi.Handle.Name] {
			return fmt.Errorf("unexpected or repeated %s", fi.Handle)
		}
		delete(want, fi.Handle.Name)
		got++
		return nil
	})
	if err != nil || got != n {
		t.Fatalf("listed %d of %d objects: %v", got, n, err)
	}
}

// testConditionalPut shows that the store itself refuses a PUT with
// If-None-Match: * over an existing key, so Save's no-overwrite guarantee
// does not rest on the HEAD before it (see the package comment).
func testConditionalPut(t *testing.T, c *cluster, bucket string) {
	ctx := context.Background()
	raw := c.rawClient()
	key := "cond/" + remotetest.RandomName()
	put := func(data string) error {
		opts := minio.PutObjectOptions{DisableMultipart: true}
		opts.SetMatchETagExcept("*")
		_, err := raw.PutObject(ctx, bucket, key, strings.NewReader(data), int64(len(data)), opts)
		return err
	}
	if err := put("first"); err != nil {
		t.Fatal(err)
	}
	err := put("second")
	if code := minio.ToErrorResponse(err).StatusCode; code != 412 {
		t.Fatalf("conditional PUT over an existing key: %v (HTTP %d), want 412 Precondition Failed", err, code)
	}
	obj, err := raw.GetObject(ctx, bucket, key, minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	_, _ = b.ReadFrom(obj)
	if b.String() != "first" {
		t.Fatalf("object holds %q after a refused conditional PUT", b.String())
	}
}

// testStrayKeys: keys that are not the place of a handle (a folder marker,
// a temp name, a pack outside its fan-out folder) are not listed.
func testStrayKeys(t *testing.T, c *cluster) {
	ctx := context.Background()
	bucket := c.bucket(t)
	raw := c.rawClient()
	for _, k := range []string{"r/packs/ab/.tmp-1", "r/packs/abcdef", "r/packs/cd/abcdef", "r/keys/sub/x", "r/configx", "r/index/"} {
		if _, err := raw.PutObject(ctx, bucket, k, strings.NewReader("x"), 1, minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	s, err := s3.Open(ctx, c.config(bucket, "r"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, typ := range remote.Types {
		err := s.List(ctx, typ, func(fi remote.Info) error { return fmt.Errorf("listed stray %s", fi.Handle) })
		if err != nil {
			t.Error(err)
		}
	}
}

// testWrongCredentials: a wrong secret is refused at open, with one line
// that says what to check and does not contain the secret, and the error
// is not one the retry decorator retries.
func testWrongCredentials(t *testing.T, c *cluster, bucket string) {
	cfg := c.config(bucket, "")
	const secret = "wrongSECRETwrongSECRETwrongSECRET0000000"
	cfg.Keys.SecretAccessKey = secret
	_, err := s3.Open(context.Background(), cfg)
	if err == nil {
		t.Fatal("open with a wrong secret succeeded")
	}
	msg := err.Error()
	if strings.Contains(msg, secret) || strings.Contains(msg, "\n") || !strings.Contains(msg, "credentials") {
		t.Fatalf("error %q: want one line mentioning the credentials and not the secret", msg)
	}
	if !errors.Is(err, fs.ErrPermission) || remote.Retryable(err) {
		t.Fatalf("error %v: want fs.ErrPermission, not retryable", err)
	}
	cfg.Keys.AccessKeyID = "NOSUCHKEY"
	if _, err := s3.Open(context.Background(), cfg); !errors.Is(err, fs.ErrPermission) {
		t.Fatalf("open with an unknown access key: %v, want fs.ErrPermission", err)
	}
	// And the configuration itself never prints the secret.
	if s := fmt.Sprintf("%v %+v %#v %s %q %x", cfg, cfg, cfg, cfg.Keys.SecretAccessKey, cfg.Keys.SecretAccessKey, cfg.Keys.SecretAccessKey); strings.Contains(s, secret) {
		t.Fatalf("formatting the config shows the secret: %s", s)
	}
}

func testCreateBucket(t *testing.T, c *cluster) {
	ctx := context.Background()
	name := "new" + strings.ToLower(remotetest.RandomName()[:16])
	cfg := c.config(name, "repo")
	if _, err := s3.Create(ctx, cfg); !errors.Is(err, remote.ErrNotFound) || !strings.Contains(err.Error(), "--s3-create-bucket") {
		t.Fatalf("create in a missing bucket: %v, want ErrNotFound naming --s3-create-bucket", err)
	}
	if _, err := s3.Open(ctx, cfg); !errors.Is(err, remote.ErrNotFound) {
		t.Fatalf("open of a missing bucket: %v, want ErrNotFound", err)
	}
	cfg.CreateBucket = true
	s, err := s3.Create(ctx, cfg)
	if err != nil {
		t.Fatalf("create with CreateBucket: %v", err)
	}
	if err := s.Save(ctx, remote.Handle{Type: remote.Config}, []byte("cfg")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := s3.Create(ctx, cfg); !errors.Is(err, remote.ErrExists) {
		t.Fatalf("create over an existing repository: %v, want ErrExists", err)
	}
	// Another prefix in the same bucket is another repository.
	cfg.Prefix = "other"
	s, err = s3.Create(ctx, cfg)
	if err != nil {
		t.Fatalf("create beside an existing repository: %v", err)
	}
	s.Close()
}
