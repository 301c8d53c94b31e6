package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/archiver"
	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/restorer"
)

func main() {
	debug.SetGCPercent(20)
	debug.SetMemoryLimit(1 << 40)
	ctx := context.Background()
	dir := os.Args[1]
	os.RemoveAll("/tmp/tb-remote")
	os.RemoveAll("/tmp/tb-restore")
	be, err := remote.CreateFile("/tmp/tb-remote")
	if err != nil {
		panic(err)
	}
	r, err := repo.Create(ctx, be, []byte("x"), repo.Options{KDF: &crypto.TestKDF, UploadConcurrency: 1})
	if err != nil {
		panic(err)
	}
	if len(os.Args) > 2 {
		f, _ := os.Create(os.Args[2])
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	t0 := time.Now()
	var ru0 syscall.Rusage
	syscall.Getrusage(0, &ru0)
	sn, sum, err := archiver.Import(ctx, r, dir, archiver.Options{})
	if err != nil {
		panic(err)
	}
	var ru syscall.Rusage
	syscall.Getrusage(0, &ru)
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
	fmt.Printf("import %.2fs cpu %.2fs maxrss %d MiB files %d added %d MiB\n", time.Since(t0).Seconds(), cpu.Seconds(), ru.Maxrss/1024, sum.Files, sum.BytesAdded>>20)
	t1 := time.Now()
	_, sum2, err := archiver.Import(ctx, r, dir, archiver.Options{Parent: sn})
	if err != nil {
		panic(err)
	}
	fmt.Printf("reimport %.2fs added %d\n", time.Since(t1).Seconds(), sum2.BytesAdded)
	t2 := time.Now()
	_, err = restorer.Restore(ctx, r, sn, []string{"/"}, "/tmp/tb-restore", restorer.Options{})
	if err != nil {
		panic(err)
	}
	fmt.Printf("restore %.2fs gomaxprocs %d\n", time.Since(t2).Seconds(), runtime.GOMAXPROCS(0))
}

func init() {
	if os.Getenv("MEMPROF") != "" {
		go func() {
			time.Sleep(2 * time.Second)
			f, _ := os.Create(os.Getenv("MEMPROF"))
			runtime.GC()
			pprof.Lookup("heap").WriteTo(f, 0)
			f.Close()
		}()
	}
}
