package daemon

import (
	"bufio"
	"bytes"
	"log/slog"
	"os"
	"runtime/pprof"
	"strconv"
	"time"
)

// watchPeakHeap writes a heap profile to $KEEPFS_MEMPROFILE_PEAK each time
// the process's resident set passes its highest value so far by 8 MiB: the
// shutdown profile of KEEPFS_MEMPROFILE shows what is left at the end,
// not what made the peak (issue 18). Unset, it does nothing.
func watchPeakHeap(log *slog.Logger, stop <-chan struct{}) {
	path := os.Getenv("KEEPFS_MEMPROFILE_PEAK")
	if path == "" {
		return
	}
	var high int64
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		rss := residentKiB()
		if rss < high+8<<10 {
			continue
		}
		high = rss
		f, err := os.Create(path + "." + strconv.FormatInt(rss>>10, 10))
		if err == nil {
			err = pprof.Lookup("heap").WriteTo(f, 0)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			log.Warn("cannot write a peak heap profile", "err", err)
			return
		}
		log.Info("peak heap profile written", "rss_kib", rss)
	}
}

// residentKiB is VmRSS from /proc/self/status, 0 if it cannot be read.
func residentKiB() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	s := bufio.NewScanner(bytes.NewReader(b))
	for s.Scan() {
		f := bytes.Fields(s.Bytes())
		if len(f) >= 2 && string(f[0]) == "VmRSS:" {
			n, _ := strconv.ParseInt(string(f[1]), 10, 64)
			return n
		}
	}
	return 0
}
