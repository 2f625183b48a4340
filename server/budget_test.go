package server

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kwikfs/kwikfs/transfer"
)

// resizeAsync runs h.resize(ctx, n) on a goroutine and returns a channel
// that receives its result.
func resizeAsync(ctx context.Context, h *hold, n int64) <-chan error {
	done := make(chan error, 1)
	go func() { done <- h.resize(ctx, n) }()
	return done
}

// pending reports whether done has no result yet, once every goroutine
// of the bubble is blocked.
func pending(done <-chan error) bool {
	synctest.Wait()
	select {
	case <-done:
		return false
	default:
		return true
	}
}

func TestBudgetHoldWaitsForItsShare(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var waits atomic.Int64
		b := newBudget(100, &waits)
		h1, h2 := b.newHold(), b.newHold()
		if err := h1.resize(t.Context(), 60); err != nil || waits.Load() != 0 {
			t.Fatalf("first hold: %v, %d waits", err, waits.Load())
		}
		done := resizeAsync(t.Context(), h2, 60)
		if !pending(done) || waits.Load() != 1 || b.inUse() != 60 {
			t.Fatalf("second hold did not wait: %d waits, %d in use", waits.Load(), b.inUse())
		}
		h1.resize(t.Context(), 50) // 50 free: not enough
		if !pending(done) {
			t.Fatal("second hold took 60 of 50 free bytes")
		}
		h1.resize(t.Context(), 40)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if b.inUse() != 100 || h1.n != 40 || h2.n != 60 {
			t.Fatalf("%d in use (holds %d and %d), want 100 (40 and 60)", b.inUse(), h1.n, h2.n)
		}
		h1.release()
		h2.release()
		if b.inUse() != 0 || waits.Load() != 1 {
			t.Fatalf("after release: %d in use, %d waits; want 0 and 1", b.inUse(), waits.Load())
		}
	})
}

// Two holds of half the budget each wanting more: each gives back what
// it holds while it waits, so both are served in turn.
func TestBudgetHoldGivesBackWhileWaiting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var waits atomic.Int64
		b := newBudget(100, &waits)
		h1, h2 := b.newHold(), b.newHold()
		h1.resize(t.Context(), 50)
		h2.resize(t.Context(), 50)
		grow1 := resizeAsync(t.Context(), h1, 80)
		if !pending(grow1) || b.inUse() != 50 {
			t.Fatalf("h1 waiting: %d in use, want h2's 50", b.inUse())
		}
		grow2 := resizeAsync(t.Context(), h2, 80)
		if err := <-grow1; err != nil {
			t.Fatal(err)
		}
		if !pending(grow2) || b.inUse() != 80 {
			t.Fatalf("h1 grown: %d in use, want 80", b.inUse())
		}
		h1.release()
		if err := <-grow2; err != nil {
			t.Fatal(err)
		}
		h2.release()
		if b.inUse() != 0 || waits.Load() != 2 {
			t.Fatalf("%d in use, %d waits; want 0 and 2", b.inUse(), waits.Load())
		}
	})
}

func TestBudgetHoldLargerThanBudget(t *testing.T) {
	var waits atomic.Int64
	b := newBudget(100, &waits)
	h := b.newHold()
	if err := h.resize(t.Context(), 1000); err != nil || h.n != 100 || b.inUse() != 100 {
		t.Fatalf("resize beyond the budget: %v, holds %d, %d in use; want all 100", err, h.n, b.inUse())
	}
	h.release()
	var none *hold
	if err := none.resize(t.Context(), 1<<40); err != nil {
		t.Fatalf("nil hold: %v", err)
	}
	none.release()
}

func TestBudgetHoldWaitEndsWithContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var waits atomic.Int64
		b := newBudget(100, &waits)
		h1, h2 := b.newHold(), b.newHold()
		h1.resize(t.Context(), 90)
		h2.resize(t.Context(), 10)
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		err := h2.resize(ctx, 20)
		if !errors.Is(err, transfer.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("resize past its context: %v, want ErrUnavailable and DeadlineExceeded", err)
		}
		if h2.n != 0 || b.inUse() != 90 || waits.Load() != 1 {
			t.Fatalf("after the wait: hold of %d, %d in use, %d waits; want 0, 90, 1", h2.n, b.inUse(), waits.Load())
		}
		h1.release()
	})
}
