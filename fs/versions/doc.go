// Package versions is the read-only .versions tree of a keepfs mount: one
// directory per snapshot, named by its time (2026-11-28T130500Z, UTC, ISO
// 8601 basic, so names sort as text), plus "latest".
//
// Nouns:
//   - Root: the .versions directory. Readdir lists every snapshot and
//     latest; Lookup also accepts any other name of the snapshot form, or a
//     prefix of one (2026-11-28T13, 2026-11-28), and resolves it to the
//     newest snapshot at or before the end of that period. A time before
//     the first snapshot is ENOENT.
//   - Names: two snapshots that fall in the same second are told apart
//     deterministically: in repository order (oldest first, ties broken by
//     the parent chain) the first keeps the plain name and later ones get
//     "-1", "-2", ….
//   - Source: what the tree reads from (*repo.Repository via RepoSource):
//     the snapshot list, tree blobs, data blobs and their plaintext sizes
//     from the index, which place a read offset within a file's chunk list.
//
// Snapshots never change, so everything below a snapshot directory carries
// long kernel entry and attribute timeouts and files open with
// FOPEN_KEEP_CACHE, and directory listings are cached too (FOPEN_CACHE_DIR).
// The root's names change meaning (latest and prefixes move, prune removes
// snapshots), so they carry a short entry timeout (Options.ListTTL) and
// Refresh invalidates every name the kernel holds that now resolves
// elsewhere. Inode numbers are a hash of (snapshot id,
// path), stable across mounts. Every change (write, create, mkdir, unlink,
// rename, setattr, setxattr) is EROFS. A blob that fails authentication, or
// whose decoded size disagrees with the index, is EIO and is logged: the
// tree never returns wrong bytes.
//
// Reads fetch whole chunks (about 1 MiB) through a byte-bounded LRU of
// decoded chunks shared by all files; a sequential reader triggers a
// background load of the next chunk so the remote round trip overlaps with
// the kernel consuming the current one.
package versions
