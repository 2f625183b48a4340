package backoff

import (
	"context"
	"errors"
	"math"
	"slices"
	"testing"
	"testing/synctest"
	"time"
)

// next returns the first n delays of b.
func next(b *Backoff, n int) []time.Duration {
	var ds []time.Duration
	for range n {
		ds = append(ds, b.Next())
	}
	return ds
}

func TestNextDoublesToMaxWithoutJitter(t *testing.T) {
	const ms = time.Millisecond
	for _, tc := range []struct {
		name string
		b    Backoff
		want []time.Duration
	}{
		{"doubles then caps", Backoff{Initial: 10 * ms, Max: 100 * ms},
			[]time.Duration{10 * ms, 20 * ms, 40 * ms, 80 * ms, 100 * ms, 100 * ms, 100 * ms}},
		{"max a power of two", Backoff{Initial: 50 * ms, Max: 400 * ms},
			[]time.Duration{50 * ms, 100 * ms, 200 * ms, 400 * ms, 400 * ms}},
		{"max equal to initial", Backoff{Initial: 30 * ms, Max: 30 * ms},
			[]time.Duration{30 * ms, 30 * ms, 30 * ms}},
		{"max below initial", Backoff{Initial: 30 * ms, Max: 10 * ms},
			[]time.Duration{30 * ms, 30 * ms, 30 * ms}},
		{"max zero", Backoff{Initial: 30 * ms},
			[]time.Duration{30 * ms, 30 * ms}},
		{"zero value", Backoff{}, []time.Duration{0, 0, 0}},
		{"negative initial", Backoff{Initial: -ms, Max: ms}, []time.Duration{0, 0}},
		{"no overflow", Backoff{Initial: 1 << 61, Max: math.MaxInt64},
			[]time.Duration{1 << 61, 1 << 62, math.MaxInt64, math.MaxInt64}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.b
			if got := next(&b, len(tc.want)); !slices.Equal(got, tc.want) {
				t.Errorf("delays %v, want %v", got, tc.want)
			}
		})
	}
}

func TestNextJitterWithinRange(t *testing.T) {
	const ms = time.Millisecond
	unjittered := []time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, 1000 * ms, 1000 * ms}
	for _, tc := range []struct {
		name     string
		jitter   float64
		fraction float64 // the fraction that may be taken off
	}{
		{"default", DefaultJitter, 0.2},
		{"half", 0.5, 0.5},
		{"full", 1, 1},
		{"above one clamped", 3, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const draws = 1000
			seen := make([]map[time.Duration]bool, len(unjittered))
			for i := range seen {
				seen[i] = make(map[time.Duration]bool)
			}
			for range draws {
				b := Backoff{Initial: 100 * ms, Max: 1000 * ms, Jitter: tc.jitter}
				for i, d := range next(&b, len(unjittered)) {
					u := unjittered[i]
					lo := u - time.Duration(float64(u)*tc.fraction)
					if d < lo || d > u {
						t.Fatalf("delay %d is %v, want within [%v, %v]", i, d, lo, u)
					}
					seen[i][d] = true
				}
			}
			for i, s := range seen {
				if len(s) < 2 {
					t.Errorf("delay %d took %d distinct values in %d draws, want them jittered", i, len(s), draws)
				}
			}
		})
	}
}

func TestNextNegativeJitterIsExact(t *testing.T) {
	b := Backoff{Initial: 10 * time.Millisecond, Max: 40 * time.Millisecond, Jitter: -0.5}
	want := []time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond, 40 * time.Millisecond}
	if got := next(&b, len(want)); !slices.Equal(got, want) {
		t.Errorf("delays %v, want %v", got, want)
	}
}

func TestResetStartsAgain(t *testing.T) {
	const ms = time.Millisecond
	b := Backoff{Initial: 10 * ms, Max: 100 * ms}
	if got, want := next(&b, 6), []time.Duration{10 * ms, 20 * ms, 40 * ms, 80 * ms, 100 * ms, 100 * ms}; !slices.Equal(got, want) {
		t.Fatalf("delays %v, want %v", got, want)
	}
	b.Reset()
	if got, want := next(&b, 3), []time.Duration{10 * ms, 20 * ms, 40 * ms}; !slices.Equal(got, want) {
		t.Errorf("delays after Reset %v, want %v", got, want)
	}
}

func TestSleepWaitsFullDelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		if err := Sleep(context.Background(), 3*time.Second); err != nil {
			t.Fatalf("Sleep: %v, want nil", err)
		}
		if got := time.Since(start); got != 3*time.Second {
			t.Errorf("Sleep took %v, want 3s", got)
		}
	})
}

func TestSleepReturnsAtOnceWhenDone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		errStop := errors.New("stop")
		ctx, cancel := context.WithCancelCause(context.Background())
		cancel(errStop)
		start := time.Now()
		for _, d := range []time.Duration{time.Hour, 0, -time.Second} {
			if err := Sleep(ctx, d); err != errStop {
				t.Errorf("Sleep(%v) on a done ctx: %v, want the cause %v", d, err, errStop)
			}
		}
		if got := time.Since(start); got != 0 {
			t.Errorf("Sleep on a done ctx took %v, want 0", got)
		}
	})
}

func TestSleepEndsWithCtx(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		errStop := errors.New("stop")
		ctx, cancel := context.WithCancelCause(context.Background())
		time.AfterFunc(time.Second, func() { cancel(errStop) })
		start := time.Now()
		if err := Sleep(ctx, time.Hour); err != errStop {
			t.Errorf("Sleep: %v, want the cause %v", err, errStop)
		}
		if got := time.Since(start); got != time.Second {
			t.Errorf("Sleep took %v, want 1s (when ctx ended)", got)
		}
	})
}

func TestSleepZeroReturnsAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		if err := Sleep(context.Background(), 0); err != nil {
			t.Errorf("Sleep(0): %v, want nil", err)
		}
		if got := time.Since(start); got != 0 {
			t.Errorf("Sleep(0) took %v, want 0", got)
		}
	})
}
