package fusefs

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kwikfs/kwikfs/internal/remotetest"
)

// TestRemoteDownServesKeptMetadataAtOnce: an FS started with
// Options.RemoteDown over a hanging server serves the kept listings and
// manifests at once, the very first one included (without the option the
// first waits FetchTimeout; see TestKeptMetadataServedAtOnceWhileServerDown),
// and the first answer of the server clears it.
func TestRemoteDownServesKeptMetadataAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const fetchTimeout, attrTimeout = 15 * time.Second, 5 * time.Second
		r := remotetest.New(testChunk)
		dirs := []string{"a", "b", "b/c"}
		for _, d := range dirs {
			r.Mkdir(d, 0o755)
			r.File(d+"/f", 0o644, 1, remotetest.Content(d, testChunk))
		}
		store := newMemStore()
		ctx := context.Background()
		f1 := New(r, store, &Options{AttrTimeout: attrTimeout, FetchTimeout: fetchTimeout})
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
		f2 := New(r, store, &Options{AttrTimeout: attrTimeout, FetchTimeout: fetchTimeout, RemoteDown: true})
		defer f2.Close()
		for _, d := range dirs {
			start := time.Now()
			it, err := f2.meta.list(ctx, d)
			if err != nil || time.Since(start) != 0 {
				t.Fatalf("list %q with the server hanging: %v after %v, want the kept one at once", d, err, time.Since(start))
			}
			if _, ok := it.lookup("f"); !ok {
				t.Errorf("list %q: kept listing without f", d)
			}
			start = time.Now()
			if _, err := f2.meta.manifest(ctx, d+"/f"); err != nil || time.Since(start) != 0 {
				t.Errorf("manifest of %q/f: %v after %v, want the kept one at once", d, err, time.Since(start))
			}
		}
		if st := f2.Stats(); st.StaleMeta != int64(2*len(dirs)) {
			t.Errorf("Stats.StaleMeta = %d, want %d", st.StaleMeta, 2*len(dirs))
		}

		// The server answers again: its first answer clears down.
		r.Down.Store(remotetest.Up)
		time.Sleep(fetchTimeout + attrTimeout)
		if _, err := f2.meta.list(ctx, "a"); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if f2.meta.down.Load() {
			t.Error("still down after the server answered")
		}
	})
}

// TestRemoteDownWithoutKeptCopyWaits: RemoteDown changes nothing for what
// is not kept: such a call still waits for the server, which answers.
func TestRemoteDownWithoutKeptCopyWaits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := remotetest.New(testChunk)
		r.File("d/f", 0o644, 1, []byte("x"))
		f := New(r, newMemStore(), &Options{FetchTimeout: 15 * time.Second, RemoteDown: true})
		defer f.Close()
		it, err := f.meta.list(context.Background(), "d")
		if err != nil {
			t.Fatalf("list with nothing kept and the server up: %v", err)
		}
		if _, ok := it.lookup("f"); !ok || f.meta.down.Load() {
			t.Errorf("listing has f: %v; down after the answer: %v (want true, false)", ok, f.meta.down.Load())
		}
	})
}
