package find

import (
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path"
	"regexp"
	"sort"
	"strings"

	"github.com/keepfs/keepfs/repo"
	"github.com/keepfs/keepfs/repo/chunker"
	"github.com/keepfs/keepfs/repo/crypto"
	"github.com/keepfs/keepfs/repo/history"
	"github.com/keepfs/keepfs/repo/pack"
	"github.com/keepfs/keepfs/repo/sparse"
	"github.com/keepfs/keepfs/repo/tree"
)

// Source is what a search needs of a repository; *repo.Repository is one.
type Source interface {
	Key() *crypto.Key
	LoadTree(ctx context.Context, id crypto.ID) (*tree.Tree, error)
	LoadBlob(ctx context.Context, t pack.BlobType, id crypto.ID) ([]byte, error)
	NewChunker() *chunker.Chunker
}

var _ Source = (*repo.Repository)(nil)

// Progress receives the bytes of content searched.
type Progress interface {
	Start(what string, total int64)
	Add(n int64)
	Done()
}

// Options say what to look for and where.
type Options struct {
	// Names are globs (path.Match) on the base name; a file matches if any
	// does. None: every name matches.
	Names []string
	// Content, if set, must match at least one line of the file.
	Content *regexp.Regexp
	// Snapshots are the versions to search, oldest first.
	Snapshots []*repo.Snapshot
	// Root limits the search to this repository path (a directory or a
	// file); "" means "/".
	Root string
	// Live, if set, is the live tree (a mount's root directory): searched
	// as the version "live". Its top-level ".versions" is skipped.
	Live iofs.FS
	// Progress, if set, is told the bytes searched.
	Progress Progress
	// Warn, if set, receives problems that do not stop the search.
	Warn func(msg string)
	// MaxLine is the longest line searched whole (default 1 MiB); longer
	// lines are searched in pieces of this size overlapping by 1/16.
	MaxLine int
	// MaxLineNumbers bounds the line numbers kept per content (default
	// 1000); the rest are only counted.
	MaxLineNumbers int
}

// LiveVersion names the live tree in results.
const LiveVersion = "live"

// Match is one (path, content) found.
type Match struct {
	Path      string   `json:"path"` // repository path
	Size      uint64   `json:"size"`
	ContentID string   `json:"content_id"` // history.ContentID, hex
	Snapshots []string `json:"snapshots"`  // names of the snapshots showing it, oldest first
	Live      bool     `json:"live"`       // the live tree shows it
	Lines     []int    `json:"lines"`      // 1-based numbers of matching lines (content searches)
	MoreLines int      `json:"more_lines,omitempty"`
	Copies    []string `json:"copies"` // other paths, in any version searched, with the same content
}

// Stats count the work done.
type Stats struct {
	Trees        int   `json:"trees"`         // directory trees loaded and examined
	Files        int   `json:"files"`         // file entries examined
	ContentsRead int   `json:"contents_read"` // distinct contents searched
	BytesRead    int64 `json:"bytes_read"`
}

// ErrIncomplete means some content could not be read; the matches
// returned with it are what the rest showed.
var ErrIncomplete = errors.New("search incomplete")

// fileEntry is one file at one path in one group.
type fileEntry struct {
	path   string
	size   uint64
	cid    crypto.ID
	nameOK bool
}

// group is one tree id at one path; see the package doc.
type group struct {
	files    []fileEntry
	children []*group
	snaps    []int // indices into Options.Snapshots, ascending
}

type groupKey struct {
	id  crypto.ID
	dir string
}

// content is what is known of one distinct content.
type content struct {
	chunks  []tree.Piece // for the repository read; nil once searched
	size    uint64
	want    bool // some path with it passed the name test
	scanned bool
	failed  bool
	lines   []int
	more    int
}

type pathKey struct {
	path string
	cid  crypto.ID
}

type finder struct {
	src      Source
	opts     Options
	groups   map[groupKey]*group
	contents map[crypto.ID]*content
	live     []fileEntry
	stats    Stats
	failed   int
	warned   map[string]bool
}

