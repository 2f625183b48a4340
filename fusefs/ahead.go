package fusefs

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kwikfs/kwikfs/transfer"
)

// FilesRemote is implemented by a Remote that can fetch the manifests and
// first chunks of several files of a directory in one call
// (*transfer.Client does; see transfer.Client.Files). With one, the FS
// opens files without a manifest call of their own: see opener.
type FilesRemote interface {
	// Files returns, for each of names (files of directory dir), its
	// manifest and first chunk, or a nil Manifest for a name the server
	// skipped; chunks come verified, each in a buffer of its own, and the
	// manifests and chunks after the first name's manifest fit in
	// maxBytes. known is nil or gives for each name the version whose
	// content the caller holds (the zero Hash: none), of which no chunk
	// comes.
	Files(ctx context.Context, dir string, names []string, known []transfer.Hash, maxBytes int) ([]transfer.FileData, error)
}

var _ FilesRemote = (*transfer.Client)(nil)

// Sizes of open-ahead (see opener).
const (
	// openAheadFirst is how many files the first FILES request of a
	// directory asks for; each request that a run of opens triggers asks
	// for twice as many as the one before, up to Options.OpenAheadMax,
	// in requests of openAheadFirst files at most that go out together
	// (the server reads their files in parallel).
	openAheadFirst = 32
	// DefaultOpenAheadMax is the default of Options.OpenAheadMax.
	DefaultOpenAheadMax = 512
	// openAheadBytes bounds the manifests and content of one FILES
	// request (and a quarter of MemoryCacheBytes does too).
	openAheadBytes = 4 << 20
	// openAheadDirs bounds the directories whose opens are followed.
	openAheadDirs = 64
	// defaultChunkGuess is the chunk size assumed until a manifest tells
	// the server's: the largest file asked for ahead of its open.
	defaultChunkGuess = transfer.DefaultChunkSize
)

// opener brings the manifests and the content of small files into the
// caches before they are opened, so that opening and reading them costs
// no round trip. When a regular file is opened whose manifest is not
// fresh in memory, Open asks the Remote (FILES) for it and, in the same
// request, for the next files of its directory that are opened next,
// assuming the order of the listing (what cp -r, tar and find | xargs
// do) or, once two opens in a row follow it, sorted order (rsync). As
// opens move on through the files asked for, the next request goes out
// while half of the last one's files are still to be opened, twice as
// large as the one before up to Options.OpenAheadMax files and
// openAheadBytes; its files' opens wait for it rather than ask again.
// When the opens near the end of a directory, the first request of the
// directory a walk enters next goes out too: the next directory after it
// in its parent's listing (in sorted order when its files are opened in
// sorted order), if that listing is at hand (see metaCache.listAhead).
// Only regular files of one chunk at most are asked for ahead; a larger
// file is asked for alone when it is opened, which brings its manifest and
// first chunk in one round trip. What a reply brings is kept as a manifest
// call's answer would be (fresh for AttrTimeout, persisted) and each chunk
// as a fetched chunk (in memory and on its way to the Store), so
// freshness, ESTALE and the Store's dedup work as for any open and read.
// A Remote that predates FILES (it refuses the request as malformed) is
// not asked again, and any failure leaves Open to its manifest call.
type opener struct {
	f      *FS
	remote FilesRemote
	max    int // Options.OpenAheadMax
	bytes  int // budget of one request

	mu   sync.Mutex // guards dirs and what they hold
	dirs map[string]*dirAhead

	off       atomic.Bool  // the Remote refused FILES
	chunkSize atomic.Int64 // of the last manifest a reply brought; 0: unknown
	lastOpen  atomic.Int64 // UnixNano of the last opening
}

// walkWindow is how recent an open must be for a directory read to count
// as part of a walk that opens files (see walking).
const walkWindow = time.Second

// dirAhead is what opener knows of one directory. Guarded by opener.mu.
type dirAhead struct {
	list   *metaItem           // the listing order and pos come from
	order  []string            // the small regular files, in the order opens are expected in
	pos    map[string]int      // index of each name in order
	sorted bool                // order is sorted by name, not the listing's
	asked  map[string]*askCall // the request each name was asked for in
	last   string              // the name opened last
	window int                 // names in the next request ahead
	onward bool                // the next directory's first request went out
	used   time.Time           // the last open, for eviction
}

