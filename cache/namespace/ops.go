package namespace

import (
	"errors"
	"slices"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/keepfs/keepfs/cache/meta"
	"github.com/keepfs/keepfs/policy/ignore"
	"github.com/keepfs/keepfs/repo/tree"
)

// The namespace operations as one transaction applies them: what they
// check and what they write. Package cache serialises them (its nsMu),
// allocates inode numbers and tells the snapshotter and the kernel what
// changed; now is the time stamp each writes.

// Rename flags, as in renameat2(2).
const (
	RenameNoReplace = unix.RENAME_NOREPLACE
	RenameExchange  = unix.RENAME_EXCHANGE
)

// Xattr flags, as in setxattr(2).
const (
	XattrCreate  = unix.XATTR_CREATE
	XattrReplace = unix.XATTR_REPLACE
)

// MaxXattrValue matches what a tree can store.
const MaxXattrValue = 64 << 10

// Create makes a new inode, numbered by alloc, called name in parent.
func (t *Txn) Create(parent uint64, name string, nn NewNode, alloc func() (uint64, error), now int64) (Attr, error) {
	if err := CheckName(name); err != nil {
		return Attr{}, err
	}
	p, err := t.Inode(parent)
	if err != nil {
		return Attr{}, err
	}
	if p.Type != tree.Dir {
		return Attr{}, ErrNotDir
	}
	if _, _, err := t.Lookup(parent, name); err == nil {
		return Attr{}, ErrExists
	} else if !errors.Is(err, ErrNotFound) {
		return Attr{}, err
	}
	ino, err := alloc()
	if err != nil {
		return Attr{}, err
	}
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
		t.NewDir(ino)
	}
	p.Mtime, p.Ctime = now, now
	if err := t.PutInode(ino, n); err != nil {
		return Attr{}, err
	}
	if err := t.PutInode(parent, p); err != nil {
		return Attr{}, err
	}
	return AttrOf(ino, n), t.SetDirent(parent, name, ino, nn.Type)
}

// CreateUnlinked makes a file, numbered by alloc, with no name in parent,
// for O_TMPFILE: it gets one if the caller links it into place.
func (t *Txn) CreateUnlinked(parent uint64, nn NewNode, alloc func() (uint64, error), now int64) (Attr, error) {
	p, err := t.Inode(parent)
	if err != nil {
		return Attr{}, err
	}
	if p.Type != tree.Dir {
		return Attr{}, ErrNotDir
	}
	ino, err := alloc()
	if err != nil {
		return Attr{}, err
	}
	n := &meta.Inode{Type: tree.File, Mode: nn.Mode & 0o7777, UID: nn.UID, GID: nn.GID,
		Atime: now, Mtime: now, Ctime: now, Parent: parent}
	if p.Mode&unix.S_ISGID != 0 {
		n.GID = p.GID
	}
	return AttrOf(ino, n), t.PutInode(ino, n)
}

// Link adds a hard link newName in newParent to ino.
func (t *Txn) Link(ino, newParent uint64, newName string, now int64) (Attr, error) {
	if err := CheckName(newName); err != nil {
		return Attr{}, err
	}
	n, err := t.Inode(ino)
	if err != nil {
		return Attr{}, err
	}
	if n.Type == tree.Dir {
		return Attr{}, ErrIsDir
	}
	if n.Nlink >= 65000 {
		return Attr{}, ErrTooManyLink
	}
	p, err := t.Inode(newParent)
	if err != nil {
		return Attr{}, err
	}
	if _, _, err := t.Lookup(newParent, newName); err == nil {
		return Attr{}, ErrExists
	} else if !errors.Is(err, ErrNotFound) {
		return Attr{}, err
	}
	if n.Nlink == 0 { // an O_TMPFILE file getting its name
		n.Parent, n.Name = newParent, newName
	} else if newName == ignore.FileName || n.Name == ignore.FileName {
		if err := t.markRules(ino); err != nil {
			return Attr{}, err
		}
	}
	n.Nlink++
	n.Ctime = now
	p.Mtime, p.Ctime = now, now
	if err := t.PutInode(ino, n); err != nil {
		return Attr{}, err
	}
	if err := t.PutInode(newParent, p); err != nil {
		return Attr{}, err
	}
	return AttrOf(ino, n), t.SetDirent(newParent, newName, ino, n.Type)
}

// Unlink removes a non-directory entry. linked reports that the file had
// other links, whose directories' trees record its link count.
func (t *Txn) Unlink(parent uint64, name string, now int64) (linked bool, err error) {
	ino, typ, err := t.Lookup(parent, name)
	if err != nil {
		return false, err
	}
	if typ == tree.Dir {
		return false, ErrIsDir
	}
	if linked, err = t.hasOtherLinks(ino); err != nil {
		return false, err
	}
	return linked, t.dropEntry(parent, name, ino, now)
}

// Rmdir removes an empty directory.
func (t *Txn) Rmdir(parent uint64, name string, now int64) error {
	ino, typ, err := t.Lookup(parent, name)
	if err != nil {
		return err
	}
	if typ != tree.Dir {
		return ErrNotDir
	}
	if !DirEmpty(t.Txn, ino) {
		return ErrNotEmpty
	}
	return t.dropEntry(parent, name, ino, now)
}

// hasOtherLinks reports whether ino is a file with more than one link: the
// trees of every directory holding one record the count, and no index
// says which directories those are.
func (t *Txn) hasOtherLinks(ino uint64) (bool, error) {
	n, err := t.Inode(ino)
	if err != nil {
		return false, err
	}
	return n.Type != tree.Dir && n.Nlink > 1, nil
}

