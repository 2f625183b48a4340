package fusefs

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kwikfs/kwikfs/chunkstore"
	"github.com/kwikfs/kwikfs/internal/remotetest"
	"github.com/kwikfs/kwikfs/transfer"
)

// TestFetchBackgroundFetchesOnlyMissing: with a real store holding three
// of eight chunks, FetchBackground fetches the other five in one call,
// stores them (not in the memory cache), and a second call fetches
// nothing.
func TestFetchBackgroundFetchesOnlyMissing(t *testing.T) {
	r := remotetest.New(testChunk)
	data := remotetest.Content("bg", 8*testChunk-100)
	man := r.File("f", 0o644, 1, data)
	store := openStore(t, t.TempDir())
	var held []chunkstore.Chunk
	for i := range 3 {
		held = append(held, chunkstore.Chunk{Sum: [32]byte(man.Hashes[i]), Alg: man.Alg, Data: data[man.ChunkOffset(i) : man.ChunkOffset(i)+int64(man.ChunkLen(i))]})
	}
	if err := store.PutVerified(held); err != nil {
		t.Fatal(err)
	}
	fsys := New(r, store, testOptions())
	defer fsys.Close()

	res, err := fsys.FetchBackground(context.Background(), "f", man, 0, 7)
	if err != nil {
		t.Fatalf("FetchBackground: %v", err)
	}
	want := BackgroundResult{Held: 3, HeldBytes: 3 * testChunk, Fetched: 5, FetchedBytes: int64(len(data)) - 3*testChunk}
	if res != want {
		t.Errorf("result %+v, want %+v", res, want)
	}
	if got := r.ReadCalls.Load(); got != 1 {
		t.Errorf("%d ReadChunks calls, want 1 (one run of consecutive chunks)", got)
	}
	if got := r.BackgroundCalls.Load(); got != 1 {
		t.Errorf("%d ReadChunks calls marked background, want 1", got)
	}
	if got := r.ChunksSent.Load(); got != 5 {
		t.Errorf("remote sent %d chunks, want 5", got)
	}
	if err := fsys.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := range man.NumChunks() {
		got, err := store.Get([32]byte(man.Hashes[i]), nil)
		if err != nil || !bytes.Equal(got, data[man.ChunkOffset(i):man.ChunkOffset(i)+int64(man.ChunkLen(i))]) {
			t.Errorf("chunk %d in the store: %d bytes, %v", i, len(got), err)
		}
	}
	if st := fsys.Stats(); st.MemoryChunks != 0 || st.ChunksFetched != 5 || st.BytesFetched != want.FetchedBytes {
		t.Errorf("Stats: %d chunks in memory, %d fetched (%d bytes); want 0, 5 (%d)", st.MemoryChunks, st.ChunksFetched, st.BytesFetched, want.FetchedBytes)
	}

	res, err = fsys.FetchBackground(context.Background(), "f", man, 2, 7)
	if err != nil {
		t.Fatalf("second FetchBackground: %v", err)
	}
	if want := (BackgroundResult{Held: 6, HeldBytes: int64(len(data)) - 2*testChunk}); res != want {
		t.Errorf("second call: %+v, want %+v", res, want)
	}
	if got := r.ChunksSent.Load(); got != 5 {
		t.Errorf("remote sent %d chunks after the second call, want still 5", got)
	}
}

