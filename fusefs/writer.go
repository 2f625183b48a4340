package fusefs

import (
	"context"
	"log/slog"
	"sync"

	"github.com/kwikfs/kwikfs/chunkstore"
	"github.com/kwikfs/kwikfs/transfer"
)

// maxWriteBatch bounds the chunks the store writer hands to the Store in
// one PutVerified call.
const maxWriteBatch = 32

// storeWriter writes fetched, verified chunks to the Store off the fetch
// path, in batches. A chunk is pending from add until the Store has it (or
// refused it); pending chunks are served by get, so a chunk is never
// fetched again while it waits. The pending bytes are bounded: add's
// caller waits (waitRoom) while they exceed max.
//
// One goroutine writes while anything is pending and ends when nothing is:
// add starts it, so a chunk reaches the Store as soon as the chunks ahead
// of it are written (a daemon killed loses only what was being written and
// what arrived meanwhile), and chunks that arrive while a batch is written
// make the next batch: writes batch up exactly when the Store is the
// bottleneck. close waits for it after it has written everything.
type storeWriter struct {
	store Store
	log   *slog.Logger
	max   int64 // bound of the pending bytes; immutable

	wg sync.WaitGroup // the writing goroutine

	mu      sync.Mutex // guards the fields below; taken after FS.mu
	pending map[transfer.Hash]chunkstore.Chunk
	queue   []transfer.Hash // pending chunks in the order added
	bytes   int64           // total length of the pending chunks
	running bool            // the writing goroutine runs
	closed  bool            // close was called: add refuses
	room    chan struct{}   // closed (and replaced) when a batch is written
	written int64           // chunks the Store accepted
	failed  int64           // chunks the Store refused
	writes  int64           // PutVerified calls
}

func newStoreWriter(store Store, log *slog.Logger, max int64) *storeWriter {
	return &storeWriter{
		store:   store,
		log:     log,
		max:     max,
		pending: make(map[transfer.Hash]chunkstore.Chunk),
		room:    make(chan struct{}),
	}
}

// add queues data, verified to hash to h under alg, for the Store; data
// must not change afterwards. A chunk already pending is not queued twice.
// After close, add drops the chunk (it is fetched again if wanted later).
func (w *storeWriter) add(h transfer.Hash, alg transfer.HashAlg, data []byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		w.log.Warn("fusefs: chunk fetched after close not stored", "sum", h.String())
		return
	}
	if _, ok := w.pending[h]; ok {
		return
	}
	w.pending[h] = chunkstore.Chunk{Sum: h, Alg: alg, Data: data}
	w.queue = append(w.queue, h)
	w.bytes += int64(len(data))
	w.startLocked()
}

// startLocked starts the writing goroutine unless it runs or nothing is
// pending. w.mu must be held.
func (w *storeWriter) startLocked() {
	if w.running || len(w.queue) == 0 {
		return
	}
	w.running = true
	w.wg.Add(1)
	go w.run()
}

// get returns the pending chunk h, if it is pending.
func (w *storeWriter) get(h transfer.Hash) ([]byte, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	c, ok := w.pending[h]
	return c.Data, ok
}

// waitRoom blocks while the pending bytes exceed the bound, until ctx is
// done (returning its error).
func (w *storeWriter) waitRoom(ctx context.Context) error {
	for {
		w.mu.Lock()
		if w.bytes <= w.max {
			w.mu.Unlock()
			return nil
		}
		w.startLocked()
		room := w.room
		w.mu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// flush blocks until nothing is pending, or ctx is done (returning its
// error).
func (w *storeWriter) flush(ctx context.Context) error {
	for {
		w.mu.Lock()
		if len(w.pending) == 0 {
			w.mu.Unlock()
			return nil
		}
		room := w.room
		w.mu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// close refuses later adds and waits until every pending chunk is written.
func (w *storeWriter) close() {
	w.mu.Lock()
	w.closed = true
	w.startLocked()
	w.mu.Unlock()
	w.wg.Wait()
}

// writerCounts are the counters of a storeWriter.
type writerCounts struct {
	written, failed, writes int64 // chunks stored, refused; PutVerified calls
	pending                 int   // chunks pending now
	bytes                   int64 // their bytes
}

// counts returns the counters.
func (w *storeWriter) counts() writerCounts {
	w.mu.Lock()
	defer w.mu.Unlock()
	return writerCounts{written: w.written, failed: w.failed, writes: w.writes, pending: len(w.pending), bytes: w.bytes}
}

// run writes batches while chunks are pending.
func (w *storeWriter) run() {
	defer w.wg.Done()
	batch := make([]chunkstore.Chunk, 0, maxWriteBatch)
	for {
		w.mu.Lock()
		n := min(len(w.queue), maxWriteBatch)
		if n == 0 {
			w.running = false
			w.queue = nil
			w.mu.Unlock()
			return
		}
		batch = batch[:0]
		for _, h := range w.queue[:n] {
			batch = append(batch, w.pending[h])
		}
		w.queue = w.queue[n:]
		w.mu.Unlock()

		err := w.store.PutVerified(batch)
		if err != nil {
			w.log.Warn("fusefs: store chunks", "chunks", len(batch), "err", err)
		}

		w.mu.Lock()
		for _, c := range batch {
			delete(w.pending, transfer.Hash(c.Sum))
			w.bytes -= int64(len(c.Data))
		}
		w.writes++
		if err != nil {
			w.failed += int64(len(batch))
		} else {
			w.written += int64(len(batch))
		}
		close(w.room)
		w.room = make(chan struct{})
		w.mu.Unlock()
		clear(batch) // drop the references to the chunks
	}
}
