package prefetch

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kwikfs/kwikfs/fusefs"
	"github.com/kwikfs/kwikfs/internal/remotetest"
	"github.com/kwikfs/kwikfs/transfer"
)

const testChunk = 16 << 10

// fsOptions are fusefs options for tests: metadata trusted for a long time.
func fsOptions() *fusefs.Options {
	return &fusefs.Options{AttrTimeout: time.Hour, EntryTimeout: time.Hour, FetchTimeout: 5 * time.Second}
}

// env is a filesystem over a fake remote and a memory store, with a
// Manager; everything is closed at the end of the test.
type env struct {
	t      *testing.T
	remote *remotetest.Remote
	store  *memStore
	fsys   *fusefs.FS
	mgr    *Manager
}

func newEnv(t *testing.T, r *remotetest.Remote, store *memStore, fopts *fusefs.Options, opts *Options) *env {
	t.Helper()
	e := &env{t: t, remote: r, store: store, fsys: fusefs.New(r, store, fopts)}
	mgr, err := New(e.fsys, store, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	e.mgr = mgr
	t.Cleanup(e.close)
	return e
}

// close closes the manager, then the filesystem (which writes what its
// store writer still holds). Idempotent.
func (e *env) close() {
	e.mgr.Close()
	e.fsys.Close()
}

func (e *env) start(paths ...string) Progress {
	e.t.Helper()
	p, err := e.mgr.Start(context.Background(), paths)
	if err != nil {
		e.t.Fatalf("Start(%q): %v", paths, err)
	}
	return p
}

func (e *env) wait(id uint64) Progress {
	e.t.Helper()
	p, err := e.mgr.Wait(context.Background(), id)
	if err != nil {
		e.t.Fatalf("Wait(%d): %v", id, err)
	}
	return p
}

// checkStored fails the test unless the store holds every chunk of the
// files at paths.
func (e *env) checkStored(paths ...string) {
	e.t.Helper()
	if err := e.fsys.Flush(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	for _, p := range paths {
		m, err := e.remote.Manifest(context.Background(), p)
		if err != nil {
			e.t.Fatal(err)
		}
		for i, h := range m.Hashes {
			if ok, _ := e.store.Has([32]byte(h)); !ok {
				e.t.Errorf("chunk %d of %s not in the store", i, p)
			}
		}
	}
}

// record returns the stored record of job id.
func (e *env) record(id uint64) *record {
	e.t.Helper()
	b, err := e.store.GetMeta(recordKey(id))
	if err != nil {
		e.t.Fatalf("record of job %d: %v", id, err)
	}
	r, err := decodeRecord(b)
	if err != nil {
		e.t.Fatalf("record of job %d: %v", id, err)
	}
	return r
}

// sampleTree adds a tree to r: three regular files with data (one empty),
// a symlink, nested directories. It returns the files with data and their
// total size.
func sampleTree(r *remotetest.Remote) (files []string, total int64) {
	add := func(p string, n int) {
		r.File(p, 0o644, 0, remotetest.Content(p, n))
		files = append(files, p)
		total += int64(n)
	}
	add("a/x", 3*testChunk+5)
	add("a/b/y", testChunk)
	add("c", 5*testChunk)
	r.File("empty", 0o644, 0, nil)
	r.Symlink("a/l", "x", 0)
	return files, total
}

func TestJobFetchesTree(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := remotetest.New(testChunk)
		files, total := sampleTree(r)
		e := newEnv(t, r, newMemStore(), fsOptions(), nil)
		p := e.start("")
		if p.ID != 1 || p.State != StateRunning || !slices.Equal(p.Paths, []string{""}) {
			t.Errorf("Start: %+v", p)
		}
		p = e.wait(p.ID)
		if p.State != StateDone || p.FilesDone != 4 || p.FilesTotal != 4 || p.FilesFailed != 0 ||
			p.BytesDone != total || p.BytesTotal != total || p.BytesFetched != total || p.Error != "" || p.Scanning {
			t.Errorf("finished job: %+v; want done, 4 files, %d bytes fetched", p, total)
		}
		if got := r.BytesSent.Load(); got != total {
			t.Errorf("remote sent %d bytes, want %d", got, total)
		}
		e.checkStored(files...)
		if st := e.fsys.Stats(); st.MemoryChunks != 0 {
			t.Errorf("%d prefetched chunks kept in the memory cache, want 0", st.MemoryChunks)
		}
		rec := e.record(p.ID)
		if rec.State != StateDone || rec.FilesDone != 4 || rec.BytesFetched != total || rec.Finished.IsZero() {
			t.Errorf("stored record %+v", rec)
		}
		if jobs := e.mgr.Jobs(); len(jobs) != 1 || jobs[0].ID != 1 || jobs[0].State != StateDone {
			t.Errorf("Jobs() = %+v", jobs)
		}

		// A second job over the same tree finds everything in the store.
		sent := r.ChunksSent.Load()
		p2 := e.wait(e.start("a", "c").ID)
		if p2.ID != 2 || p2.State != StateDone || p2.FilesDone != 3 || p2.BytesDone != total || p2.BytesFetched != 0 {
			t.Errorf("second job: %+v; want done, 3 files, %d bytes, nothing fetched", p2, total)
		}
		if got := r.ChunksSent.Load(); got != sent {
			t.Errorf("second job fetched %d chunks, want 0", got-sent)
		}
	})
}