// askCall is one FILES request; done is closed once its answers are kept.
type askCall struct {
	done chan struct{}
}

// ask is a request to start: names of dir, the call its opens wait for.
type ask struct {
	dir   string
	names []string
	bytes int
	call  *askCall
}

func newOpener(f *FS, remote FilesRemote, max int) *opener {
	return &opener{
		f: f, remote: remote, max: max,
		bytes: int(min(openAheadBytes, f.opts.MemoryCacheBytes/4)),
		dirs:  make(map[string]*dirAhead),
	}
}

// opening is called by Open of regular file path: it returns once the file's manifest (and first chunk) are in the caches,
// or a request for them failed or skipped them, or ctx is done; on the
// way it starts the next request ahead, if it is time to.
func (o *opener) opening(ctx context.Context, path string) {
	if o == nil || o.off.Load() || o.f.meta.down.Load() {
		return
	}
	o.lastOpen.Store(time.Now().UnixNano())
	dir, name := splitPath(path)
	if !o.f.meta.fresh(kindList, dir) {
		return // opened without a walk through its directory
	}
	it, err := o.f.meta.list(ctx, dir)
	if err != nil {
		return
	}
	need := !o.f.meta.fresh(kindManifest, path)
	var asks []ask
	var wait *askCall
	o.mu.Lock()
	d := o.dirLocked(dir, it)
	_, small := d.pos[name]
	switch {
	case !small:
		if need && d.asked[name] == nil {
			// A larger file: its manifest and first chunk alone.
			a := ask{dir: dir, names: []string{name}, bytes: o.bytes, call: &askCall{done: make(chan struct{})}}
			d.asked[name] = a.call
			asks = append(asks, a)
		}
		wait = d.asked[name]
	default:
		d.follow(name)
		if d.asked[name] == nil && need {
			asks = append(asks, d.next(dir, name, true, d.window, o.bytes)...)
		}
		wait = d.asked[name]
		asks = append(asks, d.ahead(dir, name, o.max, o.bytes)...)
		asks = append(asks, o.onwardLocked(dir, d)...)
	}
	o.mu.Unlock()
	for _, a := range asks {
		if !o.f.goOwned(func() { o.run(a) }) {
			close(a.call.done)
		}
	}
	if wait != nil && need {
		// Open goes on to its manifest call whatever the outcome.
		_ = o.f.wait(ctx, wait.done)
	}
}

// walking is called when directory dir, listed as it, is read: when files
// were opened within walkWindow (a copy of a tree is under way), its first
// files will be opened next, and their FILES request starts now, without
// waiting for the first open. A walk that opens nothing (ls -lR, find)
// fetches no content.
func (o *opener) walking(dir string, it *metaItem) {
	if o == nil || o.off.Load() || o.f.meta.down.Load() || time.Since(time.Unix(0, o.lastOpen.Load())) > walkWindow {
		return
	}
	o.mu.Lock()
	d := o.dirLocked(dir, it)
	var asks []ask
	if len(d.order) > 0 && d.asked[d.order[0]] == nil {
		asks = d.next(dir, d.order[0], true, d.window, o.bytes)
	}
	o.mu.Unlock()
	for _, a := range asks {
		if !o.f.goOwned(func() { o.run(a) }) {
			close(a.call.done)
		}
	}
}

