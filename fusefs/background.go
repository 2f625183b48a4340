package fusefs

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kwikfs/kwikfs/transfer"
)

// ForegroundQuiet is how long background fetches wait after the last
// foreground read activity before they start a new fetch (see
// FS.FetchBackground). A sequential reader keeps the filesystem busy with
// waits and read-ahead fetches, with gaps far shorter than this between
// them, so a background job stays out of its way for as long as it reads.
const ForegroundQuiet = 100 * time.Millisecond

// foreground tracks the filesystem's foreground read activity: readers
// waiting for a chunk that is being loaded, and fetches that foreground
// reads (and their read-ahead) started. The zero value is ready for use.
type foreground struct {
	mu        sync.Mutex    // guards the fields below
	active    int           // readers waiting plus foreground fetches under way
	idleSince time.Time     // when active last dropped to zero; zero: never active
	idle      chan struct{} // closed when active drops to zero; nil unless someone waits for that

	// Counters (atomics, outside mu).
	waits    atomic.Int64 // background fetches that waited for foreground activity to end
	waitedNs atomic.Int64 // total time they waited
}

// begin records the start of one foreground activity.
func (g *foreground) begin() {
	g.mu.Lock()
	g.active++
	g.mu.Unlock()
}

// end records the end of one foreground activity begun with begin.
func (g *foreground) end() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.active--
	if g.active > 0 {
		return
	}
	g.idleSince = time.Now()
	if g.idle != nil {
		close(g.idle)
		g.idle = nil
	}
}

// waitQuiet blocks until there has been no foreground activity for quiet,
// or ctx is done (returning context.Cause(ctx)).
func (g *foreground) waitQuiet(ctx context.Context, quiet time.Duration) error {
	var started time.Time
	defer func() {
		if !started.IsZero() {
			g.waitedNs.Add(int64(time.Since(started)))
		}
	}()
	for {
		g.mu.Lock()
		var wake <-chan struct{}
		var left time.Duration
		if g.active > 0 {
			if g.idle == nil {
				g.idle = make(chan struct{})
			}
			wake = g.idle
		} else if !g.idleSince.IsZero() {
			left = quiet - time.Since(g.idleSince)
		}
		g.mu.Unlock()
		if wake == nil && left <= 0 {
			return nil
		}
		if started.IsZero() {
			started = time.Now()
			g.waits.Add(1)
		}
		if wake != nil {
			select {
			case <-wake:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
			continue
		}
		t := time.NewTimer(left)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return context.Cause(ctx)
		}
	}
}

// ForegroundStats describe foreground activity and how background fetches
// gave way to it.
type ForegroundStats struct {
	// Active is the number of foreground activities now: readers waiting
	// for chunks being loaded, plus fetches foreground reads started.
	Active int
	// BackgroundWaits counts FetchBackground calls that waited for
	// foreground activity to end before fetching; BackgroundWaited is the
	// total time they waited.
	BackgroundWaits  int64
	BackgroundWaited time.Duration
}

// Foreground returns the foreground activity counters.
func (f *FS) Foreground() ForegroundStats {
	f.fg.mu.Lock()
	active := f.fg.active
	f.fg.mu.Unlock()
	return ForegroundStats{
		Active:           active,
		BackgroundWaits:  f.fg.waits.Load(),
		BackgroundWaited: time.Duration(f.fg.waitedNs.Load()),
	}
}

// BackgroundResult says what one FetchBackground call found and did, in
// chunks and bytes. Every chunk asked for is in exactly one class.
type BackgroundResult struct {
	// Held are chunks the Store held, or that were fetched already and
	// are waiting for the store writer.
	Held      int
	HeldBytes int64
	// Joined are chunks another load (a foreground read or another
	// background call) was fetching; the call waited for them.
	Joined      int
	JoinedBytes int64
	// Fetched are chunks this call fetched from the Remote.
	Fetched      int
	FetchedBytes int64
}

// chunkHaver is implemented by a Store that can tell whether it holds a
// chunk without reading it (*chunkstore.Store does).
type chunkHaver interface {
	Has(sum [32]byte) (bool, error)
}