// Find runs a search.
func Find(ctx context.Context, src Source, opts Options) ([]Match, Stats, error) {
	if opts.MaxLine <= 0 {
		opts.MaxLine = 1 << 20
	}
	if opts.MaxLineNumbers <= 0 {
		opts.MaxLineNumbers = 1000
	}
	root := path.Clean("/" + opts.Root)
	opts.Root = root
	for _, g := range opts.Names {
		if _, err := path.Match(g, ""); err != nil {
			return nil, Stats{}, fmt.Errorf("bad name pattern %q: %w", g, err)
		}
	}
	f := &finder{src: src, opts: opts, groups: map[groupKey]*group{}, contents: map[crypto.ID]*content{}, warned: map[string]bool{}}

	// The live tree first: its files have to be read to learn their content
	// ids, and what is searched while reading them is not read again from
	// the repository.
	if opts.Live != nil {
		if err := f.walkLive(ctx); err != nil {
			return nil, f.stats, err
		}
	}
	var roots []*group
	for i, sn := range opts.Snapshots {
		g, err := f.snapshotRoot(ctx, sn, i)
		if err != nil {
			return nil, f.stats, fmt.Errorf("snapshot %s: %w", sn.Name(), err)
		}
		if g != nil {
			roots = append(roots, g)
		}
	}
	if opts.Content != nil {
		if err := f.scanRepository(ctx); err != nil {
			return nil, f.stats, err
		}
	}
	ms := f.results(roots)
	if f.failed > 0 {
		return ms, f.stats, fmt.Errorf("%w: %d contents could not be read", ErrIncomplete, f.failed)
	}
	return ms, f.stats, nil
}

func (f *finder) warn(msg string) {
	if f.opts.Warn != nil && !f.warned[msg] {
		f.warned[msg] = true
		f.opts.Warn(msg)
	}
}

func (f *finder) nameOK(name string) bool {
	if len(f.opts.Names) == 0 {
		return true
	}
	for _, g := range f.opts.Names {
		if ok, _ := path.Match(g, name); ok {
			return true
		}
	}
	return false
}

// snapshotRoot resolves Root in snapshot i and walks it.
func (f *finder) snapshotRoot(ctx context.Context, sn *repo.Snapshot, i int) (*group, error) {
	node := &tree.Node{Name: "/", Type: tree.Dir, Subtree: sn.Tree}
	dir := "/"
	if f.opts.Root != "/" {
		for _, part := range strings.Split(f.opts.Root[1:], "/") {
			if node.Type != tree.Dir {
				return nil, nil
			}
			t, err := f.src.LoadTree(ctx, node.Subtree)
			if err != nil {
				return nil, err
			}
			if node = t.Find(part); node == nil {
				return nil, nil
			}
		}
		dir = f.opts.Root
	}
	switch node.Type {
	case tree.Dir:
		return f.visit(ctx, node.Subtree, dir, i)
	case tree.File:
		// A file as the root: a group of one, keyed by its parent's path
		// and its own content (there is no tree id of its own).
		e := f.fileEntry(node, f.opts.Root)
		key := groupKey{id: e.cid, dir: "file:" + f.opts.Root}
		g := f.groups[key]
		if g == nil {
			g = &group{files: []fileEntry{e}}
			f.groups[key] = g
		}
		g.mark(i)
		return g, nil
	}
	return nil, nil
}

// visit walks tree id at dir for snapshot i, once per (id, dir).
func (f *finder) visit(ctx context.Context, id crypto.ID, dir string, i int) (*group, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	key := groupKey{id: id, dir: dir}
	if g := f.groups[key]; g != nil {
		g.mark(i)
		return g, nil
	}
	t, err := f.src.LoadTree(ctx, id)
	if err != nil {
		return nil, err
	}
	f.stats.Trees++
	g := &group{snaps: []int{i}}
	f.groups[key] = g
	for _, n := range t.Nodes {
		p := path.Join(dir, n.Name)
		switch n.Type {
		case tree.File:
			g.files = append(g.files, f.fileEntry(n, p))
		case tree.Dir:
			c, err := f.visit(ctx, n.Subtree, p, i)
			if err != nil {
				return nil, err
			}
			g.children = append(g.children, c)
		}
	}
	return g, nil
}