// TestForegroundReadJoinsBackgroundFetch: a read of a chunk that a
// background fetch is loading waits for that fetch; the chunk is fetched
// once.
func TestForegroundReadJoinsBackgroundFetch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := remotetest.New(testChunk)
		data := remotetest.Content("join", 4*testChunk)
		man := r.File("f", 0o644, 1, data)
		r.CallGate = make(chan struct{})
		r.Started = make(chan struct{}, 4)
		fsys := New(r, newMemStore(), testOptions())
		defer fsys.Close()

		bgDone := make(chan error, 1)
		go func() {
			_, err := fsys.FetchBackground(context.Background(), "f", man, 0, 3)
			bgDone <- err
		}()
		<-r.Started
		var fg [][]byte
		fgDone := make(chan error, 1)
		go func() {
			var err error
			fg, err = fsys.readChunks(context.Background(), "f", man, 1, 1, 0, -1)
			fgDone <- err
		}()
		synctest.Wait()
		if st := fsys.Stats(); st.FlightJoins != 1 {
			t.Errorf("FlightJoins %d, want 1: the read did not join the background fetch", st.FlightJoins)
		}
		if got := fsys.Foreground().Active; got != 1 {
			t.Errorf("foreground activity %d while a reader waits, want 1", got)
		}
		close(r.CallGate)
		if err := <-fgDone; err != nil {
			t.Fatalf("foreground read: %v", err)
		}
		if err := <-bgDone; err != nil {
			t.Fatalf("background fetch: %v", err)
		}
		if !bytes.Equal(fg[0], data[testChunk:2*testChunk]) {
			t.Error("foreground read got wrong bytes")
		}
		if r.ReadCalls.Load() != 1 || r.ChunksSent.Load() != 4 {
			t.Errorf("%d ReadChunks calls sending %d chunks, want 1 and 4", r.ReadCalls.Load(), r.ChunksSent.Load())
		}
		if got := fsys.Foreground().Active; got != 0 {
			t.Errorf("foreground activity %d after the read, want 0", got)
		}
	})
}

// TestBackgroundWaitsForForegroundRead: while a foreground read waits for
// the remote, FetchBackground starts no fetch; it starts exactly
// ForegroundQuiet after the read is served.
func TestBackgroundWaitsForForegroundRead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := remotetest.New(testChunk)
		fgMan := r.File("fg", 0o644, 1, remotetest.Content("fg", 2*testChunk))
		bgMan := r.File("bg", 0o644, 1, remotetest.Content("bg", 2*testChunk))
		r.CallGate = make(chan struct{})
		r.Started = make(chan struct{}, 4)
		opts := testOptions()
		opts.ReadAheadMax = -1
		fsys := New(r, newMemStore(), opts)
		defer fsys.Close()

		fgDone := make(chan error, 1)
		go func() {
			_, err := fsys.readChunks(context.Background(), "fg", fgMan, 0, 0, 0, -1)
			fgDone <- err
		}()
		<-r.Started
		var bgAt time.Time
		bgDone := make(chan error, 1)
		go func() {
			_, err := fsys.FetchBackground(context.Background(), "bg", bgMan, 0, 1)
			bgAt = time.Now()
			bgDone <- err
		}()
		synctest.Wait()
		if got := r.ReadCalls.Load(); got != 1 {
			t.Fatalf("%d ReadChunks calls while a foreground read waits, want 1 (the read's)", got)
		}
		released := time.Now()
		close(r.CallGate)
		if err := <-fgDone; err != nil {
			t.Fatalf("foreground read: %v", err)
		}
		synctest.Wait()
		if got := r.ReadCalls.Load(); got != 1 {
			t.Errorf("%d ReadChunks calls right after the foreground read, want 1", got)
		}
		if err := <-bgDone; err != nil {
			t.Fatalf("background fetch: %v", err)
		}
		if got := bgAt.Sub(released); got != ForegroundQuiet {
			t.Errorf("background fetch done %v after the foreground read, want %v", got, ForegroundQuiet)
		}
		fg := fsys.Foreground()
		if fg.BackgroundWaits != 1 || fg.BackgroundWaited != ForegroundQuiet {
			t.Errorf("Foreground() = %+v, want 1 wait of %v", fg, ForegroundQuiet)
		}
		if got := r.ChunksSent.Load(); got != 3 {
			t.Errorf("remote sent %d chunks, want 3", got)
		}
		// The foreground read's fetch is foreground at the server, the
		// background fetch's is not.
		if got := r.BackgroundCalls.Load(); got != 1 {
			t.Errorf("%d of 2 ReadChunks calls marked background, want 1", got)
		}
	})
}

