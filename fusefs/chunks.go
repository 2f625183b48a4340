package fusefs

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kwikfs/kwikfs/transfer"
)

// flight is one chunk being loaded (from the Store or the Remote). done is
// closed once data or err is set; both are read-only afterwards.
type flight struct {
	done chan struct{}
	data []byte
	err  error
	// background is set on the flights of FetchBackground: their chunks
	// are not kept in the memory cache. Immutable.
	background bool
}

// claimed is a chunk whose flight the claimer must complete.
type claimed struct {
	idx int
	h   transfer.Hash
	fl  *flight
}

// slot is one chunk a reader needs: its data if it was at hand, else the
// flight to wait for.
type slot struct {
	data []byte
	fl   *flight
}

// readChunks returns chunks first..last of m (the file at path), verified:
// each from the memory cache, else from the Store, else from the Remote. A
// fetch that makes no progress for FetchTimeout fails (with an error
// wrapping transfer.ErrUnavailable); readChunks returns context.Canceled as
// soon as ctx is done, and the loads it started go on for other readers.
// When aheadFirst <= aheadLast it also starts read-ahead of those chunks.
func (f *FS) readChunks(ctx context.Context, path string, m *transfer.Manifest, first, last, aheadFirst, aheadLast int) ([][]byte, error) {
	slots, mine, err := f.claim(m, first, last, false)
	if err != nil {
		return nil, err
	}
	f.load(path, m, mine, false)
	if aheadFirst <= aheadLast {
		f.readAhead(path, m, aheadFirst, aheadLast)
	}
	out := make([][]byte, len(slots))
	waiting := false
	for k, s := range slots {
		if s.fl == nil {
			out[k] = s.data
			continue
		}
		if !waiting && !isDone(s.fl.done) {
			// A reader waiting for the Remote is foreground activity,
			// which background fetches give way to (background.go).
			waiting = true
			f.fg.begin()
			defer f.fg.end()
		}
		// A flight always ends: a fetch fails once FetchTimeout passes
		// without progress.
		if err := f.wait(ctx, s.fl.done); err != nil {
			return nil, fmt.Errorf("chunk %d of %q: %w", first+k, path, err)
		}
		if s.fl.err != nil {
			return nil, s.fl.err
		}
		out[k] = s.fl.data
	}
	return out, nil
}

// readAhead loads chunks first..last of m that are neither in memory nor
// being loaded, in goroutines owned by f; it does not wait.
func (f *FS) readAhead(path string, m *transfer.Manifest, first, last int) {
	_, mine, err := f.claim(m, first, last, true)
	if err != nil || len(mine) == 0 {
		return
	}
	if !f.goOwned(func() { f.load(path, m, mine, true) }) {
		f.fail(mine, ErrClosed)
	}
}

// claim looks chunks first..last of m up: memory hits give their data, a
// chunk being loaded gives its flight, and any other gets a new flight that
// the caller must complete (returned in mine, also in slots). For read-ahead
// the hits and joins are not counted.
func (f *FS) claim(m *transfer.Manifest, first, last int, readAhead bool) (slots []slot, mine []claimed, err error) {
	slots = make([]slot, 0, last-first+1)
	var joined []transfer.Hash
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil, nil, ErrClosed
	}
	for i := first; i <= last; i++ {
		h := m.Hashes[i]
		data, ok := f.mem.Get(h)
		if !ok {
			// Fetched, evicted from the cache, not yet in the Store.
			data, ok = f.writer.get(h)
		}
		if ok {
			if !readAhead {
				f.count.memoryHits.Add(1)
			}
			slots = append(slots, slot{data: data})
			continue
		}
		if fl, ok := f.flights[h]; ok {
			if !readAhead {
				f.count.flightJoins.Add(1)
				joined = append(joined, h)
			}
			slots = append(slots, slot{fl: fl})
			continue
		}
		fl := &flight{done: make(chan struct{})}
		f.flights[h] = fl
		mine = append(mine, claimed{idx: i, h: h, fl: fl})
		slots = append(slots, slot{fl: fl})
	}
	f.mu.Unlock()
	if f.hookJoin != nil {
		for _, h := range joined {
			f.hookJoin(h)
		}
	}
	return slots, mine, nil
}

