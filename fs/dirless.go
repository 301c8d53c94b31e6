package fs

import (
	"slices"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// dirlessFS answers OPENDIR with ENOSYS. The kernel then stops sending
// OPENDIR and RELEASEDIR for the rest of the mount, reads every directory
// with no handle, and still caches listings (FOPEN_CACHE_DIR and
// FOPEN_KEEP_CACHE are what it assumes without OPENDIR, as keepfs asked
// for before). A warm ls -lR or find paid two round trips per directory
// for the handle alone, on a VM where a round trip costs 75-85 µs.
//
// go-fuse serves READDIR only through a handle, so each read opens one
// internally; a read that stops short (the kernel reads a listing a page
// at a time) keeps it for the read that continues at the offset it
// reached, so a big directory is listed once, not once per page.
type dirlessFS struct {
	fuse.RawFileSystem

	mu   sync.Mutex
	cont []dirCont // listings stopped short, oldest first
}

// dirCont is an internal handle kept for the read continuing at pos.
type dirCont struct {
	pos dirPos
	fh  uint64
}

// dirPos is a directory and an offset in its listing.
type dirPos struct{ node, off uint64 }

// maxDirConts bounds the listings kept open for a continuation; one left
// by a reader that stopped early goes when newer ones push it out.
const maxDirConts = 64

func newDirlessFS(raw fuse.RawFileSystem) *dirlessFS {
	return &dirlessFS{RawFileSystem: raw}
}

func (d *dirlessFS) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	return fuse.ENOSYS
}

func (d *dirlessFS) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return d.read(cancel, in, out, d.RawFileSystem.ReadDir)
}

func (d *dirlessFS) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return d.read(cancel, in, out, d.RawFileSystem.ReadDirPlus)
}

func (d *dirlessFS) read(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList,
	read func(<-chan struct{}, *fuse.ReadIn, *fuse.DirEntryList) fuse.Status) fuse.Status {
	if in.Fh != 0 {
		return read(cancel, in, out) // a handle from the kernel after all
	}
	fh, ok := d.take(dirPos{in.NodeId, in.Offset})
	if !ok {
		// Offset 0 always starts afresh: a rewinddir sees what changed.
		oin := fuse.OpenIn{InHeader: in.InHeader, Flags: syscall.O_RDONLY | syscall.O_DIRECTORY}
		var oout fuse.OpenOut
		if st := d.RawFileSystem.OpenDir(cancel, &oin, &oout); !st.Ok() {
			return st
		}
		fh = oout.Fh
	}
	rin := *in
	rin.Fh = fh
	st := read(cancel, &rin, out)
	if st.Ok() && out.Offset != in.Offset {
		d.keep(dirPos{in.NodeId, out.Offset}, fh, in.InHeader)
	} else {
		d.release(in.InHeader, fh) // the end of the listing, or an error
	}
	return st
}

func (d *dirlessFS) take(p dirPos) (uint64, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, c := range d.cont {
		if c.pos == p {
			d.cont = slices.Delete(d.cont, i, i+1)
			return c.fh, true
		}
	}
	return 0, false
}

// keep keeps fh for the read continuing at p. Another handle kept for the
// same place (two readers in step) goes, and so does the oldest beyond
// maxDirConts.
func (d *dirlessFS) keep(p dirPos, fh uint64, h fuse.InHeader) {
	var drop []dirCont
	d.mu.Lock()
	d.cont = slices.DeleteFunc(d.cont, func(c dirCont) bool {
		if c.pos == p {
			drop = append(drop, c)
			return true
		}
		return false
	})
	d.cont = append(d.cont, dirCont{p, fh})
	if n := len(d.cont) - maxDirConts; n > 0 {
		drop = append(drop, d.cont[:n]...)
		d.cont = slices.Delete(d.cont, 0, n)
	}
	d.mu.Unlock()
	for _, c := range drop {
		h.NodeId = c.pos.node
		d.release(h, c.fh)
	}
}

func (d *dirlessFS) release(h fuse.InHeader, fh uint64) {
	d.RawFileSystem.ReleaseDir(&fuse.ReleaseIn{InHeader: h, Fh: fh})
}
