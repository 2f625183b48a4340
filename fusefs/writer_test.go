package fusefs

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/kwikfs/kwikfs/chunkstore"
	"github.com/kwikfs/kwikfs/internal/remotetest"
	"github.com/kwikfs/kwikfs/transfer"
)

// gatedStore is a memStore whose PutVerified waits for gate (when not nil)
// and records the size of every batch; fail makes it refuse them.
type gatedStore struct {
	*memStore
	gate chan struct{}

	mu      sync.Mutex // guards batches and fail
	batches []int
	fail    error
}

func (s *gatedStore) PutVerified(chunks []chunkstore.Chunk) error {
	if s.gate != nil {
		<-s.gate
	}
	s.mu.Lock()
	s.batches = append(s.batches, len(chunks))
	fail := s.fail
	s.mu.Unlock()
	if fail != nil {
		return fail
	}
	return s.memStore.PutVerified(chunks)
}

func (s *gatedStore) batchSizes() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int(nil), s.batches...)
}

// testChunks returns n distinct chunks of size bytes and their hashes.
func testChunks(n, size int) ([]transfer.Hash, [][]byte) {
	hs := make([]transfer.Hash, n)
	ds := make([][]byte, n)
	for i := range n {
		ds[i] = remotetest.Content(string(rune('a'+i)), size)
		hs[i] = transfer.SumAlg(transfer.SHA256, ds[i])
	}
	return hs, ds
}

// TestStoreWriterWritesAtOnceAndBatchesWhileBusy: the first chunk added is
// written at once, without waiting for more; the chunks added while that
// write is under way are served from memory and written together next.
func TestStoreWriterWritesAtOnceAndBatchesWhileBusy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := &gatedStore{memStore: newMemStore(), gate: make(chan struct{})}
		w := newStoreWriter(store, slog.New(slog.DiscardHandler), 1<<20)
		hs, ds := testChunks(5, 1000)
		w.add(hs[0], transfer.SHA256, ds[0])
		synctest.Wait() // the writer took chunk 0 and waits at the gate
		for i := 1; i < len(hs); i++ {
			w.add(hs[i], transfer.SHA256, ds[i])
		}
		w.add(hs[1], transfer.SHA256, ds[1]) // pending already: not queued twice
		for i := range hs {
			if got, ok := w.get(hs[i]); !ok || !bytes.Equal(got, ds[i]) {
				t.Fatalf("pending chunk %d not served", i)
			}
		}
		if c := w.counts(); c.pending != 5 || c.bytes != 5000 || c.writes != 0 {
			t.Fatalf("while the first write waits: %+v, want 5 chunks, 5000 bytes pending and no write done", c)
		}
		close(store.gate)
		if err := w.flush(context.Background()); err != nil {
			t.Fatalf("flush: %v", err)
		}
		if got := store.batchSizes(); len(got) != 2 || got[0] != 1 || got[1] != 4 {
			t.Fatalf("batches %v, want [1 4]: the first chunk alone, then the four that arrived meanwhile", got)
		}
		for i := range hs {
			if _, ok := w.get(hs[i]); ok {
				t.Fatalf("chunk %d still pending after flush", i)
			}
			if got, err := store.Get(hs[i], nil); err != nil || !bytes.Equal(got, ds[i]) {
				t.Fatalf("chunk %d not in the store: %v", i, err)
			}
		}
		if c := w.counts(); c != (writerCounts{written: 5, writes: 2}) {
			t.Fatalf("counts %+v", c)
		}
		w.close()
	})
}

