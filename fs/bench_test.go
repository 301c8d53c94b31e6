package fs_test

import (
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/keepfs/keepfs/fs/fstest"
)

func BenchmarkSequentialWrite(b *testing.B) {
	m := fstest.New(b, fstest.Config{})
	buf := make([]byte, 1<<20)
	rand.Read(buf)
	const size = 64 << 20
	b.SetBytes(size)
	for i := 0; i < b.N; i++ {
		f, err := os.Create(filepath.Join(m.Dir, "w"))
		if err != nil {
			b.Fatal(err)
		}
		for off := 0; off < size; off += len(buf) {
			buf[0]++ // no two MiB alike: measure chunking, not dedup
			if _, err := f.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSequentialRead(b *testing.B) {
	m := fstest.New(b, fstest.Config{})
	data := make([]byte, 64<<20)
	rand.Read(data)
	p := filepath.Join(m.Dir, "r")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	buf := make([]byte, 1<<20)
	for i := 0; i < b.N; i++ {
		f, err := os.Open(p)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.CopyBuffer(io.Discard, f, buf); err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
}

// BenchmarkOneByteCommit: the cost of changing one byte of a 256 MiB file
// and closing it, which commits only the chunks around the change.
func BenchmarkOneByteCommit(b *testing.B) {
	m := fstest.New(b, fstest.Config{})
	data := make([]byte, 256<<20)
	rand.Read(data)
	p := filepath.Join(m.Dir, "big")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := f.WriteAt([]byte{byte(i)}, int64(i*7919)%int64(len(data))); err != nil {
			b.Fatal(err)
		}
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUntar extracts 2,000 small files into the mount, with the same
// extraction into a plain directory reported as native_ns/op.
func BenchmarkUntar(b *testing.B) {
	m := fstest.New(b, fstest.Config{})
	src := b.TempDir()
	for i := 0; i < 2000; i++ {
		d := filepath.Join(src, fmt.Sprintf("d%02d", i%40))
		os.MkdirAll(d, 0o755)
		buf := make([]byte, 500+i%4000)
		rand.Read(buf)
		os.WriteFile(filepath.Join(d, fmt.Sprintf("f%d", i)), buf, 0o644)
	}
	tarball := filepath.Join(b.TempDir(), "t.tar")
	if out, err := exec.Command("tar", "cf", tarball, "-C", src, ".").CombinedOutput(); err != nil {
		b.Fatalf("tar: %v %s", err, out)
	}
	untar := func(dst string) time.Duration {
		os.MkdirAll(dst, 0o755)
		start := time.Now()
		if out, err := exec.Command("tar", "xf", tarball, "-C", dst).CombinedOutput(); err != nil {
			b.Fatalf("untar: %v %s", err, out)
		}
		return time.Since(start)
	}
	var native time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		untar(filepath.Join(m.Dir, fmt.Sprint(i)))
		b.StopTimer()
		native += untar(filepath.Join(b.TempDir(), fmt.Sprint(i)))
		b.StartTimer()
	}
	b.ReportMetric(float64(native.Nanoseconds())/float64(b.N), "native_ns/op")
}
