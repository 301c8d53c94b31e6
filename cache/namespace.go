package cache

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	badger "github.com/dgraph-io/badger/v4"
	"golang.org/x/sys/unix"

	"github.com/keepfs/keepfs/cache/meta"
	"github.com/keepfs/keepfs/cache/namespace"
	"github.com/keepfs/keepfs/policy/ignore"
	"github.com/keepfs/keepfs/repo/tree"
)

// Attr is what stat shows of an inode.
type Attr struct {
	Ino                 uint64
	Type                tree.Type
	Mode                uint32 // 07777 bits
	Nlink               uint32
	UID, GID            uint32
	Size                uint64
	Rdev                uint64
	Atime, Mtime, Ctime int64 // ns since the epoch
	// Holes is how many bytes of a file its committed holes take, so
	// st_blocks shows what is stored: tools (cp, tar, rsync) look for
	// holes with SEEK_DATA only in files with fewer blocks than bytes.
	Holes uint64
}

// Blocks is st_blocks: 512-byte units of what is not a hole.
func (a Attr) Blocks() uint64 { return (a.Size - min(a.Holes, a.Size) + 511) / 512 }

// UnixMode returns the mode with its S_IFMT type bits.
func (a Attr) UnixMode() uint32 { return typeBits(a.Type) | a.Mode }

func typeBits(t tree.Type) uint32 {
	switch t {
	case tree.Dir:
		return unix.S_IFDIR
	case tree.Symlink:
		return unix.S_IFLNK
	case tree.FIFO:
		return unix.S_IFIFO
	case tree.CharDev:
		return unix.S_IFCHR
	case tree.BlockDev:
		return unix.S_IFBLK
	case tree.Socket:
		return unix.S_IFSOCK
	}
	return unix.S_IFREG
}

// TypeFromMode maps S_IFMT bits to a node type.
func TypeFromMode(mode uint32) tree.Type {
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return tree.Dir
	case unix.S_IFLNK:
		return tree.Symlink
	case unix.S_IFIFO:
		return tree.FIFO
	case unix.S_IFCHR:
		return tree.CharDev
	case unix.S_IFBLK:
		return tree.BlockDev
	case unix.S_IFSOCK:
		return tree.Socket
	}
	return tree.File
}

// DirEntry is one entry of ReadDir.
type DirEntry = namespace.DirEntry

// NewNode describes an inode to create. UID and GID are the caller's; the
// mode is used as given (the kernel has already applied the umask).
type NewNode struct {
	Type     tree.Type
	Mode     uint32
	UID, GID uint32
	Rdev     uint64
	Target   string // symlink target
}

func attrOf(ino uint64, n *meta.Inode) Attr {
	a := Attr{Ino: ino, Type: n.Type, Mode: n.Mode, Nlink: n.Nlink, UID: n.UID, GID: n.GID,
		Size: n.Size, Rdev: n.Rdev, Atime: n.Atime, Mtime: n.Mtime, Ctime: n.Ctime}
	for _, ch := range n.Chunks {
		if ch.IsHole() {
			a.Holes += ch.Len
		}
	}
	return a
}

func checkName(name string) error {
	if len(name) > 255 {
		return fmt.Errorf("%q: %w", name[:32]+"...", ErrNameTooLong)
	}
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("%q: %w", name, ErrInvalid)
	}
	return nil
}

func (c *Cache) now() int64 { return c.opts.Now().UnixNano() }

// Root returns the root's inode number.
func (c *Cache) Root() uint64 { return meta.RootIno }

// GetAttr returns the attributes of ino, including size and times of
// uncommitted writes.
func (c *Cache) GetAttr(ctx context.Context, ino uint64) (Attr, error) {
	n, err := c.getInode(ino)
	if err != nil {
		return Attr{}, err
	}
	a := attrOf(ino, n)
	c.overlayOpen(&a)
	return a, nil
}

// overlayOpen applies the in-memory size and times of an open, dirty file.
func (c *Cache) overlayOpen(a *Attr) {
	c.mu.Lock()
	f := c.open[a.Ino]
	c.mu.Unlock()
	if f != nil {
		f.overlayAttr(a)
	}
}

