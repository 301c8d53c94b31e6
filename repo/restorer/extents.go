package restorer

import (
	"context"
	"fmt"
	"os"
	"sort"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/index"
	"github.com/keepfs/keepfs/repo/pack"
)

// Files are written pack by pack, as restic does: every data blob the
// restore needs is listed once with every place it goes (files sharing
// content, a blob repeated in a file), the blobs of each pack are sorted
// by offset and cut into extents, and each extent is one streamed ranged
// read (repo.StreamBlobs) whose blobs are opened and written to all their
// places as they arrive. On an object store that is about one request per
// pack instead of one per 2 MiB span or run of one: the benchmark's
// restore from SeaweedFS made ~430 GETs that way, and each costs the store
// CPU and the restore a round trip. Memory is a sealed and a plain blob
// per worker, whatever the extent's size.
//
// A file is created by the first of its blobs to arrive and finished
// (truncated to a trailing hole, metadata set, closed) by the last. Files
// waiting for blobs of other extents stay open, up to maxOpen of them;
// beyond that a file is closed after each write and opened again (beneath
// the target, no symlinks, and only if it is still the inode created) for
// the next.
const (
	// extentGap is the most bytes between two needed blobs that one read
	// fetches and drops rather than starting another read.
	extentGap = 256 << 10
	// extentMax bounds an extent (bytes of the pack from its first blob's
	// start to its last one's end); packs are ~16 MiB, so in a full
	// restore an extent is a whole pack.
	extentMax = 64 << 20
)

// maxOpen is how many partly written files stay open (a variable for tests).
var maxOpen int64 = 512

// afterPark, when set (tests), runs after parkLocked closed a file.
var afterPark func(rel string)

// outFile is a file written by extents.
type outFile struct {
	j     fileJob
	size  int64 // the file's length, holes included
	holes int64 // bytes of holes (progress)

	mu       sync.Mutex
	left     int      // writes not made yet; guarded by mu
	f        *os.File // nil before the first write, after the last, or closed while waiting; guarded by mu
	created  bool     // guarded by mu
	dev, ino uint64   // of the created file, while closed waiting; guarded by mu
	done     bool     // guarded by mu
}

// target is one place a blob goes.
type target struct {
	file *outFile
	off  int64
}

// extent is the needed blobs of one pack that one read fetches.
type extent struct {
	ids     []crypto.ID // ascending offset
	raw     []uint32    // each blob's plaintext length, per the index
	targets [][]target  // where each blob goes
}

// extents plans the files of rs.files whose blobs are all indexed and that
// have at least one; the others (empty, only holes, a blob not indexed)
// are returned as they are, for writeFile.
func (rs *restorer) extents() ([]*extent, []*outFile, []fileJob) {
	idx := rs.r.Index()
	type need struct {
		id      crypto.ID
		loc     index.Location
		targets []target
	}
	needs := map[crypto.ID]*need{}
	byPack := map[crypto.ID][]*need{}
	var packs []crypto.ID // in the order files first need them
	var outs []*outFile
	var rest []fileJob
next:
	for _, j := range rs.files {
		pieces := j.node.Pieces()
		nblobs := 0
		for _, p := range pieces {
			if !p.ID.IsNull() {
				if _, ok := idx.Lookup(pack.Data, p.ID); !ok {
					rest = append(rest, j) // reported by writeFile
					continue next
				}
				nblobs++
			}
		}
		if nblobs == 0 {
			rest = append(rest, j)
			continue
		}
		of := &outFile{j: j, left: nblobs}
		outs = append(outs, of)
		var off int64
		for _, p := range pieces {
			if p.ID.IsNull() {
				off += int64(p.Hole)
				of.holes += int64(p.Hole)
				continue
			}
			n := needs[p.ID]
			if n == nil {
				loc, _ := idx.Lookup(pack.Data, p.ID)
				n = &need{id: p.ID, loc: loc}
				needs[p.ID] = n
				if len(byPack[loc.Pack]) == 0 {
					packs = append(packs, loc.Pack)
				}
				byPack[loc.Pack] = append(byPack[loc.Pack], n)
			}
			n.targets = append(n.targets, target{of, off})
			off += int64(n.loc.RawLength)
		}
		of.size = off
	}
	var out []*extent
	for _, pk := range packs {
		ns := byPack[pk]
		sort.Slice(ns, func(a, b int) bool { return ns[a].loc.Offset < ns[b].loc.Offset })
		var cur *extent
		var start, end uint64
		for _, n := range ns {
			s, e := uint64(n.loc.Offset), uint64(n.loc.Offset)+uint64(n.loc.Length)
			if cur == nil || s > end+extentGap || e-start > extentMax {
				cur = &extent{}
				out = append(out, cur)
				start = s
			}
			end = e
			cur.ids = append(cur.ids, n.id)
			cur.raw = append(cur.raw, n.loc.RawLength)
			cur.targets = append(cur.targets, n.targets)
		}
	}
	return out, outs, rest
}

