package prefetch

import (
	"sync"
	"testing"
	"testing/synctest"

	"github.com/kwikfs/kwikfs/fusefs"
	"github.com/kwikfs/kwikfs/internal/remotetest"
)

// pinStore is a memStore with a size limit that records pins.
type pinStore struct {
	*memStore
	limit int64

	mu     sync.Mutex
	pins   int // Pin calls
	live   int // pins not undone
	chunks int // chunks named by Pin calls
}

func (s *pinStore) Limit() int64 { return s.limit }

func (s *pinStore) Pin(sums ...[32]byte) func() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pins++
	s.live++
	s.chunks += len(sums)
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			s.live--
			s.mu.Unlock()
		})
	}
}

func TestJobPinsFilesWhileFetchingThem(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := remotetest.New(testChunk)
		sampleTree(r) // a/x: 4 chunks, a/b/y: 1, c: 5
		store := &pinStore{memStore: newMemStore(), limit: 8 * testChunk}
		e := &env{t: t, remote: r, store: store.memStore, fsys: fusefs.New(r, store, fsOptions())}
		mgr, err := New(e.fsys, store, nil)
		if err != nil {
			t.Fatal(err)
		}
		e.mgr = mgr
		t.Cleanup(e.close)
		p := e.wait(e.start("").ID)
		if p.State != StateDone || p.FilesDone != 4 {
			t.Fatalf("job: %+v", p)
		}
		store.mu.Lock()
		defer store.mu.Unlock()
		// a/x (4 chunks) and a/b/y (1) fit in half the limit (4 chunks);
		// c (5 chunks) does not and is not pinned; the empty file has none.
		if store.pins != 2 || store.chunks != 5 || store.live != 0 {
			t.Errorf("%d pins of %d chunks, %d still live; want 2 of 5, none live", store.pins, store.chunks, store.live)
		}
	})
}
