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
// lie close together in one pack (blobs starting in one aligned spanMax
// stretch of the pack, gaps of at most spanGap), each fetched with one
// ranged read by any worker and written at its offsets. A file is created
// by the first of its runs to start and finished (truncated, metadata,
// closed) by the last to end; its runs are queued together, so only about
// Workers files are open at once.
//
// Runs start at aligned places in a pack, so files sharing content (a copy,
// an edited version) cut the shared part into identical runs, which are
// fetched once and written into every file (up to maxTargets of them, to
// bound how many files one run keeps open).
const maxTargets = 8

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

// run is blobs of one pack that one read fetches, and where they go.
type run struct {
	ids     []crypto.ID
	sizes   []uint32 // each blob's plaintext length, per the index
	targets []runTarget
}

// runTarget is one file a run writes into.
type runTarget struct {
	file  *bigFile
	offs  []int64 // where in the file each of the run's blobs goes
	holes int64   // bytes of holes counted with this run (progress)
}

// runs cuts the files of rest whose blobs are all indexed and that have
// more than one blob into runs; the other files are returned as they are.
func (rs *restorer) runs(rest []fileJob) ([]*run, []fileJob) {
	idx := rs.r.Index()
	var out []*run
	var left []fileJob
	open := map[string]*run{} // runs taking more targets, by pack and ids
	var key []byte
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
		var mine []*run // this file's runs, each with its target last
		var cur run
		var t runTarget
		var pk crypto.ID
		var start, end uint64
		var holes, off int64
		flush := func() {
			t.file = bf
			key = append(key[:0], pk[:]...)
			for _, id := range cur.ids {
				key = append(key, id[:]...)
			}
			if r, ok := open[string(key)]; ok && len(r.targets) < maxTargets && !hasFile(r, bf) {
				r.targets = append(r.targets, t)
				mine = append(mine, r)
			} else {
				r := &run{ids: cur.ids, sizes: cur.sizes, targets: []runTarget{t}}
				open[string(key)] = r
				out = append(out, r)
				mine = append(mine, r)
			}
			cur, t = run{}, runTarget{}
		}
		for _, p := range pieces {
			if p.ID.IsNull() {
				off += int64(p.Hole)
				holes += int64(p.Hole)
				continue
			}
			loc, _ := idx.Lookup(pack.Data, p.ID)
			s, e := uint64(loc.Offset), uint64(loc.Offset)+uint64(loc.Length)
			// Forward only and close together, as a span (the bytes
			// between are read and dropped), within one aligned stretch
			// of the pack; and never more than two stretches' worth.
			if len(cur.ids) > 0 && (loc.Pack != pk || s < end || s > end+spanGap || s/spanMax != start/spanMax || e-start > 2*spanMax) {
				flush()
			}
			if len(cur.ids) == 0 {
				pk, start = loc.Pack, s
			}
			end = e
			cur.ids = append(cur.ids, p.ID)
			cur.sizes = append(cur.sizes, loc.RawLength)
			t.offs = append(t.offs, off)
			t.holes += holes
			holes = 0
			off += int64(loc.RawLength)
		}
		flush()
		last := mine[len(mine)-1]
		last.targets[len(last.targets)-1].holes += holes
		bf.size = off
		bf.left.Store(int64(len(mine)))
	}
	return out, left
}

func hasFile(r *run, bf *bigFile) bool {
	for _, t := range r.targets {
		if t.file == bf {
			return true
		}
	}
	return false
}

// writeRun fetches the blobs of one run with one read and writes them
// into its files; a file's last run finishes it.
func (rs *restorer) writeRun(ctx context.Context, rn *run) (int64, error) {
	for _, t := range rn.targets {
		bf := t.file
		bf.open.Do(func() { bf.f, bf.err = rs.createFile(bf.j) })
		if bf.err != nil {
			return 0, bf.err
		}
		rs.opts.Progress.Add(t.holes)
	}
	var n int64
	var werr error
	err := rs.r.LoadBlobs(ctx, pack.Data, rn.ids, func(i int, plain []byte) error {
		for _, t := range rn.targets {
			if uint64(len(plain)) != uint64(rn.sizes[i]) {
				werr = fmt.Errorf("restore %s: blob %s holds %d bytes, the index says %d", t.file.f.Name(), rn.ids[i].Short(), len(plain), rn.sizes[i])
				return werr
			}
			if _, err := t.file.f.WriteAt(plain, t.offs[i]); err != nil {
				werr = fmt.Errorf("restore %s: %w", t.file.f.Name(), err)
				return werr
			}
			n += int64(len(plain))
			rs.opts.Progress.Add(int64(len(plain)))
		}
		return nil
	})
	if err != nil {
		if werr == nil {
			err = fmt.Errorf("restore %s: %w", rn.targets[0].file.f.Name(), err)
		}
		return n, err
	}
	for _, t := range rn.targets {
		if t.file.left.Add(-1) == 0 {
			if err := rs.finish(t.file); err != nil {
				return n, err
			}
		}
	}
	return n, nil
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
func closeAll(runs []*run) {
	for _, rn := range runs {
		for _, t := range rn.targets {
			if bf := t.file; bf.f != nil && !bf.done {
				bf.f.Close()
				bf.done = true
			}
		}
	}
}