// onwardLocked returns the first request of the directory a walk enters
// after dir, once the opens in dir are within half a window of its end:
// the next directory after dir in its parent's listing, or in sorted
// order when dir's files are opened in sorted order, if its listing is
// fresh. It goes out once per listing of dir, and not when that
// directory's first files are asked for already.
func (o *opener) onwardLocked(dir string, d *dirAhead) []ask {
	if d.onward || dir == "" || d.pos[d.last]+1+d.window/2 < len(d.order) {
		return nil
	}
	d.onward = true
	parent, name := splitPath(dir)
	pit, ok := o.f.meta.items.Get(string(kindList) + parent)
	if !ok {
		return nil
	}
	var next string
	if d.sorted {
		for _, e := range pit.entries {
			if e.IsDir() && e.Name > name && (next == "" || e.Name < next) {
				next = e.Name
			}
		}
	} else if i, ok := pit.byName[name]; ok {
		for _, e := range pit.entries[i+1:] {
			if e.IsDir() {
				next = e.Name
				break
			}
		}
	}
	if next == "" {
		return nil
	}
	path := joinPath(parent, next)
	it, ok := o.f.meta.items.Get(string(kindList) + path)
	if !ok || !o.f.meta.fresh(kindList, path) {
		return nil
	}
	nd := o.dirLocked(path, it)
	if len(nd.order) == 0 || nd.asked[nd.order[0]] != nil {
		return nil
	}
	return nd.next(path, nd.order[0], true, nd.window, o.bytes)
}

// dirLocked returns the state of dir, made afresh when the listing changed.
func (o *opener) dirLocked(dir string, it *metaItem) *dirAhead {
	now := time.Now()
	d := o.dirs[dir]
	if d != nil && d.list == it {
		d.used = now
		return d
	}
	if d == nil && len(o.dirs) >= openAheadDirs {
		var oldest string
		var at time.Time
		for k, v := range o.dirs {
			if oldest == "" || v.used.Before(at) {
				oldest, at = k, v.used
			}
		}
		delete(o.dirs, oldest)
	}
	nd := &dirAhead{list: it, pos: make(map[string]int), asked: make(map[string]*askCall), window: openAheadFirst, used: now}
	if d != nil {
		// A new listing of the same directory: the requests in flight
		// still bring what they bring; the window goes on.
		nd.window, nd.sorted = d.window, d.sorted
	}
	limit := o.smallLimit()
	for _, e := range it.entries {
		if e.IsRegular() && e.Size <= limit {
			nd.order = append(nd.order, e.Name)
		}
	}
	if nd.sorted {
		slices.Sort(nd.order)
	}
	nd.index()
	o.dirs[dir] = nd
	return nd
}

// smallLimit is the size of the largest file asked for ahead: the chunk
// size of the last manifest a reply brought, defaultChunkGuess before.
func (o *opener) smallLimit() int64 {
	if c := o.chunkSize.Load(); c > 0 {
		return c
	}
	return defaultChunkGuess
}

// index rebuilds pos from order.
func (d *dirAhead) index() {
	clear(d.pos)
	for i, n := range d.order {
		d.pos[n] = i
	}
}

// follow notes an open of name; when it comes right after the name opened
// before in sorted order but not in the current order, the order becomes
// sorted.
func (d *dirAhead) follow(name string) {
	prev := d.last
	d.last = name
	if d.sorted || prev == "" || prev >= name {
		return
	}
	if p, ok := d.pos[prev]; ok && p+1 < len(d.order) && d.order[p+1] == name {
		return // the listing's order
	}
	for _, n := range d.order {
		if n > prev && n < name {
			return // not the next in sorted order either
		}
	}
	d.sorted = true
	slices.Sort(d.order)
	d.index()
}

// next returns requests for up to n names not asked for yet, from name
// (included when withName is set) on in order, marking them asked: one
// request per openAheadFirst names, which share bytes evenly.
func (d *dirAhead) next(dir, name string, withName bool, n, bytes int) []ask {
	start := d.pos[name]
	if !withName {
		start++
	}
	var names []string
	for _, nm := range d.order[start:] {
		if len(names) == n {
			break
		}
		if d.asked[nm] == nil {
			names = append(names, nm)
		}
	}
	if len(names) == 0 {
		return nil
	}
	pieces := (len(names) + openAheadFirst - 1) / openAheadFirst
	asks := make([]ask, 0, pieces)
	for chunk := range slices.Chunk(names, openAheadFirst) {
		a := ask{dir: dir, names: chunk, bytes: bytes / pieces, call: &askCall{done: make(chan struct{})}}
		for _, nm := range chunk {
			d.asked[nm] = a.call
		}
		asks = append(asks, a)
	}
	return asks
}

