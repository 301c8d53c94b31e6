package repo

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/keepfs/keepfs/remote"
	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/index"
	"github.com/keepfs/keepfs/repo/pack"
)

// indexEvery is how many uploaded packs may wait before an index segment
// names them. Smaller loses less re-upload work after a crash (though
// RecoverPacks finds unindexed packs anyway); larger writes fewer objects.
const indexEvery = 32

type blobKey struct {
	t  pack.BlobType
	id crypto.ID
}

// writer owns the packer and the upload pipeline.
//
// Lock order: mu, then nothing. Uploads run outside mu.
type writer struct {
	r *Repository

	mu     sync.Mutex
	packer *pack.Packer // data blobs
	// trees holds tree blobs in packs of their own, as restic does: a
	// restore or a mount's rebuild walks every tree before it reads any
	// data, and with trees mixed into data packs that walk touched nearly
	// every pack (one request each on an object store). Its buffer grows
	// as trees come (they are small) and is never recycled as a data one.
	trees     *pack.Packer
	pending   map[blobKey]bool  // sealed or being sealed, not yet indexed in memory
	unindexed []index.PackEntry // uploaded packs not yet in a stored index segment
	uploads   *errgroup.Group   // in-flight pack uploads
	upErr     error             // first upload failure, sticky until Flush returns it
	stats     WriteStats
	sem       chan struct{}
	// uploadedLog, when non-nil, collects every uploaded pack (repack
	// needs the new packs' contents to write the replacement index).
	uploadedLog []index.PackEntry
	bufs        chan []byte // recycled pack buffers
	// idle: packer has no buffer; add gives it one. Flush leaves the
	// writer idle, so a mount between uploads holds no pack buffers
	// (UploadConcurrency+1 of 16 MiB each).
	idle bool
}

// WriteStats counts what a writer added to the remote.
type WriteStats struct {
	BlobsNew     int   `json:"blobs_new"`
	BlobsKnown   int   `json:"blobs_known"`
	BytesNew     int64 `json:"bytes_new"`    // plaintext bytes of new blobs
	BytesStored  int64 `json:"bytes_stored"` // sealed bytes of new blobs
	PacksWritten int   `json:"packs_written"`
	IndexWritten int   `json:"index_written"`
	IndexMerged  int   `json:"index_merged"` // own segments merged into bigger ones
}

func newWriter(r *Repository) *writer {
	w := &writer{r: r, pending: map[blobKey]bool{}, uploads: &errgroup.Group{},
		sem: make(chan struct{}, r.opts.UploadConcurrency), bufs: make(chan []byte, r.opts.UploadConcurrency+1)}
	// No buffer until the first blob: a mount may not upload for a
	// while (the first snapshot), and a read-only command never does.
	w.packer, w.idle = pack.NewPacker(nil), true
	w.trees = pack.NewPacker(nil)
	return w
}

// Stats returns what has been written so far.
func (r *Repository) Stats() WriteStats {
	r.w.mu.Lock()
	defer r.w.mu.Unlock()
	return r.w.stats
}

// SaveBlob stores plaintext as a blob unless the repository already has it,
// and returns its id. The blob reaches the remote in a pack later; Flush
// waits for that. It is safe for concurrent use.
func (r *Repository) SaveBlob(ctx context.Context, t pack.BlobType, plaintext []byte) (crypto.ID, bool, error) {
	id := r.key.BlobID(plaintext)
	stored, err := r.SaveBlobWithID(ctx, t, id, plaintext)
	return id, stored, err
}

