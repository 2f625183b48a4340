package server

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kwikfs/kwikfs/kwik"
	"github.com/kwikfs/kwikfs/transfer"
)

// span is a range [start, end) of a READ reply's stream still to assign;
// a reassigned one avoids the path it was taken from, if another can serve.
type span struct {
	start, end uint64
	avoid      kwik.PathID // 0: none
}

// unit is a range of a READ reply assigned to one path.
type unit struct {
	start, end uint64
	ps         *pathState
	expect     time.Time // expected arrival
	deadline   time.Time // reassigned if not delivered by then
	twin       *unit     // the other copy of a hedged range, while live
	hedge      bool      // this unit is a hedge copy
	live       bool      // counted in ps.queued
	recv0      uint64    // bytes the path had received when the unit was assigned
	done       atomic.Bool
}

// job divides one READ reply between the paths of a session. Its fields
// are used by the goroutine running it; the pathStates it points to are
// guarded by sessionCoord.mu.
type job struct {
	c        *sessionCoord
	st       *kwik.Stream
	f        *File
	file     string
	version  transfer.Hash
	cs       uint64 // chunk size
	base     uint64 // stream offset of the first chunk
	fileBase uint64 // file offset of the first chunk
	total    uint64 // stream offset past the last byte
	reserved uint64 // stream offset past the reserved bytes
	next     uint64 // first stream offset never assigned
	closed   bool   // the write side is closed (everything reserved)
	pending  []span
	units    []*unit // live units
	addrs    map[kwik.PathID]string
	recv0    map[kwik.PathID]received // secondary paths given work: what they had received before
	send     *sender
	failed   map[kwik.PathID]bool // secondary paths whose commands failed
	missed   map[kwik.PathID]bool // secondary paths with a late unit of which nothing arrived
	// primaryOnly: the client went silent; the rest goes on path 0 only.
	primaryOnly bool
	// background: a background READ, which assigns nothing while a
	// foreground READ of the session is served (held).
	background bool
	held       bool
	wasHeld    bool // counted as held back
}

// received is a secondary path and the bytes it had received when a job
// first gave it work.
type received struct {
	ps    *pathState
	bytes uint64
}

// chunkOf returns the index of the chunk holding stream offset off.
func (j *job) chunkOf(off uint64) int {
	return int((j.fileBase + off - j.base) / j.cs)
}

// run drives the job until the client has every byte. On failure it
// resets the stream (so that a WriteAt blocked on it returns) before it
// waits for its goroutines.
func (j *job) run(ctx context.Context, noProgress time.Duration) (_ int64, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	j.send = newSender(j)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer j.send.stop()
	defer func() {
		if err != nil {
			j.st.CancelWrite(transfer.StreamCode(err))
		}
		cancel()
	}()
	complete := make(chan error, 1)
	wg.Go(func() {
		_, err := j.st.WaitDelivered(ctx, j.total)
		complete <- err
	})
	defer j.releaseAll()

	lastRecv, lastProgress := uint64(0), time.Now()
	var lastAt time.Time
	var lastSent int64
	lastSeen := time.Now()
	tick := time.NewTicker(j.c.o.Poll)
	defer tick.Stop()
	for {
		now := time.Now()
		if err := j.reserve(ctx); err != nil {
			return j.send.bytes.Load(), err
		}
		d := j.st.Delivered()
		if d.Received > lastRecv || j.held {
			// Held back for foreground READs is not a client that
			// stopped reading.
			lastRecv, lastProgress = d.Received, now
		} else if now.Sub(lastProgress) > noProgress {
			return j.send.bytes.Load(), fmt.Errorf("read %q: %w for %v: %w", j.file, errNoProgress, noProgress, os.ErrDeadlineExceeded)
		}
		// Silence counts only while the primary has nothing left to
		// write: the client reports a stream when its data arrives, and
		// data still queued here (behind other READs, on a busy primary)
		// has not had the chance to.
		if sent := j.send.bytes.Load(); !d.At.Equal(lastAt) || sent != lastSent || j.send.busy() {
			lastAt, lastSent, lastSeen = d.At, sent, now
		} else if j.closed && now.Sub(lastSeen) > j.c.o.AbandonAfter {
			// Once the write side is closed, kwik ignores the client's
			// STOP_SENDING: silence is the only sign that it gave up. But
			// silence may also be secondaries that send nothing: first
			// the primary sends whatever they hold, and only if the
			// client stays silent after that is the READ abandoned.
			if j.primaryOnly {
				return j.send.bytes.Load(), fmt.Errorf("read %q: %w", j.file, errAbandoned)
			}
			j.primaryOnly = true
			lastSeen = now
			j.c.log.Debug("READ silent; the primary sends the rest", "path", j.file, "received", d.Received, "total", j.total)
		}
		changed := j.step(now, &d)
		select {
		case err := <-complete:
			if err != nil {
				return j.send.bytes.Load(), err
			}
			j.finish()
			return j.send.bytes.Load(), nil
		case err := <-j.send.errc:
			return j.send.bytes.Load(), err
		case <-ctx.Done():
			return j.send.bytes.Load(), ctx.Err()
		case <-changed:
		case <-tick.C:
		}
	}
}

