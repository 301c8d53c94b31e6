package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Actions recorded by keepfs.
const (
	ActionInit      = "init"
	ActionKeyAdd    = "key-add"
	ActionKeyRemove = "key-remove"
	ActionKeyPasswd = "key-passwd"
	ActionMount     = "mount"
	ActionUnmount   = "unmount"
	ActionImport    = "import"
	ActionRestore   = "restore"
	ActionPrune     = "prune"
	ActionRetention = "retention-set"
	ActionIntegrity = "integrity-problem"
	ActionErase     = "erase"
)

// Outcomes.
const (
	OutcomeOK       = "ok"
	OutcomeFailed   = "failed"
	OutcomeProblems = "problems-found"
)

// Entry is one audit record. Seq, Prev and, if zero, Time, User and Host
// are filled in by Log.Append.
type Entry struct {
	Seq       uint64    `json:"seq"`
	Prev      string    `json:"prev,omitempty"`
	Time      time.Time `json:"time"`
	Action    string    `json:"action"`
	Outcome   string    `json:"outcome,omitempty"`
	User      string    `json:"user,omitempty"`
	Host      string    `json:"host,omitempty"`
	RequestID string    `json:"request_id,omitempty"`
	// Paths are keyed hashes (HashPath), never paths.
	Paths []string `json:"paths,omitempty"`
	// Details are counts and ids (snapshot ids, key slot ids, numbers):
	// never names of files or people.
	Details map[string]string `json:"details,omitempty"`
}

// Head names the newest entry of a log.
type Head struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
}

// IsZero reports an empty log's head.
func (h Head) IsZero() bool { return h.Seq == 0 }

// Keys are the repository's keys as the log needs them: the data key's
// AEAD and the audit subkey's MAC.
type Keys interface {
	Seal(plaintext, ad []byte) []byte
	Open(sealed, ad []byte) ([]byte, error)
	MAC(data []byte) []byte
}

const (
	sealAD  = "keepfs audit v1"
	macTag  = "keepfs audit entry v1\x00"
	pathTag = "keepfs audit path v1\x00"
)

// record is the MAC'd plaintext inside the seal.
type record struct {
	Entry json.RawMessage `json:"entry"`
	MAC   string          `json:"mac"`
}

// ErrMAC means an entry opened but its MAC does not verify.
var ErrMAC = errors.New("MAC does not verify (edited)")

// ErrMalformed means the sealed bytes opened but hold no valid record.
var ErrMalformed = errors.New("malformed entry")

// ErrSeal means the sealed record does not open (edited or damaged).
var ErrSeal = errors.New("does not decrypt (edited or damaged)")

// Hash is the hex SHA-256 of a sealed record: what the next entry's Prev,
// heads and receipts name.
func Hash(sealed []byte) string {
	s := sha256.Sum256(sealed)
	return hex.EncodeToString(s[:])
}

// HashPath is the keyed hash of a path (or any other personal string) that
// an entry may carry instead of the path itself.
func HashPath(k Keys, path string) string {
	return hex.EncodeToString(k.MAC(append([]byte(pathTag), path...)))
}

// ShortHash is the first 12 hex digits of a hash, for listings.
func ShortHash(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

func entryMAC(k Keys, raw []byte) string {
	return hex.EncodeToString(k.MAC(append([]byte(macTag), raw...)))
}

// Encode returns the record (canonical entry JSON and its MAC), not yet
// sealed.
func Encode(k Keys, e *Entry) ([]byte, error) {
	if err := e.validate(); err != nil {
		return nil, err
	}
	raw, err := json.Marshal(e)
	if err != nil {
		return nil, err
	}
	return json.Marshal(record{Entry: raw, MAC: entryMAC(k, raw)})
}

// Seal encodes e and seals the record.
func Seal(k Keys, e *Entry) ([]byte, error) {
	rec, err := Encode(k, e)
	if err != nil {
		return nil, err
	}
	return k.Seal(rec, []byte(sealAD)), nil
}

// Open opens a sealed record and verifies its MAC.
func Open(k Keys, sealed []byte) (*Entry, error) {
	rec, err := k.Open(sealed, []byte(sealAD))
	if err != nil {
		return nil, ErrSeal
	}
	return Decode(k, rec)
}

// Decode parses a record and verifies its MAC. Only the canonical encoding
// (what Encode writes) is accepted, so every entry has exactly one record.
func Decode(k Keys, rec []byte) (*Entry, error) {
	var r record
	if err := json.Unmarshal(rec, &r); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	var e Entry
	dec := json.NewDecoder(bytes.NewReader(r.Entry))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if err := e.validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	// MAC before canonical form: an edited entry says "edited".
	want := entryMAC(k, r.Entry)
	if len(r.MAC) != len(want) || !hmacEqual(r.MAC, want) {
		return nil, ErrMAC
	}
	canon, err := json.Marshal(&e)
	if err != nil || !bytes.Equal(canon, r.Entry) {
		return nil, fmt.Errorf("%w: not in canonical form", ErrMalformed)
	}
	again, err := json.Marshal(record{Entry: canon, MAC: r.MAC})
	if err != nil || !bytes.Equal(again, rec) {
		return nil, fmt.Errorf("%w: record not in canonical form", ErrMalformed)
	}
	return &e, nil
}

func hmacEqual(a, b string) bool {
	var v byte
	for i := 0; i < len(a) && i < len(b); i++ {
		v |= a[i] ^ b[i]
	}
	return v == 0 && len(a) == len(b)
}

func (e *Entry) validate() error {
	if e.Seq == 0 {
		return errors.New("seq 0")
	}
	if e.Action == "" {
		return errors.New("no action")
	}
	if (e.Seq == 1) != (e.Prev == "") {
		return fmt.Errorf("seq %d with prev %q", e.Seq, e.Prev)
	}
	if e.Prev != "" {
		if b, err := hex.DecodeString(e.Prev); err != nil || len(b) != sha256.Size {
			return fmt.Errorf("prev %q is not a hash", e.Prev)
		}
	}
	if e.Time.Location() != time.UTC {
		return errors.New("time not in UTC")
	}
	return nil
}
