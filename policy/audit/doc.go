// Package audit is keepfs's tamper-evident audit log: the entry format, its
// MAC, the hash chain, the local mirror and verification.
//
// Nouns:
//
//   - Entry: one admin action or security event (who, host, time, action,
//     outcome, request id, keyed hashes of paths, details). Entries carry no
//     personal data: paths appear only as keyed hashes (HashPath).
//   - Record: the canonical JSON of an entry plus its MAC (HMAC-SHA-256
//     under the audit subkey over a domain tag and the entry bytes).
//   - Sealed record: the record sealed with the data key (AEAD); this is
//     what the store and the mirror hold, byte for byte.
//   - Hash: hex SHA-256 of a sealed record. Entry n names the hash of entry
//     n-1 (Prev); entry 1 names none. Seq runs 1, 2, 3, ... without gaps.
//   - Head: the newest entry's seq and hash. Snapshots and the local mirror
//     record heads, so a log cut short (truncated) is detected.
//
// The package is a leaf: it reaches storage and keys through the small
// Store and Keys interfaces, which the repository implements.
package audit