func TestJobOfSomePaths(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := remotetest.New(testChunk)
		sampleTree(r)
		e := newEnv(t, r, newMemStore(), fsOptions(), nil)
		p := e.start("c", "/a/b/", "a/b", "./c")
		if !slices.Equal(p.Paths, []string{"c", "a/b"}) {
			t.Errorf("paths %q, want [c a/b]", p.Paths)
		}
		p = e.wait(p.ID)
		if want := int64(6 * testChunk); p.State != StateDone || p.FilesDone != 2 || p.BytesFetched != want {
			t.Errorf("job: %+v; want done, 2 files, %d bytes", p, want)
		}
		if got := r.BytesSent.Load(); got != 6*testChunk {
			t.Errorf("remote sent %d bytes, want only c and a/b/y", got)
		}
	})
}

func TestStartRefusesBadPaths(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := remotetest.New(testChunk)
		sampleTree(r)
		e := newEnv(t, r, newMemStore(), fsOptions(), nil)
		for _, c := range []struct {
			paths []string
			want  error
		}{
			{nil, ErrInvalidPath},
			{[]string{"nope"}, transfer.ErrNotFound},
			{[]string{"c", "a/nope"}, transfer.ErrNotFound},
			{[]string{"a/l"}, ErrInvalidPath},
			{[]string{"../etc"}, ErrInvalidPath},
			{[]string{"a/../../x"}, ErrInvalidPath},
			{[]string{"a\x00b"}, ErrInvalidPath},
		} {
			if _, err := e.mgr.Start(context.Background(), c.paths); !errors.Is(err, c.want) {
				t.Errorf("Start(%q): %v, want %v", c.paths, err, c.want)
			}
		}
		if keys := e.store.jobKeys(); len(keys) != 0 {
			t.Errorf("refused starts left records %q", keys)
		}
		if _, err := e.mgr.Job(1); !errors.Is(err, ErrNotFound) {
			t.Errorf("Job(1): %v, want ErrNotFound", err)
		}
		e.mgr.Close()
		if _, err := e.mgr.Start(context.Background(), []string{"c"}); !errors.Is(err, ErrClosed) {
			t.Errorf("Start after Close: %v, want ErrClosed", err)
		}
	})
}

// TestJobResumesAfterRestart: a job stopped halfway (Close of the manager
// and the filesystem, as at unmount) starts again by itself with the next
// manager of the store and fetches only what the store lacks: no chunk is
// fetched twice.
func TestJobResumesAfterRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const chunks = 40
		r := remotetest.New(testChunk)
		r.File("big", 0o644, 0, remotetest.Content("big", chunks*testChunk))
		r.ChunkDelay = 10 * time.Millisecond
		halfway := make(chan struct{})
		var once atomic.Bool
		r.OnDeliver = func() {
			if r.ChunksSent.Load() == chunks/2 && once.CompareAndSwap(false, true) {
				close(halfway)
			}
		}
		store := newMemStore()
		e := newEnv(t, r, store, fsOptions(), &Options{RunBytes: 2 * testChunk, InFlightBytes: 4 * testChunk})
		id := e.start("").ID
		<-halfway
		e.close()
		if rec := e.record(id); rec.State != StateRunning || rec.Resumed != 0 {
			t.Fatalf("record after the stop: %+v, want running", rec)
		}
		held := store.stored.Load()
		if held < chunks/2*testChunk || held >= chunks*testChunk {
			t.Fatalf("store holds %d bytes after the stop, want at least half and not all", held)
		}

		e2 := newEnv(t, r, store, fsOptions(), nil)
		p := e2.wait(id)
		if p.State != StateDone || p.Resumed != 1 || p.FilesDone != 1 || p.BytesDone != chunks*testChunk {
			t.Errorf("resumed job: %+v; want done, resumed once, all bytes", p)
		}
		if want := chunks*testChunk - held; p.BytesFetched != want {
			t.Errorf("resumed job fetched %d bytes, want the %d missing", p.BytesFetched, want)
		}
		if got := r.ChunksSent.Load(); got != chunks {
			t.Errorf("remote sent %d chunks in all, want %d (none twice)", got, chunks)
		}
		e2.checkStored("big")
		if rec := e2.record(id); rec.State != StateDone || rec.Resumed != 1 {
			t.Errorf("record: %+v", rec)
		}
	})
}

