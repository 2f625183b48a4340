package daemon

import (
	"time"

	"github.com/kwikfs/kwikfs/internal/control"
	"github.com/kwikfs/kwikfs/transfer"
)

// readLatency returns the read latency of the client's session (see
// control.ReadLatency), or nil without a live session.
func readLatency(c *transfer.Client) *control.ReadLatency {
	ss, ok := c.SessionStats()
	if !ok {
		return nil
	}
	l := ss.ReadLatency
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	return &control.ReadLatency{
		Frames: l.Frames, P50Millis: ms(l.P50), P99Millis: ms(l.P99), MaxMillis: ms(l.Max),
		ReadyFrames: l.ReadyFrames, ReadyP50: ms(l.ReadyP50), ReadyP99: ms(l.ReadyP99),
	}
}