// mark records that snapshot i shows g, and so everything below it.
func (g *group) mark(i int) {
	if n := len(g.snaps); n > 0 && g.snaps[n-1] == i {
		return
	}
	g.snaps = append(g.snaps, i)
	for _, c := range g.children {
		c.mark(i)
	}
}

func (f *finder) fileEntry(n *tree.Node, p string) fileEntry {
	f.stats.Files++
	e := fileEntry{path: p, size: n.Size, cid: history.ContentID(f.src.Key(), n), nameOK: f.nameOK(n.Name)}
	c := f.contents[e.cid]
	if c == nil {
		c = &content{size: n.Size}
		f.contents[e.cid] = c
	}
	if e.nameOK && !c.want {
		c.want = true
		if f.opts.Content != nil && !c.scanned {
			c.chunks = n.Pieces()
		}
	}
	return e
}

// scanRepository searches every wanted content not yet searched, once.
func (f *finder) scanRepository(ctx context.Context) error {
	var todo []crypto.ID
	var total int64
	for id, c := range f.contents {
		if c.want && !c.scanned {
			todo = append(todo, id)
			total += int64(c.size)
		}
	}
	// A stable order: by the first chunk's id keeps reads of one pack
	// together no better than any other, so sort for reproducibility.
	sort.Slice(todo, func(i, j int) bool { return todo[i].String() < todo[j].String() })
	if p := f.opts.Progress; p != nil && len(todo) > 0 {
		p.Start("searching content", total)
		defer p.Done()
	}
	for _, id := range todo {
		c := f.contents[id]
		rd := &blobReader{ctx: ctx, src: f.src, ids: c.chunks, progress: f.opts.Progress}
		err := f.scan(c, rd, id.String()[:16])
		f.stats.BytesRead += rd.n
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			c.failed = true
			f.failed++
			f.warn(fmt.Sprintf("content %s: %v", id.Short(), err))
		}
		c.chunks = nil
	}
	return nil
}

// scan searches one content read from rd and records the result.
func (f *finder) scan(c *content, rd io.Reader, what string) error {
	f.stats.ContentsRead++
	res, err := scanLines(rd, f.opts.Content, f.opts.MaxLine, f.opts.MaxLineNumbers)
	if err != nil {
		return err
	}
	if res.split {
		f.warn(fmt.Sprintf("content %s has lines longer than %d bytes: searched in overlapping pieces; a match longer than %d bytes across a piece boundary may be missed",
			what, f.opts.MaxLine, f.opts.MaxLine/16))
	}
	c.scanned, c.lines, c.more = true, res.lines, res.more
	return nil
}

// blobReader streams a file's chunks in order. A hole reads as one zero
// byte: it holds no newline, so line numbers stay those of the file, and
// searching a terabyte of zeros would find nothing a byte does not.
type blobReader struct {
	ctx      context.Context
	src      Source
	ids      []tree.Piece
	buf      []byte
	n        int64
	progress Progress
}

func (b *blobReader) Read(p []byte) (int, error) {
	for len(b.buf) == 0 {
		if len(b.ids) == 0 {
			return 0, io.EOF
		}
		if b.ids[0].ID.IsNull() {
			b.ids = b.ids[1:]
			b.buf = []byte{0}
			continue
		}
		data, err := b.src.LoadBlob(b.ctx, pack.Data, b.ids[0].ID)
		if err != nil {
			return 0, err
		}
		b.ids = b.ids[1:]
		b.buf = data
		b.n += int64(len(data))
		if b.progress != nil {
			b.progress.Add(int64(len(data)))
		}
	}
	n := copy(p, b.buf)
	b.buf = b.buf[n:]
	return n, nil
}

