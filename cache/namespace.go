package cache

import (
	"context"
	"errors"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"
	"golang.org/x/sys/unix"

	"github.com/keepfs/keepfs/cache/meta"
	"github.com/keepfs/keepfs/cache/namespace"
	"github.com/keepfs/keepfs/policy/ignore"
	"github.com/keepfs/keepfs/repo/tree"
)

// The namespace's types, as the file system sees them.
type (
	Attr      = namespace.Attr
	NewNode   = namespace.NewNode
	SetAttrIn = namespace.SetAttrIn
	DirEntry  = namespace.DirEntry
)

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
	a := namespace.AttrOf(ino, n)
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
	a := namespace.AttrOf(ino, n)
	c.overlayOpen(&a)
	return a, nil
}

// Create makes a new inode called name in parent.
func (c *Cache) Create(ctx context.Context, parent uint64, name string, nn NewNode) (Attr, error) {
	if err := c.readOnly(); err != nil {
		return Attr{}, err
	}
	c.nsMu.Lock()
	defer c.nsMu.Unlock()
	var a Attr
	err := c.update(func(txn *wtxn) (err error) {
		a, err = txn.Create(parent, name, nn, c.allocIno, c.now())
		return err
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
	c.nsMu.Lock()
	var a Attr
	err := c.update(func(txn *wtxn) (err error) {
		a, err = txn.Link(ino, newParent, newName, c.now())
		return err
	})
	if err == nil {
		// A file with several links has several parents: drop every cached tree.
		c.invalidateAllTrees()
		c.nameChanged(newParent, newName)
	}
	c.nsMu.Unlock()
	if err != nil {
		return Attr{}, fmt.Errorf("link %q: %w", newName, err)
	}
	// Not under nsMu: the overlay may wait for the file's lock, and a
	// commit holding that lock takes nsMu to write the inode.
	c.overlayOpen(&a)
	return a, nil
}

// Unlink removes a non-directory entry. The inode lives on while open.
func (c *Cache) Unlink(ctx context.Context, parent uint64, name string) error {
	if err := c.readOnly(); err != nil {
		return err
	}
	return c.unlink(parent, name)
}

// unlink is Unlink without the read-only check: reconcile removes the
// files another client erased while the lock is still lapsed, before
// writes are allowed again.
func (c *Cache) unlink(parent uint64, name string) error {
	c.nsMu.Lock()
	defer c.nsMu.Unlock()
	var linked bool
	err := c.update(func(txn *wtxn) (err error) {
		linked, err = txn.Unlink(parent, name, c.now())
		return err
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
	err := c.update(func(txn *wtxn) (err error) {
		a, err = txn.CreateUnlinked(parent, nn, c.allocIno, c.now())
		return err
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
	err := c.update(func(txn *wtxn) error { return txn.Rmdir(parent, name, c.now()) })
	if err != nil {
		return fmt.Errorf("rmdir %q: %w", name, err)
	}
	c.nameChanged(parent, name)
	return nil
}

// Rename moves oldParent/oldName to newParent/newName (flags: the
// namespace's Rename flags).
func (c *Cache) Rename(ctx context.Context, oldParent uint64, oldName string, newParent uint64, newName string, flags uint32) error {
	if err := c.readOnly(); err != nil {
		return err
	}
	c.nsMu.Lock()
	defer c.nsMu.Unlock()
	var linked bool
	err := c.update(func(txn *wtxn) (err error) {
		linked, err = txn.Rename(oldParent, oldName, newParent, newName, flags, c.now())
		return err
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
			// Read again holding mu, like setAttrOpen: a commit in
			// between wrote the pending mode and cleared it.
			f.mu.Lock()
			m, err := c.getInode(ino)
			if err == nil {
				n = m
				f.killSuidLocked(n.Mode)
			}
			f.mu.Unlock()
			if err != nil {
				c.release(ctx, f)
				return err
			}
			if err := c.release(ctx, f); err != nil {
				return err
			}
		}
	}
	return c.dropCapability(ino, n)
}

// dropCapability removes security.capability from ino (n is its inode).
func (c *Cache) dropCapability(ino uint64, n *meta.Inode) error {
	if !namespace.HasCapability(n) {
		return nil
	}
	err := c.changeXattr(ino, func(txn *wtxn, now int64) error {
		return txn.ChangeXattrs(ino, func(n *meta.Inode) error {
			namespace.KillPriv(n, false)
			return nil
		}, now)
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
	err := c.update(func(txn *wtxn) (err error) {
		a, err = txn.SetAttr(ino, in, c.now())
		return err
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

// SetXattr sets (flags: the namespace's Xattr flags) an extended attribute.
func (c *Cache) SetXattr(ctx context.Context, ino uint64, name string, value []byte, flags uint32) error {
	if err := c.readOnly(); err != nil {
		return err
	}
	return c.changeXattr(ino, func(txn *wtxn, now int64) error {
		return txn.SetXattr(ino, name, value, flags, now)
	})
}

// RemoveXattr deletes an extended attribute.
func (c *Cache) RemoveXattr(ctx context.Context, ino uint64, name string) error {
	if err := c.readOnly(); err != nil {
		return err
	}
	return c.changeXattr(ino, func(txn *wtxn, now int64) error { return txn.RemoveXattr(ino, name, now) })
}

// changeXattr runs an attribute change of ino.
func (c *Cache) changeXattr(ino uint64, fn func(txn *wtxn, now int64) error) error {
	c.nsMu.Lock()
	err := c.update(func(txn *wtxn) error { return fn(txn, c.now()) })
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
// it was made through (see namespace.RulesMarks).
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
	if n.Name == ignore.FileName || c.marks.Has(ino) {
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