// Lookup finds name in directory parent.
func (c *Cache) Lookup(ctx context.Context, parent uint64, name string) (Attr, error) {
	if len(name) > 255 {
		return Attr{}, ErrNameTooLong
	}
	ino, n, err := c.lookupInode(parent, name)
	if err != nil {
		return Attr{}, err
	}
	a := attrOf(ino, n)
	c.overlayOpen(&a)
	return a, nil
}

// Create makes a new inode called name in parent.
func (c *Cache) Create(ctx context.Context, parent uint64, name string, nn NewNode) (Attr, error) {
	if err := c.readOnly(); err != nil {
		return Attr{}, err
	}
	if err := checkName(name); err != nil {
		return Attr{}, err
	}
	c.nsMu.Lock()
	defer c.nsMu.Unlock()
	var a Attr
	err := c.update(func(txn *wtxn) error {
		p, err := txn.Inode(parent)
		if err != nil {
			return err
		}
		if p.Type != tree.Dir {
			return ErrNotDir
		}
		if _, _, err := txn.Lookup(parent, name); err == nil {
			return ErrExists
		} else if !errors.Is(err, ErrNotFound) {
			return err
		}
		ino, err := c.allocIno()
		if err != nil {
			return err
		}
		now := c.now()
		n := &meta.Inode{Type: nn.Type, Mode: nn.Mode & 0o7777, UID: nn.UID, GID: nn.GID, Nlink: 1,
			Rdev: nn.Rdev, Atime: now, Mtime: now, Ctime: now, Parent: parent, Name: name, Target: nn.Target}
		if nn.Type == tree.Symlink {
			n.Size = uint64(len(nn.Target))
			n.Mode = 0o777
		}
		// BSD group semantics for setgid directories: the new entry takes
		// the directory's group, and subdirectories stay setgid.
		if p.Mode&unix.S_ISGID != 0 {
			n.GID = p.GID
			if nn.Type == tree.Dir {
				n.Mode |= unix.S_ISGID
			}
		}
		if nn.Type == tree.Dir {
			n.Nlink = 2
			p.Nlink++
			txn.NewDir(ino)
		}
		p.Mtime, p.Ctime = now, now
		if err := txn.PutInode(ino, n); err != nil {
			return err
		}
		if err := txn.PutInode(parent, p); err != nil {
			return err
		}
		a = attrOf(ino, n)
		return txn.SetDirent(parent, name, ino, nn.Type)
	})
	if err != nil {
		return Attr{}, fmt.Errorf("create %q: %w", name, err)
	}
	c.nameChanged(parent, name)
	return a, nil
}

// Readlink returns a symlink's target.
func (c *Cache) Readlink(ctx context.Context, ino uint64) (string, error) {
	n, err := c.getInode(ino)
	if err != nil {
		return "", err
	}
	if n.Type != tree.Symlink {
		return "", ErrInvalid
	}
	return n.Target, nil
}

// Link adds a hard link newName in newParent to ino.
func (c *Cache) Link(ctx context.Context, ino, newParent uint64, newName string) (Attr, error) {
	if err := c.readOnly(); err != nil {
		return Attr{}, err
	}
	if err := checkName(newName); err != nil {
		return Attr{}, err
	}
	c.nsMu.Lock()
	defer c.nsMu.Unlock()
	var a Attr
	err := c.update(func(txn *wtxn) error {
		n, err := txn.Inode(ino)
		if err != nil {
			return err
		}
		if n.Type == tree.Dir {
			return ErrIsDir
		}
		if n.Nlink >= 65000 {
			return ErrTooManyLink
		}
		p, err := txn.Inode(newParent)
		if err != nil {
			return err
		}
		if _, _, err := txn.Lookup(newParent, newName); err == nil {
			return ErrExists
		} else if !errors.Is(err, ErrNotFound) {
			return err
		}
		now := c.now()
		if n.Nlink == 0 { // an O_TMPFILE file getting its name
			n.Parent, n.Name = newParent, newName
		} else if newName == ignore.FileName || n.Name == ignore.FileName {
			if err := txn.markRules(ino); err != nil {
				return err
			}
		}
		n.Nlink++
		n.Ctime = now
		p.Mtime, p.Ctime = now, now
		if err := txn.PutInode(ino, n); err != nil {
			return err
		}
		if err := txn.PutInode(newParent, p); err != nil {
			return err
		}
		a = attrOf(ino, n)
		return txn.SetDirent(newParent, newName, ino, n.Type)
	})
	if err != nil {
		return Attr{}, fmt.Errorf("link %q: %w", newName, err)
	}
	c.overlayOpen(&a)
	// A file with several links has several parents: drop every cached tree.
	c.invalidateAllTrees()
	c.nameChanged(newParent, newName)
	return a, nil
}