// SaveBlobWithID is SaveBlob for a caller that has already hashed plaintext.
func (r *Repository) SaveBlobWithID(ctx context.Context, t pack.BlobType, id crypto.ID, plaintext []byte) (bool, error) {
	w := r.w
	k := blobKey{t, id}
	w.mu.Lock()
	if w.upErr != nil {
		err := w.upErr
		w.mu.Unlock()
		return false, err
	}
	if w.pending[k] || r.ix().Has(t, id) {
		w.stats.BlobsKnown++
		w.mu.Unlock()
		return false, nil
	}
	w.pending[k] = true
	w.mu.Unlock()

	scratch := scratchPool.Get().(*[]byte)
	defer scratchPool.Put(scratch)
	// Compression runs outside the writer's lock; a blob stored raw is
	// copied once, straight into the pack buffer, and sealed there.
	encoded, raw := pack.Compress(scratch, plaintext, r.opts.FastCompression)
	sealedLen, seal := len(encoded)+r.key.Overhead(), func(dst []byte) []byte {
		return pack.AppendSealed(dst, r.key, t, id, encoded)
	}
	if raw {
		sealedLen, seal = pack.RawSealedLen(r.key, len(plaintext)), func(dst []byte) []byte {
			return pack.AppendSealedRaw(dst, r.key, t, id, plaintext)
		}
	}
	err := w.add(ctx, t, id, sealedLen, len(plaintext), seal)
	if err != nil {
		// Not added (add fails only before it appends): forget it was on
		// its way, or every later save would take it as known and it
		// would never be uploaded.
		w.mu.Lock()
		delete(w.pending, k)
		w.mu.Unlock()
		return false, err
	}
	return true, nil
}

// scratchPool holds per-call compression buffers (about a chunk each).
var scratchPool = sync.Pool{New: func() any { return new([]byte) }}

// add appends one blob of sealedLen bytes, written by seal straight into the
// pack buffer. A pack that this blob would push past the target size is
// uploaded first, so pack buffers never grow beyond their pooled capacity.
func (w *writer) add(ctx context.Context, t pack.BlobType, id crypto.ID, sealedLen, rawLen int, seal func([]byte) []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	// The header costs up to ~48 bytes a blob; count it so that packs of
	// many small blobs do not outgrow their buffer either. A loop, not an
	// if: startUploadLocked drops mu while it waits for an upload slot,
	// and another saver may have filled the next pack meanwhile (which,
	// unchecked, grew pack buffers past their capacity: a 20 MiB copy).
	tree := t == pack.Tree
	for p := w.packerOf(tree); p.Count() > 0 && p.Size()+sealedLen+48*(p.Count()+1) > w.r.cfg.PackSize; p = w.packerOf(tree) {
		if err := w.startUploadLocked(ctx, tree); err != nil {
			return err
		}
	}
	if w.idle && !tree {
		w.packer, w.idle = pack.NewPacker(w.packBuffer()), false
	}
	p := w.packerOf(tree)
	before := p.Size()
	p.AddFunc(t, id, rawLen, seal)
	w.stats.BlobsNew++
	w.stats.BytesNew += int64(rawLen)
	w.stats.BytesStored += int64(p.Size() - before)
	return nil
}

func (w *writer) packerOf(tree bool) *pack.Packer {
	if tree {
		return w.trees
	}
	return w.packer
}

// packBuffer returns a recycled pack buffer, or a new one with room for a
// full pack and its header.
func (w *writer) packBuffer() []byte {
	select {
	case b := <-w.bufs:
		return b
	default:
		return make([]byte, 0, w.r.cfg.PackSize+64<<10)
	}
}

func (w *writer) recycle(b []byte) {
	if cap(b) < w.r.cfg.PackSize {
		return // a tree pack's: too small to hold a data pack without regrowing
	}
	select {
	case w.bufs <- b[:0]:
	default:
	}
}

// saveSealed adds an already sealed blob to a new pack even though the
// index knows it elsewhere: repack moves live blobs out of packs that are
// about to be deleted. Sealed blobs do not depend on their pack, so they are
// copied without re-encryption.
func (r *Repository) saveSealed(ctx context.Context, t pack.BlobType, id crypto.ID, sealed []byte, rawLen int) error {
	w := r.w
	k := blobKey{t, id}
	w.mu.Lock()
	if w.pending[k] {
		w.mu.Unlock()
		return nil
	}
	w.pending[k] = true
	w.mu.Unlock()
	return w.add(ctx, t, id, len(sealed), rawLen, func(dst []byte) []byte { return append(dst, sealed...) })
}

