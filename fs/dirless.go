package fs

import (
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
	cont map[dirPos]uint64 // where a listing stopped → the internal handle
	fifo []dirPos          // cont's keys, oldest first
}

// dirPos is a directory and an offset in its listing.
type dirPos struct{ node, off uint64 }

// maxDirConts bounds the listings kept open for a continuation; one left
// by a reader that stopped early goes when newer ones push it out.
const maxDirConts = 64

func newDirlessFS(raw fuse.RawFileSystem) *dirlessFS {
	return &dirlessFS{RawFileSystem: raw, cont: map[dirPos]uint64{}}
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
	fh, ok := d.cont[p]
	if ok {
		delete(d.cont, p)
	}
	return fh, ok
}

func (d *dirlessFS) keep(p dirPos, fh uint64, h fuse.InHeader) {
	var drop []dirPos
	var fhs []uint64
	d.mu.Lock()
	if old, ok := d.cont[p]; ok { // two readers at the same place
		drop, fhs = append(drop, p), append(fhs, old)
	}
	d.cont[p] = fh
	d.fifo = append(d.fifo, p)
	for len(d.cont) > maxDirConts && len(d.fifo) > 0 {
		q := d.fifo[0]
		d.fifo = d.fifo[1:]
		if q == p {
			continue
		}
		if old, ok := d.cont[q]; ok {
			delete(d.cont, q)
			drop, fhs = append(drop, q), append(fhs, old)
		}
	}
	if len(d.fifo) > 4*maxDirConts { // stale keys of taken entries
		live := d.fifo[:0]
		for _, q := range d.fifo {
			if _, ok := d.cont[q]; ok {
				live = append(live, q)
			}
		}
		d.fifo = live
	}
	d.mu.Unlock()
	for i, q := range drop {
		h.NodeId = q.node
		d.release(h, fhs[i])
	}
}

func (d *dirlessFS) release(h fuse.InHeader, fh uint64) {
	d.RawFileSystem.ReleaseDir(&fuse.ReleaseIn{InHeader: h, Fh: fh})
}