// Unlink removes a non-directory entry. The inode lives on while open.
func (c *Cache) Unlink(ctx context.Context, parent uint64, name string) error {
	if err := c.readOnly(); err != nil {
		return err
	}
	c.nsMu.Lock()
	defer c.nsMu.Unlock()
	var linked bool
	err := c.update(func(txn *wtxn) error {
		linked = false
		ino, t, err := txn.Lookup(parent, name)
		if err != nil {
			return err
		}
		if t == tree.Dir {
			return ErrIsDir
		}
		if linked, err = hasOtherLinks(txn, ino); err != nil {
			return err
		}
		return c.dropEntryTxn(txn, parent, name, ino)
	})
	if err != nil {
		return fmt.Errorf("unlink %q: %w", name, err)
	}
	if linked {
		// The other links' trees record the link count.
		c.invalidateAllTrees()
	}
	c.nameChanged(parent, name)
	return nil
}

// hasOtherLinks reports whether ino is a file with more than one link: the
// trees of every directory holding one record the count, and no index
// says which directories those are.
func hasOtherLinks(txn *wtxn, ino uint64) (bool, error) {
	n, err := txn.Inode(ino)
	if err != nil {
		return false, err
	}
	return n.Type != tree.Dir && n.Nlink > 1, nil
}

// dropEntryTxn removes dirent parent/name of ino and one link of ino.
func (c *Cache) dropEntryTxn(txn *wtxn, parent uint64, name string, ino uint64) error {
	n, err := txn.Inode(ino)
	if err != nil {
		return err
	}
	p, err := txn.Inode(parent)
	if err != nil {
		return err
	}
	now := c.now()
	if err := txn.DelDirent(parent, name); err != nil {
		return err
	}
	p.Mtime, p.Ctime = now, now
	if n.Type == tree.Dir {
		p.Nlink--
		n.Nlink = 0
	} else if n.Nlink > 0 {
		n.Nlink--
	}
	n.Ctime = now
	if err := txn.PutInode(parent, p); err != nil {
		return err
	}
	// An inode without links stays until nothing refers to it: the last
	// handle's release, the kernel's forget (Forget), or the next Open,
	// whichever comes first. fstat on an open descriptor must still work.
	return txn.PutInode(ino, n)
}

// Forget tells the cache that the kernel holds no reference to ino any
// more: an inode without links goes now.
func (c *Cache) Forget(ino uint64) {
	if ino == meta.RootIno || c.isOpen(ino) {
		return
	}
	n, err := c.getInode(ino)
	if err != nil || n.Nlink > 0 {
		return
	}
	c.nsMu.Lock()
	defer c.nsMu.Unlock()
	err = c.update(func(txn *wtxn) error {
		n, err := txn.Inode(ino)
		if err != nil || n.Nlink > 0 || c.isOpen(ino) {
			return err
		}
		return txn.DelInode(ino)
	})
	if err != nil && !errors.Is(err, ErrNotFound) {
		c.log.Warn("cannot drop an unlinked inode", "ino", ino, "err", err)
	}
}