// TestMemoryStaysBounded: against a slow store, a job over a file 32 times
// the in-flight budget never has more than the budget asked for, nor more
// than the budget and the store queue fetched and not yet stored.
func TestMemoryStaysBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const (
			chunks   = 256
			inFlight = 8 * testChunk
			queue    = 4 * testChunk
		)
		r := remotetest.New(testChunk)
		r.File("big", 0o644, 0, remotetest.Content("big", chunks*testChunk))
		store := newMemStore()
		store.putDelay = 5 * time.Millisecond
		var peak atomic.Int64
		r.OnDeliver = func() {
			held := r.BytesSent.Load() - store.stored.Load()
			for old := peak.Load(); held > old && !peak.CompareAndSwap(old, held); old = peak.Load() {
			}
		}
		fopts := fsOptions()
		fopts.StoreQueueBytes = queue
		e := newEnv(t, r, store, fopts, &Options{InFlightBytes: inFlight, RunBytes: 2 * testChunk})
		p := e.wait(e.start("big").ID)
		if p.State != StateDone || p.BytesFetched != chunks*testChunk {
			t.Fatalf("job: %+v", p)
		}
		if got := r.MaxOutstanding.Load(); got > inFlight/testChunk {
			t.Errorf("up to %d chunks asked for at once, want at most %d", got, inFlight/testChunk)
		}
		if got := peak.Load(); got > inFlight+queue {
			t.Errorf("up to %d bytes fetched and not stored, want at most %d", got, inFlight+queue)
		}
		t.Logf("peak: %d chunks asked for, %d bytes held", r.MaxOutstanding.Load(), peak.Load())
		e.checkStored("big")
	})
}

func TestJobRetriesWhileServerUnavailable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := remotetest.New(testChunk)
		files, total := sampleTree(r)
		e := newEnv(t, r, newMemStore(), fsOptions(), &Options{RetryMin: time.Second, RetryMax: 4 * time.Second})
		// The root's attributes are cached first, so that Start finds
		// the root; the job's calls then fail six times.
		if _, err := e.fsys.Stat(context.Background(), ""); err != nil {
			t.Fatal(err)
		}
		r.FailCalls.Store(6)
		started := time.Now()
		p := e.wait(e.start("").ID)
		if p.State != StateDone || p.FilesFailed != 0 || p.BytesDone != total {
			t.Errorf("job: %+v; want done without failures", p)
		}
		if left := r.FailCalls.Load(); left > 0 {
			t.Errorf("%d failures left unconsumed", left)
		}
		if elapsed := time.Since(started); elapsed < time.Second {
			t.Errorf("job done after %v, want at least one back-off of 1s", elapsed)
		}
		e.checkStored(files...)
	})
}

func TestCancelEndsJob(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := remotetest.New(testChunk)
		r.File("f", 0o644, 0, remotetest.Content("f", 8*testChunk))
		r.ChunkGate = make(chan struct{}) // no chunk is ever delivered
		store := newMemStore()
		e := newEnv(t, r, store, fsOptions(), nil)
		id := e.start("f").ID
		synctest.Wait()
		p, err := e.mgr.Cancel(id)
		if err != nil || p.State != StateCanceled || p.Finished.IsZero() {
			t.Fatalf("Cancel: %+v, %v", p, err)
		}
		if rec := e.record(id); rec.State != StateCanceled {
			t.Errorf("record state %q, want canceled", rec.State)
		}
		if p, err := e.mgr.Cancel(id); err != nil || p.State != StateCanceled {
			t.Errorf("second Cancel: %+v, %v", p, err)
		}
		if _, err := e.mgr.Cancel(7); !errors.Is(err, ErrNotFound) {
			t.Errorf("Cancel(7): %v, want ErrNotFound", err)
		}
		close(r.ChunkGate)
		e.close()
		calls := r.ReadCalls.Load()

		e2 := newEnv(t, r, store, fsOptions(), nil)
		synctest.Wait()
		if jobs := e2.mgr.Jobs(); len(jobs) != 1 || jobs[0].State != StateCanceled {
			t.Errorf("after restart: %+v, want the canceled job, not resumed", jobs)
		}
		if got := r.ReadCalls.Load(); got != calls {
			t.Errorf("a canceled job fetched after the restart (%d calls)", got-calls)
		}
	})
}

