package server

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/kwikfs/kwikfs/internal/backoff"
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
	// MinUnitBytes is the smallest unit, and the granule of a unit
	// smaller than a chunk (given to a path too slow to send a chunk in
	// UnitTime). Default 64 KiB.
	MinUnitBytes uint64
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
	// MissCooldown is how long a secondary that missed MaxStrikes times in
	// a row gets no work for the file; then it is tried again (a miss more
	// starts another cooldown, a delivery forgets the misses). A stall (a
	// burst of losses as a path starts, a busy server) then costs a
	// moment, not the rest of a large file. Strikes for corrupt chunks have
	// no cooldown. Default 2 s.
	MissCooldown time.Duration
	// PathRetry spaces the attempts to (re-)add a secondary path that
	// could not be added or failed: Initial first, doubling up to Max,
	// each wait jittered (drawn at random from 80 to 100% of that, so that
	// the sessions that lost the same secondary do not all re-add it at
	// once). Defaults 200 ms and 10 s.
	PathRetryInitial, PathRetryMax time.Duration
	// DisableHedging turns off tail hedging.
	DisableHedging bool
	// PrimaryFallback makes the primary a coordinator only: it sends READ
	// data itself only when no secondary path of the session may take
	// the file (none is up, or each failed or was struck for it), so the
	// secondaries carry the bytes. Off, the primary takes its share by its
	// measured rate like any path.
	PrimaryFallback bool
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
	if o.MinUnitBytes == 0 {
		o.MinUnitBytes = 64 << 10
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
	if o.MissCooldown <= 0 {
		o.MissCooldown = 2 * time.Second
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
	// PathsLost those that could not be added or failed later. PathsUp
	// is the number of its paths up now, over all sessions.
	PathsAdded, PathsLost, PathsUp uint64
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

	rate   float64       // bytes per second: the largest recent window sample
	avg    float64       // bytes per second: a moving average of the window samples
	rtt    time.Duration // smoothed
	cmdRTT time.Duration // a secondary's commands travel over path 0 first: its RTT
	queued uint64        // bytes assigned and not yet seen delivered, over all READs
	// assignedAt is when the path was last given a unit.
	assignedAt time.Time

	repAt        time.Time // the client's last report on the path
	repDelivered uint64
	repReceived  uint64 // bytes received on the path, duplicates included
	busy         bool   // queued > 0 when that report was processed

	// The rate window being measured: since winStart, winBytes delivered,
	// and whether the path had work queued at every report (winBusy).
	winStart time.Time
	winBytes uint64
	winBusy  bool
	samples  [rateSamples]float64 // the last windows' rates; 0 = none
	sampleAt int                  // where the next sample goes
	measured bool                 // a rate window has been measured
}

// Rate estimation: the delivery reports of a path are summed into windows
// of at least rateWindow, and the path's rate is the largest of the last
// rateSamples windows in which it was busy throughout. The maximum, not a
// mean: a window in which commands or feedback lagged and the link idled
// reads low, and a mean of such windows would shrink the work kept queued
// on the path, which makes it idle more (a spiral down). A link cannot
// deliver faster than it can, so the maximum does not overshoot by more
// than a window's burst.
const (
	rateWindow  = 100 * time.Millisecond
	rateSamples = 5
)

// addSample records the rate of a finished window. A window in which the
// path was not busy throughout only bounds the rate from below: it counts
// only if it is above the current estimate.
//
// Alongside, avg is a moving average of the busy windows, which is what a
// path that is not kept saturated (its congestion window shrinks when it
// idles, more so on a long RTT) actually delivers. The maximum sizes the
// work kept queued (target); the average predicts arrival (eta), so that a
// path is given work only where it really delivers in time.
//
// The first window in which the path delivered anything replaces
// InitialRate, a guess, whether or not the path was busy throughout (until
// then it has at most unmeasuredQueue bytes queued, so it may not be): if
// it reads low, later windows raise rate (a path left without work is
// probed: see chooseLocked). A window in which it delivered nothing is no
// measurement of an unmeasured path: a secondary that lacks a file answers
// its units with nothing (they are missed, and the file is taken from it,
// see excludedLocked), and an estimate of minRate from that would starve it
// of the next file's work too; one that delivers nothing at all misses out.
func (p *pathState) addSample(rate float64, busy bool) {
	if !p.measured && rate == 0 {
		return
	}
	if !p.measured {
		p.measured = true
		p.samples[0], p.sampleAt = rate, 1
		p.rate = max(rate, minRate)
		p.avg = p.rate
		return
	}
	if busy {
		p.avg = max(0.75*p.avg+0.25*rate, minRate)
	} else {
		// A window with idle time only bounds the rate from below; but
		// a path estimated slow gets little work and few busy windows,
		// so a faster idle one must lift avg, or it would never recover
		// (after a burst of losses, say).
		p.avg = max(p.avg, rate)
	}
	if !busy && rate <= p.rate {
		return
	}
	p.samples[p.sampleAt] = rate
	p.sampleAt = (p.sampleAt + 1) % rateSamples
	p.rate = max(slices.Max(p.samples[:]), minRate)
}

// unmeasuredQueue bounds the work queued on a path before its first rate
// window: InitialRate is a guess, and a slow path given work for the guess
// would hold the reader up for seconds.
const unmeasuredQueue = 512 << 10

// minRate is the lowest rate a path is estimated at.
const minRate = 64 << 10

// eta is when a unit of u bytes assigned now would arrive: after the
// bytes queued before it, plus the one-way delay of the data and, for a
// secondary, of the command (to the client over path 0, then on to the
// secondary over its own path).
func (p *pathState) eta(u uint64) time.Duration {
	d := p.rtt / 2
	if p.id != 0 {
		d += p.cmdRTT/2 + p.rtt/2
	}
	return time.Duration(float64(p.queued+u)/p.avg*float64(time.Second)) + d
}

// fileKey names the strikes of one secondary for one file.
type fileKey struct{ addr, file string }

// strikeRec counts a secondary's strikes and consecutive misses for a file,
// and when it missed last.
type strikeRec struct {
	strikes, misses int
	missedAt        time.Time
}

// miss counts a miss at now.
func (r *strikeRec) miss(now time.Time) {
	r.misses++
	r.missedAt = now
}

// assignRec remembers that a secondary was given chunks [first, last] of a
// file at a version, to strike it when one of them proves corrupt.
type assignRec struct {
	addr        string
	path        kwik.PathID
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
	prio  *priority // the session's foreground and background READs

	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu sync.Mutex
	// guarded by mu:
	paths    map[kwik.PathID]*pathState // path 0 and the secondary paths up
	jobs     map[*job]struct{}          // the READ replies being divided
	strikes  map[fileKey]*strikeRec
	history  []assignRec // ring of the last maxHistory secondary assignments
	histNext int
	statsAt  time.Time     // when the paths' figures were last refreshed
	changed  chan struct{} // closed and replaced when a path comes up or goes

	// tally counts what each path delivered and its strikes, for
	// PATH_REPORT (pathreport.go); it has a lock of its own.
	tally pathTally
}

// newSessionCoord starts keeping paths to secondaries open for sess.
// Close stops it.
func newSessionCoord(ctx context.Context, sess *kwik.Session, secondaries []string, names map[string]string, o *CoordinatorOptions, log *slog.Logger, stats *coordCounters, prio *priority) *sessionCoord {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(sess.Context(), cancel)
	c := &sessionCoord{
		o: o, sess: sess, log: log, stats: stats, prio: prio, cancel: cancel,
		paths:   map[kwik.PathID]*pathState{0: {id: 0, up: true, rate: o.InitialRate, avg: o.InitialRate}},
		strikes: make(map[fileKey]*strikeRec),
		jobs:    make(map[*job]struct{}),
		changed: make(chan struct{}),
	}
	c.wg.Go(func() {
		<-ctx.Done()
		stop()
	})
	c.wg.Go(func() { c.watchEvents(ctx) })
	for _, addr := range secondaries {
		name := names[addr]
		c.wg.Go(func() { c.keepPath(ctx, addr, name) })
	}
	return c
}

// Close stops the coordinator's goroutines and waits for them.
func (c *sessionCoord) Close() {
	c.cancel()
	c.wg.Wait()
}

// keepPath adds a path to the secondary at addr, whose certificate must
// carry serverName ("": the host of addr), and adds it again, with
// jittered backoff, whenever it cannot be added or fails (the client
// closes a path that stalls, see kwik.Config.PathStallTimeout). The
// backoff starts again from PathRetryInitial only after a path that
// delivered data: one that comes up and then stalls or fails without
// delivering anything, again and again (a secondary whose disk hangs), is
// re-added ever less often.
func (c *sessionCoord) keepPath(ctx context.Context, addr, serverName string) {
	bo := backoff.Backoff{Initial: c.o.PathRetryInitial, Max: c.o.PathRetryMax, Jitter: backoff.DefaultJitter}
	for ctx.Err() == nil {
		id, err := c.sess.AddPathAs(ctx, addr, serverName)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			ps := c.pathUp(id, addr)
			c.stats.add(addr, func(pc *PathCounters) { pc.PathsAdded++; pc.PathsUp++ })
			c.log.Debug("secondary path up", "peer", c.sess.RemoteAddr(), "secondary", addr, "path", id)
			select {
			case <-ps.down:
			case <-ctx.Done():
			}
			c.stats.add(addr, func(pc *PathCounters) { pc.PathsUp-- })
			if ctx.Err() != nil {
				return
			}
			c.mu.Lock()
			delivered := ps.repDelivered > 0
			c.mu.Unlock()
			if delivered {
				bo.Reset()
			}
		} else {
			if errors.Is(err, kwik.ErrNoSigningKey) || errors.Is(err, kwik.ErrNotPrimary) {
				c.log.Warn("cannot add secondary paths", "secondary", addr, "err", err)
				return
			}
			c.log.Debug("secondary path not added", "peer", c.sess.RemoteAddr(), "secondary", addr, "err", err)
		}
		c.stats.add(addr, func(pc *PathCounters) { pc.PathsLost++ })
		if backoff.Sleep(ctx, bo.Next()) != nil {
			return
		}
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
	ps := &pathState{id: id, addr: addr, up: true, down: make(chan struct{}), rate: c.o.InitialRate, avg: c.o.InitialRate}
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
		if s.ID != 0 {
			ps.cmdRTT = c.paths[0].rtt
		}
		if r == nil || !r.At.After(ps.repAt) {
			continue
		}
		switch {
		case ps.repAt.IsZero():
			ps.winStart, ps.winBytes, ps.winBusy = r.At, 0, ps.queued > 0
		case r.DeliveredBytes >= ps.repDelivered:
			ps.winBytes += r.DeliveredBytes - ps.repDelivered
			ps.winBusy = ps.winBusy && ps.busy && ps.queued > 0
			if dt := r.At.Sub(ps.winStart); dt >= rateWindow {
				ps.addSample(float64(ps.winBytes)/dt.Seconds(), ps.winBusy)
				ps.winStart, ps.winBytes, ps.winBusy = r.At, 0, ps.queued > 0
			}
		}
		ps.repAt, ps.repDelivered, ps.repReceived = r.At, r.DeliveredBytes, r.ReceivedBytes
		ps.busy = ps.queued > 0
	}
}

