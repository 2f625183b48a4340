package server

import (
	"cmp"
	"math/bits"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/kwikfs/kwikfs/kwik"
	"github.com/kwikfs/kwikfs/transfer"
)

// pathCount is what a session's tally holds for one path.
type pathCount struct {
	bytes, chunks, strikes uint64
}

// maxTallyPaths bounds a tally: a session whose paths keep failing and
// being added again forgets the oldest (lowest-numbered) secondary paths,
// which kwik no longer lists either.
const maxTallyPaths = 256

// pathTally counts, for one session, the READ reply bytes and chunks the
// primary credits to each path and the strikes each path collected. The
// zero value is ready to use. mu guards paths; no other lock is taken with
// mu held, so it may be used with sessionCoord.mu held.
type pathTally struct {
	mu    sync.Mutex
	paths map[kwik.PathID]*pathCount
}

// countLocked returns the count of path id, creating it.
func (t *pathTally) countLocked(id kwik.PathID) *pathCount {
	if t.paths == nil {
		t.paths = make(map[kwik.PathID]*pathCount)
	}
	pc := t.paths[id]
	if pc == nil {
		if len(t.paths) >= maxTallyPaths {
			oldest := kwik.PathID(0)
			for k := range t.paths {
				if k != 0 && (oldest == 0 || k < oldest) {
					oldest = k
				}
			}
			delete(t.paths, oldest)
		}
		pc = &pathCount{}
		t.paths[id] = pc
	}
	return pc
}

// add credits path id with bytes and chunks delivered.
func (t *pathTally) add(id kwik.PathID, bytes, chunks uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	pc := t.countLocked(id)
	pc.bytes += bytes
	pc.chunks += chunks
}

// strike counts a strike against path id.
func (t *pathTally) strike(id kwik.PathID) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.countLocked(id).strikes++
}

// snapshot returns a copy of the counts.
func (t *pathTally) snapshot() map[kwik.PathID]pathCount {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[kwik.PathID]pathCount, len(t.paths))
	for id, pc := range t.paths {
		out[id] = *pc
	}
	return out
}

// apportion divides the count chunks of one READ reply between the paths
// that delivered its bytes first: byPath[id] is the number of reply body
// bytes path id delivered first, cs the chunk size. Each path gets its
// bytes in whole chunks, n/cs rounded down; the chunks left over (a short
// last chunk, chunks split between paths by a hedge or a reassignment) go
// one each to the paths with the largest remainders, ties to the lower ID.
// The result sums to count whenever the bytes sum to the reply body, so
// that every chunk of the reply is credited to exactly one path; with whole
// chunk units it is exactly the chunks each path delivered.
func apportion(byPath map[kwik.PathID]uint64, cs uint64, count uint64) map[kwik.PathID]uint64 {
	type share struct {
		id          kwik.PathID
		whole, rest uint64
	}
	shares := make([]share, 0, len(byPath))
	var sum uint64
	for id, n := range byPath {
		if n == 0 {
			continue
		}
		q, r := bits.Div64(0, n, cs)
		shares = append(shares, share{id, q, r})
		sum += q
	}
	slices.SortFunc(shares, func(a, b share) int {
		if c := cmp.Compare(b.rest, a.rest); c != 0 {
			return c
		}
		return cmp.Compare(a.id, b.id)
	})
	for i := 0; sum < count && i < len(shares); i++ {
		if shares[i].rest > 0 {
			shares[i].whole++
			sum++
		}
	}
	out := make(map[kwik.PathID]uint64, len(shares))
	for _, s := range shares {
		// More bytes than the reply holds would mean more chunks than it
		// has: never credit beyond count.
		take := min(s.whole, count)
		count -= take
		if take > 0 {
			out[s.id] = take
		}
	}
	return out
}

// tallyDelivered credits the chunks of a READ reply the client has wholly
// received to the paths that delivered them first (d.ByPath, the status
// byte taken off path 0), apportioned by apportion.
func (j *job) tallyDelivered(d *kwik.Delivery) {
	count := uint64(j.chunkOf(j.total-1) - j.chunkOf(j.base) + 1)
	body := make(map[kwik.PathID]uint64, len(d.ByPath))
	for id, n := range d.ByPath {
		if id == 0 {
			n -= min(n, j.base) // the status byte
		}
		body[id] = n
	}
	chunks := apportion(body, j.cs, count)
	for id, n := range body {
		if n > 0 || chunks[id] > 0 {
			j.c.tally.add(id, n, chunks[id])
		}
	}
}