// ahead returns the next requests ahead of an open of name, if the names
// asked for after it in order are down to half the window, with the window
// doubled (up to max).
func (d *dirAhead) ahead(dir, name string, max, bytes int) []ask {
	p := d.pos[name]
	end := min(len(d.order), p+1+d.window/2)
	unasked := false
	for _, nm := range d.order[p+1 : end] {
		if d.asked[nm] == nil {
			unasked = true
			break
		}
	}
	if !unasked {
		return nil
	}
	d.window = min(2*d.window, max)
	return d.next(dir, name, false, d.window, bytes)
}

// run makes request a and keeps what it brings. A name the reply skipped
// after the last one it answered was skipped for want of budget: it may
// be asked for again; the others (larger files, files gone) are not.
func (o *opener) run(a ask) {
	defer close(a.call.done)
	f := o.f
	// Files whose manifests are fresh need nothing (they were fetched
	// by an earlier walk, or by prefetch, within AttrTimeout).
	a.names = slices.DeleteFunc(a.names, func(n string) bool { return f.meta.fresh(kindManifest, joinPath(a.dir, n)) })
	if len(a.names) == 0 {
		return
	}
	ctx, cancel := context.WithTimeoutCause(f.ctx, f.opts.FetchTimeout, errFetchTimeout)
	defer cancel()
	f.count.filesCalls.Add(1)
	// The versions whose manifests are kept (of an earlier walk, or
	// persisted before a remount): their content is in the Store, unless
	// evicted since (then a READ brings it).
	known := make([]transfer.Hash, len(a.names))
	for i, n := range a.names {
		if m := f.meta.kept(kindManifest, joinPath(a.dir, n)); m != nil {
			known[i] = m.Version
		}
	}
	files, err := o.remote.Files(ctx, a.dir, a.names, known, a.bytes)
	if err != nil {
		if errors.Is(err, transfer.ErrBadRequest) {
			o.off.Store(true)
			f.log.Info("fusefs: the server does not answer FILES; files are opened one by one", "err", err)
		}
		o.forget(a, 0)
		return
	}
	answered, _, _, _ := o.keepReply(ctx, a.dir, a.names, files, true)
	o.forget(a, answered)
}

// forget makes the names of a from index i on askable again.
func (o *opener) forget(a ask, i int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	d := o.dirs[a.dir]
	if d == nil {
		return
	}
	for _, nm := range a.names[i:] {
		if d.asked[nm] == a.call {
			delete(d.asked, nm)
		}
	}
}

// keepReply keeps what a FILES reply brought for names of dir: the
// manifests (see metaCache.putManifests), and each first chunk as a
// fetched chunk, handed to the store writer and, if memory is set, to the
// memory cache. It then waits for room in the store writer's queue, which
// the reply's chunks (at most its byte budget) may have overfilled. It
// returns the index after the last name answered (0: none), the manifests
// kept and the chunks kept and their bytes.
func (o *opener) keepReply(ctx context.Context, dir string, names []string, files []transfer.FileData, memory bool) (answered, manifests, chunks int, bytes int64) {
	f := o.f
	var paths []string
	var ms []*transfer.Manifest
	for i, fd := range files {
		if fd.Manifest == nil {
			continue
		}
		answered = i + 1
		paths = append(paths, joinPath(dir, names[i]))
		ms = append(ms, fd.Manifest)
		o.chunkSize.Store(int64(fd.Manifest.ChunkSize))
	}
	f.count.filesManifests.Add(int64(len(ms)))
	f.meta.putManifests(paths, ms)
	for _, fd := range files {
		if n := o.keepChunk(fd, memory); n > 0 {
			chunks++
			bytes += n
		}
	}
	// On ctx's end the chunks are kept all the same.
	_ = f.writer.waitRoom(ctx)
	return answered, len(ms), chunks, bytes
}

