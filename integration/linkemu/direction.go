package linkemu

import (
	"sync"
	"time"
)

// direction is one way through the relay: the emulated link, the datagrams
// waiting for delivery and the counters.
type direction struct {
	name string
	send func(*packet) error // writes a datagram to its destination
	wake chan struct{}       // capacity 1: the queue became non-empty

	mu      sync.Mutex // guards the fields below
	link    *link
	queue   fifo[*packet] // admitted, in due order (link.admit never decreases due)
	dead    bool          // cut
	counter DirStats
}

func newDirection(name string, cfg Config, stream uint64, send func(*packet) error) *direction {
	return &direction{
		name: name,
		send: send,
		wake: make(chan struct{}, 1),
		link: newLink(cfg, stream),
	}
}

func (d *direction) setConfig(cfg Config) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.link.setConfig(cfg)
}

// setCut sets the cut state; cutting drops every queued datagram and empties
// the link.
func (d *direction) setCut(dead bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.dead = dead
	if dead {
		d.dropQueued(&d.counter.DroppedCut)
		d.link.reset()
	}
}

// dropQueued removes every queued datagram, moving its count from Queued to
// c. d.mu must be held.
func (d *direction) dropQueued(c *Count) {
	d.queue.drain(func(p *packet) {
		d.counter.Queued.sub(len(p.data))
		c.add(len(p.data))
		p.free()
	})
}

// discard frees the datagrams left after the delivery goroutine stopped;
// they stay counted in Queued.
func (d *direction) discard() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.queue.drain(func(p *packet) { p.free() })
}

func (d *direction) stats() DirStats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.counter
}

// arrive passes a datagram read at now through the link and queues a copy
// for delivery to or from f if it survives. It does not retain data.
func (d *direction) arrive(now time.Time, data []byte, f *flow) verdict {
	n := len(data)
	d.mu.Lock()
	d.counter.Received.add(n)
	if d.dead {
		d.counter.DroppedCut.add(n)
		d.mu.Unlock()
		return cut
	}
	due, v := d.link.admit(now, n)
	switch v {
	case lost:
		d.counter.DroppedLoss.add(n)
		d.mu.Unlock()
		return v
	case overflow:
		d.counter.DroppedQueue.add(n)
		d.mu.Unlock()
		return v
	}
	p := newPacket(data, f)
	p.due = due
	wasEmpty := d.queue.len() == 0
	d.queue.push(p)
	d.counter.Queued.add(n)
	d.mu.Unlock()
	if wasEmpty {
		select {
		case d.wake <- struct{}{}:
		default: // a wake-up is already pending
		}
	}
	return pass
}

// deliver sends queued datagrams when they are due, until done is closed.
// It sleeps until the earliest due time and then sends every datagram due by
// the time it wakes, so a late wake-up costs latency, never rate.
func (d *direction) deliver(done <-chan struct{}, wg *sync.WaitGroup) {
	defer wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var batch []*packet
	var errs []error
	for {
		d.mu.Lock()
		now := time.Now()
		batch = batch[:0]
		for d.queue.len() > 0 && !d.queue.peek().due.After(now) {
			// Counted as forwarded before the write, so that once a
			// receiver has a datagram, Stats already show it.
			p := d.queue.pop()
			d.counter.Queued.sub(len(p.data))
			d.counter.Forwarded.add(len(p.data))
			late := now.Sub(p.due)
			d.counter.TotalLate += late
			d.counter.MaxLate = max(d.counter.MaxLate, late)
			batch = append(batch, p)
		}
		wait := time.Duration(-1)
		if len(batch) == 0 && d.queue.len() > 0 {
			wait = d.queue.peek().due.Sub(now)
		}
		d.mu.Unlock()

		if len(batch) > 0 {
			if cap(errs) < len(batch) {
				errs = make([]error, len(batch))
			}
			errs = errs[:len(batch)]
			failed := false
			for i, p := range batch {
				if errs[i] = d.send(p); errs[i] != nil {
					failed = true
				}
			}
			if failed {
				d.mu.Lock()
				for i, p := range batch {
					if errs[i] != nil {
						d.counter.Forwarded.sub(len(p.data))
						d.counter.SendFailed.add(len(p.data))
					}
				}
				d.mu.Unlock()
			}
			for i, p := range batch {
				p.free()
				batch[i] = nil
				errs[i] = nil
			}
			select {
			case <-done:
				return
			default:
			}
			continue
		}

		if wait >= 0 {
			timer.Reset(wait)
		}
		select {
		case <-done:
			timer.Stop()
			return
		case <-d.wake:
		case <-timer.C:
		}
		timer.Stop()
	}
}
