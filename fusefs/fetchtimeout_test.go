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

// TestQueuedFetchWaitsWhileOthersProgress: a fetch that receives nothing
// while another keeps receiving chunks (a busy server, the fetch queued
// behind the others) does not fail after FetchTimeout, but after
// queuedFetchFactor of them; with nothing received anywhere it fails after
// one.
func TestQueuedFetchWaitsWhileOthersProgress(t *testing.T) {
	for _, busy := range []bool{true, false} {
		synctest.Test(t, func(t *testing.T) {
			opts := testOptions()
			ft := opts.FetchTimeout
			r := remotetest.New(testChunk)
			r.ChunkDelay = ft / 4
			mBusy := r.File("busy", 0o644, 1, remotetest.Content("busy", 40*testChunk)) // 10 FetchTimeouts of chunks
			mQueued := r.File("queued", 0o644, 1, remotetest.Content("queued", testChunk))
			r.Stalled = map[string]bool{"queued": true}
			fsys := New(r, newMemStore(), opts)
			defer fsys.Close()

			busyDone := make(chan error, 1)
			if busy {
				go func() {
					_, err := fsys.readChunks(context.Background(), "busy", mBusy, 0, 39, 0, -1)
					busyDone <- err
				}()
			}
			start := time.Now()
			_, err := fsys.readChunks(context.Background(), "queued", mQueued, 0, 0, 0, -1)
			waited := time.Since(start)
			if !errors.Is(err, transfer.ErrUnavailable) {
				t.Fatalf("busy=%v: queued read: %v, want ErrUnavailable", busy, err)
			}
			want := ft
			if busy {
				want = queuedFetchFactor * ft
			}
			if waited < want || waited > want+ft {
				t.Errorf("busy=%v: queued read failed after %v, want %v to %v", busy, waited, want, want+ft)
			}
			if busy {
				if err := <-busyDone; err != nil {
					t.Errorf("busy read: %v", err)
				}
			}
		})
	}
}

// TestBackgroundFetchWaitsWhileOthersProgress: a background fetch that
// receives nothing (the server holds it back while it serves foreground
// READs) waits for as long as other fetches receive chunks, however long
// that is, and fails FetchTimeout after the last chunk arrived anywhere.
func TestBackgroundFetchWaitsWhileOthersProgress(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		opts := testOptions()
		ft := opts.FetchTimeout
		r := remotetest.New(testChunk)
		r.ChunkDelay = ft / 4
		mBusy := r.File("busy", 0o644, 1, remotetest.Content("busy", 40*testChunk)) // 10 FetchTimeouts of chunks
		mHeld := r.File("held", 0o644, 1, remotetest.Content("held", testChunk))
		r.Stalled = map[string]bool{"held": true}
		fsys := New(r, newMemStore(), opts)
		defer fsys.Close()

		start := time.Now()
		heldDone := make(chan error, 1)
		go func() {
			_, err := fsys.FetchBackground(context.Background(), "held", mHeld, 0, 0)
			heldDone <- err
		}()
		synctest.Wait() // the background fetch is under way
		if _, err := fsys.readChunks(context.Background(), "busy", mBusy, 0, 39, 0, -1); err != nil {
			t.Fatalf("busy read: %v", err)
		}
		busyEnd := time.Since(start)
		err := <-heldDone
		failed := time.Since(start)
		if !errors.Is(err, transfer.ErrUnavailable) {
			t.Fatalf("background fetch: %v, want ErrUnavailable", err)
		}
		if busyEnd < queuedFetchFactor*ft {
			t.Fatalf("busy read took %v, want more than %v for the test to mean anything", busyEnd, queuedFetchFactor*ft)
		}
		if failed < busyEnd+ft-ft/4 || failed > busyEnd+ft {
			t.Errorf("background fetch failed after %v, want FetchTimeout (%v) after the busy read's last chunk (%v)", failed, ft, busyEnd)
		}
	})
}