// CreateUnlinked makes a file with no name in parent, for O_TMPFILE: it
// gets one if the caller links it into place.
func (c *Cache) CreateUnlinked(ctx context.Context, parent uint64, nn NewNode) (Attr, error) {
	if err := c.readOnly(); err != nil {
		return Attr{}, err
	}
	c.nsMu.Lock()
	defer c.nsMu.Unlock()
	var a Attr
	err := c.update(func(txn *wtxn) error {
		p, err := txn.Inode(parent)
		if err != nil {
			return err
		}
		if p.Type != tree.Dir {
			return ErrNotDir
		}
		ino, err := c.allocIno()
		if err != nil {
			return err
		}
		now := c.now()
		n := &meta.Inode{Type: tree.File, Mode: nn.Mode & 0o7777, UID: nn.UID, GID: nn.GID,
			Atime: now, Mtime: now, Ctime: now, Parent: parent}
		if p.Mode&unix.S_ISGID != 0 {
			n.GID = p.GID
		}
		a = attrOf(ino, n)
		return txn.PutInode(ino, n)
	})
	if err != nil {
		return Attr{}, fmt.Errorf("create unnamed file: %w", err)
	}
	return a, nil
}

func (c *Cache) isOpen(ino uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.open[ino] != nil
}

// Rmdir removes an empty directory.
func (c *Cache) Rmdir(ctx context.Context, parent uint64, name string) error {
	if err := c.readOnly(); err != nil {
		return err
	}
	c.nsMu.Lock()
	defer c.nsMu.Unlock()
	err := c.update(func(txn *wtxn) error {
		ino, t, err := txn.Lookup(parent, name)
		if err != nil {
			return err
		}
		if t != tree.Dir {
			return ErrNotDir
		}
		if !namespace.DirEmpty(txn.badger(), ino) {
			return ErrNotEmpty
		}
		return c.dropEntryTxn(txn, parent, name, ino)
	})
	if err != nil {
		return fmt.Errorf("rmdir %q: %w", name, err)
	}
	c.nameChanged(parent, name)
	return nil
}

// Rename flags, as in renameat2(2).
const (
	RenameNoReplace = unix.RENAME_NOREPLACE
	RenameExchange  = unix.RENAME_EXCHANGE
)

// Rename moves oldParent/oldName to newParent/newName.
func (c *Cache) Rename(ctx context.Context, oldParent uint64, oldName string, newParent uint64, newName string, flags uint32) error {
	if err := c.readOnly(); err != nil {
		return err
	}
	if err := checkName(newName); err != nil {
		return err
	}
	c.nsMu.Lock()
	defer c.nsMu.Unlock()
	var linked bool
	err := c.update(func(txn *wtxn) error {
		linked = false
		sino, st, err := txn.Lookup(oldParent, oldName)
		if err != nil {
			return err
		}
		dino, dt, derr := txn.Lookup(newParent, newName)
		if derr != nil && !errors.Is(derr, ErrNotFound) {
			return derr
		}
		exists := derr == nil
		now := c.now()
		if flags&RenameExchange != 0 {
			if !exists {
				return ErrNotFound
			}
			if err := txn.SetDirent(oldParent, oldName, dino, dt); err != nil {
				return err
			}
			if err := txn.SetDirent(newParent, newName, sino, st); err != nil {
				return err
			}
			if err := c.reparentTxn(txn, sino, st, oldParent, newParent, newName, now); err != nil {
				return err
			}
			return c.reparentTxn(txn, dino, dt, newParent, oldParent, oldName, now)
		}
		if exists {
			if flags&RenameNoReplace != 0 {
				return ErrExists
			}
			if sino == dino {
				return nil // two links of one file: POSIX says do nothing
			}
			switch {
			case st == tree.Dir && dt != tree.Dir:
				return ErrNotDir
			case st != tree.Dir && dt == tree.Dir:
				return ErrIsDir
			case dt == tree.Dir && !namespace.DirEmpty(txn.badger(), dino):
				return ErrNotEmpty
			}
			if linked, err = hasOtherLinks(txn, dino); err != nil {
				return err
			}
			if err := c.dropEntryTxn(txn, newParent, newName, dino); err != nil {
				return err
			}
		}
		if err := txn.DelDirent(oldParent, oldName); err != nil {
			return err
		}
		if err := txn.SetDirent(newParent, newName, sino, st); err != nil {
			return err
		}
		return c.reparentTxn(txn, sino, st, oldParent, newParent, newName, now)
	})
	if err != nil {
		return fmt.Errorf("rename %q to %q: %w", oldName, newName, err)
	}
	if linked {
		c.invalidateAllTrees()
	}
	c.nameChanged(oldParent, oldName)
	c.nameChanged(newParent, newName)
	// A moved directory's cached trees stay right if the same ignore rules
	// reach it at its new path (snapshot.Walk.dir checks), and its old and new
	// ancestors changed: nameChanged covered both paths.
	return nil
}