// reserve commits as much of the reply as the client's windows allow
// without blocking.
func (j *job) reserve(ctx context.Context) error {
	if j.reserved < j.total {
		if cr := j.st.SendCredit(); cr > 0 {
			off, got, err := j.st.Reserve(ctx, min(cr, j.total-j.reserved))
			if err != nil {
				return err
			}
			if off != j.reserved {
				return fmt.Errorf("read %q: reserved at %d, want %d: %w", j.file, off, j.reserved, transfer.ErrInternal)
			}
			j.reserved += got
		}
	}
	return nil
}

// maybeClose has the sender close the write side once every byte is
// reserved and assigned, after the primary's units queued before: the
// FIN follows them on the same data stream (a WriteAt after Close needs a
// data stream of its own).
func (j *job) maybeClose() {
	if !j.closed && j.reserved == j.total && j.next == j.total && len(j.pending) == 0 {
		j.closed = true
		j.send.push(nil)
	}
}

// covered reports whether d shows [a, b) delivered.
func covered(d *kwik.Delivery, a, b uint64) bool {
	if d.Complete || b <= d.Received {
		return true
	}
	for _, r := range d.Ranges {
		if r.Start <= max(a, d.Received) && b <= r.End {
			return true
		}
	}
	return false
}

// missing returns the parts of [a, b) that d does not show delivered
// (bytes beyond the ranges d lists count as missing).
func missing(d *kwik.Delivery, a, b uint64) []span {
	if d.Complete {
		return nil
	}
	a = max(a, d.Received)
	var out []span
	for _, r := range d.Ranges {
		if a >= b {
			break
		}
		if r.End <= a {
			continue
		}
		if r.Start >= b {
			break
		}
		if r.Start > a {
			out = append(out, span{start: a, end: r.Start})
		}
		a = max(a, r.End)
	}
	if a < b {
		out = append(out, span{start: a, end: b})
	}
	return out
}