// startUploadLocked seals the current data (or tree) pack and uploads it
// in the background. It blocks (dropping mu) while UploadConcurrency
// uploads are already running, which is what bounds memory.
func (w *writer) startUploadLocked(ctx context.Context, tree bool) error {
	p := w.packerOf(tree)
	if p.Count() == 0 {
		return nil
	}
	// Take an upload slot before a new pack buffer, so at most
	// UploadConcurrency+1 pack buffers ever exist.
	w.mu.Unlock()
	select {
	case w.sem <- struct{}{}:
	case <-ctx.Done():
		w.mu.Lock()
		return ctx.Err()
	}
	w.mu.Lock()
	if w.packerOf(tree) != p {
		<-w.sem // another caller uploaded this pack while we waited
		return nil
	}
	if tree {
		w.trees = pack.NewPacker(nil)
	} else {
		w.packer = pack.NewPacker(w.packBuffer())
	}
	data, blobs := p.Finalize(w.r.key)
	w.uploads.Go(func() error {
		defer func() { <-w.sem }()
		err := w.upload(ctx, data, blobs)
		w.recycle(data)
		if err != nil {
			w.mu.Lock()
			if w.upErr == nil {
				w.upErr = err
			}
			w.mu.Unlock()
		}
		return err
	})
	return nil
}

func (w *writer) upload(ctx context.Context, data []byte, blobs []pack.Blob) error {
	id := crypto.Hash(data)
	if err := w.r.Writable(); err != nil {
		w.mu.Lock()
		for _, b := range blobs {
			delete(w.pending, blobKey{b.Type, b.ID})
		}
		w.mu.Unlock()
		return fmt.Errorf("upload pack %s: %w", id.Short(), err)
	}
	err := w.r.be.Save(ctx, remote.Handle{Type: remote.Pack, Name: id.String()}, data)
	if err != nil && !errors.Is(err, remote.ErrExists) {
		// Forget these blobs were on their way, or a later SaveBlob would
		// take them as known and they would never be uploaded.
		w.mu.Lock()
		for _, b := range blobs {
			delete(w.pending, blobKey{b.Type, b.ID})
		}
		w.mu.Unlock()
		return fmt.Errorf("upload pack %s: %w", id.Short(), err)
	}
	// The pack's blobs stay pending (known to SaveBlob, so not uploaded
	// again, but not in the index) until a stored segment names the pack:
	// the index must never list a pack that the remote's index lacks.
	pe := index.PackEntry{ID: id, Size: int64(len(data)), Blobs: blobs}
	w.mu.Lock()
	w.unindexed = append(w.unindexed, pe)
	if w.uploadedLog != nil {
		w.uploadedLog = append(w.uploadedLog, pe)
	}
	w.stats.PacksWritten++
	var batch []index.PackEntry
	if len(w.unindexed) >= indexEvery {
		batch, w.unindexed = w.unindexed, nil
	}
	w.mu.Unlock()
	if batch != nil {
		return w.indexPacks(ctx, batch)
	}
	return nil
}

// indexPacks stores a segment naming batch and then adds the packs to the
// in-memory index. If the segment cannot be stored, the packs go back to
// the unindexed list (their blobs stay pending), so that the next Flush
// names them without uploading them again.
func (w *writer) indexPacks(ctx context.Context, batch []index.PackEntry) error {
	if _, err := w.r.saveIndex(ctx, &index.Segment{Packs: batch}); err != nil {
		w.mu.Lock()
		w.unindexed = append(batch, w.unindexed...)
		w.mu.Unlock()
		return err
	}
	w.mu.Lock()
	for _, pe := range batch {
		for _, b := range pe.Blobs {
			delete(w.pending, blobKey{b.Type, b.ID})
		}
	}
	w.mu.Unlock()
	return nil
}

