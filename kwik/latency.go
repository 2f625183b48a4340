package kwik

import (
	"math"
	"slices"
	"sync/atomic"
	"time"
)

// LatencyStats describes how long received data frames waited in the
// reassembly buffers of a session's streams: from the frame's arrival (kwik
// has parsed it off a path) to the Read that returned its last byte. Frames
// that Read takes straight off a single path (the direct path, no
// reassembly) are not counted: they wait for nothing.
//
// A frame is "ready" when it was readable on arrival: every byte before it
// had been read. Its wait is what aggregation itself adds (locking, waking
// the reader). The other frames also waited for earlier bytes still on their
// way over another path, or for the application to read: that wait comes
// from the paths' relative delays, not from kwik.
//
// Quantiles are upper bounds of logarithmic buckets 5% wide.
type LatencyStats struct {
	Frames      uint64        // frames counted
	P50, P99    time.Duration // over all frames
	Max         time.Duration // largest wait
	ReadyFrames uint64        // frames readable on arrival
	ReadyP50    time.Duration
	ReadyP99    time.Duration
}

// latencyBuckets are the upper bounds base^(i+1) µs of the histogram's
// buckets; the last bucket takes everything longer.
const (
	latencyBase    = 1.05
	latencyBuckets = 440 // up to about 2e9 µs
)

// latencyHist is a lock-free histogram of waits.
type latencyHist struct {
	counts [latencyBuckets]atomic.Uint64
	total  atomic.Uint64
}

func (h *latencyHist) observe(d time.Duration) {
	i := 0
	if us := float64(d) / float64(time.Microsecond); us > 1 {
		i = min(int(math.Log(us)/math.Log(latencyBase)), latencyBuckets-1)
	}
	h.counts[i].Add(1)
	h.total.Add(1)
}

// quantile returns the upper bound of the bucket holding quantile q, or 0
// with no observations.
func (h *latencyHist) quantile(q float64) time.Duration {
	total := h.total.Load()
	if total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(total)))
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= max(rank, 1) {
			return time.Duration(math.Pow(latencyBase, float64(i+1)) * float64(time.Microsecond))
		}
	}
	return time.Duration(math.Pow(latencyBase, latencyBuckets) * float64(time.Microsecond))
}

// readLatency is a session's record of reassembly waits.
type readLatency struct {
	all, ready latencyHist
	max        atomic.Int64 // nanoseconds
}

func (rl *readLatency) observe(d time.Duration, ready bool) {
	rl.all.observe(d)
	if ready {
		rl.ready.observe(d)
	}
	for {
		m := rl.max.Load()
		if int64(d) <= m || rl.max.CompareAndSwap(m, int64(d)) {
			return
		}
	}
}

func (rl *readLatency) stats() LatencyStats {
	return LatencyStats{
		Frames:      rl.all.total.Load(),
		P50:         rl.all.quantile(0.50),
		P99:         rl.all.quantile(0.99),
		Max:         time.Duration(rl.max.Load()),
		ReadyFrames: rl.ready.total.Load(),
		ReadyP50:    rl.ready.quantile(0.50),
		ReadyP99:    rl.ready.quantile(0.99),
	}
}

// arrival is a frame waiting in a stream's reassembly buffer: it is
// counted once the read offset passes end.
type arrival struct {
	end   uint64
	at    time.Time
	ready bool
}

// maxArrivals bounds the frames a stream tracks; beyond it, new frames go
// uncounted until Read catches up.
const maxArrivals = 4096

// noteArrivalLocked records a frame of new bytes ending at end that
// arrived at at; ready if it was readable on arrival. st.mu is held.
func (st *Stream) noteArrivalLocked(end uint64, at time.Time, ready bool) {
	if len(st.arrivals) >= maxArrivals {
		return
	}
	a := arrival{end: end, at: at, ready: ready}
	// Frames mostly arrive in order: appending is the common case.
	if n := len(st.arrivals); n == 0 || st.arrivals[n-1].end <= end {
		st.arrivals = append(st.arrivals, a)
		return
	}
	i, _ := slices.BinarySearchFunc(st.arrivals, end, func(a arrival, end uint64) int {
		switch {
		case a.end < end:
			return -1
		case a.end > end:
			return 1
		}
		return 0
	})
	st.arrivals = slices.Insert(st.arrivals, i, a)
}

// countReadLocked counts the tracked frames that Read has now returned
// entirely (the read offset is at or past their end). st.mu is held.
func (st *Stream) countReadLocked(now time.Time) {
	off := st.recv.ReadOffset()
	n := 0
	for n < len(st.arrivals) && st.arrivals[n].end <= off {
		a := st.arrivals[n]
		st.s.readLat.observe(now.Sub(a.at), a.ready)
		n++
	}
	if n > 0 {
		st.arrivals = st.arrivals[:copy(st.arrivals, st.arrivals[n:])]
	}
}
