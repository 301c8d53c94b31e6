// Package history answers questions across snapshots, with no FUSE and no
// local state: the repository alone.
//
// Nouns:
//   - Version: one distinct state of one file, named by the first snapshot
//     that shows it. Consecutive snapshots with the same content at the
//     same path collapse into one Version.
//   - Content id: the repository's keyed hash (r.Key().BlobID) of the
//     concatenated chunk ids of a file. Equal ids mean equal content; the
//     id reveals nothing to someone without the key. Shown shortened to 16
//     hex digits.
//   - Rename: Log follows a file backwards through time; where its path is
//     missing in an older snapshot it looks in that snapshot for a file
//     with the content it had next (a pure rename), then for one with the
//     same recorded inode number (a rename plus an edit; only trees that
//     record inode numbers allow this), and goes on under that name. Diff
//     calls a removed file and an added file with the same content a
//     rename.
//   - Change: one difference between two snapshots (added, removed,
//     modified, renamed). Diff walks both trees in name order and skips any
//     subtree whose id is the same on both sides without reading it, so the
//     cost follows the size of the change, not of the tree. A change of
//     times alone is not a modification.
package history
