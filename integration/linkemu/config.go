package linkemu

import (
	"errors"
	"fmt"
	"math/bits"
	"time"
)

// ErrInvalidConfig is wrapped by the error New and Config.Validate return
// for a Config with a negative or out-of-range field.
var ErrInvalidConfig = errors.New("linkemu: invalid config")

// MinQueueBytes is the smallest default queue limit (QueueBytes 0).
const MinQueueBytes = 64 << 10

// Config describes one emulated link. The relay applies it to each direction
// independently: a rate of 100 Mbit/s means 100 Mbit/s from client to server
// and another 100 Mbit/s from server to client. The zero Config is a perfect
// link: no rate limit, no delay, no loss.
type Config struct {
	// RateBitsPerSec is the bottleneck rate of each direction, in bits of
	// UDP payload per second. 0 means unlimited (no bottleneck queue).
	RateBitsPerSec int64
	// Delay is the one-way propagation delay of each direction; the
	// round-trip time through an otherwise idle relay is 2*Delay.
	Delay time.Duration
	// Jitter adds a uniform random offset in [-Jitter, +Jitter] to Delay for
	// each datagram, without reordering (see the package documentation).
	Jitter time.Duration
	// Loss is the probability in [0, 1] that a datagram is dropped, drawn
	// independently for each datagram in each direction.
	Loss float64
	// QueueBytes is the drop-tail limit of the bottleneck queue in bytes of
	// UDP payload. 0 means the default: one bandwidth-delay product
	// (RateBitsPerSec * 2*Delay / 8) but at least MinQueueBytes. A datagram
	// larger than the limit is always dropped. Ignored when RateBitsPerSec
	// is 0.
	QueueBytes int
	// Seed seeds the loss and jitter generators. Every value, 0 included,
	// is a fixed seed: two relays with the same Seed make the same random
	// decisions for the same sequence of datagrams.
	Seed uint64
}

// Validate reports whether c is usable. The error wraps ErrInvalidConfig.
func (c Config) Validate() error {
	switch {
	case c.RateBitsPerSec < 0:
		return fmt.Errorf("%w: negative rate %d", ErrInvalidConfig, c.RateBitsPerSec)
	case c.Delay < 0:
		return fmt.Errorf("%w: negative delay %v", ErrInvalidConfig, c.Delay)
	case c.Jitter < 0:
		return fmt.Errorf("%w: negative jitter %v", ErrInvalidConfig, c.Jitter)
	case !(c.Loss >= 0 && c.Loss <= 1): // also rejects NaN
		return fmt.Errorf("%w: loss %v outside [0, 1]", ErrInvalidConfig, c.Loss)
	case c.QueueBytes < 0:
		return fmt.Errorf("%w: negative queue size %d", ErrInvalidConfig, c.QueueBytes)
	}
	return nil
}

// QueueLimit returns the effective bottleneck queue limit in bytes: QueueBytes
// if set, else the default described at QueueBytes. It returns 0 when the
// rate is unlimited (there is no queue).
func (c Config) QueueLimit() int {
	if c.RateBitsPerSec == 0 {
		return 0
	}
	if c.QueueBytes > 0 {
		return c.QueueBytes
	}
	// rate [bit/s] * RTT [ns] / 8 / 1e9, computed in float64: the product
	// overflows int64 for fast links with long delays.
	bdp := float64(c.RateBitsPerSec) * (2 * c.Delay).Seconds() / 8
	if bdp < MinQueueBytes {
		return MinQueueBytes
	}
	if bdp > 1<<40 {
		return 1 << 40
	}
	return int(bdp)
}

// serialization returns how long n bytes occupy a link of rate bits/s.
// rate must be positive.
func serialization(n int, rate int64) time.Duration {
	b := int64(n) * 8
	sec := b / rate
	rem := b % rate
	// rem < rate, so rem*1e9 / rate fits; the 128-bit product avoids
	// overflow for rates above 9.2 Gbit/s.
	hi, lo := bits.Mul64(uint64(rem), uint64(time.Second))
	frac, _ := bits.Div64(hi, lo, uint64(rate))
	return time.Duration(sec)*time.Second + time.Duration(frac)
}