// reparentTxn records that ino (of type t) moved from oldParent to
// newParent as name, fixing directory link counts and times.
func (c *Cache) reparentTxn(txn *wtxn, ino uint64, t tree.Type, oldParent, newParent uint64, name string, now int64) error {
	n, err := txn.Inode(ino)
	if err != nil {
		return err
	}
	if n.Nlink > 1 && n.Name == ignore.FileName && name != ignore.FileName {
		// Its other name may still be a .gdprignore.
		if err := txn.markRules(ino); err != nil {
			return err
		}
	}
	n.Parent, n.Name, n.Ctime = newParent, name, now
	if err := txn.PutInode(ino, n); err != nil {
		return err
	}
	parents := []uint64{oldParent}
	if newParent != oldParent {
		parents = append(parents, newParent)
	}
	for _, pi := range parents {
		p, err := txn.Inode(pi)
		if err != nil {
			return err
		}
		p.Mtime, p.Ctime = now, now
		if t == tree.Dir && oldParent != newParent {
			if pi == oldParent {
				p.Nlink--
			} else {
				p.Nlink++
			}
		}
		if err := txn.PutInode(pi, p); err != nil {
			return err
		}
	}
	return nil
}

// ReadDir lists a directory, sorted by name.
func (c *Cache) ReadDir(ctx context.Context, ino uint64) ([]DirEntry, error) {
	var out []DirEntry
	n, err := c.getInode(ino)
	if err != nil {
		return nil, err
	}
	if n.Type != tree.Dir {
		return nil, ErrNotDir
	}
	err = c.view(func(txn *badger.Txn) error {
		var err error
		out, err = namespace.ReadDir(txn, ino)
		return err
	})
	return out, err
}

// SetAttrIn lists the attributes to change; nil fields stay.
type SetAttrIn struct {
	Mode         *uint32
	UID, GID     *uint32
	Size         *uint64
	Atime, Mtime *int64
	// KillPriv drops what a chown or an unprivileged truncate must drop:
	// setuid, setgid on a group-executable file, and security.capability.
	KillPriv bool
}

// capabilityXattr holds file capabilities, which writes and chowns drop.
const capabilityXattr = "security.capability"

// killPriv drops n's file capabilities and, with suid, its setuid and
// setgid bits; it reports whether anything changed.
func killPriv(n *meta.Inode, suid bool) bool {
	changed := false
	if suid && n.Type != tree.Dir {
		if n.Mode&unix.S_ISUID != 0 {
			n.Mode &^= unix.S_ISUID
			changed = true
		}
		if n.Mode&(unix.S_ISGID|unix.S_IXGRP) == unix.S_ISGID|unix.S_IXGRP {
			n.Mode &^= unix.S_ISGID
			changed = true
		}
	}
	if i := slices.IndexFunc(n.Xattrs, func(x tree.Xattr) bool { return x.Name == capabilityXattr }); i >= 0 {
		n.Xattrs = slices.Delete(slices.Clone(n.Xattrs), i, i+1)
		changed = true
	}
	return changed
}

// KillPriv does for a write what the kernel leaves to the file system
// (FUSE_HANDLE_KILLPRIV_V2): a write drops file capabilities, and, when
// the writer lacks CAP_FSETID (suid), the setuid and setgid bits. The
// common case, nothing to drop, reads only the cached inode.
func (c *Cache) KillPriv(ctx context.Context, ino uint64, suid bool) error {
	n, err := c.getInode(ino)
	if err != nil {
		return err
	}
	if suid {
		// Writes come through open handles: the mode change joins the
		// file's pending attributes.
		if f := c.openRef(ino); f != nil {
			f.mu.Lock()
			f.killSuidLocked(n.Mode)
			f.mu.Unlock()
			if err := c.release(ctx, f); err != nil {
				return err
			}
		}
	}
	return c.dropCapability(ino, n)
}

