package fusefs

import (
	"bytes"
	"context"
	"errors"
	"os"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kwikfs/kwikfs/internal/remotetest"
	"github.com/kwikfs/kwikfs/transfer"
)

// preadRetry is pread(2) retried on EINTR (the Go runtime's preemption
// signals interrupt FUSE requests; os.File retries the same way).
func preadRetry(fd int, buf []byte, off int64) (int, error) {
	for {
		n, err := unix.Pread(fd, buf, off)
		if !errors.Is(err, syscall.EINTR) {
			return n, err
		}
	}
}

// recv receives from ch, failing the test if nothing comes within 20s (a
// guard against hanging the whole run, not a timing assertion).
func recv(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(20 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

func TestConcurrentReadersOfOneChunkFetchOnce(t *testing.T) {
	const readers = 8
	r := remotetest.New(testChunk)
	data := remotetest.Content("shared", 3*testChunk)
	r.File("f", 0o644, 1, data)
	r.CallGate = make(chan struct{})
	r.Started = make(chan struct{}, 16)
	joined := make(chan struct{}, 64)
	store := openStore(t, t.TempDir())
	m := mountFS(t, r, store, testOptions(), func(f *FS) {
		f.hookJoin = func(transfer.Hash) { joined <- struct{}{} }
	})
	// O_DIRECT keeps the kernel's page cache (which would serialize the
	// readers itself) out of the way: every pread reaches the filesystem.
	fds := make([]int, readers)
	for i := range fds {
		fd, err := unix.Open(m.path("f"), unix.O_RDONLY|unix.O_DIRECT, 0)
		if err != nil {
			t.Fatalf("open O_DIRECT: %v", err)
		}
		fds[i] = fd
		t.Cleanup(func() { unix.Close(fd) })
	}
	type result struct {
		k   int
		buf []byte
		err error
	}
	results := make(chan result, readers)
	for k, fd := range fds {
		go func() {
			buf := make([]byte, 4096)
			n, err := preadRetry(fd, buf, int64(k)*4096)
			results <- result{k, buf[:max(n, 0)], err}
		}()
	}
	recv(t, r.Started, "the fetch to start") // it waits at the gate
	for range readers - 1 {
		recv(t, joined, "a reader to join the fetch")
	}
	close(r.CallGate)
	for range readers {
		res := <-results
		if res.err != nil {
			t.Fatalf("reader %d: %v", res.k, res.err)
		}
		if want := data[res.k*4096 : (res.k+1)*4096]; !bytes.Equal(res.buf, want) {
			t.Fatalf("reader %d: wrong bytes", res.k)
		}
	}
	if got := r.ReadCalls.Load(); got != 1 {
		t.Errorf("%d ReadChunks calls, want 1", got)
	}
	if st := m.fsys.Stats(); st.ChunksFetched != 1 || st.FlightJoins < readers-1 {
		t.Errorf("Stats: %d chunks fetched, %d joins; want 1 and >= %d", st.ChunksFetched, st.FlightJoins, readers-1)
	}
}

// TestRemountWithSameStoreFetchesNothing, for manifests of either hash
// algorithm: the chunks a first mount fetched are stored under their
// manifest's algorithm, and a second mount reads them all back from the
// Store, each verified by it, none found corrupt.
func TestRemountWithSameStoreFetchesNothing(t *testing.T) {
	for _, alg := range []transfer.HashAlg{transfer.SHA256, transfer.BLAKE3} {
		t.Run(alg.String(), func(t *testing.T) {
			r := remotetest.New(testChunk)
			r.Alg = alg
			buildTree(r)
			storeDir := t.TempDir()
			store := openStore(t, storeDir)
			m := mountFS(t, r, store, testOptions(), nil)
			checkTree(t, r, m.dir)
			first := m.fsys.Stats()
			if first.BytesFetched == 0 {
				t.Fatal("first mount fetched nothing")
			}
			m.unmount()

			m2 := mountFS(t, r, store, testOptions(), nil)
			checkTree(t, r, m2.dir)
			st := m2.fsys.Stats()
			if st.BytesFetched != 0 || st.ChunksFetched != 0 || st.FetchCalls != 0 {
				t.Errorf("remount fetched %d bytes in %d chunks (%d calls), want 0", st.BytesFetched, st.ChunksFetched, st.FetchCalls)
			}
			if st.StoreHits != first.ChunksFetched {
				t.Errorf("remount: %d store hits, want %d (the chunks of the first mount)", st.StoreHits, first.ChunksFetched)
			}
			if got := r.BytesSent.Load(); got != first.BytesFetched {
				t.Errorf("remote sent %d bytes in all, want %d", got, first.BytesFetched)
			}
			if ss := store.Stats(); ss.Corrupt != 0 || ss.Hits != first.ChunksFetched {
				t.Errorf("store: %d corrupt chunks, %d hits; want 0 and %d", ss.Corrupt, ss.Hits, first.ChunksFetched)
			}
		})
	}
}

func TestRemoteDown(t *testing.T) {
	for _, tc := range []struct {
		name string
		mode int32
	}{{"fails", remotetest.Fail}, {"hangs", remotetest.Hang}} {
		t.Run(tc.name, func(t *testing.T) {
			r := remotetest.New(testChunk)
			cached := remotetest.Content("cached", 3*testChunk+5)
			opened := remotetest.Content("opened", 2*testChunk)
			never := remotetest.Content("never", 10)
			r.File("dir/cached", 0o644, 1, cached)
			r.File("dir/opened", 0o644, 2, opened)
			r.File("dir/never", 0o644, 3, never)
			store := openStore(t, t.TempDir())
			opts := testOptions()
			opts.FetchTimeout = 300 * time.Millisecond

			// First mount, server up: read one file, open another.
			m := mountFS(t, r, store, opts, nil)
			if got := readAll(t, m.path("dir/cached")); !bytes.Equal(got, cached) {
				t.Fatal("first read differs")
			}
			f, err := os.Open(m.path("dir/opened"))
			if err != nil {
				t.Fatal(err)
			}
			f.Close()
			m.unmount()

			// Second mount, server down: only the kept copies.
			r.Down.Store(tc.mode)
			m = mountFS(t, r, store, opts, nil)
			if got := readAll(t, m.path("dir/cached")); !bytes.Equal(got, cached) {
				t.Error("cached file differs while the server is down")
			}
			if fi, err := os.Stat(m.path("dir/never")); err != nil || fi.Size() != int64(len(never)) {
				t.Errorf("stat from the kept listing: %v", err)
			}
			f, err = os.Open(m.path("dir/opened"))
			if err != nil {
				t.Fatalf("open with a kept manifest: %v", err)
			}
			defer f.Close()
			start := time.Now()
			_, err = f.ReadAt(make([]byte, 10), testChunk)
			elapsed := time.Since(start)
			if !errors.Is(err, syscall.EIO) {
				t.Errorf("uncached read: %v, want EIO", err)
			}
			if elapsed > opts.FetchTimeout+5*time.Second {
				t.Errorf("uncached read took %v with FetchTimeout %v", elapsed, opts.FetchTimeout)
			}
			if _, err := os.ReadFile(m.path("dir/never")); !errors.Is(err, syscall.EIO) {
				t.Errorf("open without a kept manifest: %v, want EIO", err)
			}
			if st := m.fsys.Stats(); st.StaleMeta == 0 || st.FetchErrors == 0 {
				t.Errorf("Stats: %d stale metadata served, %d fetch errors; want both > 0", st.StaleMeta, st.FetchErrors)
			}

			// Server back: the uncached data arrives.
			r.Down.Store(remotetest.Up)
			buf := make([]byte, len(opened))
			if _, err := f.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, opened) {
				t.Errorf("read after the server returned: %v", err)
			}
			if got, err := os.ReadFile(m.path("dir/never")); err != nil || !bytes.Equal(got, never) {
				t.Errorf("read of a new file after the server returned: %v", err)
			}
		})
	}
}

func TestSequentialReadReadsAhead(t *testing.T) {
	const chunks = 40
	r := remotetest.New(testChunk)
	data := remotetest.Content("seq", chunks*testChunk)
	r.File("seq", 0o644, 1, data)
	store := openStore(t, t.TempDir())
	m := mountFS(t, r, store, testOptions(), nil)
	if got := readAll(t, m.path("seq")); !bytes.Equal(got, data) {
		t.Fatal("content differs")
	}
	st := m.fsys.Stats()
	if st.ReadAheadChunks == 0 {
		t.Error("a sequential read did not read ahead")
	}
	if st.ChunksFetched != chunks || r.ChunksSent.Load() != chunks {
		t.Errorf("fetched %d chunks (remote sent %d), want each of the %d once", st.ChunksFetched, r.ChunksSent.Load(), chunks)
	}
	if st.FetchCalls >= chunks {
		t.Errorf("%d ReadChunks calls for %d chunks: runs were not batched", st.FetchCalls, chunks)
	}
	t.Logf("sequential: %d chunks in %d calls, %d by read-ahead", st.ChunksFetched, st.FetchCalls, st.ReadAheadChunks)
}

func TestRandomReadsDoNotReadAhead(t *testing.T) {
	const chunks = 40
	r := remotetest.New(testChunk)
	data := remotetest.Content("rand", chunks*testChunk)
	r.File("rand", 0o644, 1, data)
	store := openStore(t, t.TempDir())
	m := mountFS(t, r, store, testOptions(), nil)
	fd, err := unix.Open(m.path("rand"), unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	// No kernel read-ahead either: each pread asks for its own pages.
	if err := unix.Fadvise(fd, 0, 0, unix.FADV_RANDOM); err != nil {
		t.Fatal(err)
	}
	order := []int{20, 5, 33, 11, 27, 2, 38, 15}
	buf := make([]byte, 1000)
	for _, c := range order {
		off := int64(c)*testChunk + 100
		n, err := preadRetry(fd, buf, off)
		if err != nil || !bytes.Equal(buf[:n], data[off:off+int64(len(buf))]) {
			t.Fatalf("pread chunk %d: %d bytes, %v", c, n, err)
		}
	}
	st := m.fsys.Stats()
	if st.ReadAheadChunks != 0 {
		t.Errorf("random reads read %d chunks ahead, want 0", st.ReadAheadChunks)
	}
	if st.ChunksFetched != int64(len(order)) {
		t.Errorf("fetched %d chunks, want %d", st.ChunksFetched, len(order))
	}
}

func TestCorruptDataNeverSurfaces(t *testing.T) {
	r := remotetest.New(testChunk)
	data := remotetest.Content("corrupt", 2*testChunk+7)
	r.File("f", 0o644, 1, data)
	store := openStore(t, t.TempDir())
	m := mountFS(t, r, store, testOptions(), nil)
	r.Corrupt.Store(true)
	if _, err := os.ReadFile(m.path("f")); !errors.Is(err, syscall.EIO) {
		t.Fatalf("read of corrupt data: %v, want EIO", err)
	}
	if st := store.Stats(); st.Chunks != 0 {
		t.Errorf("store holds %d chunks after corrupt deliveries", st.Chunks)
	}
	if st := m.fsys.Stats(); st.ChunksFetched != 0 || st.FetchErrors == 0 {
		t.Errorf("Stats: %d chunks accepted, %d fetch errors; want 0 and > 0", st.ChunksFetched, st.FetchErrors)
	}
	r.Corrupt.Store(false)
	if got, err := os.ReadFile(m.path("f")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read after the remote healed: %v", err)
	}
	// Fetched chunks reach the Store in the background.
	if err := m.fsys.Flush(context.Background()); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if st := store.Stats(); st.Chunks != 3 {
		t.Errorf("store holds %d chunks, want 3", st.Chunks)
	}
}

func TestOpenFileKeepsItsVersion(t *testing.T) {
	r := remotetest.New(testChunk)
	v1 := remotetest.Content("v1", 2*testChunk+10)
	v2 := remotetest.Content("v2", len(v1))
	r.File("f", 0o644, 1_000_000_000, v1)
	clk := newFakeClock()
	store := openStore(t, t.TempDir())
	m := mountFS(t, r, store, testOptions(), func(f *FS) { f.now = clk.Now })
	// O_DIRECT: reads of this handle bypass the page cache the other
	// handle fills.
	fd, err := unix.Open(m.path("f"), unix.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	buf := make([]byte, len(v1))
	if n, err := preadRetry(fd, buf, 0); err != nil || !bytes.Equal(buf[:n], v1) {
		t.Fatalf("first read: %d bytes, %v", n, err)
	}

	r.File("f", 0o644, 2_000_000_000, v2)
	clk.Advance(time.Minute)
	if got := readAll(t, m.path("f")); !bytes.Equal(got, v2) {
		t.Error("a new open does not see the new version")
	}
	if n, err := preadRetry(fd, buf, 0); err != nil || !bytes.Equal(buf[:n], v1) {
		t.Errorf("the old handle: %d bytes, %v; want the version it opened", n, err)
	}
}

func TestInterruptedReadIsEINTRAndFetchGoesOn(t *testing.T) {
	r := remotetest.New(testChunk)
	data := remotetest.Content("intr", testChunk)
	man := r.File("f", 0o644, 1, data)
	r.CallGate = make(chan struct{})
	r.Started = make(chan struct{}, 4)
	fsys := New(r, openStore(t, t.TempDir()), testOptions())
	defer fsys.Close()
	h := newFileHandle(fsys, "f", man)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan syscall.Errno, 1)
	go func() {
		_, errno := h.Read(ctx, make([]byte, 100), 0)
		done <- errno
	}()
	recv(t, r.Started, "the fetch to start")
	cancel()
	if errno := <-done; errno != syscall.EINTR {
		t.Fatalf("interrupted read: %v, want EINTR", errno)
	}
	close(r.CallGate)
	res, errno := h.Read(context.Background(), make([]byte, 100), 0)
	if errno != 0 {
		t.Fatalf("read after the interrupt: %v", errno)
	}
	got, _ := res.Bytes(make([]byte, 100))
	if !bytes.Equal(got, data[:100]) {
		t.Error("wrong bytes")
	}
	if n := r.ReadCalls.Load(); n != 1 {
		t.Errorf("%d ReadChunks calls, want 1 (the interrupted reader's fetch went on)", n)
	}
}

func TestReadOfHungRemoteFailsAfterFetchTimeout(t *testing.T) {
	r := remotetest.New(testChunk)
	man := r.File("f", 0o644, 1, remotetest.Content("hang", 100))
	r.Down.Store(remotetest.Hang)
	opts := testOptions()
	opts.FetchTimeout = 50 * time.Millisecond
	fsys := New(r, openStore(t, t.TempDir()), opts)
	defer fsys.Close()
	h := newFileHandle(fsys, "f", man)
	if _, errno := h.Read(context.Background(), make([]byte, 10), 0); errno != syscall.EIO {
		t.Fatalf("read: %v, want EIO", errno)
	}
}

func TestCloseStopsFetches(t *testing.T) {
	r := remotetest.New(testChunk)
	man := r.File("f", 0o644, 1, remotetest.Content("close", 100))
	r.CallGate = make(chan struct{}) // never opened: the fetch waits for ctx
	r.Started = make(chan struct{}, 4)
	fsys := New(r, openStore(t, t.TempDir()), testOptions())
	h := newFileHandle(fsys, "f", man)
	done := make(chan syscall.Errno, 1)
	go func() {
		_, errno := h.Read(context.Background(), make([]byte, 10), 0)
		done <- errno
	}()
	recv(t, r.Started, "the fetch to start")
	fsys.Close() // returns only once the fetch goroutine has stopped
	if errno := <-done; errno != syscall.EIO {
		t.Errorf("read during Close: %v, want EIO", errno)
	}
	if _, errno := h.Read(context.Background(), make([]byte, 10), 0); errno != syscall.EIO {
		t.Errorf("read after Close: %v, want EIO", errno)
	}
}

func TestSlowFetchIsNotCutWhileChunksArrive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const timeout = 10 * time.Second
		r := remotetest.New(testChunk)
		data := remotetest.Content("slow", 5*testChunk)
		man := r.File("f", 0o644, 1, data)
		r.ChunkDelay = timeout * 6 / 10 // 5 chunks take 3 timeouts in all
		opts := testOptions()
		opts.FetchTimeout = timeout
		fsys := New(r, newMemStore(), opts)
		defer fsys.Close()
		start := time.Now()
		chunks, err := fsys.readChunks(context.Background(), "f", man, 0, 4, 0, -1)
		if err != nil {
			t.Fatalf("slow but steady fetch: %v", err)
		}
		if got := bytes.Join(chunks, nil); !bytes.Equal(got, data) {
			t.Error("wrong bytes")
		}
		if elapsed := time.Since(start); elapsed != 5*r.ChunkDelay {
			t.Errorf("took %v, want %v", elapsed, 5*r.ChunkDelay)
		}
	})
}

func TestStalledFetchFailsAfterFetchTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const timeout = 10 * time.Second
		r := remotetest.New(testChunk)
		man := r.File("f", 0o644, 1, remotetest.Content("stall", 5*testChunk))
		r.ChunkDelay = time.Second
		r.StallAfter = 2
		opts := testOptions()
		opts.FetchTimeout = timeout
		fsys := New(r, newMemStore(), opts)
		defer fsys.Close()
		start := time.Now()
		_, err := fsys.readChunks(context.Background(), "f", man, 0, 4, 0, -1)
		if !errors.Is(err, transfer.ErrUnavailable) {
			t.Fatalf("stalled fetch: %v, want ErrUnavailable", err)
		}
		// Two chunks arrive a second apart, then nothing for the timeout.
		if elapsed := time.Since(start); elapsed != 2*time.Second+timeout {
			t.Errorf("failed after %v, want %v", elapsed, 2*time.Second+timeout)
		}
		if st := fsys.Stats(); st.ChunksFetched != 2 || st.FetchErrors != 1 {
			t.Errorf("Stats: %d chunks, %d errors; want 2 and 1", st.ChunksFetched, st.FetchErrors)
		}
	})
}