func TestStoreWriterBoundsPendingBytes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := &gatedStore{memStore: newMemStore(), gate: make(chan struct{})}
		w := newStoreWriter(store, slog.New(slog.DiscardHandler), 2500)
		hs, ds := testChunks(3, 1000)
		for i := range hs {
			w.add(hs[i], transfer.SHA256, ds[i])
		}
		// 3000 pending bytes, more than 2500: waitRoom blocks (and starts
		// the writer, which waits at the gate).
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- w.waitRoom(ctx) }()
		synctest.Wait()
		select {
		case err := <-done:
			t.Fatalf("waitRoom returned %v with the store behind", err)
		default:
		}
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("waitRoom after cancel = %v, want context.Canceled", err)
		}
		go func() { done <- w.waitRoom(context.Background()) }()
		synctest.Wait()
		close(store.gate)
		if err := <-done; err != nil {
			t.Fatalf("waitRoom once the store caught up: %v", err)
		}
		w.close()
		if c := w.counts(); c.written != 3 || c.pending != 0 || c.bytes != 0 {
			t.Fatalf("counts after close %+v", c)
		}
	})
}

func TestStoreWriterCloseWritesEverything(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := &gatedStore{memStore: newMemStore()}
		w := newStoreWriter(store, slog.New(slog.DiscardHandler), 64<<20)
		hs, ds := testChunks(3, 100)
		for i := range hs {
			w.add(hs[i], transfer.SHA256, ds[i])
		}
		w.close()
		for i := range hs {
			if _, err := store.Get(hs[i], nil); err != nil {
				t.Fatalf("chunk %d not stored by close: %v", i, err)
			}
		}
		// After close a chunk is not queued.
		h, d := testChunks(4, 100)
		w.add(h[3], transfer.SHA256, d[3])
		if _, ok := w.get(h[3]); ok {
			t.Fatal("chunk queued after close")
		}
		if c := w.counts(); c != (writerCounts{written: 3, writes: 1}) {
			t.Fatalf("counts %+v", c)
		}
	})
}

func TestStoreWriterCountsRefusedChunks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := &gatedStore{memStore: newMemStore(), fail: errors.New("disk full")}
		w := newStoreWriter(store, slog.New(slog.DiscardHandler), 64<<20)
		hs, ds := testChunks(2, 100)
		for i := range hs {
			w.add(hs[i], transfer.SHA256, ds[i])
		}
		if err := w.flush(context.Background()); err != nil {
			t.Fatal(err)
		}
		if c := w.counts(); c != (writerCounts{failed: 2, writes: 1}) {
			t.Fatalf("counts %+v", c)
		}
		w.close()
	})
}

// A chunk evicted from the memory cache before the Store has it is served
// from the writer, never fetched twice.
func TestChunkWaitingForStoreIsNotFetchedAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := remotetest.New(testChunk)
		data := remotetest.Content("pending", 4*testChunk)
		man := r.File("f", 0o644, 1, data)
		store := &gatedStore{memStore: newMemStore(), gate: make(chan struct{})}
		opts := testOptions()
		opts.MemoryCacheBytes = testChunk // one chunk
		fsys := New(r, store, opts)
		defer fsys.Close()
		ctx := context.Background()
		if _, err := fsys.readChunks(ctx, "f", man, 0, 3, 0, -1); err != nil {
			t.Fatal(err)
		}
		// The store is stuck: chunks 0 and 1 live only in the writer.
		got, err := fsys.readChunks(ctx, "f", man, 0, 3, 0, -1)
		if err != nil || !bytes.Equal(bytes.Join(got, nil), data) {
			t.Fatalf("second read: %v", err)
		}
		st := fsys.Stats()
		if r.ReadCalls.Load() != 1 || st.ChunksFetched != 4 || st.MemoryHits != 4 || st.StoreHits != 0 {
			t.Fatalf("%d ReadChunks calls, stats %+v; want 1 call, 4 chunks fetched, 4 memory hits", r.ReadCalls.Load(), st)
		}
		if st.PendingChunks != 4 || st.PendingBytes != 4*testChunk {
			t.Fatalf("pending %d chunks, %d bytes; want 4, %d", st.PendingChunks, st.PendingBytes, 4*testChunk)
		}
		close(store.gate)
		if err := fsys.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if st := fsys.Stats(); st.ChunksStored != 4 || st.PendingChunks != 0 || st.StoreErrors != 0 {
			t.Fatalf("after Flush: %+v", st)
		}
	})
}
