package fusefs

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

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
			r := newFakeRemote(testChunk)
			r.chunkDelay = ft / 4
			mBusy := r.file("busy", 0o644, 1, content("busy", 40*testChunk)) // 10 FetchTimeouts of chunks
			mQueued := r.file("queued", 0o644, 1, content("queued", testChunk))
			r.stalled = map[string]bool{"queued": true}
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
