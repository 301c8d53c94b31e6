// Package sparse finds the holes of files on disk, for the writers that
// record them (import, and find's read of the live tree, which must cut
// chunks where the mount does).
package sparse

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"

	"github.com/keepfs/keepfs/repo/tree"
)

// Region is a run of a file: data, or a hole of tree.MinHole or more.
type Region struct {
	Start, End uint64
	Hole       bool
}

// Regions splits f, of size bytes, into data and holes of at least
// tree.MinHole, with SEEK_DATA and SEEK_HOLE; sparse is false when the
// file has no such hole (it has as many blocks as bytes) or the file
// system cannot tell. Shorter holes count as data.
func Regions(f *os.File, size uint64) (regions []Region, sparse bool) {
	var st unix.Stat_t
	fd := int(f.Fd())
	if size < tree.MinHole || unix.Fstat(fd, &st) != nil || uint64(st.Blocks)*512 >= size {
		return nil, false
	}
	pos := uint64(0)
	for pos < size {
		d, err := unix.Seek(fd, int64(pos), unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			d = int64(size) // only a hole to the end
		} else if err != nil {
			return nil, false
		}
		data := min(uint64(d), size)
		if data-pos >= tree.MinHole {
			regions = append(regions, Region{pos, data, true})
			sparse = true
		} else {
			regions = appendData(regions, pos, data)
		}
		if data >= size {
			break
		}
		h, err := unix.Seek(fd, d, unix.SEEK_HOLE)
		if err != nil {
			return nil, false
		}
		end := min(uint64(h), size)
		if end <= data {
			return nil, false // changing under us
		}
		regions = appendData(regions, data, end)
		pos = end
	}
	return regions, sparse
}

// appendData adds data [s, e), merging it with data just before.
func appendData(regions []Region, s, e uint64) []Region {
	if e <= s {
		return regions
	}
	if k := len(regions); k > 0 && !regions[k-1].Hole && regions[k-1].End == s {
		regions[k-1].End = e
		return regions
	}
	return append(regions, Region{s, e, false})
}