// step updates the units from the delivery report d, reassigns late ones
// and ones on lost paths, assigns new units and hedges the tail. It returns
// a channel closed when a path comes up or goes.
func (j *job) step(now time.Time, d *kwik.Delivery) <-chan struct{} {
	c := j.c
	var sends []*unit
	var reassigned, late, misses []*unit
	c.mu.Lock()
	c.refreshLocked(now)
	kept := j.units[:0]
	for _, u := range j.units {
		switch {
		case covered(d, u.start, u.end):
			j.retireLocked(u)
			continue
		case !u.ps.up || j.failed[u.ps.id] || (j.primaryOnly && u.ps.id != 0):
			reassigned = append(reassigned, u)
		case u.ps.id != 0 && now.After(u.deadline):
			// Path 0 is never late: QUIC retransmits what it loses, and
			// sending again on the same path would only add to its load.
			// Its slow units are hedged instead.
			late = append(late, u)
			// A miss: nothing of the unit arrived, and nothing at all
			// on its path since it was assigned. A path that sends but
			// whose bytes the client no longer counts for this reply (it
			// stopped reading it after a corrupt chunk) has not missed.
			ms := missing(d, u.start, u.end)
			if len(ms) == 1 && ms[0].start == u.start && ms[0].end == u.end && u.ps.repReceived == u.recv0 {
				misses = append(misses, u)
			}
		default:
			kept = append(kept, u)
			continue
		}
		// Take the unit back: whatever of it has not arrived, and is not
		// on its way from a live twin, is assigned again.
		twin := u.twin
		j.retireLocked(u)
		for _, sp := range missing(d, u.start, u.end) {
			if t := twin; t != nil && t.live && t.ps.up {
				sp = subtract(sp, t.start, t.end)
			}
			if sp.end > sp.start {
				sp.avoid = u.ps.id
				j.pending = append(j.pending, sp)
			}
		}
	}
	j.units = kept
	j.held = j.background && c.prio.busy()
	if j.held && !j.wasHeld {
		j.wasHeld = true
		c.prio.held.Add(1)
	}
	for _, u := range misses {
		c.strikeRecLocked(u.ps.addr, j.file).miss(now)
		if j.missed == nil {
			j.missed = make(map[kwik.PathID]bool)
		}
		j.missed[u.ps.id] = true
	}
	if !j.held {
		sends = j.assignLocked(now, sends)
		if !c.o.DisableHedging {
			sends = j.hedgeLocked(now, d, sends)
		}
	}
	changed := c.changed
	c.mu.Unlock()

	for _, u := range reassigned {
		c.stats.add(u.ps.addr, func(pc *PathCounters) { pc.ReassignedBytes += u.end - u.start })
	}
	for _, u := range late {
		c.stats.add(u.ps.addr, func(pc *PathCounters) { pc.LateUnits++; pc.ReassignedBytes += u.end - u.start })
	}
	for _, u := range misses {
		c.stats.add(u.ps.addr, func(pc *PathCounters) { pc.Misses++ })
	}
	for _, u := range sends {
		j.dispatch(u)
	}
	j.maybeClose()
	return changed
}

// subtract returns the part of sp before or after [a, b): sp if they do
// not overlap, the part before a if it overlaps b's side, an empty span if
// [a, b) covers it. A hedge copy always reaches the end of its original,
// so only the part before a can remain.
func subtract(sp span, a, b uint64) span {
	if b <= sp.start || a >= sp.end {
		return sp
	}
	if a > sp.start {
		return span{start: sp.start, end: a}
	}
	if b < sp.end {
		return span{start: b, end: sp.end}
	}
	return span{start: sp.start, end: sp.start}
}

// retireLocked ends a unit: it no longer counts in its path's queue.
func (j *job) retireLocked(u *unit) {
	if u.live {
		u.live = false
		u.ps.queued -= u.end - u.start
	}
	u.done.Store(true)
	if u.twin != nil {
		u.twin.twin = nil
		u.twin = nil
	}
}

// eligibleLocked returns the paths that may take work for this job. With
// PrimaryFallback, path 0 is among them only when no secondary is.
func (j *job) eligibleLocked() []*pathState {
	var ps []*pathState
	secondaries := false
	for _, p := range j.c.paths {
		if p.up && !j.failed[p.id] && !j.c.excludedLocked(p, j.file) && (!j.primaryOnly || p.id == 0) {
			ps = append(ps, p)
			secondaries = secondaries || p.id != 0
		}
	}
	if j.c.o.PrimaryFallback && secondaries {
		ps = slices.DeleteFunc(ps, func(p *pathState) bool { return p.id == 0 })
	}
	return ps
}

// unitLen returns how many bytes from start (at most end) path p gets as
// one unit: what it sends in about UnitTime at its measured rate. A path
// that sends at least a chunk in that time gets whole chunks (at most
// MaxUnitChunks, fewer near the end of the reply so that the paths finish
// together), ending on a chunk boundary. A slower path gets part of a chunk
// (at least MinUnitBytes, in multiples of it), never crossing a chunk
// boundary, so that its unit arrives about as soon as a faster path's
// would: a unit of a whole chunk would make it too slow to ever be chosen.
func (j *job) unitLen(p *pathState, start, end uint64, npaths int) uint64 {
	o := j.c.o
	want := p.rate * o.UnitTime.Seconds()
	// The chunk boundary after start.
	boundary := start + j.cs - (start-j.base)%j.cs
	if want < float64(j.cs) {
		n := max(uint64(want)/o.MinUnitBytes, 1) * o.MinUnitBytes
		return min(start+n, boundary, end) - start
	}
	chunks := uint64(want / float64(j.cs))
	left := j.left()
	chunks = min(chunks, left/j.cs/uint64(2*npaths))
	chunks = max(1, min(chunks, uint64(o.MaxUnitChunks)))
	// End on a chunk boundary.
	stop := start + chunks*j.cs
	stop -= (stop - j.base) % j.cs
	if stop <= start {
		stop = boundary
	}
	return min(stop, end) - start
}