// pathEstimate is the coordinator's view of one path that is up.
type pathEstimate struct {
	rate   float64
	rtt    time.Duration
	queued uint64
}

// estimates returns the coordinator's figures for every path that is up.
// It changes nothing.
func (c *sessionCoord) estimates() map[kwik.PathID]pathEstimate {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[kwik.PathID]pathEstimate, len(c.paths))
	for id, ps := range c.paths {
		out[id] = pathEstimate{rate: ps.rate, rtt: ps.rtt, queued: ps.queued}
	}
	return out
}

// sessionReport answers PATH_REPORT for one session. sess and sc are
// immutable; tally has its own lock.
type sessionReport struct {
	sess *kwik.Session
	sc   *sessionCoord // nil without secondaries
	// tally is sc's tally, or a tally of its own without a coordinator.
	tally *pathTally
}

// newSessionReport returns the report of sess, whose coordinator is sc
// (nil for a primary without secondaries).
func newSessionReport(sess *kwik.Session, sc *sessionCoord) *sessionReport {
	r := &sessionReport{sess: sess, sc: sc, tally: new(pathTally)}
	if sc != nil {
		r.tally = &sc.tally
	}
	return r
}

// paths returns the primary's account of the session's paths, path 0
// first, then by ID: the paths kwik lists (those up and the most recently
// ended), at most transfer.MaxPathReports of them (path 0 and the newest
// others). State and address come from kwik; RTT, rate and bytes in flight
// from the coordinator while the path is up (RTT from kwik otherwise, and
// the rate from the client's reports on the path, kwik
// PathReport.DeliveryRate, when the primary has no coordinator); delivered
// bytes, chunks and strikes from the session's tally.
func (r *sessionReport) paths() []transfer.PathReport {
	stats := r.sess.Stats().Paths
	if len(stats) > transfer.MaxPathReports {
		stats = append(stats[:1:1], stats[len(stats)-transfer.MaxPathReports+1:]...)
	}
	var est map[kwik.PathID]pathEstimate
	if r.sc != nil {
		est = r.sc.estimates()
	}
	counts := r.tally.snapshot()
	out := make([]transfer.PathReport, 0, len(stats))
	for _, p := range stats {
		id := kwik.PathID(p.ID)
		rec := transfer.PathReport{ID: id, State: p.State, RTT: p.SmoothedRTT}
		if id != 0 {
			rec.Addr = truncAddr(p.Addr)
		}
		if e, ok := est[id]; ok {
			if e.rtt > 0 {
				rec.RTT = e.rtt
			}
			rec.Rate = uint64(e.rate)
			rec.InFlightBytes = e.queued
		} else if r.sc == nil && p.Reported != nil {
			rec.Rate = uint64(p.Reported.DeliveryRate)
		}
		pc := counts[id]
		rec.DeliveredBytes, rec.DeliveredChunks, rec.Strikes = pc.bytes, pc.chunks, pc.strikes
		out = append(out, rec)
	}
	return out
}

// truncAddr cuts an address to transfer.MaxAddrLen bytes (addresses come
// from the configuration and are never that long).
func truncAddr(a string) string {
	if len(a) > transfer.MaxAddrLen {
		return strings.ToValidUTF8(a[:transfer.MaxAddrLen-3], "?")
	}
	return strings.ToValidUTF8(a, "?")
}

// servePathReport answers PATH_REPORT with the account of the session's
// paths, or with an error reply to a malformed request.
func (h *handler) servePathReport(st stream, peer net.Addr, msg []byte, rep *sessionReport) {
	if err := transfer.DecodePathReportRequest(msg); err != nil {
		h.replyError(st, peer, transfer.OpPathReport, err)
		return
	}
	if rep == nil {
		h.replyError(st, peer, transfer.OpPathReport, transfer.ErrUnavailable)
		return
	}
	b, err := transfer.EncodePathReports(rep.paths())
	if err != nil {
		h.replyError(st, peer, transfer.OpPathReport, err)
		return
	}
	h.write(st, peer, b)
}
