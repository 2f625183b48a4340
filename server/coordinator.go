package server

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/kwikfs/kwikfs/kwik"
	"github.com/kwikfs/kwikfs/transfer"
)

// CoordinatorOptions tunes how a primary with secondaries divides READ
// replies between the paths of a session. A zero field takes its default.
type CoordinatorOptions struct {
	// UnitTime sizes the unit of assignment: a run of whole chunks that the
	// path sends in about this long at its measured rate (at least one
	// chunk, at most MaxUnitChunks). Default 50 ms.
	UnitTime time.Duration
	// MaxUnitChunks bounds a unit. Default 16.
	MaxUnitChunks int
	// InitialRate is the rate, in bytes per second, assumed for a path
	// before the client has reported on it. Default 12.5 MB/s (100 Mbit/s).
	InitialRate float64
	// FeedbackDelay is how late the client's delivery reports may be (its
	// kwik ReportInterval plus margin): each path keeps about
	// rate x (RTT + FeedbackDelay) plus one unit assigned and not yet
	// reported delivered. Default 30 ms.
	FeedbackDelay time.Duration
	// LateFactor and LateSlack set a unit's deadline: LateFactor times its
	// expected time plus LateSlack after it was assigned. A unit not
	// delivered by then is reassigned. Defaults 4 and 150 ms.
	LateFactor float64
	LateSlack  time.Duration
	// MaxStrikes is how many corrupt chunks (strikes), or how many late
	// units in a row of which nothing arrived (misses), a secondary may
	// deliver for one file before it gets no more work for that file in
	// this session. Default 3.
	MaxStrikes int
	// PathRetry spaces the attempts to (re-)add a secondary path that
	// could not be added or failed: Initial first, doubling up to Max.
	// Defaults 200 ms and 10 s.
	PathRetryInitial, PathRetryMax time.Duration
	// DisableHedging turns off tail hedging.
	DisableHedging bool
	// Poll is how often a READ in progress looks at the client's delivery
	// reports. Default 2 ms.
	Poll time.Duration
	// AbandonAfter ends a READ whose reply is wholly assigned when the
	// client has not reported on it for that long: it stopped reading
	// (kwik does not pass on a STOP_SENDING after the write side is
	// closed). Default 1 s.
	AbandonAfter time.Duration
}

func (o *CoordinatorOptions) fill() {
	if o.UnitTime <= 0 {
		o.UnitTime = 50 * time.Millisecond
	}
	if o.MaxUnitChunks <= 0 {
		o.MaxUnitChunks = 16
	}
	if o.InitialRate <= 0 {
		o.InitialRate = 12.5e6
	}
	if o.FeedbackDelay <= 0 {
		o.FeedbackDelay = 30 * time.Millisecond
	}
	if o.LateFactor <= 0 {
		o.LateFactor = 4
	}
	if o.LateSlack <= 0 {
		o.LateSlack = 150 * time.Millisecond
	}
	if o.MaxStrikes <= 0 {
		o.MaxStrikes = 3
	}
	if o.PathRetryInitial <= 0 {
		o.PathRetryInitial = 200 * time.Millisecond
	}
	if o.PathRetryMax <= 0 {
		o.PathRetryMax = 10 * time.Second
	}
	if o.Poll <= 0 {
		o.Poll = 2 * time.Millisecond
	}
	if o.AbandonAfter <= 0 {
		o.AbandonAfter = time.Second
	}
}

// PathCounters are a Primary's coordinator counters for one server, summed
// over all sessions.
type PathCounters struct {
	// Addr is the secondary's address as clients dial it; "" for the
	// primary itself (path 0).
	Addr string
	// AssignedBytes and AssignedChunks count the READ reply bytes given to
	// the path, hedges and reassignments included (a chunk is counted
	// each time a unit touching it is assigned).
	AssignedBytes, AssignedChunks uint64
	// DeliveredBytes counts the bytes the client reported the path
	// delivered first, in multipath READ replies.
	DeliveredBytes uint64
	// ReassignedBytes counts bytes taken back from the path (it failed, or
	// a unit was late) and assigned to another; LateUnits the late units.
	ReassignedBytes, LateUnits uint64
	// HedgedBytes counts bytes given to the path as tail hedges (copies of
	// another path's unit).
	HedgedBytes uint64
	// Strikes counts corrupt chunks the client reported from this path;
	// Misses late units of which nothing arrived.
	Strikes, Misses uint64
	// PathsAdded counts paths the clients opened to this secondary;
	// PathsLost those that could not be added or failed later.
	PathsAdded, PathsLost uint64
}