// keepChunk keeps the first chunk of a FILES reply's fd, if it brought
// one that no load has or is bringing, and returns its bytes (0 when it
// kept none).
func (o *opener) keepChunk(fd transfer.FileData, memory bool) int64 {
	f, m := o.f, fd.Manifest
	if m == nil || fd.First == nil || m.NumChunks() == 0 {
		return 0
	}
	if !f.verified {
		if err := m.Verify(0, fd.First); err != nil {
			return 0
		}
	}
	h := m.Hashes[0]
	f.mu.Lock()
	_, loading := f.flights[h]
	f.mu.Unlock()
	if loading {
		return 0 // a fetch of the same chunk is under way
	}
	if _, ok := f.mem.Get(h); ok {
		return 0
	}
	if _, ok := f.writer.get(h); ok {
		return 0
	}
	f.count.chunksFetched.Add(1)
	f.count.bytesFetched.Add(int64(len(fd.First)))
	f.count.filesChunks.Add(1)
	f.count.filesBytes.Add(int64(len(fd.First)))
	f.writer.add(h, m.Alg, fd.First)
	if memory {
		f.mem.Add(h, fd.First)
	}
	return int64(len(fd.First))
}

// FilesResult says what one FetchFilesBackground call did.
type FilesResult struct {
	Requests     int   // FILES requests made
	Manifests    int   // manifests the replies brought, kept
	Fetched      int   // chunks fetched and handed to the store writer
	FetchedBytes int64 // their bytes
}

// FetchFilesBackground brings the manifests and content of the small
// regular files among entries (of directory dir, as List gives them) into
// the Store for background work such as prefetch, with one FILES request
// per transfer.MaxFilesNames files (and maxBytes of manifests and content)
// instead of a manifest call and a READ per file. Small files are those of
// one chunk at most, by the chunk size of the last manifest a FILES reply
// brought (transfer.DefaultChunkSize before the first). No content comes
// of a file still at the version whose manifest the Store keeps. Larger
// files, and what the replies skip, are left to Manifest and
// FetchBackground, which then
// find what this call brought: kept manifests (fresh for AttrTimeout, as
// a manifest call's answer) and chunks on their way to the Store (not
// kept in the memory cache). Like FetchBackground it gives way to
// foreground reads: each request waits for ForegroundQuiet without them.
//
// It is best effort: names the replies skip are left as they are. It
// returns what it did, and the error of a failed request (then it stops;
// context.Cause(ctx) once ctx is done). With a Remote that cannot answer
// FILES (see FilesRemote), or with open-ahead disabled, it does nothing.
func (f *FS) FetchFilesBackground(ctx context.Context, dir string, entries []transfer.Attr, maxBytes int) (FilesResult, error) {
	var res FilesResult
	o := f.ahead
	if o == nil {
		return res, nil
	}
	limit := o.smallLimit()
	var names []string
	for _, e := range entries {
		if e.IsRegular() && e.Size <= limit {
			names = append(names, e.Name)
		}
	}
	for len(names) > 0 && !o.off.Load() {
		batch := names[:min(len(names), transfer.MaxFilesNames)]
		if err := f.fg.waitQuiet(ctx, ForegroundQuiet); err != nil {
			return res, err
		}
		known := make([]transfer.Hash, len(batch))
		for i, n := range batch {
			if m := f.meta.kept(kindManifest, joinPath(dir, n)); m != nil {
				known[i] = m.Version
			}
		}
		rctx, cancel := context.WithTimeoutCause(ctx, f.opts.FetchTimeout, errFetchTimeout)
		f.count.filesCalls.Add(1)
		res.Requests++
		files, err := o.remote.Files(transfer.WithBackgroundPriority(rctx), dir, batch, known, maxBytes)
		cancel()
		if err != nil {
			if errors.Is(err, transfer.ErrBadRequest) {
				o.off.Store(true)
				f.log.Info("fusefs: the server does not answer FILES; files are fetched one by one", "err", err)
				return res, nil
			}
			if ctx.Err() != nil {
				return res, context.Cause(ctx)
			}
			return res, err
		}
		// The first name is always answered unless it is no regular file
		// (any more); the names after the last one answered were skipped
		// for want of budget (or grew past a chunk).
		answered, manifests, chunks, bytes := o.keepReply(ctx, dir, batch, files, false)
		res.Manifests += manifests
		res.Fetched += chunks
		res.FetchedBytes += bytes
		names = names[max(answered, 1):]
	}
	return res, nil
}
