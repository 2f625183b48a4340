package linkemu

import (
	"errors"
	"math"
	"slices"
	"testing"
	"time"
)

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"zero", Config{}, true},
		{"full", Config{RateBitsPerSec: 1e8, Delay: time.Millisecond, Jitter: time.Millisecond, Loss: 1, QueueBytes: 1, Seed: 3}, true},
		{"negative rate", Config{RateBitsPerSec: -1}, false},
		{"negative delay", Config{Delay: -1}, false},
		{"negative jitter", Config{Jitter: -1}, false},
		{"loss above one", Config{Loss: 1.01}, false},
		{"negative loss", Config{Loss: -0.1}, false},
		{"NaN loss", Config{Loss: math.NaN()}, false},
		{"negative queue", Config{QueueBytes: -1}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.ok && err != nil {
				t.Fatalf("Validate() = %v, want nil", err)
			}
			if !tc.ok && !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("Validate() = %v, want ErrInvalidConfig", err)
			}
		})
	}
}

func TestConfigQueueLimit(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want int
	}{
		{"unlimited rate has no queue", Config{QueueBytes: 5000}, 0},
		{"explicit", Config{RateBitsPerSec: 1e8, Delay: 5 * time.Millisecond, QueueBytes: 5000}, 5000},
		{"one BDP", Config{RateBitsPerSec: 1e8, Delay: 5 * time.Millisecond}, 125000},
		{"BDP of 1 Gbit/s, 50 ms RTT", Config{RateBitsPerSec: 1e9, Delay: 25 * time.Millisecond}, 6250000},
		{"small BDP gets the minimum", Config{RateBitsPerSec: 1e6, Delay: 5 * time.Millisecond}, MinQueueBytes},
		{"no delay gets the minimum", Config{RateBitsPerSec: 1e8}, MinQueueBytes},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.cfg.QueueLimit(); got != tc.want {
				t.Fatalf("QueueLimit() = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestSerialization(t *testing.T) {
	tests := []struct {
		n    int
		rate int64
		want time.Duration
	}{
		{1250, 100e6, 100 * time.Microsecond},
		{1252, 100e6, 100160 * time.Nanosecond},
		{1, 8, time.Second},
		{1, 3, 2666666666 * time.Nanosecond}, // 8/3 s, truncated
		{1500, 1e6, 12 * time.Millisecond},
		{1500, 40e9, 300 * time.Nanosecond}, // rem*1e9 would overflow int64
		{65507, math.MaxInt64, 0},
	}
	for _, tc := range tests {
		if got := serialization(tc.n, tc.rate); got != tc.want {
			t.Errorf("serialization(%d, %d) = %v, want %v", tc.n, tc.rate, got, tc.want)
		}
	}
}

// TestLinkSerializesAtRate checks the bottleneck: a burst leaves one
// datagram every size*8/rate, then propagates for Delay.
func TestLinkSerializesAtRate(t *testing.T) {
	l := newLink(Config{RateBitsPerSec: 100e6, Delay: 5 * time.Millisecond}, 0)
	for i := range 10 {
		due, v := l.admit(t0, 1250)
		want := t0.Add(time.Duration(i+1)*100*time.Microsecond + 5*time.Millisecond)
		if v != pass || !due.Equal(want) {
			t.Fatalf("datagram %d: admit = %v, %v; want %v, pass", i, due.Sub(t0), v, want.Sub(t0))
		}
	}
	// Arriving while the bottleneck is busy: queued behind the burst.
	due, _ := l.admit(t0.Add(500*time.Microsecond), 1250)
	if want := t0.Add(1100*time.Microsecond + 5*time.Millisecond); !due.Equal(want) {
		t.Fatalf("busy arrival due at %v, want %v", due.Sub(t0), want.Sub(t0))
	}
	// Arriving after the bottleneck went idle: serialised from its arrival.
	at := t0.Add(10 * time.Millisecond)
	due, _ = l.admit(at, 1250)
	if want := at.Add(100*time.Microsecond + 5*time.Millisecond); !due.Equal(want) {
		t.Fatalf("idle arrival due at %v, want %v", due.Sub(t0), want.Sub(t0))
	}
}

// TestLinkQueueOverflow checks drop-tail: the queue holds QueueBytes of
// datagrams not yet serialised, the one being serialised included.
func TestLinkQueueOverflow(t *testing.T) {
	// 1000 bytes at 8 Mbit/s: 1 ms each.
	l := newLink(Config{RateBitsPerSec: 8e6, QueueBytes: 4000}, 0)
	var verdicts []verdict
	for range 6 {
		_, v := l.admit(t0, 1000)
		verdicts = append(verdicts, v)
	}
	want := []verdict{pass, pass, pass, pass, overflow, overflow}
	if !slices.Equal(verdicts, want) {
		t.Fatalf("burst verdicts %v, want %v", verdicts, want)
	}
	// Just before the first departure the queue is still full...
	if _, v := l.admit(t0.Add(time.Millisecond-1), 1000); v != overflow {
		t.Fatalf("at 1ms-1ns: %v, want overflow", v)
	}
	// ...at it, one datagram's room is free, and only one.
	if _, v := l.admit(t0.Add(time.Millisecond), 1000); v != pass {
		t.Fatalf("at 1ms: %v, want pass", v)
	}
	if _, v := l.admit(t0.Add(time.Millisecond), 1); v != overflow {
		t.Fatalf("at 1ms, one more byte: %v, want overflow", v)
	}
	// A datagram larger than the whole queue never fits.
	if _, v := l.admit(t0.Add(time.Hour), 4001); v != overflow {
		t.Fatalf("oversized datagram: %v, want overflow", v)
	}
	if _, v := l.admit(t0.Add(time.Hour), 4000); v != pass {
		t.Fatalf("datagram of exactly the queue size: %v, want pass", v)
	}
}

func TestLinkUnlimitedRateHasNoQueue(t *testing.T) {
	l := newLink(Config{Delay: time.Millisecond, QueueBytes: 1}, 0)
	for i := range 1000 {
		due, v := l.admit(t0, 65507)
		if v != pass || !due.Equal(t0.Add(time.Millisecond)) {
			t.Fatalf("datagram %d: %v at %v, want pass at 1ms", i, v, due.Sub(t0))
		}
	}
}

func lossPattern(cfg Config, stream uint64, n int) []int {
	l := newLink(cfg, stream)
	var dropped []int
	for i := range n {
		if _, v := l.admit(t0.Add(time.Duration(i)*time.Millisecond), 100); v == lost {
			dropped = append(dropped, i)
		}
	}
	return dropped
}

func TestLinkLossIsSeededAndCalibrated(t *testing.T) {
	const n = 10000
	a := lossPattern(Config{Loss: 0.3, Seed: 1}, 0, n)
	if b := lossPattern(Config{Loss: 0.3, Seed: 1}, 0, n); !slices.Equal(a, b) {
		t.Fatal("same seed, different loss patterns")
	}
	if b := lossPattern(Config{Loss: 0.3, Seed: 2}, 0, n); slices.Equal(a, b) {
		t.Fatal("different seeds, same loss pattern")
	}
	if b := lossPattern(Config{Loss: 0.3, Seed: 1}, 1, n); slices.Equal(a, b) {
		t.Fatal("the two directions share a loss pattern")
	}
	// Binomial(10000, 0.3): sd 46, so ±300 is more than 6 sd.
	if len(a) < 2700 || len(a) > 3300 {
		t.Fatalf("%d of %d lost at Loss 0.3", len(a), n)
	}
	if got := len(lossPattern(Config{Loss: 1}, 0, n)); got != n {
		t.Fatalf("Loss 1: %d of %d lost", got, n)
	}
	if got := len(lossPattern(Config{}, 0, n)); got != 0 {
		t.Fatalf("Loss 0: %d of %d lost", got, n)
	}
}

func TestLinkJitter(t *testing.T) {
	const delay, jitter = 30 * time.Millisecond, 10 * time.Millisecond
	cfg := Config{Delay: delay, Jitter: jitter, Seed: 9}

	// Sparse traffic (100 ms apart): every delay is drawn in [D-J, D+J].
	l := newLink(cfg, 0)
	var delays []time.Duration
	for i := range 200 {
		at := t0.Add(time.Duration(i) * 100 * time.Millisecond)
		due, _ := l.admit(at, 100)
		d := due.Sub(at)
		if d < delay-jitter || d > delay+jitter {
			t.Fatalf("datagram %d: delay %v outside %v±%v", i, d, delay, jitter)
		}
		delays = append(delays, d)
	}
	lo, hi := slices.Min(delays), slices.Max(delays)
	if hi-lo < jitter { // 200 uniform draws over 20 ms span far more than 10 ms
		t.Fatalf("delays span only [%v, %v]", lo, hi)
	}

	// Dense traffic (10 µs apart): never reordered, never below D-J, never
	// later than the latest D+J so far.
	l = newLink(cfg, 0)
	var prev time.Time
	for i := range 5000 {
		at := t0.Add(time.Duration(i) * 10 * time.Microsecond)
		due, _ := l.admit(at, 100)
		if due.Before(prev) {
			t.Fatalf("datagram %d due at %v before its predecessor at %v", i, due.Sub(t0), prev.Sub(t0))
		}
		if d := due.Sub(at); d < delay-jitter || d > delay+jitter {
			t.Fatalf("datagram %d: delay %v outside %v±%v", i, d, delay, jitter)
		}
		prev = due
	}

	// Jitter larger than the delay: the delay is clamped at zero.
	l = newLink(Config{Delay: time.Millisecond, Jitter: time.Second}, 0)
	for i := range 100 {
		at := t0.Add(time.Duration(i) * 10 * time.Second)
		if due, _ := l.admit(at, 100); due.Before(at) {
			t.Fatalf("datagram %d delivered %v before it arrived", i, at.Sub(due))
		}
	}
}

func TestLinkSetConfigKeepsOrder(t *testing.T) {
	l := newLink(Config{Delay: time.Second}, 0)
	first, _ := l.admit(t0, 100)
	l.setConfig(Config{Delay: time.Millisecond})
	second, _ := l.admit(t0.Add(time.Millisecond), 100)
	if second.Before(first) {
		t.Fatalf("lowering the delay reordered: %v then %v", first.Sub(t0), second.Sub(t0))
	}
	// After reset (a cut emptied the link) the new delay applies at once.
	l.reset()
	at := t0.Add(2 * time.Millisecond)
	if due, _ := l.admit(at, 100); !due.Equal(at.Add(time.Millisecond)) {
		t.Fatalf("after reset due at +%v, want +1ms", due.Sub(at))
	}
}

func TestLinkSetConfigReseedsOnlyOnNewSeed(t *testing.T) {
	cfg := Config{Loss: 0.5, Seed: 4}
	whole := lossPattern(cfg, 0, 200)

	// Changing another field midway continues the same random stream.
	l := newLink(cfg, 0)
	var got []int
	for i := range 200 {
		if i == 100 {
			l.setConfig(Config{Loss: 0.5, Seed: 4, Delay: time.Millisecond})
		}
		if _, v := l.admit(t0.Add(time.Duration(i)*time.Second), 100); v == lost {
			got = append(got, i)
		}
	}
	if !slices.Equal(got, whole) {
		t.Fatal("SetConfig with the same seed changed the loss pattern")
	}
}

func TestFIFO(t *testing.T) {
	var q fifo[int]
	next, want := 0, 0
	for round := range 50 {
		for range round % 7 {
			q.push(next)
			next++
		}
		for range round % 5 {
			if q.len() == 0 {
				break
			}
			if got := q.pop(); got != want {
				t.Fatalf("pop = %d, want %d", got, want)
			}
			want++
		}
		if q.len() != next-want {
			t.Fatalf("len = %d, want %d", q.len(), next-want)
		}
	}
	var drained []int
	q.drain(func(v int) { drained = append(drained, v) })
	for i, v := range drained {
		if v != want+i {
			t.Fatalf("drain[%d] = %d, want %d", i, v, want+i)
		}
	}
	if q.len() != 0 {
		t.Fatalf("len after drain = %d", q.len())
	}
}