// CoordinatorStats are a Primary's coordinator counters.
type CoordinatorStats struct {
	// MultipathReads counts READ replies divided between paths;
	// CorruptReports the REPORT_CORRUPT requests received.
	MultipathReads, CorruptReports uint64
	// Paths has the primary first (Addr ""), then each secondary by
	// address.
	Paths []PathCounters
}

// coordCounters accumulates CoordinatorStats. mu guards every field.
type coordCounters struct {
	mu      sync.Mutex
	reads   uint64
	corrupt uint64
	paths   map[string]*PathCounters
}

func (cc *coordCounters) add(addr string, f func(*PathCounters)) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.paths == nil {
		cc.paths = make(map[string]*PathCounters)
	}
	pc := cc.paths[addr]
	if pc == nil {
		pc = &PathCounters{Addr: addr}
		cc.paths[addr] = pc
	}
	f(pc)
}

func (cc *coordCounters) snapshot() CoordinatorStats {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	s := CoordinatorStats{MultipathReads: cc.reads, CorruptReports: cc.corrupt}
	for _, pc := range cc.paths {
		s.Paths = append(s.Paths, *pc)
	}
	slices.SortFunc(s.Paths, func(a, b PathCounters) int {
		switch {
		case a.Addr < b.Addr:
			return -1
		case a.Addr > b.Addr:
			return 1
		}
		return 0
	})
	return s
}

// pathState is the coordinator's view of one path of a session. The
// fields are guarded by sessionCoord.mu, except id and addr (immutable) and
// down (closed once, when the path is lost).
type pathState struct {
	id   kwik.PathID
	addr string
	up   bool
	down chan struct{}

	rate   float64       // bytes per second
	rtt    time.Duration // smoothed
	queued uint64        // bytes assigned and not yet seen delivered, over all READs

	repAt        time.Time // the client's last report on the path
	repDelivered uint64
	repReceived  uint64 // bytes received on the path, duplicates included
	busy         bool   // queued > 0 when that report was processed
}

// eta is when a unit of u bytes assigned now would arrive.
func (p *pathState) eta(u uint64) time.Duration {
	return time.Duration(float64(p.queued+u)/p.rate*float64(time.Second)) + p.rtt/2
}

// fileKey names the strikes of one secondary for one file.
type fileKey struct{ addr, file string }

// strikeRec counts a secondary's strikes and consecutive misses for a file.
type strikeRec struct{ strikes, misses int }

// assignRec remembers that a secondary was given chunks [first, last] of a
// file at a version, to strike it when one of them proves corrupt.
type assignRec struct {
	addr        string
	file        string
	version     transfer.Hash
	first, last int
}

// Bounds of a session's records.
const (
	maxHistory    = 1024
	maxStrikeRecs = 4096
)

// sessionCoord is the coordinator of one session: it keeps a path to every
// secondary open and divides the session's READ replies between the paths.
type sessionCoord struct {
	o     *CoordinatorOptions
	sess  *kwik.Session
	log   *slog.Logger
	stats *coordCounters

	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu sync.Mutex
	// guarded by mu:
	paths    map[kwik.PathID]*pathState // path 0 and the secondary paths up
	strikes  map[fileKey]*strikeRec
	history  []assignRec // ring of the last maxHistory secondary assignments
	histNext int
	statsAt  time.Time     // when the paths' figures were last refreshed
	changed  chan struct{} // closed and replaced when a path comes up or goes
}