// TestFetchBackgroundCanceledWhileWaiting: a background fetch waiting for
// foreground reads returns its ctx's cause and leaves no flight behind.
func TestFetchBackgroundCanceledWhileWaiting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := remotetest.New(testChunk)
		fgMan := r.File("fg", 0o644, 1, remotetest.Content("fg", testChunk))
		bgMan := r.File("bg", 0o644, 1, remotetest.Content("bg", testChunk))
		r.CallGate = make(chan struct{})
		r.Started = make(chan struct{}, 4)
		fsys := New(r, newMemStore(), testOptions())
		defer fsys.Close()
		go fsys.readChunks(context.Background(), "fg", fgMan, 0, 0, 0, -1)
		<-r.Started

		cause := errors.New("job canceled")
		ctx, cancel := context.WithCancelCause(context.Background())
		done := make(chan error, 1)
		go func() {
			_, err := fsys.FetchBackground(ctx, "bg", bgMan, 0, 0)
			done <- err
		}()
		synctest.Wait()
		cancel(cause)
		if err := <-done; !errors.Is(err, cause) {
			t.Errorf("canceled FetchBackground: %v, want the cause", err)
		}
		fsys.mu.Lock()
		n := len(fsys.flights)
		fsys.mu.Unlock()
		if n != 1 {
			t.Errorf("%d flights, want 1 (the foreground read's)", n)
		}
		close(r.CallGate)
	})
}

func TestFetchBackgroundBadRange(t *testing.T) {
	r := remotetest.New(testChunk)
	man := r.File("f", 0o644, 1, remotetest.Content("f", 2*testChunk))
	fsys := New(r, newMemStore(), testOptions())
	defer fsys.Close()
	for _, c := range []struct{ first, last int }{{-1, 0}, {1, 0}, {0, 2}} {
		if _, err := fsys.FetchBackground(context.Background(), "f", man, c.first, c.last); !errors.Is(err, transfer.ErrBadRequest) {
			t.Errorf("chunks [%d, %d]: %v, want ErrBadRequest", c.first, c.last, err)
		}
	}
}

// TestStatListManifest: the metadata entry points serve the same cached
// answers as the mounted tree.
func TestStatListManifest(t *testing.T) {
	r := remotetest.New(testChunk)
	man := r.File("d/f", 0o640, 7, remotetest.Content("f", 10))
	r.Symlink("d/l", "f", 8)
	fsys := New(r, newMemStore(), testOptions())
	defer fsys.Close()
	ctx := context.Background()
	if a, err := fsys.Stat(ctx, ""); err != nil || !a.IsDir() {
		t.Errorf("Stat of the root: %+v, %v", a, err)
	}
	if a, err := fsys.Stat(ctx, "d/f"); err != nil || !a.IsRegular() || a.Size != 10 || a.Name != "f" {
		t.Errorf("Stat d/f: %+v, %v", a, err)
	}
	if _, err := fsys.Stat(ctx, "d/nope"); !errors.Is(err, transfer.ErrNotFound) {
		t.Errorf("Stat d/nope: %v, want ErrNotFound", err)
	}
	entries, err := fsys.List(ctx, "d")
	if err != nil || len(entries) != 2 || entries[0].Name != "f" || entries[1].Target != "f" {
		t.Errorf("List d: %+v, %v", entries, err)
	}
	got, err := fsys.Manifest(ctx, "d/f")
	if err != nil || got.Version != man.Version {
		t.Errorf("Manifest d/f: %v", err)
	}
	if r.Lists.Load() != 1 || r.Manifests.Load() != 1 {
		t.Errorf("%d List and %d Manifest calls, want 1 each (cached)", r.Lists.Load(), r.Manifests.Load())
	}
}
