package s3_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/minio/minio-go/v7"

	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/remote/remotetest"
	"github.com/keepfs/keepfs/remote/s3"
)

// BenchmarkS3Pack16MiB compares how a 16 MiB pack goes to SeaweedFS: one
// PUT (what Save does) against a multipart upload of 5 MiB parts sent 4 at
// a time, and a ranged GET of one 1 MiB blob against a whole-pack GET.
//
//	go test -run '^$' -bench S3Pack -benchtime 20x ./remote/s3/
func BenchmarkS3Pack16MiB(b *testing.B) {
	w := remotetest.StartSeaweed(b, remotetest.SeaweedOptions{VolumeSizeLimitMB: 1024})
	bucket := w.MakeBucket()
	ctx := context.Background()
	s, err := s3.Open(ctx, s3.Config{Endpoint: w.Endpoint, Insecure: true, Bucket: bucket,
		Keys: s3.Keys{AccessKeyID: w.AccessKey, SecretAccessKey: s3.Secret(w.SecretKey)}, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	data := remotetest.RandomBytes(16 << 20)
	b.Run("SinglePUT", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			if err := s.Save(ctx, remote.Handle{Type: remote.Pack, Name: remotetest.RandomName()}, data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("SinglePUT4InFlight", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		b.SetParallelism(4)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := s.Save(ctx, remote.Handle{Type: remote.Pack, Name: remotetest.RandomName()}, data); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("SinglePUTNoMD5", func(b *testing.B) {
		cl := w.Client()
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			_, err := cl.PutObject(ctx, bucket, "nomd5/"+remotetest.RandomName(), bytes.NewReader(data), int64(len(data)),
				minio.PutObjectOptions{DisableMultipart: true})
			if err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Multipart5MiBx4", func(b *testing.B) {
		cl := w.Client()
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			_, err := cl.PutObject(ctx, bucket, "mp/"+remotetest.RandomName(), bytes.NewReader(data), int64(len(data)),
				minio.PutObjectOptions{PartSize: 5 << 20, NumThreads: 4})
			if err != nil {
				b.Fatal(err)
			}
		}
	})
	h := remote.Handle{Type: remote.Pack, Name: remotetest.RandomName()}
	if err := s.Save(ctx, h, data); err != nil {
		b.Fatal(err)
	}
	b.Run("RangedGET1MiB", func(b *testing.B) {
		b.SetBytes(1 << 20)
		for b.Loop() {
			if _, err := s.Load(ctx, h, 7<<20, 1<<20); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("WholeGET16MiB", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			if _, err := s.Load(ctx, h, 0, 0); err != nil {
				b.Fatal(err)
			}
		}
	})
}
