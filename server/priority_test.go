package server

import (
	"context"
	"crypto/sha256"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/transfer"
)

// TestBackgroundReadWaitsForForeground starts a foreground READ whose
// reader stops after the first chunk (so that the primary is still serving
// it), then a background READ: the primary sends nothing of the background
// READ until the foreground one is done, counts it held back once, and then
// both complete with the right bytes. With and without a secondary (a
// multipath reply is held between units, a single-path one between
// chunks).
func TestBackgroundReadWaitsForForeground(t *testing.T) {
	for _, nsec := range []int{0, 1} {
		t.Run(fmt.Sprintf("secondaries=%d", nsec), func(t *testing.T) {
			// The foreground file is larger than the client's stream window
			// (8 MiB), so that its reply cannot be wholly sent while its
			// reader waits.
			files := map[string][]byte{
				"fg.bin": mpRandomBytes(16<<20, 41),
				"bg.bin": mpRandomBytes(4<<20+5, 42),
			}
			var secRoots []string
			for range nsec {
				secRoots = append(secRoots, mpWriteRoot(t, files))
			}
			c := mpStartCluster(t, mpWriteRoot(t, files), secRoots, CoordinatorOptions{})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			mf, err := c.client.Manifest(ctx, "fg.bin")
			if err != nil {
				t.Fatal(err)
			}
			mb, err := c.client.Manifest(ctx, "bg.bin")
			if err != nil {
				t.Fatal(err)
			}

			firstFG := make(chan struct{})
			release := make(chan struct{})
			var fgGot []byte
			fgDone := make(chan error, 1)
			go func() {
				_, err := c.client.ReadChunks(ctx, "fg.bin", mf, 0, mf.NumChunks(), func(i int, b []byte) error {
					fgGot = append(fgGot, b...)
					if i == 0 {
						close(firstFG)
						<-release
					}
					return nil
				})
				fgDone <- err
			}()
			select {
			case <-firstFG:
			case err := <-fgDone:
				t.Fatalf("foreground READ ended early: %v", err)
			}

			var bgChunks atomic.Int64
			var bgGot []byte
			bgDone := make(chan error, 1)
			go func() {
				_, err := c.client.ReadChunks(transfer.WithBackgroundPriority(ctx), "bg.bin", mb, 0, mb.NumChunks(), func(i int, b []byte) error {
					bgChunks.Add(1)
					bgGot = append(bgGot, b...)
					return nil
				})
				bgDone <- err
			}()
			// The primary holds the background READ back...
			tick := time.NewTicker(2 * time.Millisecond)
			defer tick.Stop()
			for c.prim.Stats().BackgroundHeld == 0 {
				select {
				case <-tick.C:
				case err := <-bgDone:
					t.Fatalf("background READ ended (%v, %d chunks) while the foreground READ was served", err, bgChunks.Load())
				case <-ctx.Done():
					t.Fatal("the background READ was never held back")
				}
			}
			// ...and sends none of it while the foreground READ lasts.
			select {
			case err := <-bgDone:
				t.Fatalf("background READ ended (%v) while the foreground READ was served", err)
			case <-time.After(300 * time.Millisecond):
			}
			if n := bgChunks.Load(); n != 0 {
				t.Fatalf("%d background chunks delivered while the foreground READ was served", n)
			}

			close(release)
			if err := <-fgDone; err != nil {
				t.Fatalf("foreground READ: %v", err)
			}
			if err := <-bgDone; err != nil {
				t.Fatalf("background READ: %v", err)
			}
			if sha256.Sum256(fgGot) != sha256.Sum256(files["fg.bin"]) {
				t.Error("foreground file: wrong bytes")
			}
			if sha256.Sum256(bgGot) != sha256.Sum256(files["bg.bin"]) {
				t.Error("background file: wrong bytes")
			}
			if n := c.prim.Stats().BackgroundHeld; n != 1 {
				t.Errorf("BackgroundHeld = %d, want 1", n)
			}
		})
	}
}

// TestBackgroundReadAloneNotHeld: a background READ with no foreground
// READ under way is served at once and never counted as held back.
func TestBackgroundReadAloneNotHeld(t *testing.T) {
	data := mpRandomBytes(1<<20+3, 43)
	files := map[string][]byte{"bg.bin": data}
	c := mpStartCluster(t, mpWriteRoot(t, files), []string{mpWriteRoot(t, files)}, CoordinatorOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := c.client.Manifest(ctx, "bg.bin")
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	_, err = c.client.ReadChunks(transfer.WithBackgroundPriority(ctx), "bg.bin", m, 0, m.NumChunks(), func(i int, b []byte) error {
		got = append(got, b...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(got) != sha256.Sum256(data) {
		t.Error("wrong bytes")
	}
	if n := c.prim.Stats().BackgroundHeld; n != 0 {
		t.Errorf("BackgroundHeld = %d, want 0", n)
	}
}

// TestPriorityWaitIdle checks the gate itself: waitIdle returns at once
// with no foreground READ, blocks while one is served (counting the waiter
// once however often it waits), returns when the last one ends, and gives
// up with ctx.
func TestPriorityWaitIdle(t *testing.T) {
	var held atomic.Int64
	p := newPriority(&held)
	counted := false
	if err := p.waitIdle(context.Background(), &counted); err != nil || counted {
		t.Fatalf("idle gate: %v, counted %v", err, counted)
	}
	end1 := p.beginForeground()
	end2 := p.beginForeground()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.waitIdle(ctx, &counted); err != context.Canceled {
		t.Fatalf("waitIdle with a canceled ctx = %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- p.waitIdle(context.Background(), &counted) }()
	end1()
	end1() // a second call does nothing
	if !p.busy() {
		t.Fatal("not busy with one foreground READ left")
	}
	end2()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if p.busy() {
		t.Fatal("busy after every foreground READ ended")
	}
	if n := held.Load(); n != 1 || !counted {
		t.Fatalf("held = %d, counted %v; want 1, true", n, counted)
	}
}