// writeExtent streams the blobs of one extent and writes each to all its
// places; a file's last write finishes it.
func (rs *restorer) writeExtent(ctx context.Context, e *extent) (int64, error) {
	var n int64
	var werr error // writeAt's errors name their file already
	err := rs.r.StreamBlobs(ctx, pack.Data, e.ids, func(i int, plain []byte) error {
		for _, t := range e.targets[i] {
			if uint64(len(plain)) != uint64(e.raw[i]) {
				werr = fmt.Errorf("restore %s: blob %s holds %d bytes, the index says %d", rs.dst(t.file.j.rel), e.ids[i].Short(), len(plain), e.raw[i])
				return werr
			}
			if werr = rs.writeAt(t.file, plain, t.off); werr != nil {
				return werr
			}
			n += int64(len(plain))
		}
		return nil
	})
	if err != nil && werr == nil {
		err = fmt.Errorf("restore %s: %w", rs.dst(e.targets[0][0].file.j.rel), err)
	}
	return n, err
}

// writeAt writes one blob's plaintext into of at off.
func (rs *restorer) writeAt(of *outFile, plain []byte, off int64) error {
	of.mu.Lock()
	defer of.mu.Unlock()
	if of.done {
		return fmt.Errorf("restore %s: written once too often", rs.dst(of.j.rel))
	}
	if of.f == nil {
		if err := rs.openOut(of); err != nil {
			return err
		}
	}
	if _, err := of.f.WriteAt(plain, off); err != nil {
		return fmt.Errorf("restore %s: %w", of.f.Name(), err)
	}
	rs.opts.Progress.Add(int64(len(plain)))
	of.left--
	if of.left == 0 {
		return rs.finishLocked(of)
	}
	if rs.open.Load() > maxOpen {
		return rs.parkLocked(of)
	}
	return nil
}

// openOut creates of's file at its first write, or opens it again after
// parkLocked closed it; of.mu is held.
func (rs *restorer) openOut(of *outFile) error {
	if !of.created {
		f, err := rs.createFile(of.j)
		if err != nil {
			return err
		}
		of.f, of.created = f, true
		rs.open.Add(1)
		rs.opts.Progress.Add(of.holes)
		return nil
	}
	dst := rs.dst(of.j.rel)
	fd, err := rs.openBeneath(of.j.rel, unix.O_WRONLY)
	if err != nil {
		return fmt.Errorf("restore %s: open again: %w", dst, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return fmt.Errorf("restore %s: %w", dst, err)
	}
	if st.Dev != of.dev || st.Ino != of.ino {
		unix.Close(fd)
		return fmt.Errorf("restore %s: another file took its place while restoring: %w", dst, errEscape)
	}
	of.f = os.NewFile(uintptr(fd), dst)
	rs.open.Add(1)
	return nil
}

// parkLocked closes a file that waits for blobs of other extents, noting
// which inode it is so that openOut opens that one again and no other.
func (rs *restorer) parkLocked(of *outFile) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(of.f.Fd()), &st); err != nil {
		return fmt.Errorf("restore %s: %w", of.f.Name(), err)
	}
	of.dev, of.ino = st.Dev, st.Ino
	err := of.f.Close()
	of.f = nil
	rs.open.Add(-1)
	if err != nil {
		return fmt.Errorf("restore %s: %w", rs.dst(of.j.rel), err)
	}
	if afterPark != nil {
		afterPark(of.j.rel)
	}
	return nil
}

// finishLocked sets the length of a file that ends in a hole, then its
// metadata (after the last write, which would change mtime), and closes it.
func (rs *restorer) finishLocked(of *outFile) error {
	f := of.f
	of.f, of.done = nil, true
	rs.open.Add(-1)
	if len(of.j.node.Holes) > 0 {
		if err := f.Truncate(of.size); err != nil {
			f.Close()
			return fmt.Errorf("restore %s: %w", f.Name(), err)
		}
	}
	rs.applyMeta(int(f.Fd()), -1, "", of.j.node)
	if err := f.Close(); err != nil {
		return fmt.Errorf("restore %s: %w", f.Name(), err)
	}
	return nil
}

// closeOuts closes the files that a failed restore left open; it runs
// after every extent has ended.
func closeOuts(outs []*outFile) {
	for _, of := range outs {
		of.mu.Lock()
		if of.f != nil {
			of.f.Close()
			of.f = nil
		}
		of.mu.Unlock()
	}
}
