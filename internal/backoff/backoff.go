// Package backoff spaces the attempts of a retry loop: an exponential
// back-off with random jitter, and a wait for it that ends early with its
// context.
//
// # Delays
//
// The un-jittered delays double from Initial up to Max: Initial,
// 2*Initial, 4*Initial, ..., Max, Max, ... Each delay returned is drawn
// uniformly from [d - d*Jitter, d], d being the un-jittered one: jitter
// only shortens a wait, so Max stays the longest. Jitter keeps the many
// clients that lost the same server at the same moment from retrying it in
// lockstep; Jitter 0 gives the exact delays, for tests that need them.
//
// # Concurrency
//
// A Backoff holds the state of one retry loop and is not safe for
// concurrent use: each loop uses its own (a Backoff is a value; copy the
// configuration, not a Backoff in use).
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// DefaultJitter is the jitter retry loops use unless they need exact
// delays: each wait is 80 to 100% of the un-jittered one.
const DefaultJitter = 0.2

// Backoff yields the delays between the attempts of one retry loop. Set
// its fields before the first Next and do not change them afterwards. The
// zero value yields zero delays.
type Backoff struct {
	// Initial is the first un-jittered delay. Zero or less gives zero
	// delays.
	Initial time.Duration
	// Max is the longest un-jittered delay; a Max below Initial counts as
	// Initial (every delay is then Initial).
	Max time.Duration
	// Jitter is the fraction of each un-jittered delay d that may be taken
	// off it at random: the delay is drawn uniformly from
	// [d - d*Jitter, d]. 0 (the zero value) gives exact delays, 1 "full
	// jitter" (anything from 0 to d); values outside [0, 1] are clamped
	// to it. Retry loops use DefaultJitter.
	Jitter float64

	// next is the un-jittered delay the next call of Next starts from; 0
	// before the first call and after Reset.
	next time.Duration
}

// Next returns the delay to wait before the next attempt and advances the
// back-off: the n-th call since the start (or the last Reset) returns
// min(Initial * 2^(n-1), max(Max, Initial)), less its jitter.
func (b *Backoff) Next() time.Duration {
	if b.Initial <= 0 {
		return 0
	}
	limit := max(b.Max, b.Initial)
	d := b.next
	if d <= 0 {
		d = b.Initial
	}
	d = min(d, limit)
	if d > limit/2 {
		b.next = limit // also keeps 2*d from overflowing
	} else {
		b.next = 2 * d
	}
	return jitter(d, b.Jitter)
}

// Reset starts the back-off again: the next call of Next returns Initial
// (less its jitter). A loop calls it after an attempt that made progress.
func (b *Backoff) Reset() {
	b.next = 0
}

// jitter returns a delay drawn uniformly from [d - d*j, d], j clamped to
// [0, 1].
func jitter(d time.Duration, j float64) time.Duration {
	j = min(max(j, 0), 1)
	span := int64(float64(d) * j)
	if span <= 0 {
		return d
	}
	return d - time.Duration(rand.Int64N(span+1))
}

// Sleep waits for d, or until ctx is done: it returns nil after the full
// wait and context.Cause(ctx) as soon as ctx is done (at once if it is done
// already, even when d is zero or less). It leaves no timer behind.
func Sleep(ctx context.Context, d time.Duration) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