// load completes the claimed flights: from the Store (in this goroutine),
// and the rest from the Remote with one ReadChunks per run of consecutive
// chunks, each in a goroutine owned by f.
func (f *FS) load(path string, m *transfer.Manifest, mine []claimed, readAhead bool) {
	missing := mine[:0:0]
	for _, c := range mine {
		data, err := f.store.Get([32]byte(m.Hashes[c.idx]), nil)
		if err != nil || len(data) != m.ChunkLen(c.idx) {
			missing = append(missing, c)
			continue
		}
		f.count.storeHits.Add(1)
		if readAhead {
			f.count.readAheadChunks.Add(1)
		}
		f.complete(m.Hashes[c.idx], c.fl, data, nil)
	}
	for len(missing) > 0 {
		n := 1
		for n < len(missing) && missing[n].idx == missing[n-1].idx+1 {
			n++
		}
		run := missing[:n]
		missing = missing[n:]
		f.fg.begin() // a foreground fetch (background.go)
		if !f.goOwned(func() { defer f.fg.end(); f.fetch(path, m, run, readAhead, false) }) {
			f.fg.end()
			f.fail(run, ErrClosed)
		}
	}
}

// isDone reports whether done is closed.
func isDone(done <-chan struct{}) bool {
	select {
	case <-done:
		return true
	default:
		return false
	}
}

// fetch loads a run of consecutive chunks with one ReadChunks call, hands
// each chunk as it arrives to its waiters and to the store writer, and
// fails the chunks it did not get. The call may take as long as chunks keep
// arriving; once FetchTimeout passes without one, it is canceled and the
// rest of the run fails at once, so waiting readers never wait longer than
// that for progress. While the store writer is behind by more than
// Options.StoreQueueBytes, fetch stops taking chunks (the Remote's flow
// control then holds the rest back).
func (f *FS) fetch(path string, m *transfer.Manifest, run []claimed, readAhead, background bool) {
	parent := f.ctx
	if background {
		// The server gives way to foreground READs of this session.
		parent = transfer.WithBackgroundPriority(parent)
	}
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	fr := &fetchRun{f: f, path: path, m: m, run: run, readAhead: readAhead}
	fr.lastOwn.Store(time.Now().UnixNano())
	fr.mu.Lock() // the timer's function reads fr.idle
	fr.idle = time.AfterFunc(f.opts.FetchTimeout, func() {
		// While other fetches receive chunks the server is there and this
		// one is queued behind them (a busy server, deep read-ahead): it
		// waits on, up to queuedFetchFactor FetchTimeouts without a chunk
		// of its own.
		now := time.Now().UnixNano()
		own := time.Duration(now - fr.lastOwn.Load())
		any := time.Duration(now - f.lastChunk.Load())
		// A background fetch waits on for as long as the server is there:
		// it is held back on purpose while foreground reads are served.
		if any < f.opts.FetchTimeout && (background || own < queuedFetchFactor*f.opts.FetchTimeout) {
			fr.mu.Lock()
			fr.idle.Reset(f.opts.FetchTimeout - any)
			fr.mu.Unlock()
			return
		}
		cancel(errFetchTimeout)
		fr.mu.Lock()
		fr.failLocked(errFetchTimeout)
		fr.mu.Unlock()
	})
	fr.mu.Unlock()
	defer fr.idle.Stop()

	first := run[0].idx
	var err error
	for attempt := 0; ; attempt++ {
		f.count.fetchCalls.Add(1)
		from := first + fr.delivered()
		var src transfer.Sources
		src, err = f.remote.ReadChunks(ctx, path, m, from, first+len(run)-from, func(i int, data []byte) error {
			if err := fr.accept(ctx, i, data); err != nil {
				return err
			}
			// Outside fr.mu, so that the idle timer can still fail the run.
			return f.writer.waitRoom(ctx)
		})
		f.sources.add(path, src)
		// A chunk that failed its hash came from a bad source (a stale or
		// damaged mirror); the Remote has reported it, and the next attempt
		// is served by other paths. The chunks before it are kept.
		if err == nil || !errors.Is(err, transfer.ErrCorrupt) || attempt == corruptRetries || ctx.Err() != nil {
			break
		}
		f.count.corruptRefetches.Add(1)
	}
	fr.idle.Stop()
	fr.mu.Lock()
	defer fr.mu.Unlock()
	if err == nil && fr.next < len(run) {
		err = fmt.Errorf("got %d of %d chunks: %w", fr.next, len(run), transfer.ErrInternal)
	}
	if err != nil && context.Cause(ctx) == errFetchTimeout {
		// The Remote may return (with ctx's error) before the idle timer
		// has failed the run itself: the cause is the timeout all the
		// same, not a cancellation.
		err = errFetchTimeout
	}
	if err != nil {
		fr.failLocked(err)
	}
}