// left returns the bytes of the reply not assigned yet: never assigned,
// or taken back and pending. The caller holds sessionCoord.mu (or is the
// job's own goroutine).
func (j *job) left() uint64 {
	n := j.total - j.next
	for _, sp := range j.pending {
		n += sp.end - sp.start
	}
	return n
}

// target is how many bytes path p keeps assigned and undelivered: a unit,
// plus what it sends between the moment its last byte arrives at the client
// and the first byte of the next unit does: the client's report (up to
// FeedbackDelay late) reaches the primary, whose next command (relayed by
// the client, for a secondary) reaches the server, whose data reaches the
// client. Less, and the path idles between units; the gap is doubled
// because queueing on the way, and jitter, make it longer than the smoothed
// RTTs say.
func (j *job) target(p *pathState, unit uint64) uint64 {
	t := uint64(2*p.rate*(p.rtt+p.cmdRTT+j.c.o.FeedbackDelay).Seconds()) + unit
	if !p.measured {
		t = min(t, max(unmeasuredQueue, unit))
	}
	return t
}

// assignLocked assigns the pending spans, then the reserved bytes never
// assigned, one unit at a time to the path chooseLocked picks, until it
// picks none.
func (j *job) assignLocked(now time.Time, sends []*unit) []*unit {
	paths := j.eligibleLocked()
	for {
		var sp span
		fromPending := len(j.pending) > 0
		switch {
		case fromPending:
			sp = j.pending[0]
		case j.next < j.reserved:
			sp = span{start: j.next, end: j.reserved}
			if j.reserved < j.total && j.reserved-j.next < j.cs && len(j.units) > 0 {
				// Less than a chunk reserved: wait for the credit that the
				// units under way will bring, rather than cut a sliver.
				return sends
			}
		default:
			return sends
		}
		best, bestLen, bestETA := j.chooseLocked(now, paths, sp)
		if best == nil {
			return sends
		}
		u := j.newUnitLocked(best, sp.start, sp.start+bestLen, now, bestETA)
		sends = append(sends, u)
		if fromPending {
			j.pending[0].start += bestLen
			if j.pending[0].start >= j.pending[0].end {
				j.pending = j.pending[1:]
			}
		} else {
			j.next += bestLen
		}
	}
}

// probeAfter is how long a path with room may go without work while others
// are full before it gets a unit anyway (see chooseLocked).
const probeAfter = 250 * time.Millisecond

// chooseLocked picks the path for the next unit of span sp: the path that
// would deliver its unit first among those with room (fewer than target
// bytes queued). When a path without room would deliver sooner, waiting for
// it may beat a slower path: the slower one gets the unit only if it
// delivers it before the faster paths could get through the session's
// backlog (earliest completion first, as in ECF), or if it has been idle
// for probeAfter (to measure it again), else no path is picked and the
// unit waits. With no eligible path at all, path 0 takes it.
func (j *job) chooseLocked(now time.Time, paths []*pathState, sp span) (best *pathState, n uint64, eta time.Duration) {
	if len(paths) == 0 {
		p := j.c.paths[0]
		n = j.unitLen(p, sp.start, sp.end, 1)
		return p, n, p.eta(n)
	}
	var fastestETA time.Duration
	var fastest *pathState
	var etaBuf [16]time.Duration
	etas := etaBuf[:0] // of every path, for the drain below
	for _, p := range paths {
		pn := j.unitLen(p, sp.start, sp.end, len(paths))
		pe := p.eta(pn)
		etas = append(etas, pe)
		if sp.avoid != 0 && p.id == sp.avoid && len(paths) > 1 {
			continue
		}
		if fastest == nil || pe < fastestETA {
			fastest, fastestETA = p, pe
		}
		if p.queued > 0 && p.queued >= j.target(p, pn) {
			continue // no room
		}
		if best == nil || pe < eta {
			best, n, eta = p, pn, pe
		}
	}
	if best == nil || best == fastest {
		return best, n, eta
	}
	if best.queued == 0 && now.Sub(best.assignedAt) >= probeAfter {
		// Idle for a while: a unit measures it again. Its estimate may be
		// stale or low (it was measured while starting, or before the
		// path's load changed), and a path that is never given work is
		// never measured again.
		return best, n, eta
	}
	// The paths that would deliver sooner than best but have no room:
	// how long they take to send what they hold and the whole backlog.
	var queued uint64
	var rate float64
	for i, p := range paths {
		if p != best && etas[i] < eta {
			queued += p.queued
			rate += p.rate
		}
	}
	if rate == 0 { // only ties: best is as early as any
		return best, n, eta
	}
	drain := time.Duration(float64(queued+j.c.backlogLocked()) / rate * float64(time.Second))
	if eta > drain {
		return nil, 0, 0
	}
	return best, n, eta
}

