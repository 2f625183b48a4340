package fusefs

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kwikfs/kwikfs/internal/remotetest"
)

// TestKeptMetadataServedAtOnceWhileServerDown: after a remount with the
// server hanging, the first listing waits FetchTimeout and comes from the
// store; the other listings and manifests of the cached tree come at once
// (a walk of the tree costs one FetchTimeout, not one per directory). Once
// the server answers again, listings are fresh after AttrTimeout.
func TestKeptMetadataServedAtOnceWhileServerDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const fetchTimeout, attrTimeout = 15 * time.Second, 5 * time.Second
		r := remotetest.New(testChunk)
		dirs := []string{"a", "b", "c", "c/d"}
		for _, d := range dirs {
			r.Mkdir(d, 0o755)
			r.File(d+"/f", 0o644, 1, remotetest.Content(d, testChunk))
		}
		opts := &Options{AttrTimeout: attrTimeout, FetchTimeout: fetchTimeout}
		store := newMemStore()
		ctx := context.Background()

		f1 := New(r, store, opts)
		for _, d := range dirs {
			if _, err := f1.meta.list(ctx, d); err != nil {
				t.Fatal(err)
			}
			if _, err := f1.meta.manifest(ctx, d+"/f"); err != nil {
				t.Fatal(err)
			}
		}
		f1.Close()

		r.Down.Store(remotetest.Hang)
		f2 := New(r, store, opts)
		defer f2.Close()
		for i, d := range dirs {
			start := time.Now()
			it, err := f2.meta.list(ctx, d)
			waited := time.Since(start)
			if err != nil {
				t.Fatalf("list %q with the server hanging: %v", d, err)
			}
			if _, ok := it.lookup("f"); !ok {
				t.Errorf("list %q: kept listing without f", d)
			}
			want := time.Duration(0)
			if i == 0 {
				want = fetchTimeout
			}
			if waited != want {
				t.Errorf("list %q with the server hanging took %v, want %v", d, waited, want)
			}
			start = time.Now()
			if _, err := f2.meta.manifest(ctx, d+"/f"); err != nil || time.Since(start) != 0 {
				t.Errorf("manifest of %q/f: %v after %v, want the kept one at once", d, err, time.Since(start))
			}
		}

		// The server is back. The calls still hanging end; the next one,
		// after AttrTimeout, still answers at once from the kept copy while
		// it asks the server, whose answer clears down and is served next.
		r.Down.Store(remotetest.Up)
		time.Sleep(fetchTimeout + attrTimeout)
		lists := r.Lists.Load()
		start := time.Now()
		if _, err := f2.meta.list(ctx, "a"); err != nil || time.Since(start) != 0 {
			t.Fatalf("list after the server returned: %v after %v", err, time.Since(start))
		}
		synctest.Wait()
		if r.Lists.Load() != lists+1 || f2.meta.down.Load() {
			t.Errorf("after the server returned: %d new List calls, down %v; want 1, false", r.Lists.Load()-lists, f2.meta.down.Load())
		}
		r.Mkdir("a/new", 0o755)
		time.Sleep(attrTimeout)
		it, err := f2.meta.list(ctx, "a")
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := it.lookup("new"); !ok {
			t.Error("listing of a after the server returned lacks the new directory")
		}
	})
}