// FetchBackground makes sure that chunks first..last of m, the manifest of
// the regular file at path, are in the Store, for background work such as
// prefetch. Chunks the Store holds (or that wait for the store writer) are
// skipped without being read; chunks being loaded already are waited for,
// not fetched again; the rest are fetched from the Remote with one
// ReadChunks per run of consecutive chunks and handed to the store writer,
// exactly as foreground reads fetch them, so a foreground read of one of
// these chunks joins this fetch. Chunks fetched here are not kept in the
// memory cache.
//
// Background fetches give way to foreground reads: before it starts a
// fetch, FetchBackground waits until no foreground read has waited for a
// chunk, and no fetch started by a foreground read has been under way,
// for ForegroundQuiet. Fetches already started go on, marked background
// (transfer.WithBackgroundPriority): the server sends nothing of them
// while it serves a foreground READ of this client.
//
// FetchBackground returns once every chunk asked for is held (returning
// what it found and did), a load failed (its error: an error wrapping
// transfer.ErrUnavailable when the Remote did not answer, as for reads),
// ctx is done (context.Cause(ctx); fetches under way go on for the
// Store), or the FS is closed (ErrClosed). Memory: at most the chunks
// asked for are held by this call at once, and only until the store
// writer has them. The range must lie within m (else an error wrapping
// transfer.ErrBadRequest); m must not be modified.
func (f *FS) FetchBackground(ctx context.Context, path string, m *transfer.Manifest, first, last int) (BackgroundResult, error) {
	var res BackgroundResult
	if first < 0 || last < first || last >= m.NumChunks() || len(m.Hashes) != m.NumChunks() {
		return res, fmt.Errorf("background fetch of chunks [%d, %d] of %q (%d chunks): %w", first, last, path, m.NumChunks(), transfer.ErrBadRequest)
	}
	held := func(i int) {
		res.Held++
		res.HeldBytes += int64(m.ChunkLen(i))
	}
	// What the Store holds needs no flight: looked up outside f.mu.
	var need []int
	for i := first; i <= last; i++ {
		ok, err := f.storeHas(m, i)
		if err != nil {
			return res, err
		}
		if ok {
			held(i)
		} else {
			need = append(need, i)
		}
	}
	if len(need) == 0 {
		return res, nil
	}
	// Before claiming anything: a foreground reader must never wait for a
	// flight whose fetch waits for the reader to go away.
	if err := f.fg.waitQuiet(ctx, ForegroundQuiet); err != nil {
		return res, err
	}
	var (
		joined []claimed // flights of other loads
		mine   []claimed // flights this call must complete
	)
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return res, ErrClosed
	}
	for _, i := range need {
		h := m.Hashes[i]
		if _, ok := f.writer.get(h); ok {
			held(i)
			continue
		}
		if fl, ok := f.flights[h]; ok {
			joined = append(joined, claimed{idx: i, h: h, fl: fl})
			continue
		}
		fl := &flight{done: make(chan struct{}), background: true}
		f.flights[h] = fl
		mine = append(mine, claimed{idx: i, h: h, fl: fl})
	}
	f.mu.Unlock()

	// A chunk the store writer stored between the look-up and the claim
	// is loaded from the Store instead (rare).
	missing := mine[:0:0]
	for _, c := range mine {
		if ok, _ := f.storeHas(m, c.idx); ok {
			if data, err := f.store.Get([32]byte(c.h), nil); err == nil && len(data) == m.ChunkLen(c.idx) {
				f.count.storeHits.Add(1)
				f.complete(c.h, c.fl, data, nil)
				held(c.idx)
				continue
			}
		}
		missing = append(missing, c)
	}
	for rest := missing; len(rest) > 0; {
		n := 1
		for n < len(rest) && rest[n].idx == rest[n-1].idx+1 {
			n++
		}
		run := rest[:n]
		rest = rest[n:]
		if !f.goOwned(func() { f.fetch(path, m, run, false, true) }) {
			f.fail(run, ErrClosed)
		}
	}
	wait := func(cs []claimed, count *int, bytes *int64) error {
		for _, c := range cs {
			if err := f.wait(ctx, c.fl.done); err != nil {
				if err == context.Canceled && ctx.Err() != nil {
					err = context.Cause(ctx)
				}
				return err
			}
			if c.fl.err != nil {
				return c.fl.err
			}
			*count++
			*bytes += int64(m.ChunkLen(c.idx))
		}
		return nil
	}
	if err := wait(missing, &res.Fetched, &res.FetchedBytes); err != nil {
		return res, err
	}
	if err := wait(joined, &res.Joined, &res.JoinedBytes); err != nil {
		return res, err
	}
	return res, nil
}

// storeHas reports whether the Store holds chunk i of m: without reading
// it when the Store can say so, else by getting it.
func (f *FS) storeHas(m *transfer.Manifest, i int) (bool, error) {
	if f.ctx.Err() != nil {
		return false, ErrClosed
	}
	sum := [32]byte(m.Hashes[i])
	if h, ok := f.store.(chunkHaver); ok {
		ok, err := h.Has(sum)
		if err != nil {
			// An unreadable index entry is as good as a missing chunk:
			// the fetch stores it again.
			f.log.Warn("fusefs: store look-up", "sum", transfer.Hash(sum).String(), "err", err)
			return false, nil
		}
		return ok, nil
	}
	data, err := f.store.Get(sum, nil)
	return err == nil && len(data) == m.ChunkLen(i), nil
}

// Stat returns the attributes of path (relative to the exported root, ""
// for the root): the root's from the Remote's Stat, any other's from its
// parent's listing, cached and kept like those of the mounted tree.
func (f *FS) Stat(ctx context.Context, path string) (transfer.Attr, error) {
	if path == "" {
		return f.meta.stat(ctx, "")
	}
	dir, name := splitPath(path)
	it, err := f.meta.list(ctx, dir)
	if err != nil {
		return transfer.Attr{}, err
	}
	a, ok := it.lookup(name)
	if !ok {
		return transfer.Attr{}, fmt.Errorf("%q: %w", path, transfer.ErrNotFound)
	}
	return a, nil
}

// List returns the entries of directory path, in the server's order, from
// the same cache as the mounted tree's listings. The slice is the caller's.
func (f *FS) List(ctx context.Context, path string) ([]transfer.Attr, error) {
	it, err := f.meta.list(ctx, path)
	if err != nil {
		return nil, err
	}
	return slices.Clone(it.entries), nil
}

// Manifest returns the manifest of regular file path, from the same cache
// as the mounted tree's (fresh within AttrTimeout, persisted in the Store).
// The caller must not modify it.
func (f *FS) Manifest(ctx context.Context, path string) (*transfer.Manifest, error) {
	return f.meta.manifest(ctx, path)
}