// newUnitLocked assigns [start, end) to p.
func (j *job) newUnitLocked(p *pathState, start, end uint64, now time.Time, eta time.Duration) *unit {
	o := j.c.o
	u := &unit{
		start: start, end: end, ps: p, live: true, recv0: p.repReceived,
		expect:   now.Add(eta),
		deadline: now.Add(time.Duration(o.LateFactor*float64(eta)) + o.LateSlack),
	}
	p.queued += end - start
	p.assignedAt = now
	j.units = append(j.units, u)
	j.addrs[p.id] = p.addr
	if p.id != 0 {
		if _, ok := j.recv0[p.id]; !ok {
			if j.recv0 == nil {
				j.recv0 = make(map[kwik.PathID]received)
			}
			j.recv0[p.id] = received{p, p.repReceived}
		}
		j.c.recordLocked(assignRec{addr: p.addr, path: p.id, file: j.file, version: j.version, first: j.chunkOf(start), last: j.chunkOf(end - 1)})
	}
	return u
}

// hedgeLocked, once every byte is assigned, gives each idle path a copy
// of the missing part of the unit expected to arrive last, if it would
// arrive sooner from there.
func (j *job) hedgeLocked(now time.Time, d *kwik.Delivery, sends []*unit) []*unit {
	if j.next < j.total || len(j.pending) > 0 {
		return sends
	}
	for _, p := range j.eligibleLocked() {
		if p.queued > 0 {
			continue
		}
		var last *unit
		for _, u := range j.units {
			if u.live && !u.hedge && u.twin == nil && u.ps != p && (last == nil || u.expect.After(last.expect)) {
				last = u
			}
		}
		if last == nil {
			return sends
		}
		ms := missing(d, last.start, last.end)
		if len(ms) == 0 {
			continue
		}
		from := ms[0].start
		eta := p.eta(last.end - from)
		fd := j.c.o.FeedbackDelay
		overdue := now.After(last.expect.Add(2 * fd))
		if !overdue && !now.Add(eta+fd).Before(last.expect) {
			continue
		}
		h := j.newUnitLocked(p, from, last.end, now, eta)
		h.hedge = true
		h.twin, last.twin = last, h
		sends = append(sends, h)
	}
	return sends
}

// dispatch sends a unit: on path 0 through the sender, on a secondary path
// as a SEND_CHUNK command. A command the session refuses marks the path
// failed for this job; the unit is reassigned at the next step.
func (j *job) dispatch(u *unit) {
	n := u.end - u.start
	chunks := uint64(j.chunkOf(u.end-1) - j.chunkOf(u.start) + 1)
	j.c.stats.add(u.ps.addr, func(pc *PathCounters) {
		pc.AssignedBytes += n
		pc.AssignedChunks += chunks
		if u.hedge {
			pc.HedgedBytes += n
		}
	})
	if u.ps.id == 0 {
		j.send.push(u)
		return
	}
	cmd := transfer.SendChunk{Path: j.file, Version: j.version, FileOffset: j.fileBase + u.start - j.base}
	payload, err := cmd.MarshalBinary()
	if err == nil {
		err = j.c.sess.SendRawData(u.ps.id, kwik.Grant{StreamID: j.st.StreamID(), Offset: u.start, Length: n}, payload)
	}
	if err != nil {
		j.c.log.Debug("delegation refused", "secondary", u.ps.addr, "path", u.ps.id, "err", err)
		if j.failed == nil {
			j.failed = make(map[kwik.PathID]bool)
		}
		j.failed[u.ps.id] = true
	}
}

