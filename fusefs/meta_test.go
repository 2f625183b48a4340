package fusefs

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kwikfs/kwikfs/internal/remotetest"
	"github.com/kwikfs/kwikfs/transfer"
)

func TestListingFallsBackToKeptCopy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const fetchTimeout, attrTimeout = 2 * time.Second, 30 * time.Second
		r := remotetest.New(testChunk)
		r.File("d/a", 0o644, 1, []byte("a"))
		opts := &Options{AttrTimeout: attrTimeout, FetchTimeout: fetchTimeout}
		store := newMemStore()
		ctx := context.Background()

		// A first FS lists d while the server is up; the listing persists.
		f1 := New(r, store, opts)
		if it, err := f1.meta.list(ctx, "d"); err != nil || len(it.entries) != 1 {
			t.Fatalf("list: %v", err)
		}
		f1.Close()

		// A second FS, server hanging: the kept copy after FetchTimeout.
		r.Down.Store(remotetest.Hang)
		f2 := New(r, store, opts)
		defer f2.Close()
		start := time.Now()
		it, err := f2.meta.list(ctx, "d")
		if err != nil || len(it.entries) != 1 || it.entries[0].Name != "a" {
			t.Fatalf("list with the server down: %v", err)
		}
		if elapsed := time.Since(start); elapsed != fetchTimeout {
			t.Errorf("kept copy served after %v, want %v", elapsed, fetchTimeout)
		}
		// Trusted for another AttrTimeout: no new call, no wait.
		calls := r.ListsOf("d")
		time.Sleep(attrTimeout - time.Second)
		if _, err := f2.meta.list(ctx, "d"); err != nil || r.ListsOf("d") != calls {
			t.Errorf("within AttrTimeout: %v, %d calls, want the kept copy and %d", err, r.ListsOf("d"), calls)
		}
		// Never listed: ErrUnavailable after FetchTimeout.
		start = time.Now()
		if _, err := f2.meta.list(ctx, "other"); !errors.Is(err, transfer.ErrUnavailable) {
			t.Errorf("uncached listing: %v, want ErrUnavailable", err)
		}
		if elapsed := time.Since(start); elapsed != fetchTimeout {
			t.Errorf("uncached listing failed after %v, want %v", elapsed, fetchTimeout)
		}
		if st := f2.Stats(); st.StaleMeta != 1 {
			t.Errorf("Stats.StaleMeta = %d, want 1", st.StaleMeta)
		}
	})
}

func TestConcurrentListsShareOneCall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := remotetest.New(testChunk)
		r.File("d/a", 0o644, 1, []byte("a"))
		r.Down.Store(remotetest.Hang)
		f := New(r, newMemStore(), &Options{FetchTimeout: time.Second})
		defer f.Close()
		errs := make(chan error, 10)
		for range 10 {
			go func() {
				_, err := f.meta.list(context.Background(), "d")
				errs <- err
			}()
		}
		synctest.Wait() // all ten wait for the one call
		r.Down.Store(remotetest.Up)
		for range 10 {
			if err := <-errs; !errors.Is(err, transfer.ErrUnavailable) {
				t.Errorf("list: %v, want ErrUnavailable (the shared call hung)", err)
			}
		}
		if got := r.ListsOf("d"); got != 1 {
			t.Errorf("%d List calls, want 1", got)
		}
	})
}

func TestNotFoundDropsCachedListing(t *testing.T) {
	r := remotetest.New(testChunk)
	r.File("d/a", 0o644, 1, []byte("a"))
	clk := newFakeClock()
	f := New(r, newMemStore(), testOptions())
	f.now = clk.Now
	defer f.Close()
	ctx := context.Background()
	if _, err := f.meta.list(ctx, "d"); err != nil {
		t.Fatal(err)
	}
	r.Remove("d")
	r.Remove("d/a")
	clk.Advance(time.Hour)
	if _, err := f.meta.list(ctx, "d"); !errors.Is(err, transfer.ErrNotFound) {
		t.Fatalf("list of a removed directory: %v, want ErrNotFound", err)
	}
	r.Down.Store(remotetest.Fail)
	if _, err := f.meta.list(ctx, "d"); err == nil {
		t.Error("a removed directory came back from memory")
	}
}