// DiscardUnflushed drops the blobs waiting in the partly filled pack, not
// uploaded yet: left there by an upload pass that failed, they would
// otherwise leave with the next Flush, whoever calls it. A caller that
// still wants them saves them again (the mount's next snapshot decides
// anew what may leave: a file may have been excluded since).
func (r *Repository) DiscardUnflushed() int {
	w := r.w
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, p := range []*pack.Packer{w.packer, w.trees} {
		dropped := p.Reset()
		for _, b := range dropped {
			delete(w.pending, blobKey{b.Type, b.ID})
		}
		n += len(dropped)
	}
	return n
}

// Flush uploads the partly filled pack, waits for every upload, and stores
// an index segment naming all uploaded packs. After Flush returns nil, every
// blob saved before it is in the remote and indexed there.
//
// A failed Flush forgets nothing that arrived: packs uploaded but not yet
// named by a stored segment are kept and named by the next Flush. Blobs of
// packs whose upload failed are forgotten, so saving them again uploads
// them again. Flush also clears the upload error that makes SaveBlob fail
// fast after a failed upload, so a writer recovers once the remote does.
func (r *Repository) Flush(ctx context.Context) error {
	w := r.w
	w.mu.Lock()
	err := w.startUploadLocked(ctx, false)
	if err == nil {
		err = w.startUploadLocked(ctx, true)
	}
	w.mu.Unlock()
	uerr := w.uploads.Wait()
	w.mu.Lock()
	w.uploads = &errgroup.Group{}
	w.releaseBuffersLocked()
	batch := w.unindexed
	w.unindexed = nil
	if uerr == nil {
		uerr = w.upErr
	}
	w.upErr = nil
	w.mu.Unlock()
	if err != nil {
		uerr = errors.Join(err, uerr)
	}
	if len(batch) > 0 {
		// Even after an upload failure, index what did arrive.
		if err := w.indexPacks(ctx, batch); err != nil && uerr == nil {
			uerr = err
		}
	}
	return uerr
}

// releaseBuffersLocked lets the collector have the pack buffers once no
// upload runs and the packer is empty: a mount uploads in bursts (a
// snapshot's drain) and would otherwise keep them for its lifetime.
func (w *writer) releaseBuffersLocked() {
	if w.packer.Count() > 0 || w.trees.Count() > 0 {
		return // a failed startUploadLocked left blobs to send next time
	}
	w.trees = pack.NewPacker(nil)
	w.packer, w.idle = pack.NewPacker(nil), true
	for {
		select {
		case <-w.bufs:
		default:
			return
		}
	}
}

// saveIndex stores s and then adds its packs to the index.
func (r *Repository) saveIndex(ctx context.Context, s *index.Segment) (crypto.ID, error) {
	if err := r.Writable(); err != nil {
		return crypto.ID{}, fmt.Errorf("save index: %w", err)
	}
	sealed := s.Seal(r.key)
	id := crypto.Hash(sealed)
	err := r.be.Save(ctx, remote.Handle{Type: remote.Index, Name: id.String()}, sealed)
	if err != nil && !errors.Is(err, remote.ErrExists) {
		return crypto.ID{}, fmt.Errorf("save index: %w", err)
	}
	// Stored: the packs may enter the index. A store that fails to take
	// them is left dirty and refilled by the next LoadIndex; until then
	// their blobs may be uploaded again, which is harmless.
	aerr := r.ix().AddSegment(id, s)
	r.segMu.Lock()
	r.indexSegments = append(r.indexSegments, id)
	r.segMu.Unlock()
	r.w.mu.Lock()
	r.w.stats.IndexWritten++
	r.w.mu.Unlock()
	if len(s.Supersedes) == 0 {
		r.addOwn(id, s)
		// A failed merge leaves the index as it was; the next one retries.
		_ = r.compactOwn(ctx, ownMergeAt)
	}
	if aerr != nil {
		return id, fmt.Errorf("index segment %s stored, but not recorded locally: %w", id.Short(), aerr)
	}
	return id, nil
}

