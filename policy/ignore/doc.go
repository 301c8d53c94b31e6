// Package ignore decides which paths of a tree keepfs must keep out of
// snapshots, from .gdprignore files with exactly git's .gitignore semantics.
//
// Nouns:
//   - An ignore file is a file named FileName (".gdprignore") in any
//     directory of a tree. Its directory is the file's base: its patterns
//     only apply to paths below it.
//   - A pattern is one line of an ignore file. Blank lines and lines starting
//     with '#' are not patterns; "\#" and "\!" escape a leading '#' or '!';
//     unescaped trailing spaces are dropped ("\ " keeps one). A leading '!'
//     negates (re-includes), a trailing '/' restricts the pattern to
//     directories. A pattern without any other '/' matches a name at any
//     depth below the base; one with a '/' at its start or middle is anchored
//     to the base and matched against the whole relative path, where "**/",
//     "/**/" and "/**" span directories and `*`, `?`, `[...]` (with `!`/`^`
//     negation, ranges and [:class:]) stay within one component.
//   - A Matcher holds the ignore files of one tree, addressed by path
//     components relative to its root.
//   - A Decision is the outcome for one path: ignored or not, and the file,
//     line and pattern that decided, printable like `git check-ignore -v`.
//
// Precedence is git's: within a file the last matching line wins, a deeper
// file wins over a shallower one, and a path inside an excluded directory
// stays excluded whatever deeper lines say, because git never descends into
// an excluded directory (Explain applies that rule; Match is for walkers that
// already skip excluded directories).
//
// The matching engine is a port of git's own wildmatch and dir.c matching,
// byte for byte, rather than a third-party matcher: go-git's
// plumbing/format/gitignore (v5.19.3, and v6.0.0-beta.1) was checked against
// git and disagrees on inputs a user can write. Its `**` does not backtrack
// ("a/**/b/c" misses a/b/x/b/c), "foo/**" matches the directory foo itself,
// its Pattern.Match also answers for paths below a matched directory so
// "foo/" followed by "!foo/bar" wrongly re-includes foo/bar, and "foo\  "
// (escaped space then a trailing space) matches nothing; v5 additionally
// lacks "[!a]", "[]a]" and POSIX classes and lets `?` match a whole UTF-8
// rune. git-lfs/wildmatch was also rejected: it rewrites unknown escapes to
// '/' and panics on malformed patterns. Fidelity is pinned by tests that run
// real `git check-ignore` as the oracle over table cases, every byte value
// in each character class, and randomly generated trees of ignore files.
package ignore
