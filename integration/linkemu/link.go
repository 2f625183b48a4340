package linkemu

import (
	"math/rand/v2"
	"time"
)

// verdict is what the emulated link decides for one datagram.
type verdict int

const (
	pass     verdict = iota // queued for delivery
	lost                    // dropped by random loss
	overflow                // dropped by the full bottleneck queue
	cut                     // dropped because the relay is cut
)

func (v verdict) String() string {
	switch v {
	case pass:
		return "pass"
	case lost:
		return "lost"
	case overflow:
		return "overflow"
	case cut:
		return "cut"
	}
	return "verdict(?)"
}

// Seeds of the second PCG word, so that loss and jitter (and the two
// directions) draw from independent streams of the same Config.Seed.
const (
	lossStream   = 0x6c6f7373 // "loss"
	jitterStream = 0x6a697474 // "jitt"
)

// departure is one datagram still in the bottleneck (not fully serialised).
type departure struct {
	at   time.Time
	size int
}

// link is the shaping state of one direction: random loss, the bottleneck
// queue and the propagation delay. It is a pure function of the arrival times
// and sizes given to admit, so tests drive it with synthetic clocks. It is
// not safe for concurrent use; direction.mu guards it.
type link struct {
	cfg        Config
	queueLimit int
	stream     uint64 // distinguishes the directions' random streams
	loss       *rand.Rand
	jitter     *rand.Rand

	lastDeparture time.Time // when the bottleneck finishes its last datagram
	lastDue       time.Time // delivery time of the last admitted datagram
	backlog       fifo[departure]
	backlogBytes  int // sum of backlog sizes
}

func newLink(cfg Config, stream uint64) *link {
	l := &link{stream: stream}
	l.setConfig(cfg)
	return l
}

// setConfig applies cfg to datagrams admitted from now on. Datagrams already
// admitted keep their schedule. The random streams are reseeded only when the
// seed changes (or on the first call).
func (l *link) setConfig(cfg Config) {
	if l.loss == nil || cfg.Seed != l.cfg.Seed {
		l.loss = rand.New(rand.NewPCG(cfg.Seed, lossStream^l.stream<<32))
		l.jitter = rand.New(rand.NewPCG(cfg.Seed, jitterStream^l.stream<<32))
	}
	l.cfg = cfg
	l.queueLimit = cfg.QueueLimit()
}

// admit decides the fate of a datagram of size bytes arriving at now and, if
// it passes, returns when it must be delivered. Due times never decrease from
// one admitted datagram to the next.
func (l *link) admit(now time.Time, size int) (time.Time, verdict) {
	if l.cfg.Loss > 0 && l.loss.Float64() < l.cfg.Loss {
		return time.Time{}, lost
	}
	dep := now
	if rate := l.cfg.RateBitsPerSec; rate > 0 {
		for l.backlog.len() > 0 && !l.backlog.peek().at.After(now) {
			l.backlogBytes -= l.backlog.pop().size
		}
		if l.backlogBytes+size > l.queueLimit {
			return time.Time{}, overflow
		}
		start := now
		if l.lastDeparture.After(start) {
			start = l.lastDeparture
		}
		dep = start.Add(serialization(size, rate))
		l.lastDeparture = dep
		l.backlog.push(departure{at: dep, size: size})
		l.backlogBytes += size
	}
	d := l.cfg.Delay
	if j := int64(l.cfg.Jitter); j > 0 {
		d += time.Duration(l.jitter.Int64N(2*j+1) - j)
		d = max(d, 0)
	}
	due := dep.Add(d)
	if due.Before(l.lastDue) {
		due = l.lastDue
	}
	l.lastDue = due
	return due, pass
}

// reset empties the link, as when every datagram in it is dropped: the
// bottleneck is idle and no delivery time constrains the next datagram.
func (l *link) reset() {
	l.lastDeparture = time.Time{}
	l.lastDue = time.Time{}
	l.backlog = fifo[departure]{}
	l.backlogBytes = 0
}

// fifo is a slice-backed queue. The zero value is empty and ready to use.
type fifo[T any] struct {
	items []T
	head  int
}

func (q *fifo[T]) len() int { return len(q.items) - q.head }

func (q *fifo[T]) push(v T) {
	if q.head > 0 && len(q.items) == cap(q.items) && q.head >= len(q.items)/2 {
		// Reuse the consumed front instead of growing.
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items = q.items[:n]
		q.head = 0
	}
	q.items = append(q.items, v)
}

// peek returns the oldest element. The queue must not be empty.
func (q *fifo[T]) peek() T { return q.items[q.head] }

// pop removes and returns the oldest element. The queue must not be empty.
func (q *fifo[T]) pop() T {
	v := q.items[q.head]
	var zero T
	q.items[q.head] = zero
	q.head++
	if q.head == len(q.items) {
		q.items = q.items[:0]
		q.head = 0
	}
	return v
}

// drain removes every element, calling f on each in order.
func (q *fifo[T]) drain(f func(T)) {
	for q.len() > 0 {
		f(q.pop())
	}
}