// LoadIndex reads every index segment from the remote into memory,
// ignoring segments that a newer segment supersedes.
//
// A segment listed but gone when it is read was merged meanwhile (another
// client compacting its own segments, under its shared lock): the one
// superseding it was stored first, so listing again finds it.
func (r *Repository) LoadIndex(ctx context.Context) error {
	r.loadMu.Lock()
	defer r.loadMu.Unlock()
	return r.loadIndexLocked(ctx)
}

// ReloadIndex is LoadIndex for a mount bringing itself in line with a
// remote that lost what it stored (a rollback): a segment that fails its
// checks (replayed under another name, or not authenticating; raised as
// an event either way) is left out instead of failing the load, which
// would leave the mount naming blobs the remote lost. Without a bad
// segment's packs the index only lacks blobs, which the next snapshot
// uploads again if the mount still holds them. Only a persistent index
// store (a mount's) leaves them out; a plain load fails as LoadIndex does.
func (r *Repository) ReloadIndex(ctx context.Context) error {
	r.loadMu.Lock()
	defer r.loadMu.Unlock()
	r.skipBad = true
	defer func() { r.skipBad, r.skipped = false, nil }()
	return r.loadIndexLocked(ctx)
}

func (r *Repository) loadIndexLocked(ctx context.Context) error {
	// Segments written before this load may have been merged or pruned by
	// another client meanwhile: never merge them again from memory.
	r.compactMu.Lock()
	r.own = nil
	r.compactMu.Unlock()
	load := r.loadIndex
	if r.persist != nil {
		load = r.syncPersistent
	}
	for attempt := 0; ; attempt++ {
		err := load(ctx)
		if err == nil || !errors.Is(err, remote.ErrNotFound) || attempt >= 4 {
			return err
		}
	}
}

