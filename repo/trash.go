package repo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"time"

	"github.com/keepfs/keepfs/policy/notify"
	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo/crypto"
)

// Two-phase deletion. Prune never deletes a pack in the run that finds it
// dead: it writes a mark (trash/<id>) naming the pack and drops it from the
// index, and a later prune deletes the packs of marks older than the grace
// period, unless an index segment names the pack again by then. A client
// whose lock lapsed can thus still read what it deduplicated against
// while it takes the lock again and reloads the index, and nothing it
// indexed meanwhile is deleted. Erase deletes at once: its promise is that
// the data is gone now, and it bumps the generation so that every client
// reloads before it writes again.

// DefaultGrace is how long a marked pack stays: longer than any writer's
// lock can go unrefreshed before the writer stops writing.
const DefaultGrace = DefaultLockStale + DefaultLockRefresh

const (
	trashAD      = "keepfs trash v1"
	generationAD = "keepfs generation v1"
)

type trashMark struct {
	Time   time.Time   `json:"time"`
	Reason string      `json:"reason"`
	Packs  []crypto.ID `json:"packs"`
	name   string
}

// trashMarks loads every deletion mark.
func (r *Repository) trashMarks(ctx context.Context) ([]trashMark, error) {
	var names []string
	if err := r.be.List(ctx, remote.Trash, func(fi remote.Info) error {
		names = append(names, fi.Handle.Name)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list deletion marks: %w", err)
	}
	var out []trashMark
	for _, n := range names {
		b, err := remote.LoadAll(ctx, r.be, remote.Handle{Type: remote.Trash, Name: n})
		if errors.Is(err, remote.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("load deletion mark %s: %w", n, err)
		}
		// A mark that is not ours is raised and left out, not an error: any
		// object the store puts in trash/ would otherwise stop every scrub
		// (blinding it) and every prune. Left out, the packs it names are
		// not taken for dead, so nothing is deleted on its word.
		obj, what := "trash/"+n, "deletion mark "+shortName(n)
		if crypto.Hash(b).String() != n {
			r.raiseLoad(obj, what, "open", ErrNameMismatch)
			continue
		}
		plain, err := r.key.Open(nil, b, []byte(trashAD))
		if err != nil {
			r.raiseLoad(obj, what, "open", err)
			continue
		}
		var m trashMark
		if err := json.Unmarshal(plain, &m); err != nil {
			r.raiseLoad(obj, what, "open", err)
			continue
		}
		m.name = n
		out = append(out, m)
	}
	return out, nil
}

// trashedPacks is the set of packs some deletion mark names.
func (r *Repository) trashedPacks(ctx context.Context) (map[crypto.ID]bool, error) {
	marks, err := r.trashMarks(ctx)
	if err != nil {
		return nil, err
	}
	out := map[crypto.ID]bool{}
	for _, m := range marks {
		for _, id := range m.Packs {
			out[id] = true
		}
	}
	return out, nil
}

// markForDeletion stores a mark naming packs and returns its name.
func (r *Repository) markForDeletion(ctx context.Context, packs []crypto.ID, reason string, now time.Time) (string, error) {
	if err := r.Writable(); err != nil {
		return "", err
	}
	b, err := json.Marshal(trashMark{Time: now.UTC(), Reason: reason, Packs: packs})
	if err != nil {
		return "", err
	}
	sealed := r.key.Seal(nil, b, []byte(trashAD))
	name := crypto.Hash(sealed).String()
	if err := r.be.Save(ctx, remote.Handle{Type: remote.Trash, Name: name}, sealed); err != nil && !errors.Is(err, remote.ErrExists) {
		return "", fmt.Errorf("save deletion mark: %w", err)
	}
	return name, nil
}

// emptyTrash deletes the packs of marks at least grace old (all of them
// with only set, just that mark), except packs the index names again, and
// then the marks. It returns how many packs it deleted.
func (r *Repository) emptyTrash(ctx context.Context, now time.Time, grace time.Duration, only string) (int, error) {
	return r.emptyTrashIf(ctx, func(m trashMark) bool {
		return only != "" && m.name == only || only == "" && now.Sub(m.Time) >= grace
	})
}

// emptyTrashOf empties the marks left with reason, whatever their age.
func (r *Repository) emptyTrashOf(ctx context.Context, reason string) (int, error) {
	return r.emptyTrashIf(ctx, func(m trashMark) bool { return m.Reason == reason })
}

func (r *Repository) emptyTrashIf(ctx context.Context, due func(trashMark) bool) (int, error) {
	marks, err := r.trashMarks(ctx)
	if err != nil {
		return 0, err
	}
	deleted := 0
	for _, m := range marks {
		if !due(m) {
			continue
		}
		if err := r.Writable(); err != nil {
			return deleted, err
		}
		for _, id := range m.Packs {
			if r.ix().HasPack(id) {
				continue // indexed again since: in use
			}
			err := r.be.Remove(ctx, remote.Handle{Type: remote.Pack, Name: id.String()})
			if err != nil && !errors.Is(err, remote.ErrNotFound) {
				return deleted, fmt.Errorf("remove pack %s: %w", id.Short(), err)
			}
			if err == nil {
				deleted++
			}
		}
		if err := r.be.Remove(ctx, remote.Handle{Type: remote.Trash, Name: m.name}); err != nil && !errors.Is(err, remote.ErrNotFound) {
			return deleted, fmt.Errorf("remove deletion mark: %w", err)
		}
	}
	return deleted, nil
}

// GenerationInfo is one step of the repository's generation: every prune
// or erase that removed something advances it, and a client whose state
// was made at an older generation reconciles before it serves or uploads.
type GenerationInfo struct {
	N      uint64    `json:"n"`
	Time   time.Time `json:"time"`
	Reason string    `json:"reason"`
	Host   string    `json:"host"`
	// Erased lists blobs an erase removed: other clients drop their local
	// copies of them.
	Erased []crypto.ID `json:"erased,omitempty"`
	// ErasedFiles identifies the files an erase removed, by path and
	// content (erase.FileID: keyed, so neither is in the record): other
	// clients remove a live file that matches one, which finding erased
	// blobs in it does not catch when all its content stayed for other
	// files.
	ErasedFiles []crypto.ID `json:"erased_files,omitempty"`
}

func generationName(n uint64) string { return fmt.Sprintf("%016x", n) }

// Generations loads the generation objects newer than after, oldest first.
func (r *Repository) Generations(ctx context.Context, after uint64) ([]GenerationInfo, error) {
	var ns []uint64
	if err := r.be.List(ctx, remote.Generation, func(fi remote.Info) error {
		n, err := strconv.ParseUint(fi.Handle.Name, 16, 64)
		if err == nil && len(fi.Handle.Name) == 16 && n > after {
			ns = append(ns, n)
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list generations: %w", err)
	}
	sort.Slice(ns, func(i, j int) bool { return ns[i] < ns[j] })
	out := make([]GenerationInfo, 0, len(ns))
	for _, n := range ns {
		b, err := remote.LoadAll(ctx, r.be, remote.Handle{Type: remote.Generation, Name: generationName(n)})
		if err != nil {
			return nil, fmt.Errorf("load generation %d: %w", n, err)
		}
		// The number is bound into the seal, so an old object replayed
		// under a newer name does not open.
		plain, err := r.key.Open(nil, b, []byte(generationAD+" "+generationName(n)))
		if err != nil {
			// Made up by the store (raised, as Generation does): skip.
			if _, verr := r.generationValid(ctx, n); verr != nil {
				return nil, verr
			}
			continue
		}
		var g GenerationInfo
		if err := json.Unmarshal(plain, &g); err != nil || g.N != n {
			return nil, fmt.Errorf("generation %d: malformed", n)
		}
		out = append(out, g)
	}
	return out, nil
}

// Generation returns the repository's current generation (0 before any
// prune or erase): the highest generation object that authenticates. The
// number excuses deletions (the guard's missing snapshots, the scrub's
// vanished segments), so one the store made up (a name with no valid seal
// under it) is raised and ignored, never taken.
func (r *Repository) Generation(ctx context.Context) (uint64, error) {
	var ns []uint64
	if err := r.be.List(ctx, remote.Generation, func(fi remote.Info) error {
		if n, err := strconv.ParseUint(fi.Handle.Name, 16, 64); err == nil && len(fi.Handle.Name) == 16 && n > 0 {
			ns = append(ns, n)
		}
		return nil
	}); err != nil {
		return 0, fmt.Errorf("list generations: %w", err)
	}
	sort.Slice(ns, func(i, j int) bool { return ns[i] > ns[j] })
	for _, n := range ns {
		ok, err := r.generationValid(ctx, n)
		if err != nil {
			return 0, err
		}
		if ok {
			return n, nil
		}
	}
	return 0, nil
}

// generationValid reports whether generation object n opens under its
// name. Generation objects never change (Save does not overwrite), so the
// answer is kept for the handle's life; a missing object (deleted since
// the listing) is not valid and not remembered.
func (r *Repository) generationValid(ctx context.Context, n uint64) (bool, error) {
	name := generationName(n)
	if v, ok := r.genValid.Load(name); ok {
		return v.(bool), nil
	}
	b, err := remote.LoadAll(ctx, r.be, remote.Handle{Type: remote.Generation, Name: name})
	if errors.Is(err, remote.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("load generation %d: %w", n, err)
	}
	_, err = r.key.Open(nil, b, []byte(generationAD+" "+name))
	ok := err == nil
	if !ok {
		r.Raise(notify.Event{Type: notify.TypeUnexpected, Severity: notify.Critical, Object: "generation/" + name,
			Message: fmt.Sprintf("generation object %d does not authenticate: not written by a holder of the key (a made-up prune or erase, which would excuse deletions), or modified; ignored", n)})
	}
	r.genValid.Store(name, ok)
	return ok, nil
}

// BumpGeneration stores the next generation. The caller holds the
// exclusive lock, so no two clients bump at once; Save never overwrites,
// so a race would fail rather than lose a step.
func (r *Repository) BumpGeneration(ctx context.Context, reason string, erased, erasedFiles []crypto.ID, now time.Time) (uint64, error) {
	if err := r.Writable(); err != nil {
		return 0, err
	}
	cur, err := r.Generation(ctx)
	if err != nil {
		return 0, err
	}
	// Above every name listed, made-up ones too (Generation ignores
	// them), so that a name the store took cannot block the step.
	next := cur + 1
	if err := r.be.List(ctx, remote.Generation, func(fi remote.Info) error {
		if n, err := strconv.ParseUint(fi.Handle.Name, 16, 64); err == nil && len(fi.Handle.Name) == 16 && n >= next {
			next = n + 1
		}
		return nil
	}); err != nil {
		return 0, fmt.Errorf("list generations: %w", err)
	}
	g := GenerationInfo{N: next, Time: now.UTC(), Reason: reason, Erased: erased, ErasedFiles: erasedFiles}
	g.Host, _ = os.Hostname()
	b, err := json.Marshal(g)
	if err != nil {
		return 0, err
	}
	name := generationName(g.N)
	sealed := r.key.Seal(nil, b, []byte(generationAD+" "+name))
	if err := r.be.Save(ctx, remote.Handle{Type: remote.Generation, Name: name}, sealed); err != nil {
		return 0, fmt.Errorf("save generation %d: %w", g.N, err)
	}
	if r.persist != nil {
		// This handle made the step, under the exclusive lock: a store that
		// matched the generation before it need not be refilled for it.
		if err := r.syncPersistentFrom(ctx, cur); err != nil {
			return g.N, fmt.Errorf("generation %d stored, but the local index: %w", g.N, err)
		}
	}
	return g.N, nil
}