// dropCapability removes security.capability from ino (n is its inode).
func (c *Cache) dropCapability(ino uint64, n *meta.Inode) error {
	if !slices.ContainsFunc(n.Xattrs, func(x tree.Xattr) bool { return x.Name == capabilityXattr }) {
		return nil
	}
	err := c.changeXattr(ino, func(n *meta.Inode) error {
		killPriv(n, false)
		return nil
	})
	if err != nil {
		return fmt.Errorf("drop file capabilities: %w", err)
	}
	return nil
}

// SetAttr changes attributes; a size change truncates or extends the file.
func (c *Cache) SetAttr(ctx context.Context, ino uint64, in SetAttrIn) (Attr, error) {
	if f := c.openRef(ino); f != nil {
		a, err := c.setAttrOpen(ctx, f, in)
		if rerr := c.release(ctx, f); err == nil && rerr != nil {
			return Attr{}, rerr
		}
		return a, err
	}
	if in.Size != nil {
		f, err := c.acquire(ctx, ino)
		if err != nil {
			return Attr{}, err
		}
		err = f.truncate(ctx, *in.Size)
		if err == nil && c.isSingleUse(f) {
			// A truncate by path has no handle whose close would commit.
			err = c.commit(ctx, f, false)
		}
		c.release(ctx, f)
		if err != nil {
			return Attr{}, err
		}
	}
	c.nsMu.Lock()
	var a Attr
	err := c.update(func(txn *wtxn) error {
		n, err := txn.Inode(ino)
		if err != nil {
			return err
		}
		now := c.now()
		if in.Mode != nil {
			n.Mode = *in.Mode & 0o7777
		}
		if in.UID != nil {
			n.UID = *in.UID
		}
		if in.GID != nil {
			n.GID = *in.GID
		}
		if in.Atime != nil {
			n.Atime = *in.Atime
		}
		if in.Mtime != nil {
			n.Mtime = *in.Mtime
		}
		if in.KillPriv {
			killPriv(n, true)
		}
		n.Ctime = now
		a = attrOf(ino, n)
		return txn.PutInode(ino, n)
	})
	c.nsMu.Unlock()
	if err != nil {
		return Attr{}, fmt.Errorf("setattr: %w", err)
	}
	if in.Mtime != nil {
		c.mu.Lock()
		f := c.open[ino]
		c.mu.Unlock()
		if f != nil {
			f.setMtime(*in.Mtime)
		}
	}
	c.inodeChanged(ino)
	c.overlayOpen(&a)
	return a, nil
}

// Xattr flags, as in setxattr(2).
const (
	XattrCreate  = unix.XATTR_CREATE
	XattrReplace = unix.XATTR_REPLACE
)

// maxXattrValue matches what a tree can store.
const maxXattrValue = 64 << 10

// GetXattr returns one extended attribute.
func (c *Cache) GetXattr(ctx context.Context, ino uint64, name string) ([]byte, error) {
	n, err := c.getInode(ino)
	if err != nil {
		return nil, err
	}
	for _, x := range n.Xattrs {
		if x.Name == name {
			return x.Value, nil
		}
	}
	return nil, ErrNoAttr
}

// ListXattr returns the attribute names, sorted.
func (c *Cache) ListXattr(ctx context.Context, ino uint64) ([]string, error) {
	n, err := c.getInode(ino)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(n.Xattrs))
	for _, x := range n.Xattrs {
		out = append(out, x.Name)
	}
	return out, nil
}

// SetXattr sets (flags XattrCreate/XattrReplace) an extended attribute.
func (c *Cache) SetXattr(ctx context.Context, ino uint64, name string, value []byte, flags uint32) error {
	if err := c.readOnly(); err != nil {
		return err
	}
	if len(value) > maxXattrValue {
		return ErrRange
	}
	if name == "" || len(name) > 255 {
		return ErrRange
	}
	return c.changeXattr(ino, func(n *meta.Inode) error {
		i := sort.Search(len(n.Xattrs), func(i int) bool { return n.Xattrs[i].Name >= name })
		found := i < len(n.Xattrs) && n.Xattrs[i].Name == name
		switch {
		case found && flags&XattrCreate != 0:
			return ErrExists
		case !found && flags&XattrReplace != 0:
			return ErrNoAttr
		case found:
			n.Xattrs[i].Value = append([]byte(nil), value...)
		default:
			n.Xattrs = append(n.Xattrs, tree.Xattr{})
			copy(n.Xattrs[i+1:], n.Xattrs[i:])
			n.Xattrs[i] = tree.Xattr{Name: name, Value: append([]byte(nil), value...)}
		}
		return nil
	})
}

