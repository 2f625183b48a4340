package fusefs

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kwikfs/kwikfs/chunkstore"
	"github.com/kwikfs/kwikfs/internal/remotetest"
	"github.com/kwikfs/kwikfs/transfer"
)

// TestOpenFileSurvivesEviction keeps a file open while reads of other
// files push a Store limited to 2 MiB far past its limit (4 MiB): the
// chunks of the open file stay in the Store, pinned, and reading the file
// again through the same descriptor (with the kernel's page cache of it
// dropped) is served from the Store without fetching anything; the chunks
// of a file read and closed before it are evicted.
func TestOpenFileSurvivesEviction(t *testing.T) {
	const limit = 2 << 20
	r := remotetest.New(testChunk)
	open := remotetest.Content("open", 8*testChunk)
	closed := remotetest.Content("closed", 8*testChunk)
	mOpen := r.File("open", 0o644, 1, open)
	mClosed := r.File("closed", 0o644, 1, closed)
	others := map[string][]byte{}
	for i := range 16 {
		p := fmt.Sprintf("other/%02d", i)
		others[p] = remotetest.Content(p, 4*testChunk)
		r.File(p, 0o644, 1, others[p])
	}
	store, err := chunkstore.Open(t.TempDir(), &chunkstore.Options{Logger: slog.New(slog.DiscardHandler), Limit: limit})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	opts := testOptions()
	opts.MemoryCacheBytes = testChunk // one chunk: rereads come from the Store
	opts.ReadAheadMax = -1
	// The kernel releases a closed file after close(2) returns: wait for
	// each release, so that the pins are exact.
	released := make(chan struct{}, 1)
	m := mountFS(t, r, store, opts, func(f *FS) {
		f.hookRelease = func(string) {
			select {
			case released <- struct{}{}:
			default: // the open file's release at the end: nobody waits
			}
		}
	})
	ctx := context.Background()
	readClosed := func(p string, want []byte) {
		t.Helper()
		if got := readAll(t, m.path(p)); !bytes.Equal(got, want) {
			t.Fatalf("%s: wrong bytes", p)
		}
		recv(t, released, "the release of "+p)
	}

	readClosed("closed", closed)
	f, err := os.Open(m.path("open"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	readAt := func() {
		t.Helper()
		got := make([]byte, len(open))
		if _, err := f.ReadAt(got, 0); err != nil || !bytes.Equal(got, open) {
			t.Fatalf("read of the open file: %v, or wrong bytes", err)
		}
	}
	readAt()
	if err := m.fsys.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for p, want := range others {
		readClosed(p, want)
	}
	if err := m.fsys.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	st := store.Stats()
	if st.Evicted == 0 || st.DiskBytes > limit || st.OverLimit != 0 || st.PinnedChunks != 8 || st.PinnedBytes != 8*testChunk {
		t.Fatalf("store Stats = %+v; want evictions within %d bytes, the open file's 8 chunks pinned", st, limit)
	}
	inStore := func(m *transfer.Manifest) (n int) {
		for _, h := range m.Hashes {
			if ok, err := store.Has(h); err != nil {
				t.Fatal(err)
			} else if ok {
				n++
			}
		}
		return n
	}
	if n := inStore(mOpen); n != 8 {
		t.Fatalf("%d of the open file's 8 chunks in the store, want all", n)
	}
	if n := inStore(mClosed); n != 0 {
		t.Fatalf("%d of the closed file's 8 chunks in the store, want 0 (least recently used)", n)
	}

	// Drop the kernel's cached pages of the open file, so that the reads
	// reach the FS.
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	before := m.fsys.Stats()
	readAt()
	after := m.fsys.Stats()
	if after.ChunksFetched != before.ChunksFetched || after.FetchCalls != before.FetchCalls {
		t.Fatalf("reread of the open file fetched %d chunks, want 0", after.ChunksFetched-before.ChunksFetched)
	}
	if hits := after.StoreHits - before.StoreHits; hits != 8 {
		t.Fatalf("reread of the open file: %d store hits, want 8", hits)
	}
	if want := int64(8 + 8 + 16*4); after.ChunksFetched != want {
		t.Fatalf("fetched %d chunks in all, want %d (each once)", after.ChunksFetched, want)
	}
}

func TestFileLargerThanHalfTheLimitIsNotPinned(t *testing.T) {
	const limit = 2 << 20
	r := remotetest.New(testChunk)
	small := remotetest.Content("small", limit/2/testChunk*testChunk)
	big := remotetest.Content("big", limit/2+testChunk)
	r.File("small", 0o644, 1, small)
	mBig := r.File("big", 0o644, 1, big)
	store, err := chunkstore.Open(t.TempDir(), &chunkstore.Options{Logger: slog.New(slog.DiscardHandler), Limit: limit})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	m := mountFS(t, r, store, testOptions(), nil)
	// Pins count the pinned chunks held in the Store: read (and store)
	// each file, then open it again and look at the pins while it is open.
	openPinned := func(name string, want []byte) int64 {
		t.Helper()
		if got := readAll(t, m.path(name)); !bytes.Equal(got, want) {
			t.Fatalf("%s: wrong bytes", name)
		}
		if err := m.fsys.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
		waitUnpinned(t, store)
		f, err := os.Open(m.path(name))
		if err != nil {
			t.Fatal(err)
		}
		pinned := store.Stats().PinnedBytes
		f.Close()
		waitUnpinned(t, store)
		return pinned
	}
	if got := openPinned("small", small); got != int64(len(small)) {
		t.Errorf("small (half the limit) open: %d bytes pinned, want all %d", got, len(small))
	}
	if got := openPinned("big", big); got != 0 {
		t.Errorf("big (over half the limit) open: %d bytes pinned, want 0", got)
	}
	// The test means something only if big's chunks were there to pin.
	held := 0
	for _, h := range mBig.Hashes {
		if ok, _ := store.Has(h); ok {
			held++
		}
	}
	if held == 0 {
		t.Fatal("none of big's chunks in the store")
	}
}

// waitUnpinned waits for the kernel to release every file (after close(2)
// returns) and so for the pins to go.
func waitUnpinned(t *testing.T, store *chunkstore.Store) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); store.Stats().PinnedBytes != 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("chunks still pinned 10 s after close")
		}
	}
}