func TestFailedFileCountedJobGoesOn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := remotetest.New(testChunk)
		files, total := sampleTree(r)
		// A regular file whose manifest the server refuses.
		r.SetAttr("a/bad", transfer.Attr{Mode: transfer.ModeRegular | 0o644, Size: 10})
		e := newEnv(t, r, newMemStore(), fsOptions(), nil)
		p := e.wait(e.start("").ID)
		if p.State != StateFailed || p.FilesFailed != 1 || p.FilesDone != 4 || p.FilesTotal != 5 || !strings.Contains(p.Error, `"a/bad"`) {
			t.Errorf("job: %+v; want failed with a/bad, 4 files done", p)
		}
		if p.BytesDone != total {
			t.Errorf("bytes done %d, want %d", p.BytesDone, total)
		}
		e.checkStored(files...)
		if rec := e.record(p.ID); rec.State != StateFailed || rec.Error != p.Error {
			t.Errorf("record %+v", rec)
		}
	})
}

// TestUnlistableDirectoryCountedOnce: a directory the server refuses to
// list fails the job, counted once, and the rest is fetched.
func TestUnlistableDirectoryCountedOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := remotetest.New(testChunk)
		files, total := sampleTree(r)
		r.File("locked/secret", 0o644, 0, remotetest.Content("s", 10))
		r.FailList("locked", transfer.ErrPermission)
		e := newEnv(t, r, newMemStore(), fsOptions(), nil)
		p := e.wait(e.start("").ID)
		if p.State != StateFailed || p.FilesFailed != 1 || p.FilesDone != 4 || p.BytesDone != total || !strings.Contains(p.Error, `"locked"`) {
			t.Errorf("job: %+v; want failed once for locked, the rest done", p)
		}
		e.checkStored(files...)
	})
}

func TestOldFinishedJobsForgotten(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := remotetest.New(testChunk)
		sampleTree(r)
		store := newMemStore()
		e := newEnv(t, r, store, fsOptions(), &Options{KeepFinished: 2})
		for range 3 {
			e.wait(e.start("c").ID)
		}
		var ids []uint64
		for _, p := range e.mgr.Jobs() {
			ids = append(ids, p.ID)
		}
		if !slices.Equal(ids, []uint64{2, 3}) {
			t.Errorf("jobs %v, want [2 3]", ids)
		}
		if keys := store.jobKeys(); !slices.Equal(keys, []string{recordKey(2), recordKey(3)}) {
			t.Errorf("records %q", keys)
		}
		e.close()
		// IDs go on after a restart.
		e2 := newEnv(t, r, store, fsOptions(), nil)
		if p := e2.start("c"); p.ID != 4 {
			t.Errorf("next ID %d, want 4", p.ID)
		}
	})
}

func TestUnreadableRecordDropped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := remotetest.New(testChunk)
		store := newMemStore()
		store.PutMeta(recordKey(5), []byte("{not json"))
		store.PutMeta(recordPrefix+"x", []byte("{}"))
		e := newEnv(t, r, store, fsOptions(), nil)
		if jobs := e.mgr.Jobs(); len(jobs) != 0 {
			t.Errorf("jobs %+v, want none", jobs)
		}
		if keys := store.jobKeys(); len(keys) != 0 {
			t.Errorf("records %q left, want none", keys)
		}
	})
}

func TestRateMeter(t *testing.T) {
	base := time.Unix(1000, 0)
	var r rateMeter
	if got := r.rate(base, 0); got != 0 {
		t.Errorf("rate without samples %v, want 0", got)
	}
	r.add(base, 0)
	r.add(base.Add(100*time.Millisecond), 50) // within rateEvery: skipped
	r.add(base.Add(time.Second), 1000)
	if got := r.rate(base.Add(2*time.Second), 2000); got != 1000 {
		t.Errorf("rate %v, want 1000", got)
	}
	// The base is the last sample at or before the window's start.
	r.add(base.Add(6*time.Second), 6000)
	r.add(base.Add(7*time.Second), 9000)
	if got := r.rate(base.Add(7*time.Second), 9000); got != 8000.0/6 {
		t.Errorf("rate after the window moved %v, want %v (from the sample at 1s)", got, 8000.0/6)
	}
	r.add(base.Add(20*time.Second), 9000)
	if got := r.rate(base.Add(20*time.Second), 9000); got != 0 {
		t.Errorf("rate after 13s without progress %v, want 0", got)
	}
}