func (r *Repository) loadIndex(ctx context.Context) error {
	var names []string
	if err := r.be.List(ctx, remote.Index, func(fi remote.Info) error {
		names = append(names, fi.Handle.Name)
		return nil
	}); err != nil {
		return fmt.Errorf("list index: %w", err)
	}
	segs := make([]*index.Segment, len(names))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i, n := range names {
		g.Go(func() error {
			s, err := r.loadSegment(gctx, n)
			if err != nil {
				return err
			}
			segs[i] = s
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	superseded := map[string]bool{}
	for _, s := range segs {
		for _, id := range s.Supersedes {
			superseded[id.String()] = true
		}
	}
	idx := index.New()
	var loaded []crypto.ID
	for i, s := range segs {
		if superseded[names[i]] {
			continue
		}
		id, _ := crypto.ParseID(names[i])
		loaded = append(loaded, id)
		for _, p := range s.Packs {
			idx.AddPack(p)
		}
	}
	r.idx.Store(idx)
	r.segMu.Lock()
	r.indexSegments = loaded
	r.segMu.Unlock()
	return nil
}

// addSegment opens one stored segment and adds its packs to the index.
func (r *Repository) addSegment(sealed []byte) error {
	s, err := index.Open(r.key, sealed)
	if err != nil {
		return err
	}
	return r.ix().AddSegment(crypto.Hash(sealed), s)
}

// RecoverPacks finds packs that no index segment names (left by a run that
// was killed before writing its index), reads their headers and indexes
// them, so their blobs are reused instead of uploaded again. It returns the
// number of packs recovered.
func (r *Repository) RecoverPacks(ctx context.Context) (int, error) {
	// Packs a prune marked for deletion are unindexed on purpose.
	trashed, err := r.trashedPacks(ctx)
	if err != nil {
		return 0, err
	}
	var orphans []remote.Info
	if err := r.be.List(ctx, remote.Pack, func(fi remote.Info) error {
		id, err := crypto.ParseID(fi.Handle.Name)
		if err == nil && !r.ix().HasPack(id) && !trashed[id] {
			orphans = append(orphans, fi)
		}
		return nil
	}); err != nil {
		return 0, fmt.Errorf("list packs: %w", err)
	}
	var seg index.Segment
	for _, fi := range orphans {
		id, _ := crypto.ParseID(fi.Handle.Name)
		blobs, err := r.loadPackHeader(ctx, id, fi.Size)
		if err != nil {
			// A pack we cannot read is left for check to report.
			continue
		}
		seg.Packs = append(seg.Packs, index.PackEntry{ID: id, Size: fi.Size, Blobs: blobs})
	}
	if len(seg.Packs) == 0 {
		return 0, nil
	}
	// Into the index only once the segment naming them is stored.
	if _, err := r.saveIndex(ctx, &seg); err != nil {
		return 0, err
	}
	return len(seg.Packs), nil
}

// LoadBlob fetches and opens one blob.
func (r *Repository) LoadBlob(ctx context.Context, t pack.BlobType, id crypto.ID) ([]byte, error) {
	loc, ok := r.ix().Lookup(t, id)
	if !ok {
		return nil, fmt.Errorf("%s blob %s: %w", t, id.Short(), ErrBlobNotFound)
	}
	sealed, err := r.be.Load(ctx, remote.Handle{Type: remote.Pack, Name: loc.Pack.String()}, int64(loc.Offset), int64(loc.Length))
	obj := "packs/" + loc.Pack.String()
	if err != nil {
		r.raiseLoad(obj, fmt.Sprintf("pack %s (%s blob %s)", loc.Pack.Short(), t, id.Short()), "load", err)
		return nil, fmt.Errorf("load %s blob %s from pack %s: %w", t, id.Short(), loc.Pack.Short(), err)
	}
	plain, err := pack.OpenBlobInPlace(r.key, t, id, sealed)
	if err != nil {
		r.raiseLoad(obj, fmt.Sprintf("%s blob %s in pack %s", t, id.Short(), loc.Pack.Short()), "open", err)
	}
	return plain, err
}

// StreamBlobs reads blobs of type t that lie in one pack, in ascending
// order of offset with none named twice, with one streamed ranged read
// from the first blob's offset to the last one's end (the bytes between
// them are read and dropped), and calls fn with the index in ids and the
// authenticated plaintext of each as it arrives. Memory is one sealed and
// one plain blob at a time, whatever the extent: a restore reads a pack's
// needed blobs with one request (on an object store, one round trip and
// one request for the store to serve) instead of one per span of it.
// plain aliases a buffer reused for the next blob: fn must not keep it
// beyond the call unless it copies it. A blob that is not indexed, lies
// in another pack or out of order is an error before anything is read.
func (r *Repository) StreamBlobs(ctx context.Context, t pack.BlobType, ids []crypto.ID, fn func(i int, plain []byte) error) error {
	if len(ids) == 0 {
		return nil
	}
	idx := r.idx.Load()
	locs := make([]index.Location, len(ids))
	var biggest uint32
	for i, id := range ids {
		loc, ok := idx.Lookup(t, id)
		if !ok {
			return fmt.Errorf("%s blob %s: %w", t, id.Short(), ErrBlobNotFound)
		}
		if i > 0 && loc.Pack != locs[0].Pack {
			return fmt.Errorf("%s blob %s is in pack %s, not %s: cannot stream it with the others", t, id.Short(), loc.Pack.Short(), locs[0].Pack.Short())
		}
		if i > 0 && loc.Offset < locs[i-1].Offset+locs[i-1].Length {
			return fmt.Errorf("%s blob %s at offset %d of pack %s does not follow the blob before it: cannot stream it", t, id.Short(), loc.Offset, loc.Pack.Short())
		}
		locs[i] = loc
		biggest = max(biggest, loc.Length)
	}
	p := locs[0].Pack
	obj := "packs/" + p.String()
	start := int64(locs[0].Offset)
	end := int64(locs[len(locs)-1].Offset) + int64(locs[len(locs)-1].Length)
	what := fmt.Sprintf("pack %s (%d %s blobs)", p.Short(), len(ids), t)
	rc, err := remote.OpenRange(ctx, r.be, remote.Handle{Type: remote.Pack, Name: p.String()}, start, end-start)
	if err != nil {
		r.raiseLoad(obj, what, "load", err)
		return fmt.Errorf("load %d %s blobs from pack %s: %w", len(ids), t, p.Short(), err)
	}
	defer rc.Close()
	buf := make([]byte, biggest)
	pos := start
	for i, id := range ids {
		loc := locs[i]
		if gap := int64(loc.Offset) - pos; gap > 0 {
			if _, err := io.CopyN(io.Discard, rc, gap); err != nil {
				r.raiseLoad(obj, what, "load", err)
				return fmt.Errorf("load %d %s blobs from pack %s: %w", len(ids), t, p.Short(), err)
			}
		}
		sealed := buf[:loc.Length:loc.Length]
		if _, err := io.ReadFull(rc, sealed); err != nil {
			if errors.Is(err, io.EOF) {
				err = fmt.Errorf("%w: %w", io.ErrUnexpectedEOF, err)
			}
			r.raiseLoad(obj, what, "load", err)
			return fmt.Errorf("load %s blob %s from pack %s: %w", t, id.Short(), p.Short(), err)
		}
		pos = int64(loc.Offset) + int64(loc.Length)
		plain, err := pack.OpenBlobInPlace(r.key, t, id, sealed)
		if err != nil {
			r.raiseLoad(obj, fmt.Sprintf("%s blob %s in pack %s", t, id.Short(), p.Short()), "open", err)
			return err
		}
		if err := fn(i, plain); err != nil {
			return err
		}
	}
	return nil
}

// ErrBlobNotFound means the index does not know the blob.
var ErrBlobNotFound = errors.New("blob not in index")

// lru is a small cache of decoded objects keyed by id.
type lru struct {
	mu    sync.Mutex
	max   int
	ll    *list.List
	items map[crypto.ID]*list.Element
}

type lruEntry struct {
	id crypto.ID
	v  any
}

func newLRU(max int) *lru {
	return &lru{max: max, ll: list.New(), items: map[crypto.ID]*list.Element{}}
}

func (c *lru) get(id crypto.ID) (any, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[id]; ok {
		c.ll.MoveToFront(e)
		return e.Value.(*lruEntry).v, true
	}
	return nil, false
}

func (c *lru) add(id crypto.ID, v any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[id]; ok {
		c.ll.MoveToFront(e)
		e.Value.(*lruEntry).v = v
		return
	}
	c.items[id] = c.ll.PushFront(&lruEntry{id, v})
	for c.ll.Len() > c.max {
		e := c.ll.Back()
		c.ll.Remove(e)
		delete(c.items, e.Value.(*lruEntry).id)
	}
}

// loadSegment loads index segment n, checks that its content hashes to its
// name and opens it; a segment that fails either is raised as a load problem.
func (r *Repository) loadSegment(ctx context.Context, n string) (*index.Segment, error) {
	b, err := remote.LoadAll(ctx, r.be, remote.Handle{Type: remote.Index, Name: n})
	if err != nil {
		return nil, fmt.Errorf("load index %s: %w", n, err)
	}
	if crypto.Hash(b).String() != n {
		err := fmt.Errorf("index %s: %w", n, ErrNameMismatch)
		r.raiseLoad("index/"+n, "index segment "+shortName(n), "open", err)
		return nil, err
	}
	s, err := index.Open(r.key, b)
	if err != nil {
		r.raiseLoad("index/"+n, "index segment "+shortName(n), "open", err)
		return nil, fmt.Errorf("index %s: %w", n, err)
	}
	return s, nil
}