// walkLive walks the live tree below Root, reading the files that pass
// the name test to learn their content ids (and searching them).
func (f *finder) walkLive(ctx context.Context) error {
	start := "."
	if f.opts.Root != "/" {
		start = f.opts.Root[1:]
	}
	if p := f.opts.Progress; p != nil {
		p.Start("searching the live tree", -1)
		defer p.Done()
	}
	ch := f.src.NewChunker()
	err := iofs.WalkDir(f.opts.Live, start, func(p string, d iofs.DirEntry, err error) error {
		if err != nil {
			if p == start && errors.Is(err, iofs.ErrNotExist) {
				return iofs.SkipAll
			}
			f.warn(fmt.Sprintf("live tree: %v", err))
			if d != nil && d.IsDir() {
				return iofs.SkipDir
			}
			return nil
		}
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		if p == ".versions" && d.IsDir() {
			return iofs.SkipDir
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rp := "/" + p
		if p == "." {
			rp = "/"
		}
		nameOK := f.nameOK(d.Name())
		if !nameOK {
			f.stats.Files++
			return nil
		}
		e, err := f.readLive(ch, p, rp)
		if err != nil {
			f.warn(fmt.Sprintf("live tree: %s: %v", rp, err))
			return nil
		}
		f.live = append(f.live, e)
		return nil
	})
	return err
}

// readLive reads one live file through the chunker, computing its content
// id and, for a content search, searching it on the way.
func (f *finder) readLive(ch *chunker.Chunker, p, rp string) (fileEntry, error) {
	fh, err := f.opts.Live.Open(p)
	if err != nil {
		return fileEntry{}, err
	}
	defer fh.Close()
	cr := &chunkReader{ch: ch, key: f.src.Key(), progress: f.opts.Progress}
	// Holes the mount reports are not read: chunks are cut at them as the
	// mount's commit cuts them, so the content id is the stored one.
	if osf, ok := fh.(*os.File); ok {
		if st, err := osf.Stat(); err == nil {
			if regions, ok := sparse.Regions(osf, uint64(st.Size())); ok {
				cr.regions, cr.f = regions, osf
			}
		}
	}
	if cr.regions == nil {
		ch.Reset(fh)
	} else {
		cr.eof = true // start with the first region
	}
	var res lineResult
	if f.opts.Content != nil {
		res, err = scanLines(cr, f.opts.Content, f.opts.MaxLine, f.opts.MaxLineNumbers)
	} else {
		_, err = io.Copy(io.Discard, cr)
	}
	if err != nil {
		return fileEntry{}, err
	}
	f.stats.Files++
	f.stats.BytesRead += int64(cr.size)
	var node tree.Node
	node.SetPieces(cr.pieces)
	cid := history.ContentID(f.src.Key(), &node)
	c := f.contents[cid]
	if c == nil {
		c = &content{size: cr.size}
		f.contents[cid] = c
	}
	c.want = true
	if f.opts.Content != nil && !c.scanned {
		f.stats.ContentsRead++
		if res.split {
			f.warn(fmt.Sprintf("%s has lines longer than %d bytes: searched in overlapping pieces; a match longer than %d bytes across a piece boundary may be missed",
				rp, f.opts.MaxLine, f.opts.MaxLine/16))
		}
		c.scanned, c.lines, c.more = true, res.lines, res.more
	}
	return fileEntry{path: rp, size: cr.size, cid: cid, nameOK: true}, nil
}

// chunkReader reads a stream through the repository's chunker, recording
// the chunk ids as a snapshot would.
type chunkReader struct {
	ch       *chunker.Chunker
	key      *crypto.Key
	buf      []byte
	pieces   []tree.Piece
	size     uint64
	eof      bool
	progress Progress
	// A sparse file is read region by region: data through the chunker
	// (reset at each), a hole as one zero byte, as blobReader reads it.
	f       *os.File
	regions []sparse.Region
}

func (c *chunkReader) Read(p []byte) (int, error) {
	for len(c.buf) == 0 {
		if c.eof {
			if len(c.regions) == 0 {
				return 0, io.EOF
			}
			r := c.regions[0]
			c.regions = c.regions[1:]
			if r.Hole {
				c.pieces = append(c.pieces, tree.Piece{Hole: r.End - r.Start})
				c.size += r.End - r.Start
				c.buf = []byte{0}
				continue
			}
			c.ch.Reset(io.NewSectionReader(c.f, int64(r.Start), int64(r.End-r.Start)))
			c.eof = false
		}
		data, err := c.ch.Next()
		if errors.Is(err, io.EOF) {
			c.eof = true
			continue
		}
		if err != nil {
			return 0, err
		}
		c.pieces = append(c.pieces, tree.Piece{ID: c.key.BlobID(data)})
		c.size += uint64(len(data))
		c.buf = data
		if c.progress != nil {
			c.progress.Add(int64(len(data)))
		}
	}
	n := copy(p, c.buf)
	c.buf = c.buf[n:]
	return n, nil
}

// results turns groups and live entries into matches.
func (f *finder) results(roots []*group) []Match {
	type agg struct {
		e     fileEntry
		snaps map[int]bool
		live  bool
	}
	byKey := map[pathKey]*agg{}
	paths := map[crypto.ID]map[string]bool{} // every path of every content, for copies
	add := func(e fileEntry, snaps []int, live bool) {
		if e.size > 0 {
			if paths[e.cid] == nil {
				paths[e.cid] = map[string]bool{}
			}
			paths[e.cid][e.path] = true
		}
		if !e.nameOK {
			return
		}
		if f.opts.Content != nil {
			c := f.contents[e.cid]
			if c == nil || !c.scanned || (len(c.lines) == 0 && c.more == 0) {
				return
			}
		}
		k := pathKey{e.path, e.cid}
		a := byKey[k]
		if a == nil {
			a = &agg{e: e, snaps: map[int]bool{}}
			byKey[k] = a
		}
		for _, s := range snaps {
			a.snaps[s] = true
		}
		a.live = a.live || live
	}
	seen := map[*group]bool{}
	var walk func(g *group)
	walk = func(g *group) {
		if seen[g] {
			return
		}
		seen[g] = true
		for _, e := range g.files {
			add(e, g.snaps, false)
		}
		for _, c := range g.children {
			walk(c)
		}
	}
	for _, g := range roots {
		walk(g)
	}
	for _, e := range f.live {
		add(e, nil, true)
	}

	out := make([]Match, 0, len(byKey))
	for _, a := range byKey {
		m := Match{Path: a.e.path, Size: a.e.size, ContentID: a.e.cid.String(), Live: a.live,
			Snapshots: []string{}, Lines: []int{}, Copies: []string{}}
		idx := make([]int, 0, len(a.snaps))
		for s := range a.snaps {
			idx = append(idx, s)
		}
		sort.Ints(idx)
		for _, s := range idx {
			m.Snapshots = append(m.Snapshots, f.opts.Snapshots[s].Name())
		}
		if c := f.contents[a.e.cid]; f.opts.Content != nil && c != nil {
			m.Lines = append(m.Lines, c.lines...)
			m.MoreLines = c.more
		}
		for p := range paths[a.e.cid] {
			if p != a.e.path {
				m.Copies = append(m.Copies, p)
			}
		}
		sort.Strings(m.Copies)
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Path != b.Path {
			return a.Path < b.Path
		}
		return firstVersion(a) < firstVersion(b)
	})
	return out
}

// firstVersion orders matches of one path: oldest snapshot first, live last.
func firstVersion(m Match) string {
	if len(m.Snapshots) > 0 {
		return m.Snapshots[0]
	}
	return "~" + LiveVersion // sorts after every snapshot name
}