// finish counts what each path delivered once the client has everything.
// A secondary that was given work and sent nothing at all meanwhile (its
// units were hedged or reassigned in time) misses once for the file; one
// that delivered has its misses forgotten. One whose bytes all arrived
// second (it lost hedging races) is neither.
func (j *job) finish() {
	d := j.st.Delivered()
	var missedNow []string
	j.c.mu.Lock()
	j.c.refreshLocked(time.Now())
	for id, r0 := range j.recv0 {
		rec := j.c.strikeRecLocked(r0.ps.addr, j.file)
		switch {
		case d.ByPath[id] > 0:
			rec.misses = 0
		case !j.missed[id] && r0.ps.repReceived == r0.bytes:
			rec.miss(time.Now())
			missedNow = append(missedNow, r0.ps.addr)
		}
	}
	j.c.mu.Unlock()
	for _, addr := range missedNow {
		j.c.stats.add(addr, func(pc *PathCounters) { pc.Misses++ })
	}
	j.tallyDelivered(&d)
	for id, addr := range j.addrs {
		n := d.ByPath[id]
		if id == 0 && n > 0 {
			n-- // the status byte
		}
		j.c.stats.add(addr, func(pc *PathCounters) { pc.DeliveredBytes += n })
	}
}

// releaseAll retires the units still live when the job ends and removes
// the job from the session's backlog.
func (j *job) releaseAll() {
	j.c.mu.Lock()
	defer j.c.mu.Unlock()
	delete(j.c.jobs, j)
	for _, u := range j.units {
		j.retireLocked(u)
	}
	j.units = nil
}

// sender writes a job's path-0 units with WriteAt, in order, from its own
// goroutine, skipping those delivered meanwhile by another path; a nil
// unit in the queue closes the stream's write side.
type sender struct {
	j     *job
	bytes atomic.Int64 // file bytes written
	errc  chan error   // receives the first write error
	wg    sync.WaitGroup

	mu sync.Mutex
	// guarded by mu:
	queue   []*unit
	writing bool // a unit (or the Close) taken from the queue is being written
	stopped bool
	wake    chan struct{}
}

func newSender(j *job) *sender {
	s := &sender{j: j, errc: make(chan error, 1), wake: make(chan struct{}, 1)}
	s.wg.Go(s.run)
	return s
}

// busy reports whether the sender has units queued or one in progress.
func (s *sender) busy() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue) > 0 || s.writing
}

func (s *sender) push(u *unit) {
	s.mu.Lock()
	s.queue = append(s.queue, u)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// stop ends the sender and waits for it. A WriteAt in progress completes
// or fails with the stream.
func (s *sender) stop() {
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	s.wg.Wait()
}

func (s *sender) run() {
	bp := s.j.f.c.bufs.Get().(*[]byte)
	defer s.j.f.c.bufs.Put(bp)
	for {
		s.mu.Lock()
		if s.stopped {
			s.mu.Unlock()
			return
		}
		var u *unit
		ok := len(s.queue) > 0
		if ok {
			u = s.queue[0]
			s.queue = s.queue[1:]
		}
		s.writing = ok
		s.mu.Unlock()
		if !ok {
			<-s.wake
			continue
		}
		var err error
		if u == nil {
			err = s.j.st.Close()
		} else {
			err = s.write(u, *bp)
		}
		s.mu.Lock()
		s.writing = false
		s.mu.Unlock()
		if err != nil {
			s.errc <- err
			return
		}
	}
}

// write sends the unit's bytes on path 0, a buffer at a time, unless it
// has been delivered by another path meanwhile.
func (s *sender) write(u *unit, buf []byte) error {
	j := s.j
	for off := u.start; off < u.end; {
		if u.done.Load() {
			return nil
		}
		n := min(uint64(len(buf)), u.end-off)
		fileOff := int64(j.fileBase + off - j.base)
		got, err := j.f.f.ReadAt(buf[:n], fileOff)
		if uint64(got) < n {
			if err == io.EOF {
				return fmt.Errorf("read %q at %d: file shrank: %w", j.file, fileOff, transfer.ErrStale)
			}
			return j.f.c.mapErr("read", j.file, err)
		}
		if _, err := j.st.WriteAt(buf[:n], int64(off)); err != nil {
			return fmt.Errorf("read %q: send at %d: %w", j.file, off, err)
		}
		s.bytes.Add(int64(n))
		off += n
	}
	return nil
}
