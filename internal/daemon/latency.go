package daemon

import (
	"time"

	"github.com/kwikfs/kwikfs/transfer"
)

// ReadLatency is how long received data frames of the current session
// waited in kwik's reassembly before a Read returned them (see
// kwik.LatencyStats): over all frames, and over the frames readable on
// arrival, whose wait is what aggregation itself adds. Quantiles are bucket
// upper bounds, at most 5% above the true value.
type ReadLatency struct {
	Frames      uint64  `json:"frames"`
	P50Millis   float64 `json:"p50_ms"`
	P99Millis   float64 `json:"p99_ms"`
	MaxMillis   float64 `json:"max_ms"`
	ReadyFrames uint64  `json:"ready_frames"`
	ReadyP50    float64 `json:"ready_p50_ms"`
	ReadyP99    float64 `json:"ready_p99_ms"`
}

// readLatency returns the client's session's read latency, or nil without
// a live session.
func readLatency(c *transfer.Client) *ReadLatency {
	ss, ok := c.SessionStats()
	if !ok {
		return nil
	}
	l := ss.ReadLatency
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	return &ReadLatency{
		Frames: l.Frames, P50Millis: ms(l.P50), P99Millis: ms(l.P99), MaxMillis: ms(l.Max),
		ReadyFrames: l.ReadyFrames, ReadyP50: ms(l.ReadyP50), ReadyP99: ms(l.ReadyP99),
	}
}
