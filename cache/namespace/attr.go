package namespace

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/keepfs/keepfs/cache/meta"
	"github.com/keepfs/keepfs/repo/tree"
)

// Sentinel errors of the namespace operations, besides ErrNotFound.
// Package fs maps each to one errno.
var (
	ErrExists      = errors.New("file exists")
	ErrNotEmpty    = errors.New("directory not empty")
	ErrNotDir      = errors.New("not a directory")
	ErrIsDir       = errors.New("is a directory")
	ErrInvalid     = errors.New("invalid argument")
	ErrNameTooLong = errors.New("file name too long")
	ErrNoAttr      = errors.New("no such attribute")
	ErrRange       = errors.New("attribute value too large")
	ErrTooManyLink = errors.New("too many links")
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

// typeModes pairs each node type but a regular file with its S_IFMT bits.
var typeModes = []struct {
	t    tree.Type
	mode uint32
}{
	{tree.Dir, unix.S_IFDIR},
	{tree.Symlink, unix.S_IFLNK},
	{tree.FIFO, unix.S_IFIFO},
	{tree.CharDev, unix.S_IFCHR},
	{tree.BlockDev, unix.S_IFBLK},
	{tree.Socket, unix.S_IFSOCK},
}

func typeBits(t tree.Type) uint32 {
	for _, tm := range typeModes {
		if tm.t == t {
			return tm.mode
		}
	}
	return unix.S_IFREG
}

// TypeFromMode maps S_IFMT bits to a node type.
func TypeFromMode(mode uint32) tree.Type {
	for _, tm := range typeModes {
		if tm.mode == mode&unix.S_IFMT {
			return tm.t
		}
	}
	return tree.File
}

// AttrOf is inode n's (number ino) attributes as stored.
func AttrOf(ino uint64, n *meta.Inode) Attr {
	a := Attr{Ino: ino, Type: n.Type, Mode: n.Mode, Nlink: n.Nlink, UID: n.UID, GID: n.GID,
		Size: n.Size, Rdev: n.Rdev, Atime: n.Atime, Mtime: n.Mtime, Ctime: n.Ctime}
	for _, ch := range n.Chunks {
		if ch.IsHole() {
			a.Holes += ch.Len
		}
	}
	return a
}

// NewNode describes an inode to create. UID and GID are the caller's; the
// mode is used as given (the kernel has already applied the umask).
type NewNode struct {
	Type     tree.Type
	Mode     uint32
	UID, GID uint32
	Rdev     uint64
	Target   string // symlink target
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

// CheckName refuses a name no directory entry may have.
func CheckName(name string) error {
	if len(name) > 255 {
		return fmt.Errorf("%q: %w", name[:32]+"...", ErrNameTooLong)
	}
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("%q: %w", name, ErrInvalid)
	}
	return nil
}

// CapabilityXattr holds file capabilities, which writes and chowns drop.
const CapabilityXattr = "security.capability"

// HasCapability reports whether n carries file capabilities.
func HasCapability(n *meta.Inode) bool {
	return slices.ContainsFunc(n.Xattrs, func(x tree.Xattr) bool { return x.Name == CapabilityXattr })
}

// KillPriv drops n's file capabilities and, with suid, its setuid and
// setgid bits; it reports whether anything changed. n's attribute list is
// replaced, not edited, since cached inodes may share it.
func KillPriv(n *meta.Inode, suid bool) bool {
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
	if i := slices.IndexFunc(n.Xattrs, func(x tree.Xattr) bool { return x.Name == CapabilityXattr }); i >= 0 {
		n.Xattrs = slices.Delete(slices.Clone(n.Xattrs), i, i+1)
		changed = true
	}
	return changed
}