// dropEntry removes entry parent/name of ino and one link of ino.
func (t *Txn) dropEntry(parent uint64, name string, ino uint64, now int64) error {
	n, err := t.Inode(ino)
	if err != nil {
		return err
	}
	p, err := t.Inode(parent)
	if err != nil {
		return err
	}
	if err := t.DelDirent(parent, name); err != nil {
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
	if err := t.PutInode(parent, p); err != nil {
		return err
	}
	// An inode without links stays until nothing refers to it: the last
	// handle's release, the kernel's forget, or the next open, whichever
	// comes first. fstat on an open descriptor must still work.
	return t.PutInode(ino, n)
}

// Rename moves oldParent/oldName to newParent/newName (flags as in
// renameat2). linked reports that a file it replaced had other links.
func (t *Txn) Rename(oldParent uint64, oldName string, newParent uint64, newName string, flags uint32, now int64) (linked bool, err error) {
	if err := CheckName(newName); err != nil {
		return false, err
	}
	sino, st, err := t.Lookup(oldParent, oldName)
	if err != nil {
		return false, err
	}
	dino, dt, derr := t.Lookup(newParent, newName)
	if derr != nil && !errors.Is(derr, ErrNotFound) {
		return false, derr
	}
	exists := derr == nil
	if flags&RenameExchange != 0 {
		if !exists {
			return false, ErrNotFound
		}
		if err := t.SetDirent(oldParent, oldName, dino, dt); err != nil {
			return false, err
		}
		if err := t.SetDirent(newParent, newName, sino, st); err != nil {
			return false, err
		}
		if err := t.reparent(sino, st, oldParent, newParent, newName, now); err != nil {
			return false, err
		}
		return false, t.reparent(dino, dt, newParent, oldParent, oldName, now)
	}
	if exists {
		if flags&RenameNoReplace != 0 {
			return false, ErrExists
		}
		if sino == dino {
			return false, nil // two links of one file: POSIX says do nothing
		}
		switch {
		case st == tree.Dir && dt != tree.Dir:
			return false, ErrNotDir
		case st != tree.Dir && dt == tree.Dir:
			return false, ErrIsDir
		case dt == tree.Dir && !DirEmpty(t.Txn, dino):
			return false, ErrNotEmpty
		}
		if linked, err = t.hasOtherLinks(dino); err != nil {
			return false, err
		}
		if err := t.dropEntry(newParent, newName, dino, now); err != nil {
			return false, err
		}
	}
	if err := t.DelDirent(oldParent, oldName); err != nil {
		return false, err
	}
	if err := t.SetDirent(newParent, newName, sino, st); err != nil {
		return false, err
	}
	return linked, t.reparent(sino, st, oldParent, newParent, newName, now)
}

// reparent records that ino (of type typ) moved from oldParent to
// newParent as name, fixing directory link counts and times.
func (t *Txn) reparent(ino uint64, typ tree.Type, oldParent, newParent uint64, name string, now int64) error {
	n, err := t.Inode(ino)
	if err != nil {
		return err
	}
	if n.Nlink > 1 && n.Name == ignore.FileName && name != ignore.FileName {
		// Its other name may still be a .gdprignore.
		if err := t.markRules(ino); err != nil {
			return err
		}
	}
	n.Parent, n.Name, n.Ctime = newParent, name, now
	if err := t.PutInode(ino, n); err != nil {
		return err
	}
	parents := []uint64{oldParent}
	if newParent != oldParent {
		parents = append(parents, newParent)
	}
	for _, pi := range parents {
		p, err := t.Inode(pi)
		if err != nil {
			return err
		}
		p.Mtime, p.Ctime = now, now
		if typ == tree.Dir && oldParent != newParent {
			if pi == oldParent {
				p.Nlink--
			} else {
				p.Nlink++
			}
		}
		if err := t.PutInode(pi, p); err != nil {
			return err
		}
	}
	return nil
}

// SetAttr changes the attributes in, except the size, which is the file
// layer's.
func (t *Txn) SetAttr(ino uint64, in SetAttrIn, now int64) (Attr, error) {
	n, err := t.Inode(ino)
	if err != nil {
		return Attr{}, err
	}
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
		KillPriv(n, true)
	}
	n.Ctime = now
	return AttrOf(ino, n), t.PutInode(ino, n)
}

// ChangeXattrs runs fn on ino's attribute list, which fn may edit in place.
func (t *Txn) ChangeXattrs(ino uint64, fn func(*meta.Inode) error, now int64) error {
	n, err := t.Inode(ino)
	if err != nil {
		return err
	}
	// The cached inode shares the list fn edits.
	n.Xattrs = slices.Clone(n.Xattrs)
	if err := fn(n); err != nil {
		return err
	}
	n.Ctime = now
	return t.PutInode(ino, n)
}

// SetXattr sets (flags XattrCreate/XattrReplace) attribute name of ino.
func (t *Txn) SetXattr(ino uint64, name string, value []byte, flags uint32, now int64) error {
	if len(value) > MaxXattrValue || name == "" || len(name) > 255 {
		return ErrRange
	}
	return t.ChangeXattrs(ino, func(n *meta.Inode) error {
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
			n.Xattrs = slices.Insert(n.Xattrs, i, tree.Xattr{Name: name, Value: append([]byte(nil), value...)})
		}
		return nil
	}, now)
}

// RemoveXattr deletes attribute name of ino.
func (t *Txn) RemoveXattr(ino uint64, name string, now int64) error {
	return t.ChangeXattrs(ino, func(n *meta.Inode) error {
		i := slices.IndexFunc(n.Xattrs, func(x tree.Xattr) bool { return x.Name == name })
		if i < 0 {
			return ErrNoAttr
		}
		n.Xattrs = slices.Delete(n.Xattrs, i, i+1)
		return nil
	}, now)
}