// excludedLocked reports whether a secondary has struck out for file, or
// missed out for MissCooldown.
func (c *sessionCoord) excludedLocked(ps *pathState, file string) bool {
	if ps.id == 0 {
		return false
	}
	r := c.strikes[fileKey{ps.addr, file}]
	if r == nil {
		return false
	}
	return r.strikes >= c.o.MaxStrikes ||
		r.misses >= c.o.MaxStrikes && time.Since(r.missedAt) < c.o.MissCooldown
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
			c.tally.strike(h.path)
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
// chunks req.First to req.First+req.Count-1 of f, divided between the
// paths. It returns once the client reported every byte delivered, with
// the bytes the primary sent itself, or fails when the stream or session
// ends or the client makes no progress for noProgress. A background READ
// assigns nothing new while a foreground READ of the session is served
// (see priority); the time it is held back does not count as no progress.
func (c *sessionCoord) serveRead(ctx context.Context, st *kwik.Stream, f *File, req *transfer.Request, noProgress time.Duration) (int64, error) {
	file, first, count := req.Path, req.First, req.Count
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
		addrs:      map[kwik.PathID]string{0: ""},
		background: req.Background,
	}
	c.mu.Lock()
	c.jobs[j] = struct{}{}
	c.mu.Unlock()
	return j.run(ctx, noProgress)
}

// backlogLocked returns the bytes of the session's READ replies not
// assigned to a path yet.
func (c *sessionCoord) backlogLocked() uint64 {
	var n uint64
	for j := range c.jobs {
		n += j.left()
	}
	return n
}
