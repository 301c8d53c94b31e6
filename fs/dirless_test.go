package fs

import (
	"fmt"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// fakeDirs serves directories of n entries each through handles, counting
// the handles opened and released.
type fakeDirs struct {
	fuse.RawFileSystem
	n               int
	next            uint64
	open            map[uint64]uint64 // fh → node
	opened, dropped int
}

func (f *fakeDirs) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	f.next++
	f.open[f.next] = in.NodeId
	f.opened++
	out.Fh = f.next
	return fuse.OK
}

func (f *fakeDirs) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	if f.open[in.Fh] != in.NodeId {
		return fuse.EBADF
	}
	for i := int(in.Offset); i < f.n; i++ {
		if out.AddDirLookupEntry(fuse.DirEntry{Name: fmt.Sprintf("e%d", i), Ino: uint64(i + 10), Off: uint64(i + 1)}) == nil {
			break
		}
	}
	return fuse.OK
}

func (f *fakeDirs) ReleaseDir(in *fuse.ReleaseIn) {
	if _, ok := f.open[in.Fh]; ok && f.open[in.Fh] == in.NodeId {
		delete(f.open, in.Fh)
		f.dropped++
	}
}

// list reads node's listing page by page, as the kernel does, from offset
// off until a page comes back empty, and returns the offsets reached.
func list(t *testing.T, d *dirlessFS, node, off uint64, pages int) uint64 {
	t.Helper()
	for p := 0; pages < 0 || p < pages; p++ {
		in := &fuse.ReadIn{InHeader: fuse.InHeader{NodeId: node}, Offset: off, Size: 4096}
		out := fuse.NewDirEntryList(make([]byte, 4096), off)
		if st := d.ReadDirPlus(nil, in, out); !st.Ok() {
			t.Fatalf("readdirplus of %d at %d: %v", node, off, st)
		}
		if out.Offset == off {
			break
		}
		off = out.Offset
	}
	return off
}

func TestDirlessListsOnceAndReleases(t *testing.T) {
	fake := &fakeDirs{RawFileSystem: fuse.NewDefaultRawFileSystem(), n: 5000, open: map[uint64]uint64{}}
	d := newDirlessFS(fake)
	if st := d.OpenDir(nil, &fuse.OpenIn{}, &fuse.OpenOut{}); st != fuse.ENOSYS {
		t.Fatalf("OPENDIR answered %v, want ENOSYS", st)
	}
	// A big listing takes many pages and one handle, released at its end.
	if got := list(t, d, 1, 0, -1); got != 5000 {
		t.Fatalf("listing ended at offset %d, want 5000", got)
	}
	if fake.opened != 1 || fake.dropped != 1 {
		t.Fatalf("handles: %d opened, %d released; want 1 and 1", fake.opened, fake.dropped)
	}
	// Listings that stop early keep their handle for a while, bounded.
	var stop uint64
	for node := uint64(100); node < 100+2*maxDirConts; node++ {
		stop = list(t, d, node, 0, 1)
	}
	if open := len(fake.open); open != maxDirConts {
		t.Fatalf("%d handles open after abandoned listings, want %d", open, maxDirConts)
	}
	// The newest one continues where it stopped, on its handle.
	opened := fake.opened
	if got := list(t, d, 100+2*maxDirConts-1, stop, -1); got != 5000 || fake.opened != opened {
		t.Fatalf("continued listing ended at %d and opened %d handles", got, fake.opened-opened)
	}
	// A restart at offset 0 opens afresh (rewinddir sees changes).
	list(t, d, 7, 0, 1)
	list(t, d, 7, 0, -1)
	if fake.opened != opened+2 {
		t.Fatalf("%d handles opened for a continuation and a restart, want 2", fake.opened-opened)
	}
}