// RemoveXattr deletes an extended attribute.
func (c *Cache) RemoveXattr(ctx context.Context, ino uint64, name string) error {
	if err := c.readOnly(); err != nil {
		return err
	}
	return c.changeXattr(ino, func(n *meta.Inode) error {
		for i, x := range n.Xattrs {
			if x.Name == name {
				n.Xattrs = append(n.Xattrs[:i], n.Xattrs[i+1:]...)
				return nil
			}
		}
		return ErrNoAttr
	})
}

func (c *Cache) changeXattr(ino uint64, fn func(*meta.Inode) error) error {
	c.nsMu.Lock()
	err := c.update(func(txn *wtxn) error {
		n, err := txn.Inode(ino)
		if err != nil {
			return err
		}
		// fn edits the list in place; the cached inode shares it.
		n.Xattrs = slices.Clone(n.Xattrs)
		if err := fn(n); err != nil {
			return err
		}
		n.Ctime = c.now()
		return txn.PutInode(ino, n)
	})
	c.nsMu.Unlock()
	if err != nil {
		return fmt.Errorf("xattr: %w", err)
	}
	c.inodeChanged(ino)
	return nil
}

// StatFs describes the file system for statfs(2).
type StatFs struct {
	Blocks, Bfree, Bavail uint64
	Files, Ffree          uint64
	Bsize                 uint32
	NameLen               uint32
}

// StatFs reports the local state directory's free space: that is what
// bounds writes before they reach the remote.
func (c *Cache) StatFs(ctx context.Context) (StatFs, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(c.opts.StateDir, &st); err != nil {
		return StatFs{}, fmt.Errorf("statfs state directory: %w", err)
	}
	c.mu.Lock()
	used := c.nextIno
	c.mu.Unlock()
	return StatFs{Blocks: st.Blocks, Bfree: st.Bfree, Bavail: st.Bavail, Bsize: uint32(st.Bsize),
		Files: used + 1<<32, Ffree: 1 << 32, NameLen: 255}, nil
}

// nameChanged records a change of entry name in dir: the directory's tree
// and its ancestors' are stale. A .gdprignore among them needs no more:
// the trees below dir were built under rules that included its content,
// so the next walk finds them stale (see snapshot.Walk.dir).
//
// A .gdprignore coming, going or being renamed also stops the upload of
// what the last walk decided (snapshot.Scheduler.RulesChanged).
func (c *Cache) nameChanged(dir uint64, name string) {
	c.dirChanged(dir)
	if name == ignore.FileName {
		c.snap.RulesChanged()
	}
}

// inodeChanged records an attribute or content change of ino. A change of
// a .gdprignore (its content or its mode: an unreadable one excludes)
// stops the upload of what the last walk decided, whichever of its names
// it was made through (see ignorelinks.go).
func (c *Cache) inodeChanged(ino uint64) {
	n, err := c.getInode(ino)
	if err != nil {
		c.invalidateAllTrees()
		return
	}
	if n.Type == tree.Dir {
		c.dirChanged(ino)
		return
	}
	if n.Name == ignore.FileName || c.isRulesInode(ino) {
		c.snap.RulesChanged()
	}
	if n.Nlink > 1 {
		c.invalidateAllTrees()
		return
	}
	c.dirChanged(n.Parent)
}

// dirChanged drops the cached trees of dir and its ancestors.
func (c *Cache) dirChanged(dir uint64) {
	c.noteChange()
	if err := c.trees.DirChanged(dir); err != nil {
		c.invalidateAllTrees()
	}
}

// invalidateAllTrees records a change that may reach any directory.
func (c *Cache) invalidateAllTrees() { c.snap.InvalidateAll() }
