package fusefs

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/kwikfs/kwikfs/transfer"
)

// flight is one chunk being loaded (from the Store or the Remote). done is
// closed once data or err is set; both are read-only afterwards.
type flight struct {
	done chan struct{}
	data []byte
	err  error
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
// soon as ctx is done, and the loads it started go on for other readers. When aheadLast > last
// it also starts read-ahead of chunks last+1..aheadLast.
func (f *FS) readChunks(ctx context.Context, path string, m *transfer.Manifest, first, last, aheadLast int) ([][]byte, error) {
	slots, mine, err := f.claim(m, first, last, false)
	if err != nil {
		return nil, err
	}
	f.load(path, m, mine, false)
	if aheadLast > last {
		f.readAhead(path, m, last+1, aheadLast)
	}
	out := make([][]byte, len(slots))
	for k, s := range slots {
		if s.fl == nil {
			out[k] = s.data
			continue
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
		if data, ok := f.mem.Get(h); ok {
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
		if !f.goOwned(func() { f.fetch(path, m, run, readAhead) }) {
			f.fail(run, ErrClosed)
		}
	}
}

// fetch loads a run of consecutive chunks with one ReadChunks call, stores
// each chunk as it arrives, and fails the chunks it did not get. The call
// may take as long as chunks keep arriving; once FetchTimeout passes
// without one, it is canceled and the rest of the run fails at once, so
// waiting readers never wait longer than that for progress.
func (f *FS) fetch(path string, m *transfer.Manifest, run []claimed, readAhead bool) {
	ctx, cancel := context.WithCancelCause(f.ctx)
	defer cancel(nil)
	first := run[0].idx
	var (
		mu     sync.Mutex // guards next and ended
		next   int        // run[next] is the chunk expected next
		ended  bool       // the rest of the run has been failed
		failed = func(err error) {
			// mu held
			if ended || next >= len(run) {
				return
			}
			ended = true
			f.count.fetchErrors.Add(1)
			if f.ctx.Err() != nil {
				err = ErrClosed
			}
			f.fail(run[next:], fmt.Errorf("fetch chunks [%d, %d) of %q: %w", first, first+len(run), path, err))
		}
	)
	idle := time.AfterFunc(f.opts.FetchTimeout, func() {
		cancel(errFetchTimeout)
		mu.Lock()
		failed(errFetchTimeout)
		mu.Unlock()
	})
	defer idle.Stop()

	f.count.fetchCalls.Add(1)
	err := f.remote.ReadChunks(ctx, path, m, first, len(run), func(i int, data []byte) error {
		mu.Lock()
		defer mu.Unlock()
		if ended {
			return context.Cause(ctx)
		}
		if next >= len(run) || i != first+next {
			return fmt.Errorf("got chunk %d, want %d: %w", i, first+next, transfer.ErrBadRequest)
		}
		data = bytes.Clone(data)
		if err := f.keep(m, i, data); err != nil {
			return err
		}
		idle.Reset(f.opts.FetchTimeout)
		f.count.chunksFetched.Add(1)
		f.count.bytesFetched.Add(int64(len(data)))
		if readAhead {
			f.count.readAheadChunks.Add(1)
		}
		f.complete(m.Hashes[i], run[next].fl, data, nil)
		next++
		return nil
	})
	idle.Stop()
	mu.Lock()
	defer mu.Unlock()
	if err == nil && next < len(run) {
		err = fmt.Errorf("got %d of %d chunks: %w", next, len(run), transfer.ErrInternal)
	}
	if err != nil {
		failed(err)
	}
}

// keep stores chunk i of m in the Store, which verifies it. When the Store
// cannot take it, the chunk is verified here and served anyway.
func (f *FS) keep(m *transfer.Manifest, i int, data []byte) error {
	err := f.store.Put([32]byte(m.Hashes[i]), data)
	if err == nil && len(data) == m.ChunkLen(i) {
		return nil
	}
	if verr := m.Verify(i, data); verr != nil {
		return verr
	}
	f.log.Warn("fusefs: store chunk", "index", i, "err", err)
	return nil
}

// complete publishes the outcome of a flight: the data goes to the memory
// cache, the flight leaves the flight table, and its waiters wake up.
func (f *FS) complete(h transfer.Hash, fl *flight, data []byte, err error) {
	fl.data, fl.err = data, err
	f.mu.Lock()
	if err == nil {
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