// queuedFetchFactor bounds, in FetchTimeouts, how long a fetch waits for a
// chunk of its own while other fetches receive theirs.
const queuedFetchFactor = 4

// corruptRetries is how many times a fetch asks again for the rest of its
// run after a chunk failed its hash. The primary stops giving a path work for
// a file after three such reports, so the last attempt comes from elsewhere.
const corruptRetries = 4

// delivered returns how many chunks of the run have been accepted.
func (fr *fetchRun) delivered() int {
	fr.mu.Lock()
	defer fr.mu.Unlock()
	return fr.next
}

// fetchRun is the state of one fetch.
type fetchRun struct {
	f         *FS
	path      string
	m         *transfer.Manifest
	run       []claimed
	readAhead bool
	idle      *time.Timer  // fails the run after FetchTimeout without a chunk; set under mu
	lastOwn   atomic.Int64 // UnixNano of the run's start or its last chunk

	mu    sync.Mutex // guards next and ended
	next  int        // run[next] is the chunk expected next
	ended bool       // the rest of the run has been failed
}

// accept takes chunk i, data: checks that it is the chunk expected next,
// verifies it unless the Remote did, queues it for the Store and completes
// its flight.
func (fr *fetchRun) accept(ctx context.Context, i int, data []byte) error {
	f, m := fr.f, fr.m
	fr.mu.Lock()
	defer fr.mu.Unlock()
	if fr.ended {
		return context.Cause(ctx)
	}
	first := fr.run[0].idx
	if fr.next >= len(fr.run) || i != first+fr.next {
		return fmt.Errorf("got chunk %d, want %d: %w", i, first+fr.next, transfer.ErrBadRequest)
	}
	if !f.verified {
		if err := m.Verify(i, data); err != nil {
			return err
		}
	}
	now := time.Now().UnixNano()
	fr.lastOwn.Store(now)
	f.lastChunk.Store(now)
	fr.idle.Reset(f.opts.FetchTimeout)
	f.count.chunksFetched.Add(1)
	f.count.bytesFetched.Add(int64(len(data)))
	if fr.readAhead {
		f.count.readAheadChunks.Add(1)
	}
	// Pending in the writer before the flight ends: from then on a reader
	// finds the chunk in memory, in the writer or in the Store.
	f.writer.add(m.Hashes[i], m.Alg, data)
	f.complete(m.Hashes[i], fr.run[fr.next].fl, data, nil)
	fr.next++
	return nil
}

// failLocked fails the chunks of the run not delivered yet with err, once.
// fr.mu must be held.
func (fr *fetchRun) failLocked(err error) {
	if fr.ended || fr.next >= len(fr.run) {
		return
	}
	fr.ended = true
	f := fr.f
	f.count.fetchErrors.Add(1)
	if f.ctx.Err() != nil {
		err = ErrClosed
	}
	first := fr.run[0].idx
	f.fail(fr.run[fr.next:], fmt.Errorf("fetch chunks [%d, %d) of %q: %w", first, first+len(fr.run), fr.path, err))
}

// complete publishes the outcome of a flight: the data goes to the memory
// cache, the flight leaves the flight table, and its waiters wake up.
func (f *FS) complete(h transfer.Hash, fl *flight, data []byte, err error) {
	fl.data, fl.err = data, err
	f.mu.Lock()
	if err == nil && !fl.background {
		f.mem.Add(h, data)
	}
	if f.flights[h] == fl {
		delete(f.flights, h)
	}
	f.mu.Unlock()
	close(fl.done)
}

// fail completes the flights of cs with err.
func (f *FS) fail(cs []claimed, err error) {
	for _, c := range cs {
		f.complete(c.h, c.fl, nil, err)
	}
}
