package server

import (
	"context"
	"fmt"
	"sync/atomic"

	"golang.org/x/sync/semaphore"

	"github.com/kwikfs/kwikfs/transfer"
)

// budget bounds the bytes that replies hold while they are built or sent,
// across every session of a Primary (see PrimaryOptions.ReplyBudget). It
// is a weighted semaphore: requests take their share in the order they
// ask for it, so a large share waiting holds back smaller ones behind it
// and none starves. Its methods are safe for concurrent use; a nil
// *budget bounds nothing.
type budget struct {
	sem  *semaphore.Weighted
	size int64
	held atomic.Int64 // bytes held now, over every hold
	// waits counts the holds that could not take their share at once.
	waits *atomic.Int64
}

func newBudget(size int64, waits *atomic.Int64) *budget {
	return &budget{sem: semaphore.NewWeighted(size), size: size, waits: waits}
}

// inUse returns the bytes held now.
func (b *budget) inUse() int64 {
	if b == nil {
		return 0
	}
	return b.held.Load()
}

// hold is one request's share of a budget. It belongs to the goroutine
// serving the request; release must be called when the request is done
// (deferred right after newHold). A nil *hold, and a hold of a nil budget,
// bound nothing.
type hold struct {
	b *budget
	n int64 // bytes held
}

// newHold returns an empty hold of b.
func (b *budget) newHold() *hold { return &hold{b: b} }

// resize makes h hold n bytes, or the whole budget when n exceeds it (such
// a request is then served alone). Shrinking never waits. Growing takes
// the difference at once when it is free and no one waits before h;
// otherwise h gives back all it holds and waits for n in line, so that no
// request holds a part of the budget while it waits for more (two
// requests each holding half and each waiting for the rest would wait
// forever). The wait ends with ctx: the error then wraps both
// transfer.ErrUnavailable and ctx.Err(), and h holds nothing.
func (h *hold) resize(ctx context.Context, n int64) error {
	if h == nil || h.b == nil {
		return nil
	}
	b := h.b
	n = min(max(n, 0), b.size)
	switch {
	case n == h.n:
		return nil
	case n < h.n:
		h.give(h.n - n)
		return nil
	case b.sem.TryAcquire(n - h.n):
		h.take(n - h.n)
		return nil
	}
	b.waits.Add(1)
	h.give(h.n)
	if err := b.sem.Acquire(ctx, n); err != nil {
		return fmt.Errorf("wait for %d bytes of the reply budget: %w (%w)", n, transfer.ErrUnavailable, err)
	}
	h.take(n)
	return nil
}

// release gives back all h holds.
func (h *hold) release() {
	if h == nil || h.b == nil {
		return
	}
	h.give(h.n)
}

func (h *hold) take(n int64) {
	h.n += n
	h.b.held.Add(n)
}

func (h *hold) give(n int64) {
	if n == 0 {
		return
	}
	h.n -= n
	h.b.held.Add(-n)
	h.b.sem.Release(n)
}
