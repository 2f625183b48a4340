package fusefs

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/kwikfs/kwikfs/internal/remotetest"
	"github.com/kwikfs/kwikfs/transfer"
)

// rootGetattr calls Getattr on f's root node and returns the attributes and
// how long the call took (fake time inside a synctest bubble).
func rootGetattr(t *testing.T, f *FS) (fuse.Attr, time.Duration) {
	t.Helper()
	var out fuse.AttrOut
	start := time.Now()
	if errno := f.Root().(*dirNode).Getattr(context.Background(), nil, &out); errno != 0 {
		t.Fatalf("Getattr of the root: %v", errno)
	}
	return out.Attr, time.Since(start)
}

// TestRootGetattrDoesNotWaitForHungServer: with the server hanging (a
// SIGSTOPped primary), the root's attributes come within rootStatWait of
// the call to the server, from the Store's kept copy, instead of after
// FetchTimeout (15 s by default; before the fix every root Getattr waited
// that long, and `kwikfs status` timed out). A Getattr while the same call
// is still hanging answers at once, and after the kept copy has been
// trusted, a later one does not wait either.
func TestRootGetattrDoesNotWaitForHungServer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const fetchTimeout, attrTimeout = 15 * time.Second, 5 * time.Second
		r := remotetest.New(testChunk)
		opts := &Options{AttrTimeout: attrTimeout, FetchTimeout: fetchTimeout}
		store := newMemStore()
		want := r.Entry("").Attr

		// A first FS learns the root's attributes; they persist.
		f1 := New(r, store, opts)
		if a, d := rootGetattr(t, f1); a.Mode != want.Mode || a.Mtime != uint64(want.MtimeNs/1e9) || d != 0 {
			t.Fatalf("root with the server up: mode %o mtime %d after %v, want %o %d at once", a.Mode, a.Mtime, d, want.Mode, want.MtimeNs/1e9)
		}
		f1.Close()

		// A second FS over the same store, the server hanging.
		r.Down.Store(remotetest.Hang)
		f2 := New(r, store, opts)
		defer f2.Close()
		a, d := rootGetattr(t, f2)
		if a.Mode != want.Mode || a.Mtime != uint64(want.MtimeNs/1e9) || a.Mtimensec != uint32(want.MtimeNs%1e9) {
			t.Errorf("root with the server hanging: mode %o mtime %d.%09d, want the kept %o %d", a.Mode, a.Mtime, a.Mtimensec, want.Mode, want.MtimeNs)
		}
		if d != rootStatWait {
			t.Errorf("root with the server hanging answered after %v, want %v", d, rootStatWait)
		}
		// The call to the server is still hanging: no second wait.
		if _, d := rootGetattr(t, f2); d != 0 {
			t.Errorf("second Getattr during the same hanging call took %v, want 0", d)
		}
		if n := r.Stats.Load(); n != 2 {
			t.Errorf("%d Stat calls, want 2 (one per FS)", n)
		}
		// The call ends at FetchTimeout with the kept copy, trusted for
		// AttrTimeout: no wait, no new call.
		time.Sleep(fetchTimeout)
		if a, d := rootGetattr(t, f2); a.Mode != want.Mode || d != 0 || r.Stats.Load() != 2 {
			t.Errorf("after the call timed out: mode %o after %v, %d Stat calls; want %o at once, 2 calls", a.Mode, d, r.Stats.Load(), want.Mode)
		}
		if st := f2.Stats(); st.StaleMeta != 3 {
			t.Errorf("Stats.StaleMeta = %d, want 3", st.StaleMeta)
		}

		// The server answers again. Once AttrTimeout passed, the first
		// Getattr still gets the kept copy at once (the last call went
		// unanswered: the FS is down), and its call, answered, brings the
		// fresh attributes and ends the down state: the next Getattr has
		// them, at once.
		r.Down.Store(remotetest.Up)
		root := r.Entry("").Attr
		root.MtimeNs = 1_700_000_000_000_000_000
		r.SetAttr("", root)
		time.Sleep(attrTimeout)
		if a, d := rootGetattr(t, f2); a.Mtime != uint64(want.MtimeNs/1e9) || d != 0 {
			t.Errorf("first root Getattr after the server came back: mtime %d after %v, want the kept %d at once", a.Mtime, d, want.MtimeNs/1e9)
		}
		synctest.Wait()
		if a, d := rootGetattr(t, f2); a.Mtime != 1_700_000_000 || d != 0 {
			t.Errorf("root after the server's answer: mtime %d after %v, want 1700000000 at once", a.Mtime, d)
		}
	})
}

// TestRootGetattrWithoutKeptCopy: a root never seen, server hanging: after
// rootStatWait the root is a directory with mode 0555 and mtime 0.
func TestRootGetattrWithoutKeptCopy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := remotetest.New(testChunk)
		r.Down.Store(remotetest.Hang)
		f := New(r, newMemStore(), &Options{FetchTimeout: 15 * time.Second})
		defer f.Close()
		a, d := rootGetattr(t, f)
		if a.Mode != transfer.ModeDir|0o555 || a.Mtime != 0 || a.Nlink != 2 {
			t.Errorf("root: mode %o mtime %d nlink %d, want %o 0 2", a.Mode, a.Mtime, a.Nlink, transfer.ModeDir|0o555)
		}
		if d != rootStatWait {
			t.Errorf("root answered after %v, want %v", d, rootStatWait)
		}
	})
}

// TestRootGetattrWhileDown: an FS started down (Options.RemoteDown, the
// daemon's start-up probe failed) with the server hanging answers the
// root's attributes from the kept copy at once, not after rootStatWait;
// without a kept copy it still waits rootStatWait.
func TestRootGetattrWhileDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := remotetest.New(testChunk)
		store := newMemStore()
		opts := &Options{AttrTimeout: 5 * time.Second, FetchTimeout: 15 * time.Second}
		want := r.Entry("").Attr
		f1 := New(r, store, opts)
		rootGetattr(t, f1)
		f1.Close()

		r.Down.Store(remotetest.Hang)
		down := *opts
		down.RemoteDown = true
		f2 := New(r, store, &down)
		defer f2.Close()
		if a, d := rootGetattr(t, f2); a.Mode != want.Mode || a.Mtime != uint64(want.MtimeNs/1e9) || d != 0 {
			t.Errorf("root while down: mode %o mtime %d after %v, want the kept %o %d at once", a.Mode, a.Mtime, d, want.Mode, want.MtimeNs/1e9)
		}

		f3 := New(r, newMemStore(), &down)
		defer f3.Close()
		if _, d := rootGetattr(t, f3); d != rootStatWait {
			t.Errorf("root while down without a kept copy answered after %v, want %v", d, rootStatWait)
		}
	})
}