// newSessionCoord starts keeping paths to secondaries open for sess.
// Close stops it.
func newSessionCoord(ctx context.Context, sess *kwik.Session, secondaries []string, o *CoordinatorOptions, log *slog.Logger, stats *coordCounters) *sessionCoord {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(sess.Context(), cancel)
	c := &sessionCoord{
		o: o, sess: sess, log: log, stats: stats, cancel: cancel,
		paths:   map[kwik.PathID]*pathState{0: {id: 0, up: true, rate: o.InitialRate}},
		strikes: make(map[fileKey]*strikeRec),
		changed: make(chan struct{}),
	}
	c.wg.Go(func() {
		<-ctx.Done()
		stop()
	})
	c.wg.Go(func() { c.watchEvents(ctx) })
	for _, addr := range secondaries {
		c.wg.Go(func() { c.keepPath(ctx, addr) })
	}
	return c
}

// Close stops the coordinator's goroutines and waits for them.
func (c *sessionCoord) Close() {
	c.cancel()
	c.wg.Wait()
}

// keepPath adds a path to the secondary at addr and adds it again, with
// backoff, whenever it cannot be added or fails.
func (c *sessionCoord) keepPath(ctx context.Context, addr string) {
	wait := c.o.PathRetryInitial
	for ctx.Err() == nil {
		id, err := c.sess.AddPath(ctx, addr)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			ps := c.pathUp(id, addr)
			c.stats.add(addr, func(pc *PathCounters) { pc.PathsAdded++ })
			c.log.Debug("secondary path up", "peer", c.sess.RemoteAddr(), "secondary", addr, "path", id)
			wait = c.o.PathRetryInitial
			select {
			case <-ps.down:
			case <-ctx.Done():
				return
			}
		} else {
			if errors.Is(err, kwik.ErrNoClusterKey) || errors.Is(err, kwik.ErrNotPrimary) {
				c.log.Warn("cannot add secondary paths", "secondary", addr, "err", err)
				return
			}
			c.log.Debug("secondary path not added", "peer", c.sess.RemoteAddr(), "secondary", addr, "err", err)
		}
		c.stats.add(addr, func(pc *PathCounters) { pc.PathsLost++ })
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
		wait = min(2*wait, c.o.PathRetryMax)
	}
}

// watchEvents marks paths down as the client reports them failed or closed.
func (c *sessionCoord) watchEvents(ctx context.Context) {
	for {
		ev, err := c.sess.NextPathEvent(ctx)
		if err != nil {
			return
		}
		if ev.State == kwik.PathFailed || ev.State == kwik.PathClosed {
			c.pathDown(ev.Path)
		}
	}
}

