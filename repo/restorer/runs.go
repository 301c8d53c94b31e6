package restorer

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/pack"
)

// Files of several blobs are not written blob by blob by one worker: on an
// object store every blob is a round trip, and a 256 MiB file would be 256
// of them one after the other while the other workers sit idle at the end
// of the restore. Such a file is cut into runs, consecutive pieces that
// lie close together in one pack (at most spanMax apart, like a span),
// each fetched with one ranged read by any worker and written at its
// offset. The file is created by the first of its runs to start and
// finished (truncated, metadata, closed) by the last to end.

// bigFile is a file written by several runs.
type bigFile struct {
	j    fileJob
	size int64 // the file's length, holes included
	open sync.Once
	f    *os.File
	err  error
	left atomic.Int64 // runs not finished
	done bool         // closed by its last run (read after all runs ended)
}

// run is pieces of one file whose blobs one read fetches.
type run struct {
	file  *bigFile
	ids   []crypto.ID
	offs  []int64  // where in the file each blob goes
	sizes []uint32 // each blob's plaintext length, per the index
	holes int64    // bytes of holes counted with this run (progress)
}

// runs cuts the files of rest whose blobs are all indexed and that have
// more than one blob into runs; the other files are returned as they are.
func (rs *restorer) runs(rest []fileJob) ([]run, []fileJob) {
	idx := rs.r.Index()
	var out []run
	var left []fileJob
next:
	for _, j := range rest {
		pieces := j.node.Pieces()
		nblobs := 0
		for _, p := range pieces {
			if !p.ID.IsNull() {
				if _, ok := idx.Lookup(pack.Data, p.ID); !ok {
					left = append(left, j) // reported by writeFile
					continue next
				}
				nblobs++
			}
		}
		if nblobs < 2 {
			left = append(left, j)
			continue
		}
		bf := &bigFile{j: j}
		first := len(out)
		var cur run
		var pk crypto.ID
		var start, end uint64
		var holes int64
		var off int64
		for _, p := range pieces {
			if p.ID.IsNull() {
				off += int64(p.Hole)
				holes += int64(p.Hole)
				continue
			}
			loc, _ := idx.Lookup(pack.Data, p.ID)
			s, e := uint64(loc.Offset), uint64(loc.Offset)+uint64(loc.Length)
			// Forward only and close together, as a span: the bytes
			// between are read and dropped.
			if len(cur.ids) > 0 && (loc.Pack != pk || s < end || s > end+spanGap || e-start > spanMax) {
				out = append(out, cur)
				cur = run{}
			}
			if len(cur.ids) == 0 {
				cur.file = bf
				pk, start = loc.Pack, s
			}
			end = e
			cur.ids = append(cur.ids, p.ID)
			cur.offs = append(cur.offs, off)
			cur.sizes = append(cur.sizes, loc.RawLength)
			cur.holes += holes
			holes = 0
			off += int64(loc.RawLength)
		}
		out = append(out, cur)
		out[len(out)-1].holes += holes
		bf.size = off
		bf.left.Store(int64(len(out) - first))
	}
	return out, left
}

// writeRun fetches the blobs of one run with one read and writes them
// into its file; the file's last run finishes it.
func (rs *restorer) writeRun(ctx context.Context, rn run) (int64, error) {
	bf := rn.file
	bf.open.Do(func() { bf.f, bf.err = rs.createFile(bf.j) })
	if bf.err != nil {
		return 0, bf.err
	}
	rs.opts.Progress.Add(rn.holes)
	var n int64
	var werr error
	err := rs.r.LoadBlobs(ctx, pack.Data, rn.ids, func(i int, plain []byte) error {
		if uint64(len(plain)) != uint64(rn.sizes[i]) {
			werr = fmt.Errorf("restore %s: blob %s holds %d bytes, the index says %d", bf.f.Name(), rn.ids[i].Short(), len(plain), rn.sizes[i])
			return werr
		}
		if _, err := bf.f.WriteAt(plain, rn.offs[i]); err != nil {
			werr = fmt.Errorf("restore %s: %w", bf.f.Name(), err)
			return werr
		}
		n += int64(len(plain))
		rs.opts.Progress.Add(int64(len(plain)))
		return nil
	})
	if err != nil {
		if werr == nil {
			err = fmt.Errorf("restore %s: %w", bf.f.Name(), err)
		}
		return n, err
	}
	if bf.left.Add(-1) > 0 {
		return n, nil
	}
	return n, rs.finish(bf)
}

// finish sets the length of a file that ends in a hole, then its
// metadata (after the last write, which would change mtime), and closes it.
func (rs *restorer) finish(bf *bigFile) error {
	bf.done = true
	f := bf.f
	if len(bf.j.node.Holes) > 0 {
		if err := f.Truncate(bf.size); err != nil {
			f.Close()
			return fmt.Errorf("restore %s: %w", f.Name(), err)
		}
	}
	rs.applyMeta(int(f.Fd()), -1, "", bf.j.node)
	if err := f.Close(); err != nil {
		return fmt.Errorf("restore %s: %w", f.Name(), err)
	}
	return nil
}

// closeAll closes the files that a failed restore left open; it runs
// after every run has ended.
func closeAll(runs []run) {
	for _, rn := range runs {
		if bf := rn.file; bf.f != nil && !bf.done {
			bf.f.Close()
			bf.done = true
		}
	}
}
