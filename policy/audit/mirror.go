package audit

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Mirror is the local copy of the audit log in the state directory:
//
//	audit.log    "keepfs audit mirror v1 <repo id>\n", then one line per
//	             entry the remote took: "<seq> <base64 sealed record>\n"
//	audit.queue  one line per entry the remote did not take (yet):
//	             "<base64 Seal(entry JSON without seq)>\n"
//
// Both files are append-only in normal operation and written under an
// exclusive flock, so a mount and a command of the same state directory can
// append at once. The mirror holds the same sealed bytes as the remote: a
// mirrored entry's hash must equal the stored one's, and the newest
// mirrored seq is a head the remote log must reach.
type Mirror struct {
	log, queuePath string
	repoID         string
}

const (
	mirrorHeader = "keepfs audit mirror v1 "
	queueAD      = "keepfs audit queued v1"
	// MirrorFile and QueueFile are the names in the state directory.
	MirrorFile = "audit.log"
	QueueFile  = "audit.queue"
)

// OpenMirror opens (creating) the mirror of repository repoID in dir. A
// mirror of another repository is an error.
func OpenMirror(dir, repoID string) (*Mirror, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	m := &Mirror{log: filepath.Join(dir, MirrorFile), queuePath: filepath.Join(dir, QueueFile), repoID: repoID}
	err := m.locked(m.log, func(f *os.File) error {
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		if fi.Size() == 0 {
			_, err := f.WriteString(mirrorHeader + repoID + "\n")
			if err == nil {
				err = f.Sync()
			}
			return err
		}
		line, err := bufio.NewReader(f).ReadString('\n')
		if err != nil {
			return fmt.Errorf("%s: no header: %w", m.log, err)
		}
		if got := strings.TrimSpace(strings.TrimPrefix(line, mirrorHeader)); !strings.HasPrefix(line, mirrorHeader) || got != repoID {
			return fmt.Errorf("%s mirrors another repository (%q)", m.log, got)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

// locked runs fn with path open for reading and appending under an
// exclusive flock.
func (m *Mirror) locked(path string, fn func(*os.File) error) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("lock %s: %w", path, err)
	}
	return fn(f)
}

// record appends one stored entry.
func (m *Mirror) record(seq uint64, sealed []byte) error {
	return m.locked(m.log, func(f *os.File) error {
		line := strconv.FormatUint(seq, 10) + " " + base64.StdEncoding.EncodeToString(sealed) + "\n"
		if _, err := f.WriteString(line); err != nil {
			return err
		}
		return f.Sync()
	})
}

// Entries returns the mirrored entries' hashes by seq (the first one
// recorded for each).
func (m *Mirror) Entries() (map[uint64]string, error) {
	out := map[uint64]string{}
	err := m.locked(m.log, func(f *os.File) error {
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		first := true
		for sc.Scan() {
			if first {
				first = false
				continue
			}
			seq, sealed, err := parseMirrorLine(sc.Text())
			if err != nil {
				// A line cut short by a crash: the rest still counts.
				continue
			}
			// The first record of a seq is the entry the remote took;
			// a later one for the same seq means the remote lost that
			// entry and another was appended in its place, which
			// Verify must see as a replacement, not take as the copy.
			if _, ok := out[seq]; !ok {
				out[seq] = Hash(sealed)
			}
		}
		return sc.Err()
	})
	return out, err
}

func parseMirrorLine(s string) (uint64, []byte, error) {
	a, b, ok := strings.Cut(s, " ")
	if !ok {
		return 0, nil, errors.New("no separator")
	}
	seq, err := strconv.ParseUint(a, 10, 64)
	if err != nil || seq == 0 {
		return 0, nil, errors.New("bad seq")
	}
	sealed, err := base64.StdEncoding.DecodeString(b)
	if err != nil {
		return 0, nil, err
	}
	return seq, sealed, nil
}

// queue appends an entry the remote did not take.
func (m *Mirror) queue(k Keys, e Entry) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	sealed := k.Seal(b, []byte(queueAD))
	return m.locked(m.queuePath, func(f *os.File) error {
		if _, err := f.WriteString(base64.StdEncoding.EncodeToString(sealed) + "\n"); err != nil {
			return err
		}
		return f.Sync()
	})
}

// Queued returns how many entries wait for the remote.
func (m *Mirror) Queued() (int, error) {
	if _, err := os.Stat(m.queuePath); errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	n := 0
	err := m.locked(m.queuePath, func(f *os.File) error {
		lines, err := readLines(f)
		n = len(lines)
		return err
	})
	return n, err
}

// drain pushes queued entries in order; those pushed leave the queue. A
// crash between a push and the rewrite of the queue pushes that entry
// again next time (at least once, never lost).
func (m *Mirror) drain(k Keys, push func(Entry) error) error {
	if fi, err := os.Stat(m.queuePath); err != nil || fi.Size() == 0 {
		return nil // nothing queued (or the queue cannot be read: pushed next time)
	}
	return m.locked(m.queuePath, func(f *os.File) error {
		lines, err := readLines(f)
		if err != nil || len(lines) == 0 {
			return err
		}
		done := 0
		var perr error
		for _, line := range lines {
			sealed, err := base64.StdEncoding.DecodeString(line)
			if err != nil {
				done++ // a line cut short by a crash
				continue
			}
			b, err := k.Open(sealed, []byte(queueAD))
			var e Entry
			if err != nil || json.Unmarshal(b, &e) != nil {
				done++
				continue
			}
			if perr = push(e); perr != nil {
				break
			}
			done++
		}
		if done == 0 {
			return perr
		}
		var rest bytes.Buffer
		for _, line := range lines[done:] {
			rest.WriteString(line + "\n")
		}
		if err := f.Truncate(0); err != nil {
			return errors.Join(perr, err)
		}
		if _, err := f.Write(rest.Bytes()); err != nil {
			return errors.Join(perr, err)
		}
		return errors.Join(perr, f.Sync())
	})
}

func readLines(f *os.File) ([]string, error) {
	if _, err := f.Seek(0, 0); err != nil {
		return nil, err
	}
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		if s := strings.TrimSpace(sc.Text()); s != "" {
			out = append(out, s)
		}
	}
	return out, sc.Err()
}