// pathUp records a path AddPath reported up. If the client has reported it
// gone meanwhile, the returned state is down already.
func (c *sessionCoord) pathUp(id kwik.PathID, addr string) *pathState {
	ps := &pathState{id: id, addr: addr, up: true, down: make(chan struct{}), rate: c.o.InitialRate}
	stillUp := false
	for _, p := range c.sess.Stats().Paths {
		if kwik.PathID(p.ID) == id {
			stillUp = p.State == kwik.PathUp
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !stillUp {
		ps.up = false
		close(ps.down)
		return ps
	}
	c.paths[id] = ps
	c.broadcastLocked()
	return ps
}

// pathDown forgets a path that is gone; its READ units are reassigned.
func (c *sessionCoord) pathDown(id kwik.PathID) {
	if id == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	ps := c.paths[id]
	if ps == nil || !ps.up {
		return
	}
	ps.up = false
	close(ps.down)
	delete(c.paths, id)
	c.broadcastLocked()
}

func (c *sessionCoord) broadcastLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// anySecondaryFor reports whether a secondary path is up that may take
// work for file.
func (c *sessionCoord) anySecondaryFor(file string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ps := range c.paths {
		if ps.id != 0 && ps.up && !c.excludedLocked(ps, file) {
			return true
		}
	}
	return false
}

// refreshLocked updates the paths' RTT and rate from the session's
// statistics, at most every Poll.
func (c *sessionCoord) refreshLocked(now time.Time) {
	if now.Sub(c.statsAt) < c.o.Poll {
		return
	}
	c.statsAt = now
	for _, s := range c.sess.Stats().Paths {
		ps := c.paths[kwik.PathID(s.ID)]
		if ps == nil {
			continue
		}
		r := s.Reported
		switch {
		case s.ID == 0 && s.SmoothedRTT > 0:
			ps.rtt = s.SmoothedRTT
		case r != nil && r.SmoothedRTT > 0:
			ps.rtt = r.SmoothedRTT
		}
		if r == nil || !r.At.After(ps.repAt) {
			continue
		}
		if !ps.repAt.IsZero() && r.DeliveredBytes > ps.repDelivered {
			dt := r.At.Sub(ps.repAt).Seconds()
			sample := float64(r.DeliveredBytes-ps.repDelivered) / dt
			if ps.busy && ps.queued > 0 {
				// Busy the whole interval: an unbiased sample.
				ps.rate = 0.75*ps.rate + 0.25*sample
			} else {
				// Idle part of the interval: a lower bound only.
				ps.rate = max(ps.rate, sample)
			}
			ps.rate = max(ps.rate, 64<<10)
		}
		ps.repAt, ps.repDelivered, ps.repReceived = r.At, r.DeliveredBytes, r.ReceivedBytes
		ps.busy = ps.queued > 0
	}
}

// excludedLocked reports whether a secondary has struck out for file.
func (c *sessionCoord) excludedLocked(ps *pathState, file string) bool {
	if ps.id == 0 {
		return false
	}
	r := c.strikes[fileKey{ps.addr, file}]
	return r != nil && (r.strikes >= c.o.MaxStrikes || r.misses >= c.o.MaxStrikes)
}

// strikeRecLocked returns the record of addr for file, creating it.
func (c *sessionCoord) strikeRecLocked(addr, file string) *strikeRec {
	k := fileKey{addr, file}
	r := c.strikes[k]
	if r == nil {
		if len(c.strikes) >= maxStrikeRecs {
			for k := range c.strikes { // drop one at random
				delete(c.strikes, k)
				break
			}
		}
		r = &strikeRec{}
		c.strikes[k] = r
	}
	return r
}

// recordLocked remembers a secondary assignment of chunks [first, last].
func (c *sessionCoord) recordLocked(rec assignRec) {
	if len(c.history) < maxHistory {
		c.history = append(c.history, rec)
		return
	}
	c.history[c.histNext] = rec
	c.histNext = (c.histNext + 1) % maxHistory
}

// reportCorrupt strikes every secondary recently given chunk r.Chunk of
// r.Path at r.Version. It returns how many it struck.
func (c *sessionCoord) reportCorrupt(r *transfer.CorruptReport) int {
	c.mu.Lock()
	var struck []string
	for _, h := range c.history {
		if h.file == r.Path && h.version == r.Version && h.first <= r.Chunk && r.Chunk <= h.last && !slices.Contains(struck, h.addr) {
			struck = append(struck, h.addr)
			c.strikeRecLocked(h.addr, r.Path).strikes++
		}
	}
	c.mu.Unlock()
	for _, addr := range struck {
		c.log.Info("secondary struck for a corrupt chunk", "secondary", addr, "path", r.Path, "chunk", r.Chunk)
		c.stats.add(addr, func(pc *PathCounters) { pc.Strikes++ })
	}
	return len(struck)
}

// errNoProgress ends a READ whose client received nothing for the write
// timeout.
var errNoProgress = errors.New("client received nothing")

// errAbandoned ends a READ the client stopped reporting on.
var errAbandoned = errors.New("client stopped reporting")

// serveRead sends the body of a READ reply whose status byte is written:
// chunks first to first+count-1 of f, divided between the paths. It
// returns once the client reported every byte delivered, with the bytes
// the primary sent itself, or fails when the stream or session ends or the
// client makes no progress for noProgress.
func (c *sessionCoord) serveRead(ctx context.Context, st *kwik.Stream, f *File, file string, first, count int, noProgress time.Duration) (int64, error) {
	m := f.Manifest()
	body := uint64(m.ChunkOffset(first+count-1)) + uint64(m.ChunkLen(first+count-1)) - uint64(m.ChunkOffset(first))
	start := st.SendOffset()
	c.stats.mu.Lock()
	c.stats.reads++
	c.stats.mu.Unlock()
	j := &job{
		c: c, st: st, f: f, file: file, version: m.Version,
		cs: uint64(m.ChunkSize), base: start, fileBase: uint64(m.ChunkOffset(first)),
		total: start + body, reserved: start, next: start,
		addrs: map[kwik.PathID]string{0: ""},
	}
	return j.run(ctx, noProgress)
}
