// Package find searches file names and decrypted file content across
// snapshots of a repository (and, optionally, a live tree on disk), with no
// FUSE and no local state: the repository alone.
//
// Nouns:
//   - Version: a snapshot searched, named by its time (repo.TimeFormat); the
//     live tree, when given, is the version "live".
//   - Content id: history.ContentID, the keyed hash of a file's chunk list.
//     Equal ids mean equal content. Every distinct content is read and
//     searched at most once, however many versions and paths share it; live
//     files are cut with the repository's chunker while they are read, so a
//     live file equal to a stored one gets the same id.
//   - Group: one directory tree id at one path. A subtree that is unchanged
//     between snapshots has the same id and is loaded and examined once;
//     later snapshots only add their name to the group and its descendants.
//   - Match: one (path, content) pair that passed the name and content
//     tests, with the versions showing it, the matching line numbers and
//     the other paths (in any searched version) holding the same content:
//     its copies.
//
// Content is searched line by line: a file's chunks are streamed in order
// through one buffered reader, so a line that spans a chunk boundary is one
// line. Lines longer than Options.MaxLine are searched in overlapping
// pieces (bounded memory); a match longer than the overlap that straddles
// two pieces can be missed, and a warning says so.
package find
